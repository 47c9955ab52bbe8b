"""The scale harness (python -m bench.scale) measures every stage; here at a tiny size, for its shape."""

from __future__ import annotations

from bench import scale


def test_every_stage_is_measured_with_time_and_peak_memory(monkeypatch):
    monkeypatch.setattr(scale, "TRAIN_STEPS", 3)
    monkeypatch.setattr(scale, "RANK_USERS", 20)
    result = scale.measure(20_000, history=5, threads=1)
    stages = [s["stage"] for s in result["stages"]]
    assert stages == ["load (generate)", "split + encode + states", "negatives, one epoch",
                      "DeepFM training, one epoch, adam", "DeepFM training, one epoch, lazy_adam",
                      "DeepFM full ranking, all validation users"]
    assert all(s["seconds"] >= 0 and s["peak_rss_mb"] > 0 for s in result["stages"])
    assert (result["users"], result["items"]) == scale.shape(20_000)
    text = scale.table([result])
    assert "20,000 interactions" in text and "history 5" in text and "extrapolated" in text


def test_without_history_the_baselines_are_fitted_too(monkeypatch):
    monkeypatch.setattr(scale, "TRAIN_STEPS", 3)
    monkeypatch.setattr(scale, "RANK_USERS", 20)
    stages = [s["stage"] for s in scale.measure(20_000, history=0, threads=1)["stages"]]
    assert stages[-3:] == ["mostpop fit", "itemknn fit", "ease fit"]


def test_each_stages_peak_is_its_own_where_linux_can_reset_it():
    """A stage that frees a large block must not pass its peak on to the next stage's row."""
    import mmap

    if not scale.reset_peak_rss():
        assert scale.peak_rss_mb() > 0  # elsewhere: the process's peak so far
        return
    size = 300 * 2**20
    block = mmap.mmap(-1, size)  # mapped and unmapped here, whatever malloc keeps (bench kernel's mallopt)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    high = scale.peak_rss_mb()
    block.close()
    scale.reset_peak_rss()
    after = scale.peak_rss_mb()
    assert after < high - 250, (high, after)


def test_the_page_is_written_whole_after_each_size(tmp_path):
    """A 20M run takes most of an hour; the page is replaced atomically after each size, never half-written."""
    import argparse

    result = {"interactions": 1000, "users": 50, "items": 100, "history": 0, "threads": 1, "states": 60,
              "stages": [{"stage": "load (generate)", "seconds": 0.5, "peak_rss_mb": 300.0, "note": ""}]}
    page = tmp_path / "scale.md"
    args = argparse.Namespace(interactions="1000,2000", history="0", threads=1)
    scale.write_page(page, args, [result])
    text = page.read_text()
    assert text.startswith("# Scale") and "--interactions 1000,2000 --history 0 --threads 1" in text
    assert "1,000 interactions" in text and "| load (generate) |" in text.replace("  ", " ").replace("  ", " ")
    assert [p.name for p in tmp_path.iterdir()] == ["scale.md"]
