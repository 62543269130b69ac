"""Keep an adapted model: save, load, classify a file with per-class scores, as on the Live adaptation page."""

from __future__ import annotations

import numpy as np
import pytest

from metanlp.adapted import AdaptedModel, AdaptedModelError
from metanlp.dashboard.classify_file import read_file_to_classify, score_predictions
from metanlp.dashboard.live import build_live_episode, save_adapted_model
from metanlp.data.errors import DataError
from metanlp.engine.checkpoint import CheckpointError
from metanlp.methods import create_method
from tests.test_pages import assert_no_exception, button, page_test

CLASSES = ["weather", "music", "cooking"]
EXAMPLES = [
    ["will it rain tomorrow", "what is the temperature outside", "is it sunny", "do I need an umbrella"],
    ["play some jazz", "put on my playlist", "skip this song", "turn the volume up"],
    ["how long to boil an egg", "a recipe for pancakes", "what can I cook with rice", "how to roast vegetables"],
]
PROBES = ["should I bring a jacket", "play something relaxing", "how do I make a sauce", "is it windy", "next song"]


@pytest.mark.parametrize("method, options", [("protonet", {"finetune": "full"}), ("finetune", {"adapt_steps": 5}),
                                             ("maml", {"finetune": "frozen"})])
def test_a_saved_model_loads_back_with_the_same_predictions(tmp_path, tiny_encoder, method, options):
    model = create_method(method, tiny_encoder, options)
    adapted = AdaptedModel.adapt(model, build_live_episode(CLASSES, EXAMPLES))
    folder = save_adapted_model(tmp_path, adapted, "weather / music & cooking")
    assert folder.parent == (tmp_path / "adapted").resolve() and folder.name == "weather-music-cooking"
    loaded = AdaptedModel.load(folder)
    assert loaded.classes == CLASSES
    assert np.allclose(loaded.predict_proba(PROBES), adapted.predict_proba(PROBES), atol=1e-6)
    assert loaded.predict(PROBES) == adapted.predict(PROBES)
    assert save_adapted_model(tmp_path, adapted, "weather / music & cooking").name == "weather-music-cooking-2"


def test_a_folder_that_is_not_an_adapted_model_is_refused_clearly(tmp_path, tiny_encoder):
    with pytest.raises(AdaptedModelError, match="not a saved adapted model"):
        AdaptedModel.load(tmp_path)
    adapted = AdaptedModel.adapt(create_method("protonet", tiny_encoder, {}), build_live_episode(CLASSES, EXAMPLES))
    folder = save_adapted_model(tmp_path, adapted, "x")
    weights = folder / "method" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"garbage!")
    with pytest.raises(CheckpointError, match="adapted model"):
        AdaptedModel.load(folder)


def test_a_labelled_file_is_scored_per_class():
    data = b"sentence,intent\nplay jazz,music\nrain today,weather\nboil eggs,cooking\nsnow later,weather\nhi,greeting\n,music\n"
    file = read_file_to_classify(data, "held_out.csv")
    assert (file.text_column, file.label_column) == ("sentence", "intent")
    assert file.texts[0] == "play jazz" and len(file.texts) == 5 and "1 rows with an empty text" in file.notes[0]
    scores = score_predictions(file.labels, ["music", "weather", "music", "cooking", "music"], CLASSES)
    table = scores.per_class.set_index("class")
    assert table.loc["weather", "recall"] == 0.5 and table.loc["weather", "precision"] == 1.0
    assert table.loc["music", "precision"] == 0.5 and table.loc["cooking", "recall"] == 0.0
    assert scores.confusion.loc["weather", "cooking"] == 1 and scores.confusion.to_numpy().sum() == 4
    assert scores.scored == 4 and scores.accuracy == 0.5 and scores.other_labels == {"greeting": 1}
    with pytest.raises(DataError, match="Which column holds the texts"):
        read_file_to_classify(b"a,b\nx,y\n", "odd.csv")
    with pytest.raises(DataError, match="has no column 'nope'"):
        read_file_to_classify(data, "held_out.csv", text_column="nope")


def test_the_live_page_saves_a_model_that_predicts_like_the_page_and_scores_a_file(runs_dir):
    app = page_test("live")
    app.run()
    button(app, "Adapt").click()
    app.run()
    assert_no_exception(app)
    on_page = list(app.dataframe[0].value["predicted"])
    rows = "text,label\nshould I bring a jacket tonight,weather\nplay something relaxing,music\n" \
           "how do I make a tomato sauce,cooking\nturn it up,music\n"
    app.file_uploader[0].set_value(("held_out.csv", rows.encode(), "text/csv"))
    app.run()
    assert_no_exception(app)
    frames = [frame.value for frame in app.dataframe]
    predictions = next(frame for frame in frames if "correct" in frame)
    per_class = next(frame for frame in frames if "recall" in frame)
    assert list(predictions["predicted"][:3]) == on_page and set(per_class["class"]) == set(CLASSES)
    assert any(chart.proto.spec and "Confusion matrix" in chart.proto.spec for chart in app.get("plotly_chart"))
    button(app, "Save the adapted model").click()
    app.run()
    assert_no_exception(app)
    saved = sorted((runs_dir / "adapted").iterdir())
    assert len(saved) == 1
    loaded = AdaptedModel.load(saved[0])
    sentences = ["should I bring a jacket tonight", "play something relaxing", "how do I make a tomato sauce"]
    assert loaded.predict(sentences) == on_page
    assert "AdaptedModel.load(" in app.get("code")[0].proto.code_text
