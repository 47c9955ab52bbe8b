"""The scale harness (python -m bench.scale) measures every stage; here at a tiny size, for its shape."""

from __future__ import annotations

from bench import scale


def test_every_stage_is_measured_with_time_and_peak_memory(monkeypatch):
    tiny(monkeypatch)
    result = scale.measure(20_000, history=5, threads=1)
    stages = [s["stage"] for s in result["stages"]]
    assert stages == ["load (generate)", "split + encode + states", "negatives, one epoch",
                      "DeepFM + mean training, one epoch, adam", "DeepFM + mean training, one epoch, lazy_adam",
                      "DeepFM + mean full ranking, all validation users",
                      "DeepFM + mean validation by default (--val-budget 0.25)"]
    assert all(s["seconds"] >= 0 and s["peak_rss_mb"] > 0 for s in result["stages"])
    ranking = result["stages"][5]["note"]
    assert "GFLOP/s in matmuls" in ranking and result["matmul_gflops"] > 0
    assert (result["users"], result["items"]) == scale.shape(20_000)
    text = scale.table([result])
    assert "20,000 interactions" in text and "history 5" in text and "extrapolated" in text


def tiny(monkeypatch):
    monkeypatch.setattr(scale, "TRAIN_STEPS", 3)
    monkeypatch.setattr(scale, "RANK_USERS", 20)
    monkeypatch.setattr(scale, "RANK_USERS_PAIRWISE", 10)
    monkeypatch.setattr(scale, "FLOP_USERS", 5)


def test_without_history_the_baselines_are_fitted_too(monkeypatch):
    tiny(monkeypatch)
    stages = [s["stage"] for s in scale.measure(20_000, history=0, threads=1)["stages"]]
    assert stages[-3:] == ["mostpop fit", "itemknn fit", "ease fit"]
    assert "DeepFM training, one epoch, adam" in stages
    no_fits = [s["stage"] for s in scale.measure(20_000, history=0, threads=1, baselines=False)["stages"]]
    assert not any(s.endswith(" fit") for s in no_fits)
    assert "DeepFM full ranking, all validation users" in no_fits


def test_without_ranking_only_training_is_timed(monkeypatch):
    tiny(monkeypatch)
    stages = [s["stage"] for s in scale.measure(20_000, history=0, threads=1, baselines=False,
                                                ranking=False)["stages"]]
    assert "DeepFM training, one epoch, adam" in stages
    assert not any("ranking" in s or "validation" in s for s in stages)


def test_without_validation_ranking_is_still_timed(monkeypatch):
    tiny(monkeypatch)
    stages = [s["stage"] for s in scale.measure(20_000, history=0, threads=1, baselines=False,
                                                validation=False)["stages"]]
    assert "DeepFM full ranking, all validation users" in stages
    assert not any("by default" in s for s in stages)


def test_each_encoder_is_timed_on_the_same_windows(monkeypatch):
    """One split, then a training and a ranking per encoder; the target-aware one ranks fewer users."""
    tiny(monkeypatch)
    result = scale.measure(20_000, history=5, threads=1, encoders=("mean", "target", "gru"))
    stages = [s["stage"] for s in result["stages"]]
    assert stages.count("split + encode + states") == 1
    for encoder in ("mean", "target", "gru"):
        assert f"DeepFM + {encoder} training, one epoch, adam" in stages
        assert f"DeepFM + {encoder} full ranking, all validation users" in stages
    assert "DeepFM + target training, one epoch, lazy_adam" not in stages  # both optimizers for the first only
    notes = {s["stage"]: s["note"] for s in result["stages"]}
    assert notes["DeepFM + target full ranking, all validation users"].startswith("extrapolated from 10 of")
    assert notes["DeepFM + gru full ranking, all validation users"].startswith("extrapolated from 20 of")


def test_the_global_split_is_measured_like_leave_one_out(monkeypatch):
    tiny(monkeypatch)
    result = scale.measure(20_000, history=0, threads=1, split="global", baselines=False)
    assert result["split"] == "global"
    assert result["stages"][1]["note"].startswith("global: ")
    assert "global split" in scale.table([result])


def test_with_encoder_changes_the_reader_and_nothing_else():
    import registry
    from bench.data.pipeline import prepare

    frames = registry.create("dataset", "synthetic", n_users=60, n_items=40, n_interactions=2_000).load()
    data = prepare(frames, history=5)
    gru = scale.with_encoder(data, "gru")
    assert gru.spec.field("history").pooling == "gru" and data.spec.field("history").pooling == "mean"
    assert gru.train is data.train and gru.states is data.states


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
    result = {"interactions": 1000, "users": 50, "items": 100, "history": 0, "threads": 1, "states": 60,
              "stages": [{"stage": "load (generate)", "seconds": 0.5, "peak_rss_mb": 300.0, "note": ""}]}
    page = tmp_path / "scale.md"
    scale.write_page(page, [result], ["--interactions", "1000,2000", "--history", "0", "--threads", "1"])
    text = page.read_text()
    assert text.startswith("# Scale") and "bench.scale --interactions 1000,2000 --history 0 --threads 1" in text
    assert "1,000 interactions" in text and "| load (generate) |" in text.replace("  ", " ").replace("  ", " ")
    assert [p.name for p in tmp_path.iterdir()] == ["scale.md"]
