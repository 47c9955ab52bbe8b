"""`bench report --html DIR`: the leaderboard as one self-contained web page, DIR/index.html.

Everything is inside the file: the style inline, the figures as PNG data URIs (`bench.results.figures`), no
script, font or link to fetch; its Content-Security-Policy forbids the browser any other load, so the page can
be mailed or opened offline and shows what the store held. Every text that came from the store or the user
(model and dataset labels, notes, the command line) is shown with its control characters escaped
(`bench.text.printable`) and HTML-escaped, and the file is plain ASCII (other characters as references), so no
label can add markup or break the page.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from bench.results import figures
from bench.results.card import FACTORS
from bench.results.card import card as protocol_card
from bench.results.pages import sampler_label
from bench.results.store import ResultStore, Run, write_atomic
from bench.results.tables import _cell as interval_cell
from bench.results.tables import comparison_rows, display_metrics, leaderboard_rows, missing_baseline
from bench.text import printable

PAGE = "index.html"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # nothing but the page itself loads
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1180px;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
h3 { font-size: 1.05rem; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9em; background: #f3f3f3;
       padding: .1em .3em; border-radius: 3px; word-break: break-all; }
table { border-collapse: collapse; font-size: .9rem; margin: .6rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .6rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, tbody th { text-align: left; }
thead th { border-bottom: 2px solid #888; }
tr.significant td.p-holm { font-weight: bold; }
img { max-width: 100%; height: auto; display: block; }
figure { margin: 1rem 0; } figcaption, .legend { color: #555; font-size: .85rem; }
dl.card { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; font-size: .9rem; }
dl.card dt { font-weight: 600; } dl.card dd { margin: 0; }
.scroll { overflow-x: auto; }
"""


def text(value: Any) -> str:
    """A value as page text: control characters shown as escapes, markup characters escaped."""
    return html.escape(printable(value), quote=True)


def check_html_dir(path: str | Path) -> Path:
    """Refuse, before any work, a --html folder that is a file or whose page cannot be written there."""
    from bench.results.store import check_writable_file

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--html {path}: is a file, expected a folder")
    check_writable_file(path / PAGE, "--html")
    figures.require_matplotlib("--html")
    return path


@dataclass
class KernelBatch:
    """The latest `bench kernel` invocation's rows in the store."""

    batch: int
    created: float
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    batches: int
    unreadable: int = 0  # rows whose JSON could not be read (left out)
    devices: list[str] = field(default_factory=list)


def kernel_batch(store: ResultStore) -> KernelBatch | None:
    """The store's latest kernel batch, or None when it holds no kernel rows (or no kernel table: an older store)."""
    tables = store._select("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'kernel_rows'", [])
    if not tables:
        return None
    found = store._select("SELECT batch_id, created, config, row, (SELECT COUNT(DISTINCT batch_id) FROM kernel_rows) "
                          "FROM kernel_rows WHERE batch_id = (SELECT MAX(batch_id) FROM kernel_rows) ORDER BY id", [])
    if not found:
        return None
    rows, unreadable = [], 0
    for item in found:
        try:
            row = json.loads(item[3])
        except (TypeError, ValueError):
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            unreadable += 1
    try:
        config = json.loads(found[0][2] or "{}")
    except (TypeError, ValueError):
        config = {}
    return KernelBatch(int(found[0][0]), float(found[0][1]), config if isinstance(config, dict) else {}, rows,
                       int(found[0][4]), unreadable, list(dict.fromkeys(str(r.get("device")) for r in rows)))


def _table(headers: Iterable[str], body: list[str], table_id: str) -> str:
    head = "".join(f"<th scope=\"col\">{text(h)}</th>" for h in headers)
    return (f"<div class=\"scroll\"><table id=\"{table_id}\"><thead><tr>{head}</tr></thead><tbody>\n"
            + "\n".join(body) + "\n</tbody></table></div>")


def _image(element_id: str, png: bytes, alt: str, caption: str) -> str:
    width, height = figures.png_size(png)
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img id=\"{element_id}\" width=\"{width}\" height=\"{height}\" alt=\"{text(alt)}\" "
            f"src=\"data:image/png;base64,{data}\"><figcaption>{text(caption)}</figcaption></figure>")


def _number(x: float, spec: str) -> str:
    return "-" if x != x else format(x, spec)  # NaN: a model that does not train has no speed


def _environment(runs: list[Run]) -> str:
    first = runs[0]
    samplers = ", ".join(sorted({sampler_label(r.config.get("train", {})) for r in runs}))
    return (f"Written {datetime.now():%Y-%m-%d %H:%M}; protocol <code>{text(first.protocol)}</code>, ties "
            f"<code>{text(first.ties)}</code>, training negatives <code>{text(samplers)}</code>, device "
            f"<code>{text(first.device)}</code>, torch {text(first.versions.get('torch'))}, "
            f"{text(first.versions.get('threads'))} threads, commit <code>{text(first.git_commit)}</code>.")


def _leaderboard(rows: list[dict[str, Any]], names: list[str]) -> str:
    body = []
    for rank, r in enumerate(rows, 1):
        cells = "".join(f"<td>{text(interval_cell(r[n], r['seeds']))}</td>" for n in names)
        flag = " (!)" if r["notes"] else ""
        body.append(f"<tr><td>{rank}</td><th scope=\"row\" class=\"model\">{text(r['model'])}{flag}</th>{cells}"
                    f"<td>{_number(r['train_samples_per_s'], ',.0f')}</td><td>{_number(r['wall_s'], '.1f')}</td>"
                    f"<td>{r['params']:,}</td><td>{_number(r['epochs'], '.1f')}</td><td>{r['seeds']}</td></tr>")
    seeds = "/".join(map(str, sorted({r["seeds"] for r in rows})))
    notes = [f"<li>(!) {text(r['model'])} {text(note)}</li>" for r in rows for note in r["notes"]]
    return (_table(["#", "model", *names, "samples/s", "s / seed", "params", "epochs", "seeds"], body, "leaderboard")
            + f"<p class=\"legend\">mean [95% interval over users and seeds], {seeds} seed(s); samples/s: training "
            "throughput; s / seed: wall time of one run.</p>" + (f"<ul class=\"notes\">{''.join(notes)}</ul>"
                                                                 if notes else ""))


def _comparison(runs: list[Run], baseline: str, names: list[str]) -> str:
    missing = missing_baseline(runs, baseline)
    if missing:
        return f"<p id=\"no-comparison\">{text(missing)}</p>"
    rows = comparison_rows(runs, baseline, names)
    rows.sort(key=lambda r: names.index(r["metric"]))
    rows.sort(key=lambda r: r["model"])
    significant = ' class="significant"'
    body = [f"<tr{significant if r['p_holm'] < 0.05 else ''}><th scope=\"row\">{text(r['model'])}</th>"
            f"<td>{text(r['metric'])}</td><td>{r['baseline']:.4f}</td><td>{r['value']:.4f}</td>"
            f"<td>{r['diff']:+.4f}</td><td>{r['pct_change']:+.1f}%</td><td class=\"p\">{r['p_value']:.4f}</td>"
            f"<td class=\"p-holm\">{r['p_holm']:.4f}{' *' if r['p_holm'] < 0.05 else ''}</td></tr>" for r in rows]
    return (_table(["model", "metric", baseline, "model's", "diff", "% change", "p", "p (Holm)"], body, "comparison")
            + "<p class=\"legend\">p: paired sign-flip permutation test over the users both models evaluated; "
            "p (Holm): adjusted over the models compared on that metric; * below 0.05.</p>")


def _card(runs: list[Run]) -> str:
    block = protocol_card(runs)
    items = "".join(f"<dt>{text(FACTORS[key])}</dt><dd>{text(value)}</dd>" for key, value in block.items())
    return f"<dl class=\"card\" id=\"card\">{items}</dl>"


def _kernel_cell(row: dict[str, Any], key: str, spec: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    try:
        return text(spec.format(value / 1e6 if key == "bytes" else value))
    except (TypeError, ValueError):  # a stored value of another type: shown as it is
        return text(value)


def _kernel(batch: KernelBatch) -> str:
    from bench.kernels.harness import TABLE_COLUMNS

    recorded = f"{datetime.fromtimestamp(batch.created):%Y-%m-%d %H:%M}"
    parts = [f"<p>Batch {batch.batch} of {batch.batches}, recorded {recorded} (torch "
             f"{text(batch.config.get('torch', '?'))}); pass 'backward' is forward + backward; limit: the "
             "memory copy, or for an input that fits in the last-level cache with its output, a copy of the input's "
             "size (from cache).</p>"]
    if batch.unreadable:
        parts.append(f"<p>{batch.unreadable} stored row(s) of this batch could not be read and are left out.</p>")
    for index, device in enumerate(batch.devices):
        mine = [r for r in batch.rows if str(r.get("device")) == device]
        copy = mine[0].get("copy_gb_per_s")
        bandwidth = f"memory copy bandwidth {copy:.1f} GB/s" if isinstance(copy, (int, float)) else ""
        body = ["<tr>" + "".join(f"<td>{_kernel_cell(r, key, spec)}</td>" for key, _, spec in TABLE_COLUMNS) + "</tr>"
                for r in mine]
        parts.append(f"<h3>{text(device)}{': ' + bandwidth if bandwidth else ''}</h3>"
                     + _table([h for _, h, _ in TABLE_COLUMNS], body, f"kernel-{index}"))
    return "\n".join(parts)


def render(runs: list[Run], baseline: str, metrics: Iterable[str] | None = None, kernel: KernelBatch | None = None,
           command: str | None = None, title: str | None = None) -> str:
    """The page, as ASCII HTML."""
    names = display_metrics(runs, metrics)
    rows = leaderboard_rows(runs)
    models = [r["model"] for r in rows]
    title = title or f"{runs[0].dataset} leaderboard"
    baseline_shown = baseline if baseline in models else None
    forest = _image("forest", figures.forest(rows, names, baseline_shown), "forest plot of each metric's intervals",
                    "Each model's mean (dot) and 95% interval over users and seeds (line) per metric"
                    + (f"; dashed: the {baseline} baseline's mean." if baseline_shown else ".")) if names else ""
    panels = figures.curve_panels(runs, names)
    curves = (_image("curves", figures.curves(runs, models, panels), "validation curves per epoch",
                     "Per epoch, each run's validation metrics (the split used to pick the best epoch) and training "
                     "loss; a colour per model.") if panels else
              "<p id=\"no-curves\">No run kept a per-epoch history (fitted models train no epochs).</p>")
    sections = [
        f"<h1>{text(title)}</h1>",
        f"<p>Produced by: <code>{text(command)}</code></p>" if command else "",
        f"<p>{_environment(runs)}</p>",
        "<h2 id=\"leaderboard-heading\">Leaderboard (test split)</h2>", _leaderboard(rows, names), forest,
        f"<h2>Against the {text(baseline)} baseline</h2>", _comparison(runs, baseline, names),
        "<h2>Validation curves</h2>", curves,
        "<h2>Protocol card</h2>", _card(runs),
        *(["<h2>Kernel throughput (<code>bench kernel</code>)</h2>",
           f"<section id=\"kernel\">{_kernel(kernel)}</section>"] if kernel and kernel.rows else []),
    ]
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"  # no favicon request when served over http
            f"<title>{text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(s for s in sections if s) + "\n</body>\n</html>\n")
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")


def write_report(out_dir: str | Path, runs: list[Run], baseline: str, metrics: Iterable[str] | None = None,
                 kernel: KernelBatch | None = None, command: str | None = None) -> Path:
    """Write DIR/index.html whole or not at all; returns its path."""
    return write_atomic(Path(out_dir) / PAGE, render(runs, baseline, metrics, kernel, command))
