"""The protocol card: every factor a leaderboard's numbers depend on, in one block, written from the stored runs.

Sun et al. ("Are We Evaluating Rigorously?", RecSys 2020) ask every result to carry its evaluation factors;
here each table (terminal, Markdown, json, csv) carries them, built from the runs' stored configuration and
data facts, never by hand. Runs whose cards differ in a factor that changes what the numbers mean (the data,
its split, the candidates, the tie policy) are not put in one table unless asked (`bench report --mixed`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import Any

FACTORS = {  # factor -> its heading on the card
    "dataset": "dataset", "checksum": "data checksum", "positives": "positives", "split": "split",
    "history": "history", "candidates": "candidates and masks", "ties": "ties", "negatives": "training",
    "metrics": "metrics", "seeds": "seeds", "audit": "leakage audit (test)",
}
COMPARABLE = ("dataset", "checksum", "positives", "split", "candidates", "ties")  # what one table must share


def factors(run: Any) -> dict[str, str]:
    """One run's value of each factor, as the card shows it."""
    config = getattr(run, "config", None) or {}  # a run recorded before the card existed lacks some facts
    facts = config.get("protocol") or {}
    data, train, evaluation = config.get("data", {}), config.get("train", {}), config.get("eval", {})
    split = facts.get("split", data.get("split", "loo"))
    if split == "global":
        cut = facts.get("cutoffs") or {}
        cold = facts.get("cold") or {}
        evaluated = facts.get("evaluated") or {}
        split_text = (f"global timeline: train before {cut.get('val')}, validation target = first positive in "
                      f"[{cut.get('val')}, {cut.get('test')}), test target = first positive from {cut.get('test')}; "
                      f"{evaluated.get('test', '?')} test users evaluated, {cold.get('test', '?')} cold (no earlier "
                      "positive) not evaluated")
        masks = "every positive of the user strictly before the target"
    else:
        split_text = "temporal leave-one-out: last positive test, the one before validation (ties by file order)"
        masks = "the user's training positives, and at test the validation item"
    if (getattr(run, "protocol", None) or evaluation.get("protocol")) == "sampled":
        n = getattr(run, "num_negatives", None) or evaluation.get("eval_negatives")
        candidates = f"sampled: the held-out item and {n} items the user never interacted with (seeded)"
    else:
        candidates = f"full ranking over every item with a positive; masked: {masks}"
    length = data.get("history", 0)
    own = _own_encoder(config)
    reader = f"{own} (the model's own)" if own else data.get("history_encoder", data.get("history_pooling", "mean"))
    history = ("none" if not length else
               f"the last {length} positives strictly before the row ({data.get('history_order', 'time')} order), "
               f"read by {reader}")
    options = " ".join(f"{k}={v}" for k, v in sorted((train.get("sampler_options") or {}).items()))
    if train.get("loss") == "softmax":  # every item is a negative of every positive: no sampler runs
        negatives = "no sampled negatives: a softmax over every item; loss softmax"
    else:
        negatives = (f"{train.get('num_negatives', '?')} {' '.join(filter(None, [train.get('sampler', '?'), options]))}"
                     f" negatives per positive, re-drawn every epoch; loss {train.get('loss', 'bce')}")
    audit = (facts.get("audit") or {}).get("test")
    audit_text = "not recorded" if not audit else (
        f"{audit['share']:.1%} of test targets have a later training interaction of another user"
        + (f" (median lag {audit['median_lag']:.1f} {audit['lag_unit']})" if audit.get("median_lag") is not None
           else ""))
    return {
        "dataset": str(getattr(run, "dataset", "?")), "checksum": str(config.get("data_checksum")),
        "positives": f"rating >= {data.get('threshold', '?')}"
                     + (f", users with >= {data.get('min_interactions', '?')} positives evaluated" if split == "loo"
                        else ""),
        "split": split_text, "history": history, "candidates": candidates, "ties": getattr(run, "ties", None) or "?",
        "negatives": negatives, "metrics": "HR, NDCG, Recall, MAP at K = "
                                           + ",".join(map(str, evaluation.get("ks", []))) + "; MRR",
        "seeds": str(run.seed), "audit": audit_text,
    }


def _own_encoder(config: dict[str, Any]) -> str | None:
    """The history encoder a sequential model builds itself (SASRec's transformer, GRU4Rec's GRU), which the
    data's `history_encoder` setting does not choose; None for other models, or a plugin no longer installed."""
    plugin = (config.get("model") or {}).get("plugin")
    if not plugin:
        return None
    import registry

    try:
        model = registry.get("model", plugin)
    except Exception:  # noqa: BLE001 - uninstalled or broken since: the card falls back to the stored setting
        return None
    own = getattr(model, "encoder_name", None)
    return own if isinstance(own, str) else None


def card(runs: Iterable[Any]) -> dict[str, str]:
    """The card of a set of runs: each factor's value, or its distinct values with the models that have them."""
    per_run = [(r, factors(r)) for r in runs]
    out = {}
    for key in FACTORS:
        if key == "seeds":
            out[key] = ",".join(str(s) for s in sorted({r.seed for r, _ in per_run}))
            continue
        values: dict[str, list[str]] = {}
        for run, f in per_run:
            models = values.setdefault(f[key], [])
            if run.model not in models:
                models.append(run.model)
        out[key] = next(iter(values)) if len(values) == 1 else "; ".join(
            f"{value} ({', '.join(models)})" for value, models in values.items())
    return out


def differences(runs: Iterable[Any]) -> dict[str, list[str]]:
    """The factors that must be shared by one table but differ between these runs, with their values."""
    seen: dict[str, list[str]] = {}
    for run in runs:
        f = factors(run)
        for key in COMPARABLE:
            if f[key] not in seen.setdefault(key, []):
                seen[key].append(f[key])
    return {key: values for key, values in seen.items() if len(values) > 1}


WIDTH = 110  # the card's lines fit a terminal, as the tables do


def render(block: dict[str, str], fmt: str) -> str:
    """The card as a text block: a Markdown list (github) or comment lines (latex %, csv #), wrapped to WIDTH."""
    mark = {"csv": "# ", "latex": "% "}.get(fmt, "- ")
    rest = "  " if mark == "- " else mark + "  "
    lines = [textwrap.fill(f"{FACTORS[key]}: {value}", WIDTH, initial_indent=mark, subsequent_indent=rest,
                           break_on_hyphens=False) for key, value in block.items()]
    return "\n".join(lines) if mark != "- " else "Protocol card:\n\n" + "\n".join(lines)
