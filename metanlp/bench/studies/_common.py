"""What several studies share: the machine line, episodes, preloaded embeddings, argument checks."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TextIO

import torch

from metanlp.bench import report
from metanlp.bench.runner import write_test_episodes
from metanlp.data.episodes import EpisodeSampler, load_episodes, save_episodes
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.data.types import Episode
from metanlp.encoders.cache import shared_cache
from metanlp.engine import EncoderPool, RunConfig


def split_episodes(dataset: str, split: str, n_way: int, k_shot: int, n_query: int, count: int,
                   seed: int) -> list[Episode]:
    """``count`` seeded N-way K-shot episodes from one class split of a built-in dataset."""
    examples = examples_for_split(load_dataset(dataset), split)
    return EpisodeSampler.from_examples(examples, n_way, k_shot, n_query, seed=seed, split=split).take(count)


def saved_test_episodes(folder: Path, dataset: str, k_shot: int, count: int, n_query: int = 5,
                       first: int | None = None) -> Path:
    """The saved 5-way test episodes of a task in ``folder`` (written once; the grid bench's seed and naming).

    ``first``: a file with only the first episodes of it, for methods too slow for all of them.
    """
    config = RunConfig(dataset=dataset, n_way=5, k_shot=k_shot, n_query=n_query, eval_episodes=count)
    path = write_test_episodes(config, Path(folder))
    if first is None or first >= count:
        return path
    subset = path.with_name(path.name.replace(".json.gz", f"_first{first}.json.gz"))
    if not subset.exists():
        episodes, description = load_episodes(path)
        save_episodes(episodes[:first], subset, {**description, "first": first})
    return subset


def preload_embeddings(pool: EncoderPool, path: str, encoder: str = "minilm") -> int:
    """Put a saved dict text → embedding (``torch.save``) into the pooled encoder's shared cache."""
    embeddings = torch.load(path)
    shared_cache(pool.pristine(encoder, {}))._store.update(embeddings)
    return len(embeddings)


def whole_number(low: int, high: int | None = None):
    """An argparse ``type``: an int within [low, high], else a usage error that names the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def command_line(study: str, args: argparse.Namespace, add_arguments) -> str:
    """The command that reruns ``study`` with ``args``: its options that differ from their defaults."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    parts = ["python -m metanlp bench", study]
    for action in parser._actions:
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = next(option for option in action.option_strings if option.startswith("--"))
        parts.append(flag if action.nargs == 0 else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def write_section(path: str | Path, marker: str, heading: str, body: str, stream: TextIO | None = None) -> Path:
    """Rewrite one marked section of a results file (``report.replace_section``) and say so on ``stream``."""
    written = report.replace_section(Path(path), marker, heading, body)
    print(f"wrote {written}", file=stream or sys.stdout)
    return written
