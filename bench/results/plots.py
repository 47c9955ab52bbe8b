"""PNG plots of stored runs (needs matplotlib: pip install 'deepfm-bench[plot]')."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.results.store import Run
from bench.results.tables import leaderboard_rows


def write_plots(runs: list[Run], out_dir: Path) -> list[Path]:
    """Training curves (loss and validation NDCG@10 per epoch) and test metrics by model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'deepfm-bench[plot]'") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    by_model: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_model[r.model].append(r)
    for model, group in by_model.items():
        for i, r in enumerate(group):
            if not r.history:
                continue
            epochs = [h["epoch"] for h in r.history]
            label = model if i == 0 else None
            color = f"C{list(by_model).index(model) % 10}"
            ax_loss.plot(epochs, [h["loss"] for h in r.history], color=color, alpha=0.8, label=label)
            ax_val.plot(epochs, [h.get("val_NDCG@10", float("nan")) for h in r.history], color=color,
                        alpha=0.8, label=label)
    ax_loss.set(xlabel="epoch", ylabel="training BCE", title="Training loss")
    ax_val.set(xlabel="epoch", ylabel="NDCG@10", title="Validation NDCG@10")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out_dir / "training_curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    rows = leaderboard_rows(runs)
    metrics = [m for m in ("HR@10", "NDCG@10", "MRR") if rows and m in rows[0]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        names = [r["model"] for r in rows]
        ax.bar(names, [r[metric]["mean"] for r in rows], yerr=[r[metric]["std"] for r in rows], capsize=4,
               color=[f"C{i % 10}" for i in range(len(rows))])
        ax.set(title=f"test {metric}")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out_dir / "metrics_by_model.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written
