"""Damaged checkpoints: every load verifies, and says which run is damaged instead of a traceback."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from metanlp.cli import main
from metanlp.engine.checkpoint import (
    DESCRIPTION_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    checkpoint_problem,
    load_method,
    save_method,
)
from metanlp.runs.store import RunStore
from tests.conftest import TINY_ENCODER
from tests.test_pages import add_finished_run, assert_no_exception, button, page_test, save_trained_checkpoint


def tiny_method(seed: int = 0, method: str = "protonet", options: dict | None = None):
    from metanlp.encoders import build_encoder
    from metanlp.methods import create_method

    torch.manual_seed(seed)
    return create_method(method, build_encoder("scratch", **TINY_ENCODER), options or {"finetune": "full"})


def truncate_weights(folder: Path) -> None:
    path = folder / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_weight_bytes(folder: Path) -> None:
    """Same size, valid header, different numbers: only the checksum can tell."""
    path = folder / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(255 - byte for byte in data[-64:])
    path.write_bytes(bytes(data))


def delete_weights(folder: Path) -> None:
    (folder / WEIGHTS_FILE).unlink()


def garble_description(folder: Path) -> None:
    path = folder / DESCRIPTION_FILE
    path.write_text(path.read_text()[:40], encoding="utf-8")


def binary_description(folder: Path) -> None:
    (folder / DESCRIPTION_FILE).write_bytes(bytes(range(256)))


def list_description(folder: Path) -> None:
    (folder / DESCRIPTION_FILE).write_text("[1, 2, 3]", encoding="utf-8")


def description_without_encoder(folder: Path) -> None:
    path = folder / DESCRIPTION_FILE
    description = json.loads(path.read_text())
    del description["encoder"]
    path.write_text(json.dumps(description), encoding="utf-8")


def unknown_method_description(folder: Path) -> None:
    path = folder / DESCRIPTION_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "method": "no_such_method"}), encoding="utf-8")


def weights_of_another_shape(folder: Path) -> None:
    """Weights of a wider encoder, with a matching checksum: they read, but cannot fit."""
    from metanlp.encoders import build_encoder
    from metanlp.methods import create_method

    wider = create_method("protonet", build_encoder("scratch", **{**TINY_ENCODER, "hidden_size": 48}), {})
    other = save_method(wider, folder.parent / "wider")
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    description = json.loads((folder / DESCRIPTION_FILE).read_text())
    description["weights_sha256"] = json.loads((other / DESCRIPTION_FILE).read_text())["weights_sha256"]
    (folder / DESCRIPTION_FILE).write_text(json.dumps(description), encoding="utf-8")


DAMAGES = {
    truncate_weights: "model.safetensors could not be read",
    flip_weight_bytes: "model.safetensors does not match the checksum",
    delete_weights: "model.safetensors not found",
    garble_description: "method.json is not valid JSON",
    binary_description: "method.json could not be read",
    list_description: "method.json holds list",
    description_without_encoder: "method.json needs 'encoder'",
    unknown_method_description: "cannot be built",
    weights_of_another_shape: "model.safetensors does not fit the method",
}


@pytest.mark.parametrize("damage", list(DAMAGES), ids=[damage.__name__ for damage in DAMAGES])
def test_a_damaged_checkpoint_raises_checkpoint_error_naming_the_run_and_the_file(tmp_path, damage):
    folder = save_method(tiny_method(), tmp_path / "checkpoint")
    damage(folder)
    with pytest.raises(CheckpointError) as caught:
        load_method(folder, owner="run 0123456789ab")
    message = str(caught.value)
    assert message.startswith("The checkpoint of run 0123456789ab is ")
    assert DAMAGES[damage] in message and message.endswith("Delete the run or retrain it.")
    assert "\n" not in message
    assert checkpoint_problem(folder) is not None or damage in (unknown_method_description, weights_of_another_shape)


def test_a_checkpoint_round_trips_with_its_checksum_and_an_old_one_without_still_loads(tmp_path):
    method = tiny_method(seed=3)
    folder = save_method(method, tmp_path / "checkpoint")
    description = json.loads((folder / DESCRIPTION_FILE).read_text())
    assert len(description["weights_sha256"]) == 64 and checkpoint_problem(folder) is None
    assert not [path.name for path in folder.iterdir() if path.name.startswith(".")]  # no temporary files left
    loaded = load_method(folder)
    for key, value in method.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    del description["weights_sha256"]  # saved before checksums existed
    (folder / DESCRIPTION_FILE).write_text(json.dumps(description), encoding="utf-8")
    reloaded = load_method(folder).state_dict()
    assert all(torch.equal(reloaded[key], value) for key, value in method.state_dict().items())


def test_a_checkpoint_error_without_an_owner_names_the_folder_and_survives_pickling(tmp_path):
    folder = tmp_path / "nothing here"
    folder.mkdir()
    with pytest.raises(CheckpointError) as caught:
        load_method(folder)
    assert str(folder) in str(caught.value) and "is missing" in str(caught.value)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.folder == folder




def stored_run_with_checkpoint(root: Path) -> tuple[RunStore, str]:
    store, run_id = add_finished_run(root)
    save_trained_checkpoint(store, run_id)
    return store, run_id


def test_evaluate_run_with_a_damaged_checkpoint_exits_2_with_one_line_naming_the_run(tmp_path, capsys):
    store, run_id = stored_run_with_checkpoint(tmp_path / "store")
    truncate_weights(store.checkpoint_dir(run_id))
    code = main(["evaluate", "--run", run_id, "--runs-dir", str(store.root), "--encoder", "scratch",
                 "--episodes", "2", "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.count("\n") == 0 and "Traceback" not in error
    assert error.startswith(f"error: The checkpoint of run {run_id} is damaged (model.safetensors could not be read")


def test_evaluate_run_of_an_unfinished_run_says_so(tmp_path, capsys):
    store = RunStore(tmp_path / "store")
    from metanlp.engine import RunConfig

    run_id = store.create_run(RunConfig(method="protonet"))
    assert main(["evaluate", "--run", run_id, "--runs-dir", str(store.root), "--no-progress"]) == 2
    assert f"Run {run_id} is queued" in capsys.readouterr().err


def test_attention_page_opens_on_a_damaged_newest_run_with_an_error_box_and_a_way_to_another(runs_dir):
    from metanlp.dashboard import state

    store, good = stored_run_with_checkpoint(runs_dir)
    _, damaged = stored_run_with_checkpoint(runs_dir)  # the newest: preselected
    garble_description(store.checkpoint_dir(damaged))

    app = page_test("attention")
    app.run()
    assert_no_exception(app)
    source = app.selectbox(key=state.ATTENTION_SOURCE)
    assert source.value == damaged
    assert any(f"run {damaged} is damaged" in error.value.replace("\\", "") for error in app.error)
    assert len(source.options) == 3 and state.BASE_MODEL in source.options  # base model, good run, damaged run

    source.set_value(good).run()
    assert_no_exception(app)
    assert not app.error
    charts = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    notes = [note["text"] for chart in charts for note in chart["layout"].get("annotations", [])]
    assert any(note.startswith("After training") for note in notes)


def test_live_adaptation_from_a_damaged_run_shows_an_error_box(runs_dir):
    from metanlp.dashboard import state

    store, run_id = stored_run_with_checkpoint(runs_dir)
    flip_weight_bytes(store.checkpoint_dir(run_id))
    app = page_test("live")
    app.run()
    app.selectbox(key=state.LIVE_ORIGIN).set_value(run_id).run()
    button(app, "Adapt").click()
    app.run()
    assert_no_exception(app)
    assert any(f"run {run_id} is damaged" in error.value.replace("\\", "") for error in app.error)
    assert not app.success


def test_doctor_reports_a_damaged_checkpoint_of_a_done_run(tmp_path, capsys):
    store, run_id = stored_run_with_checkpoint(tmp_path / "store")
    assert main(["doctor", "--runs-dir", str(store.root)]) == 0
    capsys.readouterr()
    flip_weight_bytes(store.checkpoint_dir(run_id))
    assert main(["doctor", "--runs-dir", str(store.root)]) == 1
    assert f"The checkpoint of run {run_id} is damaged (model.safetensors does not match" in capsys.readouterr().out
