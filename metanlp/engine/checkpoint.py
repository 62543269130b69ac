"""Save and load a method's learned state: safetensors weights + a JSON description.

Loading never unpickles: weights come from safetensors, everything else from JSON.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metanlp.encoders import encoder_from_config
from metanlp.methods.base import Method
from metanlp.methods.registry import create_method

WEIGHTS_FILE = "model.safetensors"
DESCRIPTION_FILE = "method.json"


def _skip_encoder_weights(method: Method) -> bool:
    # A frozen pretrained encoder is identical to the shipped weights: no need to copy 90 MB.
    return method.encoder.kind == "minilm" and method.encoder.is_frozen()


def save_method(method: Method, folder: str | Path, name: str = "") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    skip_encoder = _skip_encoder_weights(method)
    state = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in method.state_dict().items()
        if not (skip_encoder and key.startswith("encoder."))
    }
    save_file(state, str(folder / WEIGHTS_FILE))
    description = {
        "name": name,
        "method": method.card.name,
        "options": dataclasses.asdict(method.options),
        "encoder": method.encoder.config_dict(),
        "encoder_weights": "pretrained" if skip_encoder else "saved",
        "extra": method.extra_state_config(),
    }
    (folder / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2), encoding="utf-8")
    return folder


def load_method(folder: str | Path, device: torch.device | str = "cpu") -> Method:
    folder = Path(folder)
    description = json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    encoder = encoder_from_config(description["encoder"])
    method = create_method(description["method"], encoder, description["options"])
    method.load_extra_state_config(description.get("extra", {}))
    state = load_file(str(folder / WEIGHTS_FILE))
    strict = description.get("encoder_weights") != "pretrained"
    missing, unexpected = method.load_state_dict(state, strict=False)
    if unexpected or (strict and missing) or any(not key.startswith("encoder.") for key in missing):
        raise ValueError(f"checkpoint {str(folder)!r} does not match its method: missing {missing}, unexpected {unexpected}")
    return method.to(device)
