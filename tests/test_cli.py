"""The command line: lists, episodes, train/evaluate to JSON, and clear errors."""

from __future__ import annotations

import json

import pytest

from metanlp.cli import main


def test_lists(capsys):
    assert main(["datasets"]) == 0
    output = capsys.readouterr().out
    for name in ("clinc150", "banking77", "huffpost", "fewrel", "agnews", "sst2", "tnews"):
        assert name in output
    assert main(["methods", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert {"protonet", "finetune"} <= {card["name"] for card in cards}
    assert all(card["formula"] and card["paper"] for card in cards)
    assert next(card for card in cards if card["name"] == "mlm_pretrain")["caveat"].startswith("Too few steps")
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out.splitlines()
    below_mlm = listing[next(i for i, line in enumerate(listing) if line.startswith("mlm_pretrain")) + 1]
    assert below_mlm.strip().startswith("note: Too few steps")


def test_episodes_then_train_and_evaluate_on_them(tmp_path, capsys):
    episodes = tmp_path / "episodes.json.gz"
    assert main(["episodes", "--dataset", "clinc150", "--n-way", "3", "--k-shot", "1", "--n-query", "2",
                 "--count", "4", "--out", str(episodes)]) == 0
    tiny = ["--encoder", "scratch", "--encoder-option", "num_layers=1", "--encoder-option", "hidden_size=32",
            "--encoder-option", "num_heads=2", "--device", "cpu", "--no-progress"]
    output = tmp_path / "train.json"
    runs = tmp_path / "runs"
    assert main(["train", "--dataset", "clinc150", "--n-way", "3", "--k-shot", "1", "--n-query", "2", "--steps",
                 "2", "--episodes-file", str(episodes), "--output", str(output), "--runs-dir", str(runs), *tiny]) == 0
    results = json.loads(output.read_text())
    assert results["evaluation"]["episodes"] == 4
    assert [e["step"] for e in results["history"] if e["phase"] == "train"] == [1, 2]
    assert "95% CI" in capsys.readouterr().out
    # The CLI run is in the same store the dashboard reads, with its metrics and checkpoint.
    from metanlp.runs import RunStore

    store = RunStore(runs)
    (record,) = store.list_runs()
    assert record.id == results["run_id"] and record.status == "done"
    assert len(store.metrics(record.id, phases=("train",))) == 2
    assert main(["evaluate", "--run", record.id, "--runs-dir", str(runs), "--dataset", "clinc150", "--n-way", "3",
                 "--episodes-file", str(episodes), "--device", "cpu", "--no-progress"]) == 0
    output = tmp_path / "evaluate.json"
    assert main(["evaluate", "--method", "finetune", "--option", "adapt_steps=5", "--dataset", "clinc150",
                 "--n-way", "3", "--episodes-file", str(episodes), "--output", str(output), *tiny]) == 0
    assert json.loads(output.read_text())["evaluation"]["episodes"] == 4


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--dataset", "nope"], "no dataset named 'nope'"),
        (["train", "--n-way", "0"], "n_way must be between"),
        (["train", "--method", "protonett"], "did you mean 'protonet'"),
        (["train", "--option", "distanse=cosine", "--encoder", "scratch"], "did you mean 'distance'"),
        (["evaluate", "--data-file", "/nonexistent/file.csv"], "file.csv"),
        (["evaluate", "--run", "../etc"], "run id"),
        (["evaluate", "--run", "0123456789ab"], "0123456789ab"),
        (["bench", "--methods", "maml", "--option", "maml.head_hiden=8"], "did you mean 'head_hidden'"),
        (["bench", "--methods", "maml", "--option", "anil.head_hidden=8"], "not in this bench: anil"),
        (["bench", "--methods", "maml", "--option", "head_hidden=8"], "METHOD.KEY=VALUE"),
        (["bench", "--section", "../x"], "--section must be"),
    ],
)
def test_user_errors_are_one_clear_line(arguments, message, capsys):
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_bench_passes_method_options_to_its_cells(tmp_path, capsys):
    runs, report = tmp_path / "runs", tmp_path / "results.md"
    arguments = ["bench", "--methods", "anil", "--datasets", "clinc150", "--shots", "1", "--episodes", "3",
                 "--train-steps", "1", "--seeds", "1", "--option", "anil.inner_steps=2", "--encoder", "scratch", "--device", "cpu",
                 "--runs-dir", str(runs), "--report", str(report), "--section", "bench-anil", "--no-progress"]
    assert main(arguments) == 0
    from metanlp.runs import RunStore

    (record,) = RunStore(runs).list_runs()
    assert record.config["method_options"]["inner_steps"] == 2
    text = report.read_text()
    assert "<!-- bench-anil:start -->" in text and "--option anil.inner_steps=2 --section bench-anil" in text
    assert "1 cells computed" in capsys.readouterr().out
