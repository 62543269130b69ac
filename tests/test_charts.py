"""The dashboard's pure helpers: figures, form validation, run progress, live adaptation, episodes.

Everything here runs without Streamlit; the encoders are the tiny from-scratch one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from metanlp.dashboard import charts, forms, live, run_view
from metanlp.dashboard.attention import (
    MEAN_OVER_HEADS,
    compare_attention,
    encoder_was_frozen,
    initial_encoder,
    select_map,
    task_sentences,
)
from metanlp.dashboard.episode_view import inspect_episode
from metanlp.dashboard.live import (
    FRESH_PROTONET_SCALE,
    adapt_live,
    build_live_episode,
    class_probabilities,
    expected_steps,
    live_method_names,
    live_options,
    probability_column,
    works_fresh,
)
from metanlp.dashboard.text import plain_markdown, plot_text
from metanlp.data.errors import DataError
from metanlp.data.registry import load_dataset
from metanlp.engine.config import ConfigError, RunConfig
from metanlp.methods.options import OptionError
from metanlp.methods.protonet import ProtoNet
from tests.conftest import TINY_ENCODER


def metrics_frame(steps: int = 4, inner: int = 0) -> pd.DataFrame:
    rows = []
    for step in range(1, steps + 1):
        for inner_step in range(1, inner + 1):
            rows.append({"step": step, "phase": "inner", "inner_step": inner_step, "support_loss": 2.0 - 0.1 * inner_step})
        rows.append({
            "step": step, "phase": "train", "inner_step": math.nan, "support_loss": 1.0 / step,
            "query_loss": 2.0 / step, "query_accuracy": 0.1 * step,
        })
    return pd.DataFrame(rows)


def trace_values(trace, axis: str) -> list[float]:
    return list(np.asarray(getattr(trace, axis), dtype=float))


# ----------------------------------------------------------------- figures


def test_training_curves_of_one_run_draw_each_metric_once():
    figure = charts.training_curves({"run a": metrics_frame()})
    by_name = {trace.name: trace for trace in figure.data}
    assert set(by_name) == {"support loss", "query loss", "query accuracy"}
    assert trace_values(by_name["query loss"], "y") == [2.0, 1.0, 2 / 3, 0.5]
    assert trace_values(by_name["query accuracy"], "x") == [1, 2, 3, 4]
    assert by_name["query accuracy"].xaxis == "x2"  # the right-hand panel
    colours = {trace.line.color for trace in figure.data}
    assert len(colours) == 3  # one run: metrics told apart by colour


def test_training_curves_add_a_running_mean_when_smoothing():
    figure = charts.training_curves({"run": metrics_frame(steps=4)}, smoothing=2)
    by_name = {trace.name: trace for trace in figure.data}
    smoothed = by_name["query loss (mean of 2)"]
    assert trace_values(smoothed, "y") == pytest.approx([2.0, 1.5, 5 / 6, 7 / 12])
    assert by_name["query loss"].opacity == 0.3 and "query accuracy (mean of 2)" in by_name


def test_training_curves_place_inner_steps_between_outer_steps():
    figure = charts.training_curves({"maml": metrics_frame(steps=2, inner=3)})
    inner = next(trace for trace in figure.data if trace.name == "support loss (inner)")
    assert trace_values(inner, "x") == [0.25, 0.5, 0.75, 1.25, 1.5, 1.75]
    assert inner.line.dash == "dot"
    train = next(trace for trace in figure.data if trace.name == "support loss")
    assert train.line.dash == "dash"


def test_training_curves_compare_runs_by_colour_and_escape_labels():
    validation = pd.DataFrame({"step": [2, 4], "query_accuracy": [0.3, 0.4], "ci95": [0.05, 0.04]})
    figure = charts.training_curves(
        {"<b>first</b>": metrics_frame(), "second": metrics_frame(3)}, {"second": validation}
    )
    names = [trace.name for trace in figure.data]
    assert "&lt;b&gt;first&lt;/b&gt;: query loss" in names and "second: query loss" in names
    assert not any("<b>" in name for name in names)
    first = next(trace for trace in figure.data if trace.name.endswith("first&lt;/b&gt;: query loss"))
    second = next(trace for trace in figure.data if trace.name == "second: query loss")
    assert first.line.color != second.line.color
    checks = next(trace for trace in figure.data if trace.name == "second: validation accuracy")
    assert trace_values(checks, "y") == [0.3, 0.4] and checks.marker.symbol == "diamond"


def test_training_curves_accept_runs_without_steps():
    figure = charts.training_curves({"empty": pd.DataFrame(columns=["step", "phase"])})
    assert len(figure.data) == 0


def test_attention_heatmap_keeps_repeated_tokens_and_orders_rows_top_down():
    tokens = ["[CLS]", "the", "cat", "the", "<b>", "[SEP]"]
    weights = np.random.default_rng(0).dirichlet(np.ones(6), size=6)
    figure = charts.attention_heatmap(tokens, weights, "layer 1")
    heatmap = figure.data[0]
    assert np.allclose(np.asarray(heatmap.z, dtype=float), weights)
    assert list(figure.layout.xaxis.ticktext) == ["[CLS]", "the", "cat", "the", "&lt;b&gt;", "[SEP]"]
    assert figure.layout.yaxis.autorange == "reversed"
    assert heatmap.zmin == 0.0


def test_attention_pair_shares_one_colour_scale():
    before, after = np.full((3, 3), 1 / 3), np.eye(3)
    figure = charts.attention_pair(["a", "b", "c"], before, after, ("before", "after"))
    assert [trace.coloraxis for trace in figure.data] == ["coloraxis", "coloraxis"]
    assert figure.layout.coloraxis.cmax == 1.0
    assert [note.text for note in figure.layout.annotations] == ["before", "after"]
    assert figure.layout.yaxis2.scaleanchor == "x2"


def test_difference_heatmap_is_centred_on_zero():
    difference = np.array([[0.2, -0.5], [0.1, 0.0]])
    heatmap = charts.attention_heatmap(["a", "b"], difference, difference=True).data[0]
    assert heatmap.zmin == -0.5 and heatmap.zmax == 0.5 and heatmap.zmid == 0.0


def test_attention_heatmap_rejects_a_shape_that_does_not_match_the_tokens():
    with pytest.raises(ValueError, match="do not match 3 tokens"):
        charts.attention_heatmap(["a", "b", "c"], np.ones((2, 2)))


def test_pca_preserves_distances_of_points_on_a_plane():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(30, 2)) * [3.0, 1.0]
    basis, _ = np.linalg.qr(rng.normal(size=(8, 2)))  # orthonormal 8 × 2
    points = plane @ basis.T + 5.0
    projected = charts.pca_2d(points)

    def distances(x: np.ndarray) -> np.ndarray:
        return np.linalg.norm(x[:, None] - x[None], axis=-1)

    assert projected.shape == (30, 2)
    assert np.allclose(distances(projected), distances(plane), atol=1e-8)
    assert projected[:, 0].var() > projected[:, 1].var()  # first component carries most variance
    assert np.allclose(charts.pca_2d(points), projected)  # signs are fixed: no flipping


def test_pca_of_a_single_direction_pads_with_zeros():
    projected = charts.pca_2d(np.array([[1.0], [2.0], [4.0]]))
    assert projected.shape == (3, 2) and np.allclose(projected[:, 1], 0.0)
    with pytest.raises(ValueError):
        charts.pca_2d(np.zeros((0, 3)))


def test_embedding_scatter_rings_wrong_queries_without_hiding_their_class_colour():
    points = pd.DataFrame({
        "x": [0.0, 1.0, 2.0, 3.0], "y": [0.0, 1.0, 0.0, 1.0],
        "kind": ["support", "query", "query", "prototype"], "label": [0, 0, 0, 0],
        "text": ["a", "b", "c", "prototype"], "correct": [True, True, False, True],
    })
    figure = charts.embedding_scatter(points, ["greeting"])
    queries = next(trace for trace in figure.data if trace.name == "greeting · query")
    # Every query keeps its class colour with the same thin outline, wrong or right.
    assert queries.marker.color == charts.run_color(0) and queries.marker.line.width == 1
    ring = next(trace for trace in figure.data if trace.name == "wrong prediction")
    assert trace_values(ring, "x") == [2.0] and trace_values(ring, "y") == [0.0]  # only the wrong one
    assert ring.marker.symbol == "circle-open"  # a ring around the cross: its fill stays visible
    assert ring.marker.size > queries.marker.size
    assert {trace.marker.symbol for trace in figure.data} == {"circle", "x", "star", "circle-open"}


def test_embedding_scatter_without_wrong_queries_has_no_ring():
    points = pd.DataFrame({
        "x": [0.0, 1.0], "y": [0.0, 1.0], "kind": ["support", "query"], "label": [0, 0],
        "text": ["a", "b"], "correct": [True, True],
    })
    assert "wrong prediction" not in {trace.name for trace in charts.embedding_scatter(points, ["greeting"]).data}


def test_adaptation_curve_and_probability_bars():
    steps = [{"inner_step": i, "support_loss": 1 / (i + 1), "query_loss": 2 / (i + 1)} for i in range(0, 4)]
    figure = charts.adaptation_curve(steps)
    assert [trace.name for trace in figure.data] == ["support loss", "query loss"]
    assert trace_values(figure.data[0], "x") == [0, 1, 2, 3]  # step 0 (before adapting) is drawn
    running = charts.adaptation_curve(steps[:2], total_steps=30)
    assert running.layout.xaxis.range[1] >= 30  # the frame of the whole adaptation, while it runs
    bars = charts.probability_bars(["a", "b", "c"], [0.2, 0.5, 0.3]).data[0]
    assert list(bars.y) == ["a", "c", "b"]  # ascending, so the likeliest is drawn on top


# ----------------------------------------------------------------- text


def test_plain_markdown_escapes_every_markup_character():
    text = "[click](javascript:alert(1)) **bold** :red[x] $x$ <b>"
    escaped = plain_markdown(text)
    assert escaped.replace("\\", "") == text
    for character in "[]()*:$<>":
        assert f"\\{character}" in escaped
    assert plot_text("<a href='x'>") == "&lt;a href='x'&gt;"


# ----------------------------------------------------------------- forms


def valid_values(**changes) -> dict:
    values = {
        "method": "protonet", "dataset": "reuters", "n_way": 5, "k_shot": 1, "n_query": 5,
        "train_steps": 10, "eval_episodes": 5, "encoder": "scratch", "seed": 0, "device": "cpu",
        "method_options": {},
    }
    return values | changes


def test_config_errors_are_tied_to_their_fields():
    for values, field in [({"n_way": 1}, "n_way"), ({"eval_seed": "x"}, "eval_seed"), ({"seed": -1}, "seed"),
                          ({"dataset": "user"}, "data_file"), ({"precision": "fp8"}, "precision")]:
        with pytest.raises(ConfigError) as caught:
            RunConfig(**values).validate()
        assert forms.config_error_field(caught.value) == field
    assert forms.config_error_field(ConfigError("something else entirely")) == forms.GENERAL
    assert forms.option_error_field(OptionError("reworded, naming nothing", "lr")) == "option:lr"


def test_valid_form_gives_a_config():
    result = forms.validate_run_form(valid_values(), load_dataset("reuters"))
    assert result.ok and result.config.dataset == "reuters" and result.config.k_shot == 1


def test_k_shot_too_large_names_the_largest_k_that_fits():
    dataset = load_dataset("reuters")
    result = forms.validate_run_form(valid_values(k_shot=40), dataset)
    assert not result.ok and set(result.errors) == {"k_shot"}
    largest = int(result.errors["k_shot"].split("K can be at most ")[1].rstrip("."))
    assert forms.validate_run_form(valid_values(k_shot=largest), dataset).ok
    assert not forms.validate_run_form(valid_values(k_shot=largest + 1), dataset).ok


def test_too_many_queries_are_reported_on_the_queries_field():
    dataset = load_dataset("reuters")
    result = forms.validate_run_form(valid_values(n_query=60), dataset)
    assert set(result.errors) == {"n_query"}
    most = int(result.errors["n_query"].split("Use at most ")[1].split(" ")[0])
    assert forms.validate_run_form(valid_values(n_query=most), dataset).ok


def test_too_many_classes_and_bad_settings_go_to_their_fields():
    dataset = load_dataset("reuters")  # 11 meta-test classes
    assert set(forms.validate_run_form(valid_values(n_way=12), dataset).errors) == {"n_way"}
    assert set(forms.validate_run_form(valid_values(n_way=1), dataset).errors) == {"n_way"}
    assert set(forms.validate_run_form(valid_values(device="tpu"), dataset).errors) == {"device"}
    bad_option = forms.validate_run_form(valid_values(method_options={"lr": 5.0}), dataset)
    assert set(bad_option.errors) == {"option:lr"}


def test_option_specs_describe_widgets_generically():
    specs = {spec.name: spec for spec in forms.option_specs("protonet")}
    assert specs["distance"].kind == "choice" and set(specs["distance"].choices) == {"euclidean", "cosine"}
    assert specs["finetune"].kind == "choice" and "frozen" in specs["finetune"].choices
    assert specs["lr"].kind == "float" and specs["learn_scale"].kind == "bool" and specs["top_k"].kind == "int"
    assert forms.float_step(1e-4) == pytest.approx(1e-5) and forms.float_step(0.0) == 0.01


def test_uploads_are_stored_by_content_inside_the_runs_folder(tmp_path):
    data = b"text,label\nhi,greet\n"
    first = forms.save_upload(tmp_path, data, "../../outside/evil.CSV")
    assert first.parent == (tmp_path / "uploads").resolve() and first.suffix == ".csv"
    assert first.read_bytes() == data
    assert forms.save_upload(tmp_path, data, "other-name.csv") == first  # same bytes, one file
    assert len(list((tmp_path / "uploads").iterdir())) == 1
    with pytest.raises(DataError, match="cannot be used"):
        forms.save_upload(tmp_path, data, "model.pkl")
    assert forms.upload_size_error(10, 10) is None
    assert "over the 1 MB limit" in forms.upload_size_error(2**20 + 1, 2**20)


def test_live_form_checks_names_and_examples():
    assert forms.parse_examples(" a  b \n\n a b\nc ") == ["a b", "c"]
    ok = forms.validate_live_classes(["x", "y"], [["1", "2"], ["3", "4"]])
    assert ok == {}
    errors = forms.validate_live_classes(["x", "X", ""], [["1", "2"], ["3"], ["4", "5"]])
    assert set(errors) == {"name:1", "examples:1", "name:2"}
    assert "general" in forms.validate_live_classes(["x"], [["1", "2"]])


# ----------------------------------------------------------------- run view


class Record:
    def __init__(self, status="running", started_at=100.0, progress=None, config=None):
        self.id, self.name, self.status, self.started_at = "0123456789ab", "", status, started_at
        self.progress, self.config = progress or {}, config or {"method": "protonet", "dataset": "sst2"}
        self.created_at, self.evaluation = 50.0, None


def test_run_ids_are_validated_before_use():
    assert run_view.is_run_id("0123456789ab")
    assert not run_view.is_run_id("../0123456789") and not run_view.is_run_id("0123456789AB")
    assert run_view.clean_run_ids(["0123456789ab", "..", "0123456789ab", None]) == ["0123456789ab"]


def test_progress_and_eta_per_stage():
    training = run_view.run_progress(Record(progress={"stage": "train", "done": 25, "total": 100}), now=110.0)
    assert training.fraction == 0.25 and training.eta_seconds == pytest.approx(30.0)
    assert "step 25 of 100" in training.text
    evaluating = run_view.run_progress(
        Record(progress={"stage": "evaluate", "done": 10, "total": 40}), train_seconds=8.0, now=113.0
    )
    assert evaluating.fraction == 0.25 and evaluating.eta_seconds == pytest.approx(15.0)
    assert run_view.run_progress(Record(status="queued", started_at=None)).text == "waiting in the queue"
    assert run_view.run_progress(Record(status="done")).fraction == 1.0
    assert run_view.run_progress(Record(progress={}), now=101.0).eta_seconds is None


def test_live_view_refreshes_fast_only_while_runs_are_new():
    assert run_view.refresh_seconds([Record(status="done")]) is None
    assert run_view.refresh_seconds([Record(status="queued", started_at=None)]) == run_view.FAST_REFRESH_SECONDS
    assert run_view.refresh_seconds([Record(started_at=100.0)], now=105.0) == run_view.FAST_REFRESH_SECONDS
    assert run_view.refresh_seconds([Record(started_at=100.0)], now=200.0) == run_view.REFRESH_SECONDS


def test_durations_read_naturally():
    assert run_view.format_duration(42.4) == "42 s"
    assert run_view.format_duration(185) == "3 min 05 s"
    assert run_view.format_duration(3720) == "1 h 02 min"
    assert run_view.format_duration(None) == "—"


def test_metric_summaries_and_downloads():
    frame = metrics_frame(steps=3, inner=2)
    frame["elapsed"] = np.arange(len(frame), dtype=float)
    assert run_view.training_seconds(frame) == float(len(frame) - 1)
    assert run_view.latest_values(frame) == {
        "step": 3.0, "support_loss": pytest.approx(1 / 3), "query_loss": pytest.approx(2 / 3), "query_accuracy": pytest.approx(0.3)
    }
    csv = run_view.metrics_csv(frame).decode()
    assert csv.splitlines()[0].startswith("step,phase,inner_step") and len(csv.splitlines()) == len(frame) + 1
    table = run_view.runs_table([Record(status="done")])
    assert table.loc[0, "method"] == "protonet" and table.loc[0, "id"] == "0123456789ab"


# ----------------------------------------------------------------- live adaptation and episodes


@pytest.fixture()
def frozen_tiny(tiny_encoder):
    tiny_encoder.set_trainable_layers(0)
    return tiny_encoder.eval()


LIVE_NAMES = ["weather", "music"]
LIVE_EXAMPLES = [
    ["will it rain", "is it sunny", "how cold is it"],
    ["play jazz", "next song please", "louder music"],
]


def test_live_episode_holds_out_the_last_example_of_each_class():
    episode = build_live_episode(LIVE_NAMES, LIVE_EXAMPLES)
    assert episode.support_texts == ["will it rain", "is it sunny", "play jazz", "next song please"]
    assert episode.support_labels == [0, 0, 1, 1]
    assert episode.query_texts == ["how cold is it", "louder music"] and episode.query_labels == [0, 1]


def test_live_methods_and_their_options():
    names = live_method_names()
    assert names[:2] == ["protonet", "finetune"]
    assert live_options("protonet") == {"finetune": "frozen", "scale": FRESH_PROTONET_SCALE}
    assert live_options("finetune", tune_top_layer=True)["finetune"] == "top"
    assert expected_steps("finetune", live_options("finetune")) == live_options("finetune")["adapt_steps"]
    assert expected_steps("protonet", live_options("protonet")) == 1  # one pass: the prototypes


class ConstantScores(ProtoNet):
    """A stand-in for a method whose untrained comparison module says nothing: every class alike."""

    card = dataclasses.replace(ProtoNet.card, name="constant_scores", title="Constant scores")

    def scorer(self, support, labels, n_way):
        return lambda queries: torch.zeros(len(queries), n_way)


def test_only_methods_that_work_untrained_are_offered_fresh(monkeypatch):
    from metanlp.methods import registry

    monkeypatch.setitem(registry._METHODS, "constant_scores", ConstantScores)
    assert works_fresh("protonet") and works_fresh("finetune")
    assert not works_fresh("constant_scores")  # 1 in 3 right on the probe: needs meta-training
    assert not works_fresh("dann")  # cannot even be built without its target dataset


def test_results_are_coloured_by_outcome():
    assert live.outcome(1.0, 3) == "success" and live.outcome(2 / 3, 3) == "success"
    assert live.outcome(0.4, 5) == "warning"  # better than chance (20%), but most are wrong
    assert live.outcome(1 / 3, 3) == "error" and live.outcome(0.0, 3) == "error"
    assert live.outcome(float("nan"), 3) == "error"


def test_live_adaptation_reports_steps_and_probabilities(frozen_tiny):
    episode = build_live_episode(LIVE_NAMES, LIVE_EXAMPLES)
    seen = []
    result = adapt_live("finetune", frozen_tiny, episode, live_options("finetune"), on_step=seen.append)
    assert len(result.steps) == len(seen) == live_options("finetune")["adapt_steps"] + 1
    # Step 0, before adapting: no class preferred, so ln N on support and queries alike.
    assert result.steps[0] == {"inner_step": 0, "support_loss": pytest.approx(math.log(2)),
                               "query_loss": pytest.approx(math.log(2))}
    assert [step["inner_step"] for step in result.steps] == list(range(len(result.steps)))
    assert result.steps[-1]["support_loss"] < result.steps[0]["support_loss"]  # the head learns the support set
    table = class_probabilities(result, ["is it going to rain", "play a song"])
    probabilities = table[[probability_column(name) for name in LIVE_NAMES]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert list(table["predicted"]) == [LIVE_NAMES[i] for i in probabilities.argmax(axis=1)]
    assert result.encoder_after is frozen_tiny  # frozen: nothing was copied or changed


def test_tuning_the_top_layer_leaves_the_shared_encoder_untouched(frozen_tiny):
    before = {key: value.clone() for key, value in frozen_tiny.state_dict().items()}
    episode = build_live_episode(LIVE_NAMES, LIVE_EXAMPLES)
    result = adapt_live("finetune", frozen_tiny, episode, live_options("finetune", tune_top_layer=True))
    assert result.encoder_after is not frozen_tiny
    assert frozen_tiny.is_frozen()
    assert all(torch.equal(before[key], value) for key, value in frozen_tiny.state_dict().items())
    comparison = compare_attention(result.encoder_before, result.encoder_after, "will it rain today")
    assert not comparison.identical  # the top layer's attention moved


def test_attention_helpers(frozen_tiny):
    comparison = compare_attention(frozen_tiny, frozen_tiny, "hello there")
    assert comparison.identical and comparison.tokens[0] == "[CLS]"
    layers, heads, length, _ = comparison.before.shape
    assert (layers, heads) == (TINY_ENCODER["num_layers"], TINY_ENCODER["num_heads"])
    mean = select_map(comparison.before, 0, MEAN_OVER_HEADS)
    assert np.allclose(mean, comparison.before[0].mean(axis=0)) and np.allclose(mean.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(select_map(comparison.before, 0, 1), comparison.before[0, 1])


def test_initial_encoder_rebuilds_a_scratch_run_start():
    from metanlp.engine.training import EncoderPool

    config = {"encoder": "scratch", "encoder_options": TINY_ENCODER, "seed": 7}
    rebuilt, original = initial_encoder(config), EncoderPool().get("scratch", TINY_ENCODER, 7)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), original.state_dict().values(), strict=True))


def test_frozen_encoder_is_recognised_from_the_config():
    assert encoder_was_frozen({"method": "protonet", "encoder": "minilm", "method_options": {"finetune": "frozen"}})
    assert not encoder_was_frozen({"method": "protonet", "encoder": "scratch", "method_options": {"finetune": "full"}})
    assert encoder_was_frozen({"method": "protonet", "encoder": "minilm", "method_options": {"finetune": "auto"}})
    assert not encoder_was_frozen({"method": "protonet", "encoder": "scratch", "method_options": {"finetune": "auto"}})


def test_task_sentences_never_read_user_files_outside_the_uploads(tmp_path):
    builtin = task_sentences({"dataset": "reuters", "attention_text": "first sentence"}, limit=5)
    assert builtin[0] == "first sentence" and len(builtin) == 5
    outside = tmp_path / "secret.csv"
    outside.write_text("text,label\n" + "\n".join(f"s{i},c{i % 2}" for i in range(10)))
    config = {"dataset": "user", "data_file": str(outside), "attention_text": "only this"}
    assert task_sentences(config, str(tmp_path / "uploads")) == ["only this"]
    inside = tmp_path / "uploads" / "data.csv"
    inside.parent.mkdir()
    inside.write_bytes(outside.read_bytes())
    assert len(task_sentences(config | {"data_file": str(inside)}, str(tmp_path / "uploads"))) > 1


def test_episode_inspection_places_prototypes_at_their_class_means(frozen_tiny, clinc_episodes):
    episode = clinc_episodes[0]
    inspection = inspect_episode(frozen_tiny, episode)
    points = inspection.points
    assert len(points) == len(episode.support_texts) + len(episode.query_texts) + episode.n_way
    for label in range(episode.n_way):  # PCA is affine, so means map to means
        support = points[(points["kind"] == "support") & (points["label"] == label)][["x", "y"]].to_numpy()
        prototype = points[(points["kind"] == "prototype") & (points["label"] == label)][["x", "y"]].to_numpy()
        assert np.allclose(prototype[0], support.mean(axis=0), atol=1e-5)
    right = (inspection.queries["result"] == "right").mean()
    assert inspection.accuracy == pytest.approx(right)
    assert list(inspection.queries["class"]) == [episode.classes[label] for label in episode.query_labels]


# ----------------------------------------------------------------- the Runs page's helpers


def legend_entries(figure) -> list:
    return [trace for trace in figure.data if trace.showlegend is not False]


def test_compared_runs_get_one_legend_entry_each_plus_a_line_style_key():
    validation = pd.DataFrame({"step": [2, 4], "query_accuracy": [0.3, 0.4], "ci95": [0.05, 0.04]})
    runs = {"first": metrics_frame(steps=4, inner=2), "second": metrics_frame(3)}
    figure = charts.training_curves(runs, {"second": validation}, smoothing=3)
    entries = legend_entries(figure)
    run_entries = [entry for entry in entries if entry.legendgroup != charts.STYLE_KEY]
    assert [entry.name for entry in run_entries] == ["first", "second"]  # one per run, however many lines
    assert run_entries[0].line.color != run_entries[1].line.color
    for entry in run_entries:  # every line of a run has the run's colour and hides with its entry
        lines = [trace for trace in figure.data if trace.legendgroup == entry.legendgroup and trace is not entry]
        assert len(lines) > 3 and {trace.line.color for trace in lines} == {entry.line.color}
    key = {entry.name: entry for entry in entries if entry.legendgroup == charts.STYLE_KEY}
    assert key["query loss"].line.dash == "solid" and key["support loss"].line.dash == "dash"
    assert {"query accuracy", "validation accuracy", "support loss (inner)"} <= set(key)
    assert any("mean of 3" in name for name in key)
    assert len({entry.line.color for entry in key.values()}) == 1  # the key is grey: style only


def test_one_run_gets_one_legend_entry_per_metric():
    figure = charts.training_curves({"run": metrics_frame(steps=4, inner=2)}, smoothing=3)
    names = [entry.name for entry in legend_entries(figure)]
    assert sorted(names) == sorted([
        "support loss (mean of 3)", "query loss (mean of 3)", "query accuracy (mean of 3)", "support loss (inner)",
    ])


def test_long_curves_are_thinned_but_keep_their_ends():
    frame = metrics_frame(steps=5000)
    figure = charts.training_curves({"long": frame})
    query = next(trace for trace in figure.data if trace.name == "query loss")
    x = trace_values(query, "x")
    assert len(x) <= charts.MAX_POINTS + 1 and x[0] == 1 and x[-1] == 5000


def record(**fields):
    from metanlp.runs.queue import RunRecord

    values = {
        "id": "0123456789ab", "name": "my run", "status": "done", "created_at": 50.0, "started_at": 60.0,
        "finished_at": 90.0, "error": None, "progress": {}, "evaluation": None, "worker_pid": None,
        "cancel_requested": False,
        "config": {"method": "protonet", "dataset": "huffpost", "n_way": 5, "k_shot": 1, "seed": 0, "encoder": "minilm"},
    }
    return RunRecord(**(values | fields))


def test_bench_runs_are_named_from_their_config():
    bench = record(name="bench:3460f1527b0f1521", config=record().config | {"seed": 2})
    assert run_view.run_title(bench) == "bench · protonet · huffpost 5-way 1-shot · seed 2"
    assert run_view.run_label(bench) == "bench · protonet · huffpost 5-way 1-shot · seed 2 · 012345"
    assert run_view.run_title(record(name="my run")) == "my run"
    assert "bench:" not in run_view.runs_table([bench]).loc[0, "name"]


def test_runs_without_a_result_have_no_accuracy_rather_than_none():
    table = run_view.runs_table([record(status="failed", error="boom"), record(evaluation={"mean_accuracy": 0.5})])
    assert math.isnan(table.loc[0, "test accuracy"]) and table.loc[1, "test accuracy"] == 50.0


def test_an_empty_chart_says_why():
    assert "failed before its first training step" in run_view.no_curve_message([record(status="failed")])
    assert "cancelled" in run_view.no_curve_message([record(status="cancelled")])
    assert "appear with the first step" in run_view.no_curve_message([record(status="running")])


def test_filters_narrow_the_runs():
    runs = [
        record(id="aaaaaaaaaaaa", name="baseline", status="done"),
        record(id="bbbbbbbbbbbb", name="sweep", status="failed", error="CUDA out of memory",
               config=record().config | {"method": "maml"}),
        record(id="cccccccccccc", name="other", status="done", config=record().config | {"dataset": "clinc150"}),
    ]
    tags = {"cccccccccccc": ["keep"]}

    def ids(**restrictions) -> list[str]:
        return [run.id for run in run_view.filter_runs(runs, run_view.RunFilter(**restrictions), tags)]

    assert ids() == ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"]
    assert ids(statuses=("failed",)) == ["bbbbbbbbbbbb"]
    assert ids(methods=("protonet",)) == ["aaaaaaaaaaaa", "cccccccccccc"]
    assert ids(datasets=("clinc150",)) == ["cccccccccccc"]
    assert ids(tags=("keep",)) == ["cccccccccccc"]
    assert ids(text="memory") == ["bbbbbbbbbbbb"]  # the error text is searched too
    assert ids(text="BASE nowhere") == []  # every word must match (case aside)
    assert ids(text="base protonet") == ["aaaaaaaaaaaa"]
    assert run_view.filter_values(runs, "method") == ["maml", "protonet"]


def test_tags_are_kept_beside_the_store(tmp_path):
    first, second = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
    assert run_view.load_tags(tmp_path) == {}
    run_view.change_tags(tmp_path, [first, second, "../evil"], add=" lr  sweep, 2 ")
    assert run_view.load_tags(tmp_path) == {first: ["lr sweep 2"], second: ["lr sweep 2"]}
    run_view.change_tags(tmp_path, [first], add="baseline")
    run_view.change_tags(tmp_path, [second], remove="lr sweep 2")
    assert run_view.load_tags(tmp_path) == {first: ["baseline", "lr sweep 2"]}
    run_view.forget_tags(tmp_path, [first])
    assert run_view.load_tags(tmp_path) == {}
    (tmp_path / run_view.TAGS_FILE).write_text("not json")
    assert run_view.load_tags(tmp_path) == {}


def test_long_table_text_gets_rows_that_wrap():
    from metanlp.dashboard.widgets import WRAP_MIN_ROW_HEIGHT, text_row_height

    assert text_row_height(["short", "texts"]) is None
    assert text_row_height(["x" * 150]) >= WRAP_MIN_ROW_HEIGHT  # Streamlit wraps only in taller rows
    assert text_row_height(["x" * 1000]) == text_row_height(["x" * 320])  # at most max_lines


def test_result_summary_colours_and_counts_the_held_out_queries():
    from metanlp.dashboard.live import AdaptationResult, result_summary

    def summary(accuracy: float) -> tuple[str, str]:
        steps = [{"inner_step": 0, "support_loss": 1.1, "query_loss": 1.1},
                 {"inner_step": 1, "support_loss": 0.5, "query_loss": 0.7, "query_accuracy": accuracy}]
        return result_summary(AdaptationResult("protonet", None, ["a", "b", "c"], steps, seconds=0.5))

    kind, text = summary(1.0)
    assert kind == "success" and "3 of 3 right" in text and "over 1 step(s)" in text
    kind, text = summary(0.0)
    assert kind == "error" and "0 of 3 right" in text and "no better than guessing" in text
