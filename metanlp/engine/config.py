"""The JSON-serialisable run configuration shared by the CLI, the dashboard and the bench."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from metanlp.device import DEVICE_CHOICES
from metanlp.encoders import ENCODER_CHOICES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: What every page, command and report says of a run whose configuration has nothing to meta-learn.
NO_META_TRAINING = "no meta-training in this configuration"


class ConfigError(ValueError):
    """A bad run setting; the message names the field, the value and what is allowed.

    ``field`` is the ``RunConfig`` field it is about (None when no single one), for forms to place it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class RunConfig:
    method: str = "protonet"
    dataset: str = "clinc150"
    split_id: str | None = None  # which published class split, where a dataset has several
    data_file: str | None = None  # a user CSV/JSONL (dataset must then be "user")
    data_options: dict = field(default_factory=dict)  # text_column, label_column, head_column, tail_column
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 5
    train_steps: int = 100  # meta-training (or training) steps on meta-train classes
    eval_every: int = 0  # validation every this many steps (0: never)
    val_episodes: int = 20
    eval_episodes: int = 100  # final evaluation episodes on meta-test classes
    eval_seed: int = 1234  # seeds the evaluation episodes: same for every method
    episodes_file: str | None = None  # fixed evaluation episodes (overrides eval_episodes)
    encoder: str = "minilm"
    encoder_options: dict = field(default_factory=dict)
    # The method's options; those naming datasets it trains on besides its episodes (DANN's target_dataset,
    # multitask's tasks, distillation's unlabelled_dataset) are loaded by the engine (engine/auxiliary.py).
    method_options: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on a CUDA GPU that supports it, else fp32
    attention_text: str = ""  # sentence whose attention is snapshotted during training
    attention_every: int = 0  # snapshot every this many steps (0: only before and after)
    name: str = ""

    def validate(self) -> RunConfig:
        """Check every field; raise ``ConfigError`` with a message meant for the user."""
        integer_bounds = {
            "n_way": (2, 100),
            "k_shot": (1, 100),
            "n_query": (1, 200),
            "train_steps": (0, 1_000_000),
            "eval_every": (0, 1_000_000),
            "val_episodes": (1, 10_000),
            "eval_episodes": (0, 100_000),
            "eval_seed": (0, 2**31 - 1),
            "seed": (0, 2**31 - 1),
            "attention_every": (0, 1_000_000),
        }
        for name, (low, high) in integer_bounds.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be a whole number, got {value!r}", name)
            if not low <= value <= high:
                raise ConfigError(f"{name} must be between {low} and {high}, got {value}", name)
        if self.encoder not in ENCODER_CHOICES:
            raise ConfigError(f"encoder must be one of {', '.join(ENCODER_CHOICES)}, got {self.encoder!r}", "encoder")
        if self.device.split(":", 1)[0] not in DEVICE_CHOICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {self.device!r}", "device")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}", "precision")
        for name in ("data_options", "encoder_options", "method_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping of option names to values", name)
        if self.dataset == "user" and not self.data_file:
            raise ConfigError("dataset 'user' needs data_file: the path of your CSV or JSONL file", "data_file")
        if len(self.attention_text) > 1000:
            raise ConfigError("attention_text is limited to 1000 characters", "attention_text")
        if len(self.name) > 200:
            raise ConfigError("name is limited to 200 characters", "name")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a mapping, rejecting unknown keys with a did-you-mean hint."""
        if not isinstance(data, dict):
            raise ConfigError("a run configuration must be a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown setting {key!r}{hint}")
        return cls(**data)
