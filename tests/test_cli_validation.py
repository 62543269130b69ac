"""Bad input is refused before a run exists: one line, exit code 2, and nothing in the run store."""

from __future__ import annotations

import pytest

from metanlp.cli import main

TINY = ["--encoder", "scratch", "--encoder-option", "num_layers=1", "--encoder-option", "hidden_size=32",
        "--encoder-option", "num_heads=2", "--encoder-option", "feedforward_size=64"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), ("text,label\n", "no data rows"), ("sentence,intent\nhello,a\n", "column")],
)
def test_bad_user_file_exits_2_without_storing_a_run(tmp_path, capsys, content, message):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    runs = tmp_path / "runs"
    assert main(["train", "--data-file", str(data), "--steps", "2", "--runs-dir", str(runs), *TINY]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error:") and message in error[0]
    assert not runs.exists() or not any(runs.iterdir()), "a bad file must not leave a run behind"


def test_impossible_task_exits_2_without_storing_a_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    arguments = ["train", "--dataset", "reuters", "--n-way", "11", "--k-shot", "5", "--n-query", "15",
                 "--steps", "1", "--runs-dir", str(runs), *TINY]
    assert main(arguments) == 2
    assert "classes" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--option", "lr=nan"], "lr"),
        (["--option", "lr=inf"], "finite"),
        (["--encoder-option", "hidden_size=1000000"], "hidden_size must be between 1 and 4096"),
        (["--encoder-option", "no_such=1"], "unknown scratch encoder option"),
    ],
)
def test_non_finite_or_unbounded_settings_are_refused_up_front(tmp_path, capsys, arguments, message):
    runs = tmp_path / "runs"
    assert main(["train", "--steps", "1", "--runs-dir", str(runs), *TINY, *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())
