"""The bench: per-episode results in the store, resumable, paired statistics, the report."""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest

from metanlp.bench import (
    BenchSettings,
    bench_configs,
    bench_results,
    paired_results,
    quick_settings,
    run_bench,
)
from metanlp.bench.plan import cell_key, cell_names, seed_group_key
from metanlp.bench.report import write_report
from metanlp.bench.results import cell_results
from metanlp.engine import ConfigError
from metanlp.evaluation import EpisodeMismatch, mean_and_ci95, paired_comparison
from metanlp.runs import RunStore
from tests.conftest import TINY_ENCODER

SEEDS = 2


@pytest.fixture(scope="module")
def bench_store(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("bench-runs"))
    report = run_bench(tiny_settings(seeds=SEEDS), store)
    assert not report.failed, report.failed
    # ProtoNet meta-trains the scratch encoder: one cell per seed. Fine-tuning on a frozen encoder
    # has nothing to meta-learn: one run, its other seed skipped.
    assert len(report.computed) == SEEDS + 1 and len(report.single_run) == SEEDS - 1 and not report.reused
    return store


def tiny_settings(**overrides) -> BenchSettings:
    """ProtoNet meta-trains (scratch encoder); fine-tuning on a frozen encoder does not. One seed."""
    values = {"methods": ("protonet", "finetune"), "datasets": ("clinc150",), "shots": (1,), "n_way": 3,
              "n_query": 2, "episodes": 6, "train_steps": 2, "seeds": 1, "encoder": "scratch",
              "encoder_options": TINY_ENCODER, "device": "cpu",
              "method_options": {"finetune": {"adapt_steps": 5, "finetune": "frozen"}}}
    return BenchSettings(**{**values, **overrides})


FINETUNE_TITLE = "Fine-tuning baseline [adapt_steps=5, finetune=frozen]"


def test_every_episode_is_stored_and_both_methods_saw_the_same(bench_store):
    cells = cell_results(bench_store)
    assert sorted(cells["method"]) == ["finetune"] + ["protonet"] * SEEDS
    assert (cells["episodes"] == 6).all()
    assert cells["peak_memory_mb"].gt(0).all() and cells["device"].str.startswith("CPU").all()
    configs = [bench_store.get_run(run_id).config for run_id in cells["run_id"]]
    assert len({config["episodes_file"] for config in configs}) == 1
    assert cells["episodes_hash"].str.len().eq(16).all() and cells["episodes_hash"].nunique() == 1
    for run_id in cells["run_id"]:
        episodes = bench_store.episode_results(run_id)
        assert list(episodes["episode"]) == list(range(6))
        assert episodes["query_accuracy"].between(0, 1).all()


def test_second_run_reuses_instead_of_recomputing(bench_store, monkeypatch):
    import metanlp.engine.training as training

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(training, "run_training", must_not_train)
    before = len(bench_store.list_runs())
    report = run_bench(tiny_settings(seeds=SEEDS), bench_store)
    assert len(report.reused) == SEEDS + 1 and len(report.single_run) == SEEDS - 1
    assert not report.computed and not report.failed
    assert len(bench_store.list_runs()) == before


def test_a_meta_trained_row_pools_its_seeds_and_reports_their_spread(bench_store):
    cells = cell_results(bench_store).set_index(["method", "seed"])
    results = bench_results(bench_store).set_index("method")
    proto = results.loc["protonet"]
    assert proto["seeds"] == SEEDS and proto["meta_trained"] and proto["meta_learned_parameters"] > 0
    seed_accuracies = [cells.loc[("protonet", seed), "accuracy"] for seed in range(SEEDS)]
    assert seed_accuracies[0] != seed_accuracies[1]  # different training seeds, different models
    assert proto["accuracy"] == pytest.approx(sum(seed_accuracies) / SEEDS)
    assert proto["seed_sd"] == pytest.approx(statistics.stdev(seed_accuracies))
    assert (proto["seed_min"], proto["seed_max"]) == (min(seed_accuracies), max(seed_accuracies))
    per_episode = [
        [bench_store.episode_results(cells.loc[("protonet", seed), "run_id"])["query_accuracy"][e]
         for seed in range(SEEDS)]
        for e in range(6)
    ]
    _, expected_ci = mean_and_ci95([sum(values) / SEEDS for values in per_episode])
    assert proto["ci95"] == pytest.approx(100 * expected_ci)
    finetune = results.loc["finetune"]
    assert finetune["seeds"] == 1 and not finetune["meta_trained"]
    assert finetune["meta_training"] == "no meta-training in this configuration"


def test_every_row_is_compared_with_protonet_on_the_same_episodes(bench_store):
    results = bench_results(bench_store).set_index("method")
    cells = cell_results(bench_store)
    proto_runs = cells.loc[cells["method"] == "protonet", "run_id"].tolist()
    finetune_run = cells.loc[cells["method"] == "finetune", "run_id"].item()
    accuracies = [bench_store.episode_results(run)["query_accuracy"].tolist() for run in proto_runs]
    proto_pooled = [sum(values) / len(values) for values in zip(*accuracies, strict=True)]
    expected = paired_comparison(bench_store.episode_results(finetune_run)["query_accuracy"].tolist(), proto_pooled)
    assert results.loc["finetune", "vs_reference"] == pytest.approx(100 * expected.mean_difference)
    assert results.loc["finetune", "vs_reference_ci95"] == pytest.approx(100 * expected.ci95)
    assert math.isnan(results.loc["protonet", "vs_reference"])  # the reference itself


def test_an_interrupted_bench_continues_where_it_stopped(tmp_path):
    store = RunStore(tmp_path)
    first = run_bench(tiny_settings(methods=("protonet",)), store)  # as if stopped after one cell
    resumed = run_bench(tiny_settings(), store)
    assert resumed.reused == first.computed and len(resumed.computed) == 1


def test_paired_comparison_uses_the_stored_episodes(bench_store):
    results = cell_results(bench_store).set_index(["method", "seed"])
    proto, finetune = results.loc[("protonet", 0), "run_id"], results.loc[("finetune", 0), "run_id"]
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
    with pytest.raises(EpisodeMismatch, match="different ones.*differ in k_shot"):
        paired_results(store, one, two)


def test_paired_comparison_compares_episode_content_not_paths(tmp_path):
    """Same config, same number of episodes, different episode files: refused; a copy: accepted."""
    import os

    from metanlp.data.episodes import EpisodeSampler, save_episodes
    from metanlp.data.registry import examples_for_split, load_dataset
    from metanlp.engine import RunConfig
    from metanlp.runs.worker import execute_run

    sampler = EpisodeSampler.from_examples(examples_for_split(load_dataset("clinc150"), "test"), 3, 1, 2, seed=5)
    first, second = sampler.take(4), sampler.take(4)
    files = {
        "first": save_episodes(first, tmp_path / "first.json"),
        "second": save_episodes(second, tmp_path / "second.json"),
        "copy of first": save_episodes(first, tmp_path / "elsewhere" / "copy.json.gz"),
    }
    store = RunStore(tmp_path / "runs")
    runs = {}
    for label, path in files.items():
        config = RunConfig(method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=0,
                           episodes_file=str(path), encoder="scratch", encoder_options=TINY_ENCODER, device="cpu")
        runs[label] = store.create_run(config, label, claimed_by=os.getpid())
        assert execute_run(store, runs[label]) == "done"
    with pytest.raises(EpisodeMismatch, match="evaluated on different ones"):
        paired_results(store, runs["first"], runs["second"])
    same = paired_results(store, runs["first"], runs["copy of first"])
    assert same.episodes == 4 and same.mean_difference == 0.0


def test_report_has_tables_and_charts(bench_store, tmp_path):
    results_file = tmp_path / "docs" / "results.md"
    results_file.parent.mkdir()
    results_file.write_text("# Results\n\nHand-written section that must survive.\n")
    write_report(bench_store, results_file, "Settings: tiny.")
    write_report(bench_store, results_file, "Settings: tiny.")  # idempotent: one bench section
    text = results_file.read_text()
    assert "Hand-written section that must survive." in text
    assert text.count("<!-- bench:start -->") == 1
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    proto_parameters = bench_results(bench_store).set_index("method").loc["protonet", "meta_learned_parameters"]
    assert f"| {int(proto_parameters):,} |" in rows["| Prototypical Networks"]
    assert f"| {SEEDS} seeds: sd " in rows["| Prototypical Networks"]
    assert "| reference |" in rows["| Prototypical Networks"]
    assert "no meta-training in this configuration" in rows[f"| {FINETUNE_TITLE}"]
    assert "no meta-training in this configuration" not in rows["| Prototypical Networks"]
    assert "1 run (not meta-trained" in rows[f"| {FINETUNE_TITLE}"]
    chart = tmp_path / "docs" / "results" / "bench_clinc150_3way_1shot.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_bench_command_reports_its_own_cells_in_its_own_section(bench_store, tmp_path):
    run_bench(tiny_settings(episodes=4), bench_store)  # a second setting in the same store
    assert set(bench_results(bench_store)["episodes"]) == {4, 6}
    results_file = tmp_path / "results.md"
    write_report(bench_store, results_file, "six", cell_names(tiny_settings(seeds=SEEDS)), "bench-six")
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


# ----------------------------------------------------------------- the plan


def test_each_method_gets_its_recommended_steps_unless_the_bench_fixes_them(monkeypatch):
    from metanlp.methods import get_method_class

    monkeypatch.setattr(get_method_class("protonet"), "recommended_train_steps", 123)
    monkeypatch.setattr(get_method_class("finetune"), "recommended_train_steps", 45)
    recommended = bench_configs(tiny_settings(train_steps=None))
    assert {config.method: config.train_steps for config in recommended} == {"protonet": 123, "finetune": 45}
    assert {config.train_steps for config in bench_configs(tiny_settings(train_steps=7))} == {7}
    assert cell_names(tiny_settings(train_steps=None)).isdisjoint(cell_names(tiny_settings(train_steps=7)))


def test_the_cell_key_hashes_resolved_options_so_a_changed_default_is_a_new_cell(monkeypatch):
    from metanlp.methods import get_method_class

    (config,) = bench_configs(tiny_settings(methods=("protonet",)))
    spelled_out = dataclasses.replace(config, method_options={**config.method_options, "distance": "euclidean"})
    assert cell_key(spelled_out) == cell_key(config)  # a default written out is the same cell
    protonet = get_method_class("protonet")
    changed = dataclasses.make_dataclass(
        "ChangedOptions", [("distance", str, dataclasses.field(default="cosine"))], bases=(protonet.Options,)
    )
    before = cell_key(config)
    monkeypatch.setattr(protonet, "Options", changed)
    assert cell_key(config) != before  # same config as given; its resolved options changed


def test_meta_training_methods_get_one_cell_per_seed_and_their_own_seed_option():
    configs = bench_configs(tiny_settings(methods=("protonet", "mann"), seeds=3, seed=10))
    assert [config.seed for config in configs if config.method == "protonet"] == [10, 11, 12]
    assert [config.method_options["seed"] for config in configs if config.method == "mann"] == [10, 11, 12]
    assert len({cell_key(config) for config in configs}) == 6
    assert len({seed_group_key(config) for config in configs}) == 2
    with pytest.raises(ConfigError, match="seeds"):
        bench_configs(tiny_settings(seeds=0))


def test_domain_adaptation_runs_only_where_a_target_domain_is_declared():
    settings = BenchSettings(methods=("protonet", "dann"), datasets=("clinc150", "huffpost", "fewrel"), shots=(1,),
                             seeds=1, splits={})
    configs = bench_configs(settings)
    assert {config.dataset for config in configs if config.method == "protonet"} == {"clinc150", "huffpost", "fewrel"}
    dann = [config for config in configs if config.method == "dann"]
    assert [config.dataset for config in dann] == ["fewrel"]
    assert dann[0].method_options["target_dataset"] == "fewrel_pubmed"


def test_fewrel_is_benched_on_every_class_split_by_default():
    settings = BenchSettings(methods=("protonet",), datasets=("fewrel", "clinc150"), shots=(1,), seeds=1)
    configs = bench_configs(settings)
    assert [config.split_id for config in configs if config.dataset == "fewrel"] == ["01", "02", "03", "04", "05"]
    assert [config.split_id for config in configs if config.dataset == "clinc150"] == [None]
    assert [config.split_id for config in bench_configs(quick_settings(methods=("protonet",)))] == [None] * 8
    with pytest.raises(ConfigError, match="no class split 09"):
        bench_configs(BenchSettings(methods=("protonet",), datasets=("clinc150",), splits={"clinc150": ("09",)}))


def test_a_dataset_on_several_splits_gets_per_split_rows_and_their_mean(tmp_path):
    store = RunStore(tmp_path / "runs")
    settings = tiny_settings(methods=("protonet",), datasets=("fewrel",), splits={"fewrel": ("01", "02")}, n_way=5,
                             episodes=4)
    assert len(run_bench(settings, store).computed) == 2
    results = bench_results(store).set_index("split")
    assert list(results.index) == ["01", "02", "mean of 2"]
    split_accuracies = results.loc[["01", "02"], "accuracy"]
    assert results.loc["mean of 2", "accuracy"] == pytest.approx(split_accuracies.mean())
    assert results.loc["mean of 2", "split_min"] == split_accuracies.min()
    assert results.loc["mean of 2", "ci95"] == pytest.approx(
        math.sqrt((results.loc[["01", "02"], "ci95"] ** 2).sum()) / 2
    )
    write_report(store, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "fewrel, 5-way 1-shot (mean of 2 class splits, 4 test episodes each)" in text
    assert "Per class split:" in text
    published = next(line for line in text.splitlines() if line.startswith("Published"))
    assert "Proto-CNN" in published and "FewRel's 64 training relations" in published
    assert "sees 8 relations" in published


def test_the_command_line_names_class_splits_per_dataset():
    import argparse

    from metanlp.cli import parse_splits

    assert parse_splits("fewrel=01, 03") == ("fewrel", ("01", "03"))
    assert parse_splits("fewrel=all") == ("fewrel", ("all",))
    assert parse_splits("fewrel=default") == ("fewrel", ())
    with pytest.raises(argparse.ArgumentTypeError, match="DATASET=IDS"):
        parse_splits("fewrel")


def test_report_only_writes_what_has_finished_and_says_what_is_missing(tmp_path, capsys):
    from metanlp.cli import main

    runs, report = str(tmp_path / "runs"), tmp_path / "results.md"
    common = ["bench", "--quick", "--methods", "protonet,finetune", "--datasets", "clinc150", "--shots", "1",
              "--encoder", "scratch", "--device", "cpu", "--runs-dir", runs, "--no-progress"]
    assert main([*common, "--report-only", "--report", str(report)]) == 0
    assert "0 of 2 cells finished" in capsys.readouterr().out
    assert "No bench results in the store yet" in report.read_text()
    assert main(["bench", "--quick", "--methods", "protonet", "--datasets", "clinc150", "--shots", "1", "--encoder",
                 "scratch", "--device", "cpu", "--runs-dir", runs, "--no-progress", "--no-report"]) == 0
    assert main([*common, "--report-only", "--report", str(report)]) == 0
    text = report.read_text()
    assert "Partial: 1 of the 2 cells it needs" in text and "| Prototypical Networks |" in text
    assert main([*common, "--report-only", "--no-report"]) == 2  # nothing to do: refused clearly


def test_a_user_file_is_benched_like_a_built_in_dataset(tmp_path, capsys):
    from pathlib import Path

    from metanlp.cli import main

    data = tmp_path / "intents.csv"
    data.write_bytes((Path(__file__).resolve().parents[1] / "examples" / "intents.csv").read_bytes())
    runs, report = str(tmp_path / "runs"), tmp_path / "results.md"
    command = ["bench", "--quick", "--methods", "protonet,matching", "--data-file", str(data), "--text-column",
               "sentence", "--label-column", "intent", "--shots", "1", "--encoder", "scratch", "--device", "cpu",
               "--episodes", "6", "--train-steps", "3", "--runs-dir", runs, "--no-progress", "--report", str(report)]
    assert main(command) == 2  # 10 sentences a class cannot give 5-way episodes with 5 queries: said up front
    assert "Use at most 3 queries per class" in capsys.readouterr().err
    command += ["--n-query", "3"]
    assert main(command) == 0
    assert "2 cells computed, 0 reused" in capsys.readouterr().out
    text = report.read_text()
    assert "#### user, 5-way 1-shot" in text and "| Prototypical Networks |" in text and "--data-file" in text
    assert main(command) == 0 and "0 cells computed, 2 reused" in capsys.readouterr().out
    data.write_text(data.read_text() + "one more sentence about the weather,weather\n")  # new content: new cells
    assert main(command) == 0 and "2 cells computed, 0 reused" in capsys.readouterr().out
    assert main(["bench", "--data-file", str(data), "--datasets", "clinc150", "--report-only", "--runs-dir", runs]) == 2


def test_cells_run_under_a_methods_earlier_defaults_are_never_pooled_with_todays(bench_store, monkeypatch):
    """A changed default changes every cell's key: the old cells stay visible, labelled, in their own row."""
    from metanlp.bench import plan
    from metanlp.bench.results import EARLIER_DEFAULTS, bench_results

    today = bench_results(bench_store)
    assert not today["variant"].str.contains(EARLIER_DEFAULTS).any()
    resolve = plan.resolved_method_options

    def protonet_default_changed(method: str, options: dict) -> dict:
        resolved = resolve(method, options)
        return {**resolved, "a_new_option": 1} if method == "protonet" else resolved

    monkeypatch.setattr(plan, "resolved_method_options", protonet_default_changed)
    later = bench_results(bench_store)
    protonet = later[later["method"] == "protonet"]
    assert (protonet["variant"] == EARLIER_DEFAULTS).all()
    assert (protonet["title"] == f"Prototypical Networks [{EARLIER_DEFAULTS}]").all()
    finetune = later[later["method"] == "finetune"]
    assert set(finetune["title"]) == {FINETUNE_TITLE}


def test_a_cell_another_process_finished_meanwhile_is_reused_not_recomputed(bench_store, monkeypatch):
    """Two bench commands on one store: the list read at the start is stale by the time a cell comes up."""
    from metanlp.bench import runner

    read = runner.finished_cells
    calls = []

    def stale_at_start(store):
        calls.append(store)
        return {} if len(calls) == 1 else read(store)  # the first read predates the other process's cells

    monkeypatch.setattr(runner, "finished_cells", stale_at_start)
    report = run_bench(tiny_settings(seeds=SEEDS), bench_store)
    assert not report.computed and not report.failed
    assert len(report.reused) == SEEDS + 1
