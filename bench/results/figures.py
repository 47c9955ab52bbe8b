"""The HTML report's figures as PNG bytes: a forest plot of each metric's intervals and the validation curves per
epoch (needs matplotlib: pip install 'deepfm-bench[plot]').

Each figure has an exact pixel size (`forest_size`, `curves_size`; no tight bounding box), so the page can give
its images their size and a test can check the browser decoded them whole."""

from __future__ import annotations

import io
import math
import struct
from typing import Any

from bench.results.store import Run
from bench.text import printable

DPI = 100
WIDTH_PX = 1000  # the page's content width
FOREST_COLUMNS = 3  # panels per row (the three default metrics); more wrap onto further rows
CURVES_COLUMNS = 4  # the three default metrics' validation curves and the training loss
FOREST_ROW_PX = (80, 36)  # one row of forest panels: fixed part (title, axis), then per model
CURVES_ROW_PX = 300
EXTRA = "plot"


def require_matplotlib(option: str) -> None:
    """Refuse, before any work, an option that draws when matplotlib (the `plot` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(f"{option} needs matplotlib: pip install 'deepfm-bench[{EXTRA}]'") from None


LABEL_CHARS = 24  # a longer model name is cut in the figures (the tables show it whole)


def label(text: Any) -> str:
    """A label matplotlib draws as given: control characters escaped, at most LABEL_CHARS characters (a long one
    would squeeze the panels to nothing), and '$' never starting mathtext (a model named 'a$b$' would otherwise
    be typeset, and an unbalanced one fail the drawing)."""
    shown = printable(text)
    if len(shown) > LABEL_CHARS:
        shown = shown[:LABEL_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return shown.replace("$", r"\$")


def _grid(panels: int, most: int) -> tuple[int, int]:
    """(rows, columns) of the panels, at most `most` a row."""
    columns = max(1, min(most, panels))
    return max(1, math.ceil(panels / columns)), columns


def forest_size(models: int, metrics: int) -> tuple[int, int]:
    """The forest plot's (width, height) in pixels: a panel per metric, a line per model."""
    rows, _ = _grid(metrics, FOREST_COLUMNS)
    fixed, per_model = FOREST_ROW_PX
    return WIDTH_PX, rows * (fixed + per_model * max(1, models))


def curves_size(panels: int) -> tuple[int, int]:
    """The validation curves' (width, height) in pixels."""
    return WIDTH_PX, _grid(panels, CURVES_COLUMNS)[0] * CURVES_ROW_PX


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def _pyplot() -> Any:
    require_matplotlib("the HTML report")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(plt: Any, size: tuple[int, int], panels: int, most: int) -> tuple[Any, list[Any]]:
    """A figure of exactly `size` pixels with its panels, at most `most` a row (unused grid cells hidden)."""
    rows, columns = _grid(panels, most)
    fig, axes = plt.subplots(rows, columns, figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, squeeze=False,
                             layout="constrained")
    flat = [ax for row in axes for ax in row]
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def _png(plt: Any, fig: Any, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    png = buffer.getvalue()
    if png_size(png) != size:  # the page states this size; a figure that drew otherwise is a bug here
        raise ValueError(f"figure drew {png_size(png)} pixels, expected {size}")
    return png


def color(index: int) -> str:
    return f"C{index % 10}"


def forest(rows: list[dict[str, Any]], metrics: list[str], baseline: str | None) -> bytes:
    """Each metric's mean and 95% interval per model (leaderboard order, first at the top), the baseline's mean
    as a dashed line: overlapping intervals are differences the data cannot tell apart."""
    plt = _pyplot()
    size = forest_size(len(rows), len(metrics))
    fig, axes = _figure(plt, size, len(metrics), FOREST_COLUMNS)
    names = [label(r["model"]) for r in rows]
    ys = list(range(len(rows)))[::-1]
    for ax, metric in zip(axes, metrics, strict=True):
        for i, (row, y) in enumerate(zip(rows, ys, strict=True)):
            stat = row[metric]
            if not math.isfinite(stat["mean"]):  # a metric some runs predate: nothing to draw
                continue
            low, high = stat.get("ci_low", stat["mean"]), stat.get("ci_high", stat["mean"])
            ax.plot([low, high], [y, y], color=color(i), linewidth=2.5, solid_capstyle="butt")
            ax.plot([stat["mean"]], [y], "o", color=color(i), markersize=7)
            if row["model"] == baseline:
                ax.axvline(stat["mean"], color="0.5", linestyle="--", linewidth=1)
        ax.set_yticks(ys, names if ax is axes[0] or len(metrics) == 1 else [""] * len(ys))
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(f"test {label(metric)}")
        ax.grid(axis="x", alpha=0.3)
    return _png(plt, fig, size)


def curve_panels(runs: list[Run], metrics: list[str]) -> list[str]:
    """The history keys drawn: each displayed metric some run validated on, then the training loss."""
    keys = {k for r in runs for epoch in r.history for k in epoch}
    return [f"val_{m}" for m in metrics if f"val_{m}" in keys] + (["loss"] if "loss" in keys else [])


def curves(runs: list[Run], models: list[str], panels: list[str]) -> bytes:
    """Per epoch, each run's validation metrics and training loss, a colour per model (its leaderboard place)."""
    plt = _pyplot()
    size = curves_size(len(panels))
    fig, axes = _figure(plt, size, len(panels), CURVES_COLUMNS)
    for ax, key in zip(axes, panels, strict=True):
        labelled = set()
        for run in runs:
            points = [(e["epoch"], e[key]) for e in run.history if isinstance(e.get(key), (int, float))
                      and isinstance(e.get("epoch"), (int, float))]
            if not points:
                continue
            index = models.index(run.model)
            ax.plot(*zip(*points, strict=True), color=color(index), alpha=0.85, marker="o", markersize=3,
                    label=None if run.model in labelled else label(run.model))
            labelled.add(run.model)
        title = "training loss" if key == "loss" else f"validation {label(key[4:])}"
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend(fontsize="small")
    return _png(plt, fig, size)
