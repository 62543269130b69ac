"""A newcomer's first commands: the README's own-data example, split choices, suggestions, seeds, outputs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from metanlp.cli import main

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "intents.csv"
TINY = ["--encoder", "scratch", "--encoder-option", "num_layers=1", "--encoder-option", "hidden_size=32",
        "--encoder-option", "num_heads=2", "--encoder-option", "feedforward_size=64", "--device", "cpu",
        "--no-progress"]


def readme_command(starts_with: str) -> list[str]:
    """The arguments of the README's command line that starts with ``starts_with``."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith(starts_with):
            return shlex.split(line.split("#")[0])[3:]  # drop "python -m metanlp"
    raise AssertionError(f"the README has no command starting with {starts_with!r}")


def test_the_readme_own_data_example_trains_on_the_shipped_small_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    arguments = readme_command("python -m metanlp train --data-file")
    assert "examples/intents.csv" in arguments and "--n-way" in arguments
    output = tmp_path / "train.json"
    extra = ["--steps", "2", "--episodes", "3", "--runs-dir", str(tmp_path / "runs"), "--output", str(output)]
    assert main([*arguments, *extra, *TINY]) == 0
    captured = capsys.readouterr()
    assert "data: Uploaded file intents.csv: 60 examples in 6 classes. Classes split" in captured.err
    assert "· intents.csv · 3-way 1-shot ·" in captured.out and "· user ·" not in captured.out
    evaluation = json.loads(output.read_text())["evaluation"]
    assert [record["episode"] for record in evaluation["per_episode"]] == [0, 1, 2]  # like 'evaluate --output'
    mean = sum(record["query_accuracy"] for record in evaluation["per_episode"]) / 3
    assert mean == pytest.approx(evaluation["mean_accuracy"])


def test_six_classes_of_ten_explain_5_way_and_train_it_with_fewer_queries(tmp_path, capsys):
    runs = tmp_path / "runs"
    arguments = ["train", "--data-file", str(EXAMPLE), "--text-column", "sentence", "--label-column", "intent",
                 "--steps", "2", "--episodes", "3", "--runs-dir", str(runs), *TINY]
    assert main(arguments) == 2  # the defaults: 5-way 1-shot with 5 queries needs 6 + 6 examples per class
    error = capsys.readouterr().err
    assert "need 10 classes" in error and "examples are split instead" in error  # the split note, up front
    last = error.strip().splitlines()[-1]
    assert last.startswith("error: 5-way 1-shot") and "in the train split" in last and "split between them" in last
    assert not runs.exists() or not any(runs.iterdir())
    assert main([*arguments, "--n-query", "4"]) == 0  # as the note says: K + queries ≤ 5
    assert "5-way 1-shot" in capsys.readouterr().out


def test_a_missing_label_column_suggests_the_label_column_not_the_text(tmp_path, capsys):
    data = tmp_path / "held_out.csv"
    data.write_text("text,label\n" + "".join(f"sentence {i},class_{i % 3}\n" for i in range(30)), encoding="utf-8")
    assert main(["train", "--data-file", str(data), "--label-column", "intent", "--runs-dir", str(tmp_path), *TINY]) == 2
    error = capsys.readouterr().err
    assert "Did you mean 'label'?" in error and "Did you mean 'text'" not in error


def test_help_shows_the_defaults_and_which_seed_does_what(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "meta-training steps on meta-train classes (default: 100)" in text
    assert "training seed: initial weights and the meta-training episodes" in text and "(default: 0)" in text
    assert "--eval-seed EVAL_SEED seed of the test episodes" in text and "(default: 1234)" in text
    with pytest.raises(SystemExit):
        main(["episodes", "--help"])
    assert "--eval-seed EVAL_SEED, --seed EVAL_SEED" in capsys.readouterr().out


def test_eval_seed_picks_the_test_episodes_and_the_training_seed_does_not(tmp_path, capsys):
    task = ["--data-file", str(EXAMPLE), "--text-column", "sentence", "--label-column", "intent", "--n-way", "3"]
    fixed = tmp_path / "episodes.json"
    assert main(["episodes", *task, "--count", "4", "--eval-seed", "7", "--out", str(fixed)]) == 0

    def episodes_hash(*arguments: str) -> str:
        output = tmp_path / "evaluation.json"
        assert main(["evaluate", *task, "--episodes", "4", *arguments, "--output", str(output), *TINY]) == 0
        return json.loads(output.read_text())["evaluation"]["episodes_hash"]

    from_file = episodes_hash("--episodes-file", str(fixed))
    assert episodes_hash("--eval-seed", "7") == from_file  # 'episodes' wrote exactly these test episodes
    assert episodes_hash("--eval-seed", "7", "--seed", "3") == from_file  # the training seed leaves them be
    assert episodes_hash("--eval-seed", "8") != from_file
    assert "meta-learns in this configuration" in capsys.readouterr().err  # protonet on a scratch encoder


def test_evaluate_says_when_it_scores_an_untrained_meta_learner(tmp_path, capsys):
    task = ["--data-file", str(EXAMPLE), "--text-column", "sentence", "--label-column", "intent", "--n-way", "3",
            "--episodes", "2"]
    assert main(["evaluate", "--method", "matching", *task, *TINY]) == 0
    error = capsys.readouterr().err
    assert "note: matching meta-learns in this configuration, but 'evaluate' does not train" in error
    assert "python -m metanlp train --method matching" in error
    runs = tmp_path / "runs"
    assert main(["train", "--method", "matching", *task, "--steps", "1", "--runs-dir", str(runs), *TINY]) == 0
    from metanlp.runs import RunStore

    (record,) = RunStore(runs).list_runs()
    capsys.readouterr()
    assert main(["evaluate", "--run", record.id, "--runs-dir", str(runs), *task, "--device", "cpu",
                 "--no-progress"]) == 0
    assert "note:" not in capsys.readouterr().err  # a trained run: nothing to warn about
