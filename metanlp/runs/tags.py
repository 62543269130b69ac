"""Run ids as they come from outside, and run tags (``<runs folder>/tags.json``).

Tags live beside the store as {run id: [tag, ...]}, written whole and atomically under a lock,
so the Runs page and a sweep process can both tag runs without undoing each other's changes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one writer is assumed
    fcntl = None

TAGS_LOCK = "tags.lock"
RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{12}$")


def is_run_id(value: object) -> bool:
    """True for a well-formed run id (12 lowercase hex characters): nothing else reaches the store."""
    return isinstance(value, str) and bool(RUN_ID_PATTERN.match(value))


def clean_run_ids(values: Sequence[object]) -> list[str]:
    """Keep only well-formed ids, in order, without repeats (e.g. from the page's query string)."""
    return list(dict.fromkeys(value for value in values if is_run_id(value)))


# Tags live in ``<runs folder>/tags.json`` ({run id: [tag, ...]}) beside the store, written
# whole and atomically (a reader never sees half a file). The store has no tags column yet.
TAGS_FILE = "tags.json"
MAX_TAG_LENGTH = 40


def clean_tag(tag: str) -> str:
    """One short line without control characters or commas (commas separate tags in the table)."""
    text = "".join(character if character.isprintable() and character != "," else " " for character in str(tag))
    return " ".join(text.split())[:MAX_TAG_LENGTH]


def load_tags(root: str | Path) -> dict[str, list[str]]:
    """Every run's tags; a missing or unreadable file means no tags."""
    try:
        data = json.loads((Path(root) / TAGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        run_id: [clean_tag(tag) for tag in values if clean_tag(tag)]
        for run_id, values in data.items()
        if is_run_id(run_id) and isinstance(values, list)
    }


@contextmanager
def _tags_locked(root: str | Path) -> Iterator[None]:
    """One writer at a time (the Runs page, a sweep process): a change never undoes another's."""
    with open(Path(root) / TAGS_LOCK, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _save_tags(root: str | Path, tags: Mapping[str, Sequence[str]]) -> None:
    path = Path(root) / TAGS_FILE
    kept = {run_id: sorted(set(values)) for run_id, values in tags.items() if values}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tags-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(kept, file, indent=1, sort_keys=True)
    os.replace(temporary, path)


def change_tags(root: str | Path, run_ids: Sequence[str], add: str = "", remove: str = "") -> dict[str, list[str]]:
    """Add and/or remove one tag on several runs; returns every run's tags afterwards."""
    with _tags_locked(root):
        return _change_tags(root, run_ids, add, remove)


def _change_tags(root: str | Path, run_ids: Sequence[str], add: str, remove: str) -> dict[str, list[str]]:
    tags = load_tags(root)
    add, remove = clean_tag(add), clean_tag(remove)
    for run_id in clean_run_ids(run_ids):
        current = set(tags.get(run_id, []))
        if add:
            current.add(add)
        current.discard(remove)
        tags[run_id] = sorted(current)
    _save_tags(root, tags)
    return {run_id: values for run_id, values in tags.items() if values}


def forget_tags(root: str | Path, run_ids: Sequence[str]) -> None:
    """Drop deleted runs from the tags file."""
    with _tags_locked(root):
        tags = load_tags(root)
        if any(run_id in tags for run_id in run_ids):
            _save_tags(root, {run_id: values for run_id, values in tags.items() if run_id not in set(run_ids)})
