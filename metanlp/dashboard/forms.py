"""Form validation for the dashboard: every problem becomes a message tied to one field.

The library already knows what is wrong and where (``ConfigError``, ``OptionError`` and
``EpisodeSettingsError`` carry a user-facing message and the field it is about; widgets come from
the options' declared schema); this module puts each message beside its field, and keeps
uploads inside the runs folder under a content-hash name, so a file name can never pick a path.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metanlp.data.errors import DataError
from metanlp.data.feasibility import EpisodeSettingsError, check_split_feasible
from metanlp.data.registry import examples_for_split
from metanlp.data.types import TextDataset
from metanlp.device import resolve_device
from metanlp.engine.auxiliary import check_auxiliary_names
from metanlp.engine.config import ConfigError, RunConfig
from metanlp.methods.options import OptionError, OptionSpec, build_options
from metanlp.methods.options import option_specs as declared_option_specs
from metanlp.methods.registry import get_method_class

GENERAL = "general"  # messages that belong to no single field
UPLOAD_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json", ".ndjson")
UPLOADS_FOLDER = "uploads"
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
LIVE_MIN_CLASSES, LIVE_MAX_CLASSES = 2, 5
LIVE_MIN_EXAMPLES, LIVE_MAX_EXAMPLES = 2, 20
LIVE_MAX_CHARS = 300


def option_field(name: str) -> str:
    """Form key of a method option, kept apart from run settings of the same name."""
    return f"option:{name}"


@dataclass
class FormResult:
    """A validated config, or the messages to show, keyed by form field."""

    config: RunConfig | None = None
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors


def config_error_field(error: ConfigError) -> str:
    """The RunConfig field a ``ConfigError`` is about, as the error itself declares it."""
    return error.field if error.field in CONFIG_FIELDS else GENERAL


def option_error_field(error: OptionError) -> str:
    """The form key of the method option an ``OptionError`` is about (``option:<name>``)."""
    if error.option:
        return option_field(error.option)
    return "method" if str(error).startswith("unknown method") else GENERAL


# ----------------------------------------------------------------- method options as widgets


def option_specs(method: str) -> list[OptionSpec]:
    """Widget descriptions for every option of a method: its declared kind, default, range and choices."""
    return declared_option_specs(get_method_class(method).Options)


def float_step(value: float) -> float:
    """A widget step of about a tenth of the value's order of magnitude (1e-4 → 1e-5)."""
    if value == 0:
        return 0.01
    exponent = int(f"{abs(value):e}".split("e")[1])
    return 10.0 ** (exponent - 1)


def float_format(value: float) -> str:
    return "%.2e" if value and (abs(value) < 1e-2 or abs(value) >= 1e4) else "%.4f"


# ----------------------------------------------------------------- run form


def episode_splits(config: RunConfig, dataset: TextDataset) -> list[str]:
    """The splits a run of ``config`` samples episodes from, in the order ``run_training`` builds its samplers.

    Train when it trains; test unless the test episodes come from a file (the sampler is built even for
    0 test episodes); val when it validates and the val split has examples.
    """
    splits = ["train"] if config.train_steps else []
    if not config.episodes_file:
        splits.append("test")
    if config.eval_every and examples_for_split(dataset, "val"):
        splits.append("val")
    return splits


def _episode_problem(dataset: TextDataset, split: str, config: RunConfig) -> tuple[str, str] | None:
    """(field, message) when ``split`` cannot give the episodes asked for: the sampler's own verdict and words."""
    try:
        check_split_feasible(dataset, split, config.n_way, config.k_shot, config.n_query)
    except EpisodeSettingsError as error:
        return error.field, str(error)
    return None


def validate_run_form(values: dict[str, Any], dataset: TextDataset | None) -> FormResult:
    """Build and check a ``RunConfig`` from the Train form; messages are keyed by form field.

    ``values`` holds RunConfig fields; ``dataset`` is the loaded dataset (None when it could not
    be loaded; its error is then shown by the caller). Checks, in order: run settings, the method's
    options, the device, then whether the dataset can supply the episodes asked for.
    """
    result = FormResult()
    try:
        config = RunConfig.from_dict(values).validate()
    except ConfigError as error:
        result.errors[config_error_field(error)] = str(error)
        return result
    except TypeError as error:  # a widget handed over a value of the wrong kind
        result.errors[GENERAL] = str(error)
        return result
    try:
        method_class = get_method_class(config.method)
        check_auxiliary_names(method_class, build_options(method_class.Options, config.method_options))
    except OptionError as error:
        result.errors[option_error_field(error)] = str(error)
    try:
        resolve_device(config.device)
    except ValueError as error:
        result.errors["device"] = str(error)
    if dataset is not None:
        for split in episode_splits(config, dataset):
            problem = _episode_problem(dataset, split, config)
            if problem and problem[0] not in result.errors:
                result.errors[problem[0]] = problem[1]
    if not result.errors:
        result.config = config
    return result


def default_attention_text(dataset: TextDataset) -> str:
    """A meta-test sentence whose attention the run snapshots (the first one, for repeatability)."""
    examples = examples_for_split(dataset, "test") or dataset.examples
    return examples[0].text[:1000] if examples else ""


# ----------------------------------------------------------------- uploads


def upload_size_error(size: int, limit_bytes: int) -> str | None:
    """Message when an upload is over the limit (checked in code too, not only by Streamlit)."""
    if size > limit_bytes:
        return (
            f"The file is {size / 2**20:.1f} MB, over the {limit_bytes / 2**20:g} MB limit. "
            "Upload a smaller sample, e.g. fewer examples per class."
        )
    return None


def upload_extension(filename: str) -> str:
    """The file's extension if it is one we read, else ``DataError`` (never a path component)."""
    suffix = Path(filename or "").suffix.lower()
    if suffix not in UPLOAD_EXTENSIONS:
        raise DataError(
            f"Files of type '{suffix or 'none'}' cannot be used; upload a {', '.join(UPLOAD_EXTENSIONS)} file."
        )
    return suffix


def save_upload(root: str | Path, data: bytes, filename: str) -> Path:
    """Store an accepted upload as ``<root>/uploads/<sha256>.<ext>`` and return its path.

    The name comes from the content hash and a whitelisted extension only, so nothing in the
    user's file name can reach outside the runs folder; the same file is stored once.
    """
    uploads = (Path(root) / UPLOADS_FOLDER).resolve()
    path = uploads / f"{hashlib.sha256(data).hexdigest()[:32]}{upload_extension(filename)}"
    if path.parent != uploads:  # cannot happen with a hex name, but keep the guarantee explicit
        raise DataError("The upload could not be stored inside the runs folder.")
    uploads.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        temporary = path.with_suffix(path.suffix + ".part")
        temporary.write_bytes(data)
        temporary.replace(path)
    return path


# ----------------------------------------------------------------- live adaptation form


def parse_examples(text: str) -> list[str]:
    """One example per non-empty line, whitespace tidied, repeats removed."""
    return list(dict.fromkeys(" ".join(line.split()) for line in (text or "").splitlines() if line.strip()))


def validate_live_classes(names: list[str], examples: list[list[str]]) -> dict[str, str]:
    """Messages keyed ``name:<i>`` / ``examples:<i>`` (or ``general``) for the Live adaptation form."""
    errors: dict[str, str] = {}
    if not LIVE_MIN_CLASSES <= len(names) <= LIVE_MAX_CLASSES:
        errors[GENERAL] = f"Give between {LIVE_MIN_CLASSES} and {LIVE_MAX_CLASSES} classes, not {len(names)}."
    seen: set[str] = set()
    for index, (name, texts) in enumerate(zip(names, examples, strict=True)):
        name = name.strip()
        if not name:
            errors[f"name:{index}"] = "Give this class a name."
        elif name.lower() in seen:
            errors[f"name:{index}"] = f"The name '{name}' is used twice; class names must differ."
        elif len(name) > 60:
            errors[f"name:{index}"] = "Keep class names under 60 characters."
        seen.add(name.lower())
        if len(texts) < LIVE_MIN_EXAMPLES:
            errors[f"examples:{index}"] = (
                f"Give at least {LIVE_MIN_EXAMPLES} example sentences, one per line "
                "(the last one is held out to measure the query loss)."
            )
        elif len(texts) > LIVE_MAX_EXAMPLES:
            errors[f"examples:{index}"] = f"Give at most {LIVE_MAX_EXAMPLES} example sentences."
        elif any(len(text) > LIVE_MAX_CHARS for text in texts):
            errors[f"examples:{index}"] = f"Keep each sentence under {LIVE_MAX_CHARS} characters."
    return errors
