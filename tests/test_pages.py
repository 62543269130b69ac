"""Every dashboard page under Streamlit's AppTest: renders, launches, draws, and refuses bad input.

One page per AppTest, each run through ``app.py`` (its navigation registers the pages, so page
links resolve). Runs go to a temporary ``METANLP_RUNS_DIR``; the run manager started by a page
is shut down after each test. Pages that load MiniLM get a generous timeout.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from metanlp.engine import RunConfig
from metanlp.runs.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 90  # seconds: the first page that loads MiniLM pays its import and load
PAGES = {
    "home": None,
    "train": "pages/1_Train.py",
    "runs": "pages/2_Runs.py",
    "attention": "pages/3_Attention.py",
    "live": "pages/4_Live_adaptation.py",
    "episodes": "pages/5_Episodes.py",
}
TINY_SCRATCH = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "feedforward_size": 64, "max_length": 24}




def plotly_values(array) -> list[float]:
    """A trace's numbers from a figure's JSON (Plotly may pack them as base64 ``bdata``)."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def page_test(name: str) -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if PAGES[name]:
        app.switch_page(PAGES[name])
    return app


def assert_no_exception(app: AppTest) -> None:
    assert not app.exception, [exception.value for exception in app.exception]


def widget(elements, label_start: str):
    matches = [element for element in elements if element.label.startswith(label_start)]
    assert matches, f"no widget labelled {label_start!r}: {[element.label for element in elements]}"
    return matches[0]


def button(app: AppTest, label: str):
    return next(element for element in app.button if element.label == label)


def column_holding(app: AppTest, label_start: str):
    """The layout column that holds the number input labelled ``label_start``."""
    for column in app.columns:
        if any(element.label.startswith(label_start) for element in column.number_input):
            return column
    raise AssertionError(f"no column holds {label_start!r}")


def add_finished_run(folder: Path, steps: int = 3, attention: bool = False) -> tuple[RunStore, str]:
    """A run recorded straight into the store, as a worker would have done."""
    store = RunStore(folder)
    config = RunConfig(method="protonet", encoder="scratch", encoder_options=TINY_SCRATCH, train_steps=steps)
    run_id = store.create_run(config, name="curves <b>test</b>")
    store.set_status(run_id, "running")
    events = [
        {"event": "step", "phase": "train", "step": step, "support_loss": 1.0 / step, "query_loss": 2.0 / step,
         "query_accuracy": 0.2 * step, "lr": 1e-4, "elapsed": 0.1 * step}
        for step in range(1, steps + 1)
    ]
    events.append({"event": "progress", "stage": "train", "done": steps, "total": steps})
    if attention:
        tokens = ["[CLS]", "hello", "[SEP]"]
        uniform = [[[[1 / 3] * 3] * 3] * 2]  # 1 layer, 2 heads, 3 × 3
        events += [{"event": "attention", "step": step, "tokens": tokens, "attentions": uniform} for step in (0, steps)]
    store.add_events(run_id, events)
    store.set_evaluation(run_id, {"mean_accuracy": 0.5, "ci95": 0.05, "episodes": 10, "mean_query_loss": 1.2})
    store.set_status(run_id, "done")
    return store, run_id


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders(name, runs_dir):
    app = page_test(name)
    app.run()
    assert_no_exception(app)
    assert app.title, f"the {name} page drew no title"


def test_train_form_launches_a_run_into_the_store(runs_dir):
    from metanlp.dashboard import state

    app = page_test("train")
    app.run()
    widget(app.selectbox, "Encoder").set_value("scratch")
    widget(app.number_input, "Training steps").set_value(3)
    widget(app.number_input, "Test episodes").set_value(2)
    widget(app.text_input, "Run name").set_value("from the form")
    app.run()
    launch = button(app, "Launch")
    assert not launch.disabled
    launch.click()
    app.run()
    assert_no_exception(app)

    runs = RunStore(runs_dir).list_runs()
    assert len(runs) == 1
    record = runs[0]
    assert record.name == "from the form"
    assert record.config["encoder"] == "scratch"
    assert record.config["train_steps"] == 3 and record.config["eval_episodes"] == 2
    assert record.config["method"] == "protonet" and record.config["dataset"] == "clinc150"
    assert app.session_state[state.LAST_LAUNCHED] == record.id
    assert any(link.label == "Watch it on the Runs page" for link in app.get("page_link"))


def test_runs_page_draws_the_curves_of_a_run(runs_dir):
    _, run_id = add_finished_run(runs_dir, steps=3)
    app = page_test("runs")
    app.run()
    assert_no_exception(app)
    charts = app.get("plotly_chart")
    assert charts, "no Plotly chart on the Runs page"
    figure = json.loads(charts[0].proto.spec)
    names = {trace.get("name") for trace in figure["data"]}
    assert {"support loss", "query loss", "query accuracy"} <= names
    query = next(trace for trace in figure["data"] if trace.get("name") == "query loss")
    assert len(query["x"]["bdata"] if isinstance(query["x"], dict) else query["x"]) > 0
    assert any("50.00%" in str(metric.value) for metric in app.metric)  # the stored test accuracy
    # The user-chosen name is shown as text, not as HTML.
    shown = " ".join(markdown.value for markdown in app.markdown)
    assert "<b>" not in shown and "test" in shown
    assert run_id in shown


def test_runs_page_ignores_malformed_run_ids_in_the_link(runs_dir):
    _, run_id = add_finished_run(runs_dir)
    app = page_test("runs")
    app.query_params["run"] = ["../../etc", run_id]
    app.run()
    assert_no_exception(app)
    from metanlp.dashboard import state

    assert app.multiselect(key=state.SELECTED_RUNS).value == [run_id]


def test_k_shot_too_large_is_reported_beside_the_field(runs_dir):
    app = page_test("train")
    app.run()
    widget(app.selectbox, "Dataset").set_value("reuters")
    widget(app.number_input, "K-shot").set_value(40)
    app.run()
    assert_no_exception(app)
    messages = [error.value for error in column_holding(app, "K-shot").error]
    assert messages and "K can be at most" in messages[0]
    assert button(app, "Launch").disabled
    assert RunStore(runs_dir).list_runs() == []


def test_bad_method_option_is_reported_beside_the_option(runs_dir):
    app = page_test("train")
    app.run()
    widget(app.number_input, "lr").set_value(5.0)
    app.run()
    messages = [error.value for error in app.error]
    assert any("lr" in message and "must be in" in message for message in messages)
    assert any("Method options" in warning.value for warning in app.warning)  # it sits in a folded section
    assert button(app, "Launch").disabled


def test_bad_upload_shows_its_problem_and_cannot_launch(runs_dir):
    app = page_test("train")
    app.run()
    widget(app.radio, "Source").set_value("Upload a CSV / JSONL file")
    app.run()
    app.file_uploader[0].set_value(("intents.csv", b"sentence,intent\nhello there,greet\n", "text/csv"))
    app.run()
    assert_no_exception(app)
    messages = " ".join(error.value for error in app.error)
    assert "no text column named" in messages and "sentence" in messages
    assert button(app, "Launch").disabled
    assert not (runs_dir / "uploads").exists()


def test_good_upload_is_previewed_and_stored_inside_the_runs_folder(runs_dir):
    # 3 classes of 20: a shared-class dataset whose examples split 16 / 4 per class (train / test).
    rows = ["text,label"] + [f"example {i} of class {c},class_{c}" for c in range(3) for i in range(20)]
    app = page_test("train")
    app.run()
    widget(app.radio, "Source").set_value("Upload a CSV / JSONL file")
    app.run()
    app.file_uploader[0].set_value(("../../evil name.csv", "\n".join(rows).encode(), "text/csv"))
    widget(app.number_input, "N-way").set_value(3)
    widget(app.number_input, "Queries per class").set_value(2)
    widget(app.selectbox, "Encoder").set_value("scratch")
    widget(app.number_input, "Training steps").set_value(2)
    widget(app.number_input, "Test episodes").set_value(2)
    app.run()
    assert_no_exception(app)
    assert app.dataframe, "no preview of the uploaded file"
    assert not app.error, [error.value for error in app.error]
    button(app, "Launch").click()
    app.run()
    assert_no_exception(app)
    record = RunStore(runs_dir).list_runs()[0]
    stored = Path(record.config["data_file"])
    assert record.config["dataset"] == "user"
    assert stored.parent == (runs_dir / "uploads").resolve() and stored.suffix == ".csv"
    assert stored.read_bytes() == "\n".join(rows).encode()


def save_trained_checkpoint(store: RunStore, run_id: str) -> None:
    """The checkpoint a worker would save: the run's starting encoder, changed by "training" (a perturbation)."""
    import torch

    from metanlp.engine.checkpoint import save_method
    from metanlp.engine.training import EncoderPool
    from metanlp.methods import create_method

    encoder = EncoderPool().get("scratch", TINY_SCRATCH, 0)
    method = create_method("protonet", encoder, {"finetune": "full"})
    weights = method.encoder.layers[0].attention.w_query.weight
    with torch.no_grad():
        weights.add_(torch.randn(weights.shape, generator=torch.Generator().manual_seed(0)))
    save_method(method, store.checkpoint_dir(run_id))


def attention_page_of_a_trained_run(runs_dir) -> tuple[AppTest, list[dict]]:
    """The Attention page opened on a finished run with a trained checkpoint, and its charts' specs."""
    store, run_id = add_finished_run(runs_dir, attention=True)
    save_trained_checkpoint(store, run_id)
    app = page_test("attention")
    app.run()
    assert_no_exception(app)
    return app, [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def test_attention_page_shows_a_run_before_after_and_snapshots(runs_dir):
    app, charts = attention_page_of_a_trained_run(runs_dir)
    titles = [chart["layout"].get("title", {}).get("text", "") for chart in charts]
    titles += [note["text"] for chart in charts for note in chart["layout"].get("annotations", [])]
    assert any(title.startswith("Before training") for title in titles)
    assert any(title.startswith("After training") for title in titles)
    assert any(title.startswith("Change") for title in titles)  # the weights moved, so attention did
    assert any(title.startswith("Step") for title in titles)  # the stored snapshots


def test_live_adaptation_adapts_and_classifies(runs_dir):
    app = page_test("live")
    app.run()
    button(app, "Adapt").click()
    app.run()
    assert_no_exception(app)
    assert any("Adapted in" in success.value for success in app.success)
    table = app.dataframe[0].value
    assert list(table["predicted"]) == ["weather", "music", "cooking"]


@pytest.fixture()
def method_needing_meta_training(monkeypatch):
    """Registers a method whose untrained scores are all equal; the page's fresh list is recomputed."""
    from metanlp.dashboard import live
    from metanlp.methods import registry
    from tests.test_charts import ConstantScores

    monkeypatch.setitem(registry._METHODS, ConstantScores.card.name, ConstantScores)
    live.fresh_methods.cache_clear()
    yield ConstantScores
    live.fresh_methods.cache_clear()


def test_live_adaptation_offers_fresh_only_methods_that_work_untrained(runs_dir, method_needing_meta_training):
    app = page_test("live")
    app.run()
    assert_no_exception(app)
    offered = widget(app.selectbox, "Method").options
    assert "Prototypical Networks" in offered and "Fine-tuning baseline" in offered
    assert "Constant scores" not in offered
    assert any("need meta-training first: " in caption.value and "Constant scores" in caption.value
               for caption in app.caption)


def test_live_adaptation_draws_step_zero_and_colours_a_good_result_green(runs_dir):
    app = page_test("live")
    app.run()
    button(app, "Adapt").click()
    app.run()
    assert_no_exception(app)
    assert any("3 of 3 right" in success.value for success in app.success)
    curve = next(json.loads(chart.proto.spec) for chart in app.get("plotly_chart")
                 if "adaptation" in json.loads(chart.proto.spec)["layout"]["title"]["text"])
    query = next(trace for trace in curve["data"] if trace["name"] == "query loss")
    assert plotly_values(query["x"]) == [0, 1]  # ProtoNet: before adapting, then its one pass
    assert plotly_values(query["y"])[0] == pytest.approx(math.log(3))  # no class preferred yet
    assert any("scale s = 10" in caption.value for caption in app.caption)  # why the probabilities look so


def test_live_adaptation_never_shows_a_bad_result_in_green(runs_dir, tiny_encoder):
    from metanlp.dashboard import state
    from metanlp.dashboard.live import adapt_live, build_live_episode, live_options

    tiny_encoder.set_trainable_layers(0)
    episode = build_live_episode(["a", "b", "c"], [["x one", "x two"], ["y one", "y two"], ["z one", "z two"]])
    result = adapt_live("protonet", tiny_encoder.eval(), episode, live_options("protonet"))
    result.steps[-1] |= {"query_accuracy": 0.0, "query_loss": 2.0}  # every held-out query wrong
    app = page_test("live")
    app.session_state[state.LIVE_RESULT] = result
    app.run()
    assert_no_exception(app)
    assert not app.success
    assert any("0 of 3 right" in error.value and "no better than guessing" in error.value for error in app.error)


def test_a_stopped_adaptation_says_where_it_stopped(runs_dir):
    from metanlp.dashboard import state

    app = page_test("live")
    app.session_state[state.LIVE_RUNNING] = {
        "total": 15, "steps": [{"inner_step": step, "support_loss": 1.0 / (step + 1)} for step in range(3)],
    }
    app.run()
    assert_no_exception(app)
    assert any("stopped after step 2 of 15" in warning.value for warning in app.warning)
    assert not app.success and state.LIVE_RESULT not in app.session_state
    app.run()  # shown once: the next rerun is a clean page
    assert not app.warning


def test_episodes_page_shows_counts_without_change_arrows(runs_dir):
    app = page_test("episodes")
    app.run()
    assert_no_exception(app)
    right = next(metric for metric in app.metric if metric.label == "Queries labelled right")
    assert " of " in right.value
    assert all(not metric.proto.delta for metric in app.metric)  # no arrow on a number that is not a change


def test_live_adaptation_rejects_a_class_without_examples(runs_dir):
    from metanlp.dashboard import state

    app = page_test("live")
    app.run()
    app.text_area(key=f"{state.LIVE_EXAMPLES_PREFIX}1").set_value("only one sentence")
    button(app, "Adapt").click()
    app.run()
    assert_no_exception(app)
    assert any("at least 2 example sentences" in error.value for error in app.error)
    assert not app.success


def test_live_adaptation_can_start_from_a_trained_run(runs_dir):
    from metanlp.dashboard import state

    store, run_id = add_finished_run(runs_dir)
    save_trained_checkpoint(store, run_id)
    app = page_test("live")
    app.run()
    origin = app.selectbox(key=state.LIVE_ORIGIN)
    assert run_id[:6] in origin.options[1]  # labels show the start of the id
    origin.set_value(run_id).run()
    button(app, "Adapt").click()
    app.run()
    assert_no_exception(app)
    assert app.session_state[state.LIVE_RESULT].method == "protonet"
    # A random tiny encoder may label the held-out queries well or badly: the box's colour says which.
    assert any("Adapted in" in box.value for box in [*app.success, *app.warning, *app.error])
    charts = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    notes = [note["text"] for chart in charts for note in chart["layout"].get("annotations", [])]
    assert "After adapting (Prototypical Networks)" in notes


def test_a_method_with_a_measured_shortcoming_says_so_on_its_card(runs_dir):
    """MLM pretraining's default budget learns nothing measurable: its card warns; ProtoNet's does not."""
    app = page_test("train")
    app.run()
    assert not [warning for warning in app.warning if "Too few steps" in warning.value]
    widget(app.selectbox, "Method").set_value("mlm_pretrain")
    app.run()
    assert_no_exception(app)
    assert any("Too few steps to learn at its default budget" in warning.value for warning in app.warning)
