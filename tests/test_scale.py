"""The scale harness (python -m bench.scale) measures every stage; here at a tiny size, for its shape."""

from __future__ import annotations

from bench import scale


def test_every_stage_is_measured_with_time_and_peak_memory(monkeypatch):
    monkeypatch.setattr(scale, "TRAIN_STEPS", 3)
    monkeypatch.setattr(scale, "RANK_USERS", 20)
    result = scale.measure(20_000, history=5, threads=1)
    stages = [s["stage"] for s in result["stages"]]
    assert stages == ["load (generate)", "split + encode + states", "negatives, one epoch",
                      "DeepFM training, one epoch", "DeepFM full ranking, all validation users", "mostpop fit",
                      "itemknn fit", "ease fit"]
    assert all(s["seconds"] >= 0 and s["peak_rss_mb"] > 0 for s in result["stages"])
    assert (result["users"], result["items"]) == scale.shape(20_000)
    text = scale.table([result])
    assert "20,000 interactions" in text and "history 5" in text and "extrapolated" in text
