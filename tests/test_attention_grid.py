"""All heads of all layers at a glance (bertviz-style grid), and a click on one map enlarges it."""

from __future__ import annotations

import numpy as np
import pytest

from metanlp.dashboard.attention import grid_choice
from metanlp.dashboard.charts import attention_grid
from tests.test_pages import assert_no_exception, attention_page_of_a_trained_run


def test_the_grid_draws_every_head_of_every_layer_in_order():
    rng = np.random.default_rng(0)
    attentions = rng.random((3, 4, 5, 5))
    figure = attention_grid(["[CLS]", "a", "b", "c", "[SEP]"], attentions, "grid")
    assert len(figure.data) == 12
    for layer in range(3):
        for head in range(4):  # trace layer * heads + head is that head's map: what a click reports
            assert np.allclose(figure.data[layer * 4 + head].z, attentions[layer, head])
    with pytest.raises(ValueError, match="attentions must be"):
        attention_grid(["a", "b"], attentions, "")


def test_a_click_names_the_layer_and_head():
    assert grid_choice({"selection": {"points": [{"curve_number": 14}]}}, heads=12) == (1, 2)
    assert grid_choice({"selection": {"points": []}}, heads=12) is None
    assert grid_choice(None, heads=12) is None


def test_the_attention_page_shows_the_grid_and_enlarges_a_clicked_head(runs_dir):
    app, charts = attention_page_of_a_trained_run(runs_dir)
    grid = [chart for chart in charts if chart["layout"].get("title", {}).get("text") == "Every head after training"]
    assert len(grid) == 1 and len(grid[0]["data"]) == 1 * 2  # the tiny encoder: 1 layer × 2 heads
    app.session_state["attention_run_grid"] = {"selection": {"points": [{"curve_number": 1}]}}
    app.run()
    assert_no_exception(app)
    assert app.selectbox(key="attention_run_head").value == 1  # head 2 is now the enlarged one
