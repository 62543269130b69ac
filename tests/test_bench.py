"""The bench: per-episode results in the store, resumable, paired statistics, the report."""

from __future__ import annotations

import pytest

from metanlp.bench import BenchSettings, bench_results, paired_results, run_bench
from metanlp.bench.report import write_report
from metanlp.evaluation import paired_comparison
from metanlp.runs import RunStore
from tests.conftest import TINY_ENCODER


@pytest.fixture(scope="module")
def bench_store(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("bench-runs"))
    settings = tiny_settings()
    report = run_bench(settings, store)
    assert not report.failed, report.failed
    assert len(report.computed) == 2 and not report.reused
    return store


def tiny_settings(**overrides) -> BenchSettings:
    values = {"methods": ("protonet", "finetune"), "datasets": ("clinc150",), "shots": (1,), "n_way": 3,
              "n_query": 2, "episodes": 6, "train_steps": 2, "encoder": "scratch", "encoder_options": TINY_ENCODER,
              "device": "cpu", "method_options": {"finetune": {"adapt_steps": 5}}}
    return BenchSettings(**{**values, **overrides})


def test_every_episode_is_stored_and_both_methods_saw_the_same(bench_store):
    results = bench_results(bench_store)
    assert sorted(results["method"]) == ["finetune", "protonet"]
    assert (results["episodes"] == 6).all()
    assert results["peak_memory_mb"].gt(0).all() and results["device"].str.startswith("CPU").all()
    configs = [bench_store.get_run(run_id).config for run_id in results["run_id"]]
    assert configs[0]["episodes_file"] == configs[1]["episodes_file"]
    for run_id in results["run_id"]:
        episodes = bench_store.episode_results(run_id)
        assert list(episodes["episode"]) == list(range(6))
        assert episodes["query_accuracy"].between(0, 1).all()


def test_second_run_reuses_instead_of_recomputing(bench_store, monkeypatch):
    import metanlp.engine.training as training

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(training, "run_training", must_not_train)
    before = len(bench_store.list_runs())
    report = run_bench(tiny_settings(), bench_store)
    assert len(report.reused) == 2 and not report.computed and not report.failed
    assert len(bench_store.list_runs()) == before


def test_an_interrupted_bench_continues_where_it_stopped(tmp_path):
    store = RunStore(tmp_path)
    first = run_bench(tiny_settings(methods=("protonet",)), store)  # as if stopped after one cell
    resumed = run_bench(tiny_settings(), store)
    assert resumed.reused == first.computed and len(resumed.computed) == 1


def test_paired_comparison_uses_the_stored_episodes(bench_store):
    results = bench_results(bench_store).set_index("method")
    proto, finetune = results.loc["protonet", "run_id"], results.loc["finetune", "run_id"]
    expected = paired_comparison(
        bench_store.episode_results(proto)["query_accuracy"].tolist(),
        bench_store.episode_results(finetune)["query_accuracy"].tolist(),
    )
    assert paired_results(bench_store, proto, finetune) == expected


def test_paired_comparison_refuses_different_tasks(tmp_path):
    store = RunStore(tmp_path)
    run_bench(tiny_settings(methods=("protonet",)), store)
    run_bench(tiny_settings(methods=("protonet",), shots=(2,)), store)
    one, two = bench_results(store)["run_id"]
    with pytest.raises(ValueError, match="k_shot"):
        paired_results(store, one, two)


def test_report_has_tables_and_charts(bench_store, tmp_path):
    results_file = tmp_path / "docs" / "results.md"
    results_file.parent.mkdir()
    results_file.write_text("# Results\n\nHand-written section that must survive.\n")
    write_report(bench_store, results_file, "Settings: tiny.")
    write_report(bench_store, results_file, "Settings: tiny.")  # idempotent: one bench section
    text = results_file.read_text()
    assert "Hand-written section that must survive." in text
    assert text.count("<!-- bench:start -->") == 1
    assert "| Prototypical Networks |" in text and "| Fine-tuning baseline [adapt_steps=5] |" in text
    chart = tmp_path / "docs" / "results" / "bench_clinc150_3way_1shot.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_bench_command_reports_its_own_cells_in_its_own_section(bench_store, tmp_path):
    from metanlp.bench.plan import cell_names

    run_bench(tiny_settings(episodes=4), bench_store)  # a second setting in the same store
    assert set(bench_results(bench_store)["episodes"]) == {4, 6}
    results_file = tmp_path / "results.md"
    write_report(bench_store, results_file, "six", cell_names(tiny_settings()), "bench-six")
    write_report(bench_store, results_file, "four", cell_names(tiny_settings(episodes=4)), "bench-four")
    text = results_file.read_text()
    six = text.split("<!-- bench-six:start -->")[1].split("<!-- bench-six:end -->")[0]
    four = text.split("<!-- bench-four:start -->")[1].split("<!-- bench-four:end -->")[0]
    assert "(6 test episodes)" in six and "(4 test episodes)" not in six
    assert "(4 test episodes)" in four and "(6 test episodes)" not in four
    assert six.count("| Prototypical Networks |") == 1 and four.count("| Prototypical Networks |") == 1
    assert (tmp_path / "results" / "bench-four_clinc150_3way_1shot.png").exists()


def test_test_sentences_are_embedded_once_before_any_cell_is_timed(monkeypatch):
    """A frozen pooled encoder: ``warm`` fills the cache that every later copy reads."""
    import metanlp.engine.training as training
    from metanlp.encoders import build_encoder
    from metanlp.encoders.cache import shared_cache

    monkeypatch.setattr(training, "build_encoder", lambda name, **options: build_encoder("scratch", **TINY_ENCODER))
    pool = training.EncoderPool()
    texts = ["book a flight", "what is my balance", "play jazz", "book a flight"]
    assert pool.warm("frozen-kind", {}, texts) > 0
    assert pool.warm("scratch", {}, texts) == 0.0  # a fresh random encoder per run: nothing to share
    copy = pool.get("frozen-kind", {}, seed=3)
    cache = shared_cache(copy)
    assert len(cache) == 3
    cache.embed(texts)
    assert cache.misses == 0 and cache.hits == len(texts)
