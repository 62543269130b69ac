"""Save and load a method's learned state: safetensors weights + a JSON description.

Loading never unpickles: weights come from safetensors, everything else from JSON. Loading also
verifies: the description must parse and describe a method that can be built, the weights must
read, match the SHA-256 saved beside them and fit the method; otherwise ``CheckpointError`` says
which file is damaged and what to do, instead of a traceback from deep inside a library.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metanlp.encoders import encoder_from_config
from metanlp.methods.base import Method
from metanlp.methods.registry import create_method

WEIGHTS_FILE = "model.safetensors"
DESCRIPTION_FILE = "method.json"
_REQUIRED = {"method": str, "options": dict, "encoder": dict}  # description fields and their JSON types
_OPTIONAL = {"extra": dict, "encoder_weights": str, "weights_sha256": str, "name": str}


class CheckpointError(ValueError):
    """A saved method that cannot be loaded: missing, truncated, garbled, or not fitting its method.

    ``owner`` names what the checkpoint belongs to (e.g. "run 0123456789ab"), so the message can
    say which run to delete or retrain; without it the message names the folder.
    """

    def __init__(self, folder: str | Path, problem: str, owner: str | None = None, missing: bool = False) -> None:
        self.folder, self.problem, self.owner = Path(folder), problem, owner
        state = "missing" if missing else "damaged"
        if owner:
            message = f"The checkpoint of {owner} is {state} ({problem}). Delete the run or retrain it."
        else:
            message = f"The checkpoint in {self.folder} is {state} ({problem}). Save it again, or use another one."
        super().__init__(message)
        self._missing = missing

    def __reduce__(self):  # picklable across processes despite the richer constructor
        return type(self), (self.folder, self.problem, self.owner, self._missing)


def _skip_encoder_weights(method: Method) -> bool:
    # A frozen pretrained encoder is identical to the shipped weights: no need to copy 90 MB.
    return method.encoder.kind == "minilm" and method.encoder.is_frozen()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, write) -> None:
    """Write through a temporary file then rename it, so a crash never leaves half a file under ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def save_method(method: Method, folder: str | Path, name: str = "") -> Path:
    """Weights first, then the description (with the weights' SHA-256): a description means a complete save."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    skip_encoder = _skip_encoder_weights(method)
    state = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in method.state_dict().items()
        if not (skip_encoder and key.startswith("encoder."))
    }
    weights = folder / WEIGHTS_FILE
    _write_atomically(weights, lambda path: save_file(state, str(path)))
    description = {
        "name": name,
        "method": method.card.name,
        "options": dataclasses.asdict(method.options),
        "encoder": method.encoder.config_dict(),
        "encoder_weights": "pretrained" if skip_encoder else "saved",
        "extra": method.extra_state_config(),
        "weights_sha256": _sha256(weights),
    }
    text = json.dumps(description, indent=2)
    _write_atomically(folder / DESCRIPTION_FILE, lambda path: path.write_text(text, encoding="utf-8"))
    return folder


def read_description(folder: str | Path, owner: str | None = None) -> dict[str, Any]:
    """``method.json``, checked field by field (``CheckpointError`` when missing or garbled)."""
    path = Path(folder) / DESCRIPTION_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(folder, f"{DESCRIPTION_FILE} not found in {folder}", owner, missing=True) from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(folder, f"{DESCRIPTION_FILE} could not be read: {error}", owner) from error
    try:
        description = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(folder, f"{DESCRIPTION_FILE} is not valid JSON: {error}", owner) from error
    if not isinstance(description, dict):
        raise CheckpointError(folder, f"{DESCRIPTION_FILE} holds {type(description).__name__}, not an object", owner)
    for field, kind in (_REQUIRED | _OPTIONAL).items():
        if (field in _REQUIRED or field in description) and not isinstance(description.get(field), kind):
            found = "nothing" if field not in description else type(description[field]).__name__
            raise CheckpointError(folder, f"{DESCRIPTION_FILE} needs '{field}' as {kind.__name__}, found {found}", owner)
    return description


def read_weights(folder: str | Path, description: dict[str, Any], owner: str | None = None) -> dict[str, torch.Tensor]:
    """``model.safetensors``, checked against the SHA-256 in the description when it has one."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(folder, f"{WEIGHTS_FILE} not found in {folder}", owner)
    try:
        state = load_file(str(path))
        expected = description.get("weights_sha256")
        if expected and _sha256(path) != expected:
            raise CheckpointError(folder, f"{WEIGHTS_FILE} does not match the checksum saved with it: its bytes "
                                  "changed after saving", owner)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(folder, f"{WEIGHTS_FILE} could not be read: {error}", owner) from error
    return state


def checkpoint_problem(folder: str | Path) -> str | None:
    """What is wrong with a checkpoint's files, without building its method (None: they read fine)."""
    try:
        read_weights(folder, read_description(folder))
    except CheckpointError as error:
        return error.problem
    return None


def load_method(folder: str | Path, device: torch.device | str = "cpu", owner: str | None = None) -> Method:
    """The saved method, verified (``CheckpointError`` names ``owner`` or the folder when it is damaged).

    No dataset is read: the learned state is all in the checkpoint, and the auxiliary data a method
    trains on (``Method.auxiliary_data``) is not needed to adapt or predict.
    """
    folder = Path(folder)
    description = read_description(folder, owner)
    state = read_weights(folder, description, owner)
    try:
        encoder = encoder_from_config(description["encoder"])
        method = create_method(description["method"], encoder, description["options"])
    except (ValueError, TypeError, KeyError) as error:  # ConfigError, OptionError and DataError are ValueErrors
        raise CheckpointError(folder, f"{DESCRIPTION_FILE} describes a method that cannot be built: {error}", owner) from error
    _restore(method, folder, description, state, owner)
    return method.to(device)


def restore_state(method: Method, folder: str | Path, owner: str | None = None) -> Method:
    """Put a checkpoint's learned state into ``method``, built already with the same settings (resuming a run)."""
    folder = Path(folder)
    description = read_description(folder, owner)
    if description["method"] != method.card.name:
        raise CheckpointError(folder, f"it holds a {description['method']} model, not {method.card.name}", owner)
    return _restore(method, folder, description, read_weights(folder, description, owner), owner)


def _restore(method: Method, folder: Path, description: dict, state: dict[str, torch.Tensor], owner: str | None) -> Method:
    try:
        method.load_extra_state_config(description.get("extra", {}))
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(folder, f"{DESCRIPTION_FILE} describes a method that cannot be built: {error}", owner) from error
    strict = description.get("encoder_weights") != "pretrained"
    try:
        missing, unexpected = method.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape
        raise CheckpointError(folder, f"{WEIGHTS_FILE} does not fit the method: {_first_line(error)}", owner) from error
    if unexpected or (strict and missing) or any(not key.startswith("encoder.") for key in missing):
        raise CheckpointError(
            folder, f"{WEIGHTS_FILE} does not fit the method: missing {missing[:5]}, unexpected {unexpected[:5]}", owner
        )
    return method


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300]
