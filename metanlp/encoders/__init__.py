"""Encoders: the pretrained MiniLM and a from-scratch Transformer behind one interface."""

from __future__ import annotations

import json
from pathlib import Path

from metanlp.encoders.base import AttentionMaps, Encoder, EncoderOutput, mean_pool
from metanlp.encoders.cache import EmbeddingCache

ENCODER_CHOICES = ("minilm", "scratch")


def build_encoder(name: str = "minilm", **options) -> Encoder:
    """Build an encoder by name: ``minilm`` (pretrained) or ``scratch`` (random init).

    ``options`` go to the encoder's constructor (for ``scratch``: ``ScratchConfig`` fields);
    ``checkpoint=<folder>`` instead loads an encoder saved by ``save_encoder`` (e.g. one
    pretrained with masked-language modelling).
    """
    if options.get("checkpoint"):
        return load_encoder(options["checkpoint"])
    if name == "minilm":
        from metanlp.encoders.minilm import MiniLMEncoder

        return MiniLMEncoder(**options)
    if name == "scratch":
        from metanlp.encoders.scratch import ScratchConfig, ScratchTransformerEncoder

        return ScratchTransformerEncoder(ScratchConfig(**options))
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_CHOICES)}")


MINILM_MAX_LENGTH = 512  # MiniLM's position embeddings


def check_encoder_options(name: str, options: dict) -> None:
    """Refuse bad encoder options before anything is built or loaded (raises ``ValueError``)."""
    if name not in ENCODER_CHOICES:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_CHOICES)}")
    if options.get("checkpoint"):
        return  # a saved encoder brings its own configuration
    if name == "scratch":
        from metanlp.encoders.scratch import ScratchConfig

        allowed = {field for field in ScratchConfig.__dataclass_fields__}
    else:
        allowed = {"max_length", "normalize"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown {name} encoder option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    if name == "scratch":
        ScratchConfig(**options)  # checks sizes against their limits
    elif not 1 <= int(options.get("max_length", 64)) <= MINILM_MAX_LENGTH:
        raise ValueError(f"max_length must be between 1 and {MINILM_MAX_LENGTH}, got {options['max_length']}")


def encoder_from_config(config: dict) -> Encoder:
    """Rebuild an encoder from ``Encoder.config_dict()``."""
    options = dict(config)
    return build_encoder(options.pop("name"), **options)


ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_CONFIG = "encoder.json"


def save_encoder(encoder: Encoder, folder: str | Path) -> Path:
    """Write an encoder's weights (safetensors) and config (JSON) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous().clone() for key, value in encoder.state_dict().items()}
    save_file(state, str(folder / ENCODER_WEIGHTS))
    (folder / ENCODER_CONFIG).write_text(json.dumps(encoder.config_dict(), indent=2), encoding="utf-8")
    return folder


def load_encoder(folder: str | Path) -> Encoder:
    """Rebuild an encoder saved by ``save_encoder`` (e.g. a pretrained from-scratch checkpoint)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / ENCODER_WEIGHTS).is_file() or not (folder / ENCODER_CONFIG).is_file():
        raise ValueError(f"{str(folder)!r} holds no saved encoder ({ENCODER_WEIGHTS} + {ENCODER_CONFIG})")
    encoder = encoder_from_config(json.loads((folder / ENCODER_CONFIG).read_text(encoding="utf-8")))
    encoder.load_state_dict(load_file(str(folder / ENCODER_WEIGHTS)))
    return encoder


__all__ = [
    "ENCODER_CHOICES",
    "AttentionMaps",
    "EmbeddingCache",
    "Encoder",
    "EncoderOutput",
    "build_encoder",
    "encoder_from_config",
    "load_encoder",
    "save_encoder",
    "mean_pool",
]
