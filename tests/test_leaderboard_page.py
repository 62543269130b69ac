"""The Leaderboard page renders bench results from the store and compares two methods."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from metanlp.bench import run_bench
from metanlp.runs import RunStore
from tests.test_bench import FINETUNE_TITLE, tiny_settings

ROOT = Path(__file__).resolve().parents[1]




def leaderboard() -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.switch_page("pages/6_Leaderboard.py")
    return app


def test_empty_store_says_how_to_fill_it(runs_dir):
    app = leaderboard().run()
    assert not app.exception
    assert any("metanlp bench" in info.value for info in app.info)


def test_renders_results_and_a_paired_comparison(runs_dir):
    report = run_bench(tiny_settings(), RunStore(runs_dir))
    assert len(report.computed) == 2
    app = leaderboard().run()
    assert not app.exception, [e.value for e in app.exception]
    table = app.dataframe[0].value
    assert sorted(table["method"]) == [FINETUNE_TITLE, "Prototypical Networks"]
    rows = table.set_index("method")
    # ProtoNet meta-trains the scratch encoder; fine-tuning on a frozen encoder has nothing to meta-learn.
    assert rows.loc["Prototypical Networks", "meta-learned params"] > 1000
    assert rows.loc["Prototypical Networks", "meta-training"] == "meta-trained"
    assert rows.loc[FINETUNE_TITLE, "meta-learned params"] == 0
    assert rows.loc[FINETUNE_TITLE, "meta-training"] == "no meta-training in this configuration"
    assert pd.notna(rows.loc[FINETUNE_TITLE, "vs ProtoNet (points)"])
    assert len(app.get("plotly_chart")) == 1
    assert any("shared episodes" in markdown.value for markdown in app.markdown)
    app.multiselect[1].set_value([5]).run()  # no 5-shot results: a clear message, no crash
    assert not app.exception
    assert any("Nothing matches" in warning.value for warning in app.warning)


def test_results_of_different_settings_are_never_mixed(runs_dir):
    store = RunStore(runs_dir)
    run_bench(tiny_settings(), store)
    run_bench(tiny_settings(episodes=4, methods=("protonet",)), store)
    app = leaderboard().run()
    assert not app.exception, [e.value for e in app.exception]
    setting = app.selectbox[0]
    assert setting.value.startswith("6 episodes") and len(setting.options) == 2
    assert sorted(app.dataframe[0].value["method"]) == [FINETUNE_TITLE, "Prototypical Networks"]
    setting.set_value(setting.options[1]).run()
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table["method"]) == ["Prototypical Networks"] and (table["episodes"] == 4).all()


def test_shipped_rows_and_reports_carry_the_method_cards_caveats():
    """Wherever a result of a method with a measured shortcoming is shown, the shortcoming is beside it."""
    from metanlp.bench.report import caveat_notes
    from metanlp.bench.results import load_exported_results
    from metanlp.dashboard.leaderboard import SHIPPED_RESULTS, leaderboard_table
    from metanlp.methods import get_method_class

    rows, _ = load_exported_results(SHIPPED_RESULTS)
    table = leaderboard_table(rows).set_index("method")
    caveat = get_method_class("mlm_pretrain").card.caveat
    assert caveat
    assert (table.loc[get_method_class("mlm_pretrain").card.title, "note"] == caveat).all()
    assert (table.loc["Prototypical Networks", "note"] == "").all()
    notes = "\n".join(caveat_notes(rows))
    assert caveat in notes and "Prototypical Networks" not in notes
