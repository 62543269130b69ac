"""The Leaderboard's quick bench: the CLI's own bench in the background, one at a time, its progress counted."""

from __future__ import annotations

import time

from metanlp.bench.plan import cell_names, runs_on
from metanlp.cli import bench_settings_from_args, build_parser
from metanlp.dashboard import quick_bench
from metanlp.dashboard.quick_bench import quick_bench_arguments, quick_bench_status, start_quick_bench
from metanlp.methods import method_names
from tests.test_leaderboard_page import leaderboard
from tests.test_pages import assert_no_exception, button


def test_the_page_counts_the_cells_the_command_runs(tmp_path):
    arguments = quick_bench_arguments(tmp_path)
    assert arguments[:3] == ["-m", "metanlp", "bench"] and "--no-report" in arguments  # never rewrites the docs
    settings = bench_settings_from_args(build_parser().parse_args(arguments[2:]))
    status = quick_bench_status(tmp_path)
    every_method_that_runs_there = [method for method in method_names() if runs_on(method, "clinc150")]
    assert status.total == len(cell_names(settings)) == len(every_method_that_runs_there) and status.done == 0


def test_one_quick_bench_at_a_time_in_the_background(tmp_path, monkeypatch):
    monkeypatch.setattr(quick_bench, "quick_bench_arguments", lambda root: ["-c", "import time; time.sleep(3)"])
    assert start_quick_bench(tmp_path)
    assert quick_bench_status(tmp_path).running
    assert not start_quick_bench(tmp_path)  # the first is still running
    deadline = time.monotonic() + 30
    while quick_bench_status(tmp_path).running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not quick_bench_status(tmp_path).running


def test_an_empty_leaderboard_offers_the_quick_bench(runs_dir, monkeypatch):
    started = []
    monkeypatch.setattr(quick_bench, "start_quick_bench", lambda root: started.append(root) or True)
    app = leaderboard()
    app.run()
    assert_no_exception(app)
    assert any("No bench results in this runs folder yet" in info.value for info in app.info)
    button(app, "Run a quick bench here").click()
    app.run()
    assert_no_exception(app)
    assert len(started) == 1


def test_the_leaderboard_shows_shipped_results_until_there_are_own_ones(runs_dir, tmp_path, monkeypatch):
    """The project's exported rows fill an empty Leaderboard (no paired comparison); a user's own bench replaces them."""
    from metanlp.bench import run_bench
    from metanlp.bench.results import bench_results, export_results, load_exported_results
    from metanlp.dashboard import leaderboard as leaderboard_module
    from metanlp.runs import RunStore
    from tests.test_bench import tiny_settings

    source = RunStore(tmp_path / "project-runs")
    run_bench(tiny_settings(), source)
    shipped = tmp_path / "shipped.json"
    export_results(bench_results(source), shipped, "python -m metanlp bench --tiny", "a test machine")
    rows, about = load_exported_results(shipped)
    assert set(rows["title"]) == set(bench_results(source)["title"]) and about["machine"] == "a test machine"
    monkeypatch.setattr(leaderboard_module, "SHIPPED_RESULTS", shipped)

    app = leaderboard()
    app.run()
    assert_no_exception(app)
    assert any("Results shipped with metanlp" in header.value for header in app.subheader)
    assert any("Prototypical Networks" in set(frame.value["method"]) for frame in app.dataframe)
    assert not any("Paired comparison" in header.value for header in app.subheader)

    run_bench(tiny_settings(), RunStore(runs_dir))  # the user's own bench
    app = leaderboard()
    app.run()
    assert_no_exception(app)
    assert not any("Results shipped" in header.value for header in app.subheader)
    assert any("Paired comparison" in header.value for header in app.subheader)
