"""The Train page splits an upload for the episodes in the form, explains the choice, and launches 5-way."""

from __future__ import annotations

from tests.test_pages import ROOT, assert_no_exception, button, page_test, widget

EXAMPLE = (ROOT / "examples" / "intents.csv").read_bytes()  # 6 classes × 10 sentences


def upload_page(n_way: int, n_query: int):
    app = page_test("train")
    app.run()
    widget(app.radio, "Source").set_value("Upload a CSV / JSONL file")
    app.run()
    app.file_uploader[0].set_value(("intents.csv", EXAMPLE, "text/csv"))
    widget(app.text_input, "Text column").set_value("sentence")
    widget(app.text_input, "Label column").set_value("intent")
    widget(app.number_input, "N-way").set_value(n_way)
    widget(app.number_input, "Queries per class").set_value(n_query)
    widget(app.selectbox, "Encoder").set_value("scratch")
    widget(app.number_input, "Training steps").set_value(1)
    widget(app.number_input, "Test episodes").set_value(1)
    app.run()
    assert_no_exception(app)
    return app


def shown_text(app) -> str:
    """Captions, warnings and errors, with the Markdown escapes (``plain_markdown``) taken out."""
    return " ".join(element.value for element in [*app.caption, *app.warning, *app.error]).replace("\\", "")


def test_a_six_class_upload_explains_its_split_and_launches_a_5_way_run(runs_dir):  # noqa: F811
    app = upload_page(n_way=5, n_query=5)
    text = shown_text(app)
    assert "need 10 classes" in text and "examples are split instead" in text and "K + queries ≤ 5" in text
    assert button(app, "Launch").disabled  # 4 sentences per class stay in train: too few for 1 + 5
    app = upload_page(n_way=5, n_query=4)
    assert not button(app, "Launch").disabled, shown_text(app)
    button(app, "Launch").click()
    app.run()
    assert_no_exception(app)
    from metanlp.runs.store import RunStore

    (record,) = RunStore(runs_dir).list_runs()
    assert (record.config["n_way"], record.config["n_query"], record.config["dataset"]) == (5, 4, "user")


def test_three_way_splits_the_classes_themselves(runs_dir):  # noqa: F811
    text = shown_text(upload_page(n_way=3, n_query=5))
    assert "Classes split for meta-learning" in text and "3 train, 0 validation and 3 test classes" in text
