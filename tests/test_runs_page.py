"""The Runs page under AppTest: failed runs, readable names, one legend entry per run, filters,
tags and bulk delete (runs are written straight into a temporary store, as workers would)."""

from __future__ import annotations

import json

from metanlp.dashboard import state
from metanlp.dashboard.run_view import load_tags
from metanlp.engine import RunConfig
from metanlp.runs.store import RunStore
from tests.test_pages import TINY_SCRATCH, add_finished_run, assert_no_exception, button, page_test


def add_failed_run(folder, error: str = "Dataset 'nowhere' not found: pick one of clinc150, huffpost") -> str:
    store = RunStore(folder)
    config = RunConfig(method="maml", encoder="scratch", encoder_options=TINY_SCRATCH, train_steps=3)
    run_id = store.create_run(config, name="broken run")
    store.set_status(run_id, "failed", error=error, traceback="Traceback (most recent call last):\n  ...")
    return run_id


def add_bench_run(folder) -> str:
    store = RunStore(folder)
    config = RunConfig(method="protonet", dataset="huffpost", n_way=5, k_shot=1, seed=3, encoder="scratch",
                       encoder_options=TINY_SCRATCH, train_steps=2)
    run_id = store.create_run(config, name="bench:3460f1527b0f1521")
    store.add_events(run_id, [{"event": "step", "phase": "train", "step": 1, "support_loss": 1.0, "query_loss": 1.5,
                               "query_accuracy": 0.4}])
    store.set_status(run_id, "done")
    return run_id


def shown_text(app) -> str:
    """Every markdown-like text on the page, with markdown's escaping backslashes removed."""
    return " ".join(element.value for element in [*app.markdown, *app.caption, *app.error, *app.info]).replace("\\", "")


def runs_table(app):
    """The table of all runs (drawn once its toggle is on)."""
    if not app.toggle(key=state.RUNS_TABLE_SHOWN).value:
        app.toggle(key=state.RUNS_TABLE_SHOWN).set_value(True).run()
        assert_no_exception(app)
    return app.dataframe[0]


def chart(app) -> dict:
    charts = app.get("plotly_chart")
    assert charts, "no chart on the Runs page"
    return json.loads(charts[0].proto.spec)


def test_a_failed_run_shows_its_error_not_a_wait_for_steps(runs_dir):
    run_id = add_failed_run(runs_dir)
    app = page_test("runs")
    app.query_params["run"] = [run_id]
    app.run()
    assert_no_exception(app)
    text = shown_text(app)
    assert "Dataset 'nowhere' not found: pick one of clinc150, huffpost" in text
    assert "failed before its first training step" in text
    assert "No training steps recorded yet" not in text
    assert any(expander.label.startswith("Traceback") for expander in app.expander)
    table = runs_table(app)
    assert table.value.loc[table.value["id"] == run_id, "test accuracy"].isna().all()
    assert table.proto.placeholder == "—"  # shown as a dash, not "None"


def test_bench_runs_get_readable_names(runs_dir):
    run_id = add_bench_run(runs_dir)
    app = page_test("runs")
    app.run()
    assert_no_exception(app)
    assert app.multiselect(key=state.SELECTED_RUNS).value == [run_id]
    label = app.multiselect(key=state.SELECTED_RUNS).options[0]  # options come formatted
    assert label == f"bench · protonet · huffpost 5-way 1-shot · seed 3 · {run_id[:6]}"
    assert "bench · protonet · huffpost 5-way 1-shot · seed 3" in shown_text(app)
    assert "3460f1527b0f1521" not in shown_text(app)


def test_compared_runs_have_one_legend_entry_each(runs_dir):
    _, first = add_finished_run(runs_dir, steps=4)
    _, second = add_finished_run(runs_dir, steps=3)
    app = page_test("runs")
    app.query_params["run"] = [first, second]
    app.run()
    assert_no_exception(app)
    entries = [trace for trace in chart(app)["data"] if trace.get("showlegend") is not False]
    runs = [entry for entry in entries if entry.get("legendgroup") != "line style"]
    assert [entry["legendgroup"] for entry in runs] == [f"curves <b>test</b> · {first[:6]}",
                                                          f"curves <b>test</b> · {second[:6]}"]
    assert len({entry["line"]["color"] for entry in runs}) == 2
    assert {"query loss", "support loss", "query accuracy"} <= {
        entry["name"] for entry in entries if entry.get("legendgroup") == "line style"
    }


def test_the_page_reads_the_metrics_of_the_shown_runs_only(runs_dir, monkeypatch):
    ids = [add_finished_run(runs_dir, steps=3)[1] for _ in range(4)]
    read = []
    original = RunStore.metrics
    monkeypatch.setattr(RunStore, "metrics", lambda self, run_id, *args, **kw: read.append(run_id) or original(self, run_id, *args, **kw))
    app = page_test("runs")
    app.run()
    assert_no_exception(app)
    assert app.get("plotly_chart")
    assert set(read) == {ids[-1]}  # the newest run, shown by default; the list itself needs no metrics
    assert not app.dataframe  # the table of all runs waits until it is asked for


def test_filters_narrow_the_list(runs_dir):
    _, done = add_finished_run(runs_dir)
    failed = add_failed_run(runs_dir)
    app = page_test("runs")
    app.run()
    assert len(app.multiselect(key=state.SELECTED_RUNS).options) == 2 and len(runs_table(app).value) == 2
    app.multiselect(key=f"{state.RUNS_FILTERS}status").set_value(["failed"]).run()
    assert_no_exception(app)
    assert list(runs_table(app).value["id"]) == [failed]
    assert app.multiselect(key=state.SELECTED_RUNS).value == [failed]
    assert any("1 of 2 runs match" in caption.value for caption in app.caption)
    app.multiselect(key=f"{state.RUNS_FILTERS}status").set_value([]).run()
    app.text_input(key=f"{state.RUNS_FILTERS}text").set_value("curves").run()
    assert list(runs_table(app).value["id"]) == [done]
    app.text_input(key=f"{state.RUNS_FILTERS}text").set_value("no such run").run()
    assert_no_exception(app)
    assert any("No run matches" in info.value for info in app.info)


def test_runs_can_be_tagged_and_filtered_by_tag(runs_dir):
    _, first = add_finished_run(runs_dir)
    _, second = add_finished_run(runs_dir)
    app = page_test("runs")
    app.run()
    app.multiselect(key=state.RUNS_MANAGED).set_value([first]).run()
    app.text_input(key=state.RUNS_TAG_INPUT).set_value("baseline").run()
    button(app, "Add tag").click().run()
    assert_no_exception(app)
    assert load_tags(runs_dir) == {first: ["baseline"]}
    app.multiselect(key=f"{state.RUNS_FILTERS}tag").set_value(["baseline"]).run()
    assert list(runs_table(app).value["id"]) == [first]
    assert list(runs_table(app).value["tags"]) == ["baseline"]


def test_bulk_delete_asks_first_then_removes_the_picked_runs(runs_dir):
    _, keep = add_finished_run(runs_dir)
    _, first = add_finished_run(runs_dir)
    second = add_failed_run(runs_dir)
    app = page_test("runs")
    app.run()
    app.multiselect(key=state.RUNS_MANAGED).set_value([first, second]).run()
    button(app, "Delete 2 run(s)…").click().run()
    assert_no_exception(app)
    assert any("Delete 2 run(s)" in warning.value for warning in app.warning)
    assert len(RunStore(runs_dir).list_runs()) == 3  # nothing deleted before the confirmation
    button(app, "Yes, delete 2 run(s)").click().run()
    assert_no_exception(app)
    assert [record.id for record in RunStore(runs_dir).list_runs()] == [keep]
    assert app.multiselect(key=state.RUNS_MANAGED).value == []


def test_bulk_delete_can_be_called_off(runs_dir):
    _, first = add_finished_run(runs_dir)
    app = page_test("runs")
    app.run()
    app.multiselect(key=state.RUNS_MANAGED).set_value([first]).run()
    button(app, "Delete 1 run(s)…").click().run()
    button(app, "Keep them").click().run()
    assert_no_exception(app)
    assert [record.id for record in RunStore(runs_dir).list_runs()] == [first]
    assert not app.warning


def test_on_an_open_network_without_a_token_runs_cannot_be_tagged_or_deleted(runs_dir, monkeypatch):
    from streamlit import config as streamlit_config

    from metanlp.dashboard.access import TOKEN_VARIABLE

    _, run_id = add_finished_run(runs_dir)
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "0.0.0.0")
    try:
        app = page_test("runs")
        app.run()
        app.multiselect(key=state.RUNS_MANAGED).set_value([run_id]).run()
    finally:
        streamlit_config.set_option("server.address", before)
    assert_no_exception(app)
    assert all(button(app, label).disabled for label in ("Add tag", "Remove tag", "Delete 1 run(s)…"))


def test_a_failed_run_can_be_retried_from_the_page(runs_dir):
    from metanlp.runs.resume import retry_link

    run_id = add_failed_run(runs_dir)
    app = page_test("runs")
    app.query_params["run"] = [run_id]
    app.run()
    assert_no_exception(app)
    assert not [element for element in app.button if element.label.startswith("Resume at step")]  # nothing saved
    button(app, "Retry").click().run()
    assert_no_exception(app)
    store = RunStore(runs_dir)
    retries = [record for record in store.list_runs() if record.id != run_id]
    assert len(retries) == 1 and retries[0].name == "broken run (retry)"
    assert retry_link(store, retries[0].id) == {"retry_of": run_id}
    assert f"Retry of run {run_id}" in shown_text(app).replace("`", "")  # the page now shows the new run


def test_two_runs_are_compared_by_the_settings_that_differ(runs_dir):
    from metanlp.dashboard.run_view import config_diff, runs_metrics_csv

    store = RunStore(runs_dir)
    base = dict(method="protonet", encoder="scratch", encoder_options=TINY_SCRATCH, train_steps=3)
    first = store.create_run(RunConfig(**base), name="first")
    second = store.create_run(RunConfig(**base, k_shot=5, method_options={"distance": "cosine", "lr": 0.0001}),
                              name="second")
    records = [store.get_run(first), store.get_run(second)]
    diff = config_diff(records).set_index("setting")
    assert set(diff.index) == {"k_shot", "option: distance"}  # lr=1e-4 is the default: not a difference
    assert list(diff.loc["option: distance"]) == ["euclidean", "cosine"]
    for run_id in (first, second):
        store.add_events(run_id, [{"event": "step", "phase": "train", "step": 1, "support_loss": 1.0,
                                   "query_loss": 1.5, "query_accuracy": 0.4}])
    exported = runs_metrics_csv(records, {run_id: store.metrics(run_id) for run_id in (first, second)}).decode()
    assert exported.splitlines()[0].startswith("run_id,run_name,") and f"{second},second," in exported

    app = page_test("runs")
    app.query_params["run"] = [first, second]
    app.run()
    assert_no_exception(app)
    shown = [frame.value for frame in app.dataframe]
    assert any(list(frame["setting"]) == ["k_shot", "option: distance"] for frame in shown if "setting" in frame)


def test_curves_can_be_drawn_against_wall_clock_seconds(runs_dir):
    from metanlp.dashboard.charts import WALL_CLOCK, training_curves

    store, run_id = add_finished_run(runs_dir, steps=4)  # step k at 0.1·k seconds
    store.add_events(run_id, [{"event": "validation", "step": 2, "query_accuracy": 0.5, "ci95": 0.1}])
    figure = training_curves({"run": store.metrics(run_id)}, {"run": store.validation(run_id)}, 0, WALL_CLOCK)
    query = next(trace for trace in figure.data if trace.name == "query loss")
    assert list(query.x) == [0.1, 0.2, 0.3, 0.4] and figure.layout.xaxis.title.text == "seconds since the run started"
    validation = next(trace for trace in figure.data if trace.name == "validation accuracy")
    assert list(validation.x) == [0.2]  # the time of the step it follows
    app = page_test("runs")
    app.query_params["run"] = [run_id]
    app.run()
    app.radio(key="runs_x_axis").set_value(WALL_CLOCK).run()
    assert_no_exception(app)
    spec = chart(app)
    assert spec["layout"]["xaxis"]["title"]["text"] == "seconds since the run started"
