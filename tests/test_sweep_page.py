"""The Sweep page: renders empty, starts the CLI's sweep in the background, shows a stored study with its charts."""

from __future__ import annotations

import dataclasses

import pytest
from streamlit.testing.v1 import AppTest

from metanlp.dashboard import sweep_view
from metanlp.dashboard.sweep_view import params_from_frame, space_frame, sweep_arguments
from metanlp.engine.config import ConfigError
from metanlp.runs import RunStore
from metanlp.runs.manager import RunManager
from metanlp.sweeps.runner import run_sweep
from metanlp.sweeps.space import default_space
from tests.test_pages import ROOT, assert_no_exception, button
from tests.test_sweeps import spec


def sweep_page() -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    app.switch_page("pages/7_Sweep.py")
    return app


def test_the_space_table_round_trips_and_is_checked():
    space = default_space("maml")
    assert params_from_frame("maml", space_frame(space)) == space
    frame = space_frame(space)
    frame.loc[0, "high"] = 50.0  # lr accepts at most 1
    with pytest.raises(ConfigError, match="accepts"):
        params_from_frame("maml", frame)
    arguments = sweep_arguments("/tmp/r", "s1", spec("s1").base, space, 3, 1, 4)
    assert arguments[:3] == ["-m", "metanlp", "sweep"] and arguments.count("--param") == len(space)
    with pytest.raises(ConfigError, match="name"):
        sweep_arguments("/tmp/r", "../evil", spec("s1").base, space, 3, 1, 4)


def test_the_page_starts_a_sweep_in_the_background(runs_dir, monkeypatch):
    started = []
    monkeypatch.setattr("metanlp.dashboard.background.start_job", lambda root, key, args: started.append(args) or True)
    app = sweep_page()
    app.run()
    assert_no_exception(app)
    assert any("No sweep yet" in info.value for info in app.info)
    next(box for box in app.selectbox if box.label == "Encoder").set_value("scratch")
    app.run()
    button(app, "Launch the sweep").click()
    app.run()
    assert_no_exception(app)
    assert len(started) == 1 and started[0][2] == "sweep" and "--trials" in started[0]


def test_a_stored_sweep_shows_its_trials_charts_and_best(runs_dir):
    store = RunStore(runs_dir)
    with RunManager(store, max_concurrent=1, preload=(), warm=False) as manager:
        run_sweep(dataclasses.replace(spec("page-sweep"), trials=3), store, manager, poll=0.2)
    assert sweep_view.sweep_names(runs_dir) == ["page-sweep"]
    app = sweep_page()
    app.run()
    assert_no_exception(app)
    table = next(frame.value for frame in app.dataframe if "validation accuracy" in frame.value)
    assert len(table) == 3 and set(table["state"]) <= {"complete", "pruned"}
    assert app.get("plotly_chart"), "Optuna's charts are drawn"
    button(app, "Launch the best configuration as a normal run").click()
    app.run()
    assert_no_exception(app)
    best = [record for record in store.list_runs() if record.name == "best of sweep page-sweep"]
    assert len(best) == 1 and best[0].config["eval_episodes"] == 4  # the sweep's test episodes
