"""Turn a user's CSV / JSON Lines file into a ``TextDataset``, or explain in one sentence what to fix.

Every problem a user can fix is reported as a ``DataError`` whose message names the line, column or class
at fault, so the dashboard can show it instead of a traceback. Softer issues (duplicates, entities not
found) come back as warnings next to the dataset.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from metanlp.data.errors import DataError
from metanlp.data.registry import SharedClassDataset, examples_for_split
from metanlp.data.types import SPLITS, Example, TextDataset

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MIN_CLASSES_FOR_CLASS_SPLIT = 6  # below this, disjoint train/val/test classes leave too few per split
SHARED_TRAIN_FRACTION = 0.8
SEED = 0
SHOWN = 5  # how many rows / classes a message lists before "and N more"

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json", ".ndjson": "json"}
_COMMON_NAMES = {
    "text": ("text", "sentence", "utterance", "content", "review", "document", "body", "question", "query"),
    "label": ("label", "labels", "category", "class", "intent", "target", "topic", "relation", "tag", "y"),
}
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class _Row:
    """One parsed record: where it came from (for messages) and its cells as strings."""

    position: int
    cells: dict[str, str]


@dataclass
class _Table:
    columns: list[str]
    rows: list[_Row]
    unit: str  # "line" for CSV / JSON Lines, "record" for a JSON array


# ---------------------------------------------------------------- public API


def load_user_dataset(
    source: str | Path | bytes,
    *,
    filename: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    head_column: str | None = None,
    tail_column: str | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    name: str = "user",
) -> tuple[TextDataset, list[str]]:
    """Read, validate and class-split a user's file; return (dataset, warnings).

    ``source`` is a path or the raw bytes of an upload (give ``filename`` so the format is known).
    With ``head_column`` / ``tail_column`` the entities are wrapped in [E1] / [E2] markers, like the
    bundled relation datasets. Files with at least 6 classes get a disjoint seeded class split; smaller
    ones are shared-class datasets whose examples are split 80/20 per class.
    """
    data, display_name, suffix = _read_source(source, filename, max_bytes)
    file_format = _detect_format(suffix, display_name, data)
    text = _decode(data, display_name)
    table = (
        _parse_json(text, display_name)
        if file_format == "json"
        else _parse_csv(text, display_name, file_format)
    )
    if not table.rows:
        raise DataError(f"The file {display_name} has column names but no data rows.")
    roles = {
        "text": text_column,
        "label": label_column,
        "head entity": head_column,
        "tail entity": tail_column,
    }
    _check_columns({role: column for role, column in roles.items() if column}, table.columns)

    warnings: list[str] = []
    examples, positions = _build_examples(
        table, text_column, label_column, head_column, tail_column, warnings
    )
    examples = _drop_duplicates(examples, positions, table.unit, warnings)
    labels = sorted({example.label for example in examples})
    if len(labels) < 2:
        raise DataError(
            f"The file {display_name} has only one class ('{labels[0]}'); few-shot classification needs at least 2."
        )
    common = {
        "name": name,
        "description": f"Uploaded file {display_name}: {len(examples)} examples in {len(labels)} classes.",
        "language": _guess_language(examples),
        "task": "relation classification (user data)"
        if head_column or tail_column
        else "text classification (user data)",
        "source": f"user upload ({display_name})",
        "licence": "as provided by the user",
    }
    if len(labels) >= MIN_CLASSES_FOR_CLASS_SPLIT:
        class_splits = split_user_classes(labels, seed=SEED)
        note = (
            f"Disjoint seeded class split (seed {SEED}, 60/20/20): "
            + ", ".join(f"{len(class_splits[s])} {s}" for s in SPLITS)
            + " classes."
        )
        return TextDataset(examples=examples, class_splits=class_splits, split_note=note, **common), warnings
    example_splits = _split_examples_per_class(examples, SHARED_TRAIN_FRACTION, SEED)
    note = (
        f"Only {len(labels)} classes (fewer than {MIN_CLASSES_FOR_CLASS_SPLIT}), so the classes cannot be split into "
        "disjoint train/val/test sets. Every class is used for both training and testing, and the examples are "
        f"split 80/20 per class instead (seed {SEED}); the validation split is empty."
    )
    warnings.append(note)
    dataset = SharedClassDataset(
        examples=examples,
        class_splits={"train": labels, "val": [], "test": labels},
        split_note=note,
        example_splits=example_splits,
        **common,
    )
    return dataset, warnings


def split_user_classes(
    labels: list[str], seed: int = SEED, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> dict[str, list[str]]:
    """Seeded disjoint train/val/test class split.

    Each split with a non-zero fraction gets at least 2 classes when there are enough, because an episode
    needs N >= 2 classes; the train split absorbs rounding.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(
            f"Class split fractions must be three non-negative numbers summing to 1; got {fractions}."
        )
    classes = sorted(set(labels))
    n = len(classes)
    active = [i for i, f in enumerate(fractions) if f > 0]
    minimum = 2 if n >= 2 * len(active) else 1 if n >= len(active) else 0
    counts = [max(minimum, round(n * f)) if f > 0 else 0 for f in fractions]
    while sum(counts) > n:  # take from the biggest split that can spare one
        spare = [i for i in active if counts[i] > minimum] or active
        counts[max(spare, key=lambda i: counts[i])] -= 1
    while sum(counts) < n:
        counts[max(active, key=lambda i: fractions[i])] += 1
    random.Random(seed).shuffle(classes)
    n_train, n_val, _ = counts
    return {
        "train": sorted(classes[:n_train]),
        "val": sorted(classes[n_train : n_train + n_val]),
        "test": sorted(classes[n_train + n_val :]),
    }


def check_episode_feasibility(
    dataset: TextDataset, n_way: int, k_shot: int, n_query: int, split: str = "test"
) -> None:
    """Raise DataError unless ``split`` can supply N classes with K + Q examples each.

    Like ``EpisodeSampler``, classes with too few distinct texts are skipped rather than fatal; only when
    fewer than N classes remain is it an error, and the message then names the small classes with counts.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    for value, label, smallest in (
        (n_way, "N (classes per episode)", 2),
        (k_shot, "K (shots per class)", 1),
        (n_query, "the number of query examples per class", 1),
    ):
        if not isinstance(value, int) or value < smallest:
            raise DataError(f"{label} must be a whole number of at least {smallest}; got {value!r}.")
    # Distinct texts, as the episode sampler counts them (a repeated text cannot be both support and query).
    counts = Counter(label for label, _ in {(e.label, e.text) for e in examples_for_split(dataset, split)})
    if not counts:
        raise DataError(
            f"The {split} split of dataset '{dataset.name}' has no classes, so no {split} episodes can be drawn."
        )
    if len(counts) < n_way:
        raise DataError(
            f"The {split} split of dataset '{dataset.name}' has only {len(counts)} classes "
            f"({_listing(sorted(counts))}), but a {n_way}-way episode needs {n_way}. "
            f"Lower N to {len(counts)} or use data with more classes."
        )
    needed = k_shot + n_query
    big_enough = [label for label, count in counts.items() if count >= needed]
    if len(big_enough) < n_way:
        too_small = sorted((count, label) for label, count in counts.items() if count < needed)
        named = _listing([f"'{label}' ({count})" for count, label in too_small])
        raise DataError(
            f"A {n_way}-way {k_shot}-shot episode with {n_query} query examples needs {needed} examples in each of "
            f"{n_way} classes, but only {len(big_enough)} of the {len(counts)} classes in the {split} split of "
            f"'{dataset.name}' have that many. Too small: {named}. Lower K or the query size, or add examples."
        )


# ---------------------------------------------------------------- reading and parsing


def _read_source(source: str | Path | bytes, filename: str | None, max_bytes: int) -> tuple[bytes, str, str]:
    """Return (bytes, name to show in messages, lower-case file extension or "")."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        named = filename or ""
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"There is no file at {path}.")
        named = filename or path.name
        _check_size(path.stat().st_size, max_bytes, named)  # before reading a huge file into memory
        data = path.read_bytes()
    else:
        raise DataError(f"Expected a file path or the file's bytes, got {type(source).__name__}.")
    display_name = named or "(uploaded)"
    _check_size(len(data), max_bytes, display_name)
    if not data.strip():
        raise DataError(f"The file {display_name} is empty.")
    return data, display_name, Path(named).suffix.lower()


def _check_size(size: int, max_bytes: int, display_name: str) -> None:
    if size > max_bytes:
        raise DataError(
            f"The file {display_name} is {_human_size(size)}, over the {_human_size(max_bytes)} limit. "
            "Upload a smaller sample, e.g. fewer examples per class."
        )


def _detect_format(suffix: str, display_name: str, data: bytes) -> str:
    """Trust the extension; without one, a leading '{' or '[' means JSON."""
    if suffix in _FORMATS:
        return _FORMATS[suffix]
    if suffix:
        raise DataError(
            f"The file {display_name} has an unsupported type '{suffix}'. Upload a .csv, .tsv, .jsonl or .json file."
        )
    return "json" if data.lstrip(_UTF8_BOM + b" \t\r\n")[:1] in (b"{", b"[") else "csv"


def _decode(data: bytes, display_name: str) -> str:
    body = data.removeprefix(_UTF8_BOM)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start + (len(data) - len(body))
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            f"The file {display_name} is not UTF-8 text: byte 0x{data[offset]:02X} at offset {offset} (line {line}) "
            "cannot be decoded. Save the file with UTF-8 encoding (in Excel: 'CSV UTF-8') and upload it again."
        ) from None


def _parse_csv(text: str, display_name: str, file_format: str) -> _Table:
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if file_format == "tsv" else max(",;\t", key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    quoting_hint = (
        "Texts that contain the delimiter, quotes or line breaks must be wrapped in double quotes, "
        'with quotes inside doubled ("").'
    )
    rows: list[_Row] = []
    header: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in fields):
                continue  # blank lines carry no data
            if header is None:
                header = [cell.strip() for cell in fields]
                _check_header(header, display_name)
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"Line {line} of {display_name} has {len(fields)} fields but the header has {len(header)} "
                    f"({', '.join(header)}). {quoting_hint}"
                )
            rows.append(_Row(line, dict(zip(header, fields, strict=True))))
    except csv.Error as error:
        raise DataError(
            f"The CSV file {display_name} cannot be parsed at line {start}: {error}. {quoting_hint}"
        ) from None
    if header is None:
        raise DataError(f"The file {display_name} is empty.")
    return _Table(columns=header, rows=rows, unit="line")


def _check_header(header: list[str], display_name: str) -> None:
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise DataError(
            f"The header of {display_name} repeats the column name(s) {_listing(repeated)}; rename them."
        )


def _parse_json(text: str, display_name: str) -> _Table:
    """JSON Lines (one object per line) or, if the file starts with '[', one JSON array of objects."""
    example = 'Each record must be an object such as {"text": "...", "label": "..."}.'
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"The file {display_name} is not valid JSON: {error.msg} at line {error.lineno}."
            ) from None
        numbered, unit = list(enumerate(records, start=1)), "record"
    else:
        numbered, unit = [], "line"
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise DataError(
                    f"Line {number} of {display_name} is not valid JSON ({error.msg} at column {error.colno}). {example}"
                ) from None
    columns: dict[str, None] = {}  # ordered set: keys in first-seen order
    rows = []
    for number, record in numbered:
        if not isinstance(record, dict):
            raise DataError(
                f"{unit.capitalize()} {number} of {display_name} holds a JSON {_json_type(record)}. {example}"
            )
        columns.update(dict.fromkeys(record))
        rows.append(_Row(number, {key: _cell(value, key, unit, number) for key, value in record.items()}))
    return _Table(columns=list(columns), rows=rows, unit=unit)


def _cell(value: object, key: str, unit: str, number: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return str(value)
    raise DataError(
        f"{unit.capitalize()} {number}: field '{key}' holds a JSON {_json_type(value)}; texts and labels must be strings."
    )


def _check_columns(wanted: dict[str, str], found: list[str]) -> None:
    problems = []
    for role, column in wanted.items():
        if column in found:
            continue
        suggestion = _suggest_column(column, role, found)
        hint = f" Did you mean '{suggestion}'? Choose it as the {role} column." if suggestion else ""
        problems.append(f"There is no {role} column named '{column}'.{hint}")
    if problems:
        columns = ", ".join(f"'{c}'" for c in found) or "none"
        raise DataError(" ".join(problems) + f" Columns found: {columns}.")


def _suggest_column(column: str, role: str, found: list[str]) -> str | None:
    by_lower = {name.lower(): name for name in found}
    if column.lower() in by_lower:
        return by_lower[column.lower()]
    close = difflib.get_close_matches(column.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return by_lower[close[0]]
    for common in _COMMON_NAMES.get(role, ()):
        if common in by_lower:
            return by_lower[common]
    return None


# ---------------------------------------------------------------- building examples


def _build_examples(
    table: _Table,
    text_column: str,
    label_column: str,
    head_column: str | None,
    tail_column: str | None,
    warnings: list[str],
) -> tuple[list[Example], list[int]]:
    empty_text, empty_label = [], []
    missing_entity: dict[str, list[int]] = {"head": [], "tail": []}
    examples, positions = [], []
    for row in table.rows:
        text = row.cells.get(text_column, "").strip()
        label = row.cells.get(label_column, "").strip()
        if not text:
            empty_text.append(row.position)
        if not label:
            empty_label.append(row.position)
        if not text or not label:
            continue
        if head_column or tail_column:
            head = row.cells.get(head_column, "") if head_column else None
            tail = row.cells.get(tail_column, "") if tail_column else None
            text, missing = mark_entities(text, head, tail)
            for role in missing:
                missing_entity[role].append(row.position)
        examples.append(Example(text=" ".join(text.split()), label=label))
        positions.append(row.position)
    problems = [
        f"{what} in {_where(table.unit, where)}"
        for what, where in (("Empty text", empty_text), ("Empty label", empty_label))
        if where
    ]
    if problems:
        raise DataError("; ".join(problems) + ". Remove those rows or fill them in.")
    for role, marker in (("head", "[E1]"), ("tail", "[E2]")):
        if missing_entity[role]:
            where = missing_entity[role]
            warnings.append(
                f"The {role} entity was not found in the text of {_where(table.unit, where)}; "
                f"those examples have no {marker} marker."
            )
    return examples, positions


def mark_entities(text: str, head: str | None, tail: str | None) -> tuple[str, list[str]]:
    """Wrap the first occurrence of ``head`` in [E1] ... [/E1] and of ``tail`` in [E2] ... [/E2].

    Matching falls back to case-insensitive. The tail is looked for outside the head span so that nested
    names ("New York" inside "New York City") still get both markers. Returns (text, roles not found).
    """
    spans: list[tuple[int, int, str, str]] = []
    missing: list[str] = []
    for role, entity, opening, closing in (("head", head, "[E1]", "[/E1]"), ("tail", tail, "[E2]", "[/E2]")):
        if entity is None:
            continue
        span = _find_outside(text, entity.strip(), taken=spans)
        if span is None:
            missing.append(role)
        else:
            spans.append((*span, opening, closing))
    for start, end, opening, closing in sorted(spans, reverse=True):  # right to left keeps offsets valid
        text = f"{text[:start]}{opening} {text[start:end]} {closing}{text[end:]}"
    return text, missing


def _find_outside(text: str, entity: str, taken: list[tuple[int, int, str, str]]) -> tuple[int, int] | None:
    if not entity:
        return None
    for flags in (0, re.IGNORECASE):
        for match in re.finditer(re.escape(entity), text, flags):
            if all(match.end() <= start or match.start() >= end for start, end, *_ in taken):
                return match.start(), match.end()
    return None


def _drop_duplicates(
    examples: list[Example], positions: list[int], unit: str, warnings: list[str]
) -> list[Example]:
    """Repeated (text, label) pairs are dropped, because a copy in the support set and one in the query
    set would inflate accuracy; one text with several labels is kept but reported."""
    first_seen: dict[Example, int] = {}
    labels_of: dict[str, set[str]] = {}
    kept, repeats = [], []
    for example, position in zip(examples, positions, strict=True):
        labels_of.setdefault(example.text, set()).add(example.label)
        if example in first_seen:
            repeats.append((position, example.text))
            continue
        first_seen[example] = position
        kept.append(example)
    if repeats:
        shown = "; ".join(f"{unit} {pos}: '{_short(text)}'" for pos, text in repeats[:3])
        warnings.append(
            f"Removed {_count(len(repeats), 'duplicate row')} (same text and label as an earlier row, "
            f"e.g. {shown}), "
            "so no text can appear in both the support and the query set."
        )
    conflicts = {text: labels for text, labels in labels_of.items() if len(labels) > 1}
    if conflicts:
        shown = "; ".join(
            f"'{_short(text)}' as {_listing(sorted(labels))}" for text, labels in list(conflicts.items())[:3]
        )
        warnings.append(
            f"Found {_count(len(conflicts), 'text')} with more than one label (e.g. {shown}). They were kept, but they make "
            "those classes ambiguous; consider fixing the labels."
        )
    return kept


def _split_examples_per_class(examples: list[Example], train_fraction: float, seed: int) -> list[str]:
    """Seeded, stratified per-example split; every class with 2+ examples keeps at least one test example."""
    rng = random.Random(seed)
    indices_by_label: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        indices_by_label.setdefault(example.label, []).append(index)
    splits = ["train"] * len(examples)
    for label in sorted(indices_by_label):
        indices = indices_by_label[label]
        rng.shuffle(indices)
        n_train = min(len(indices) - 1, round(len(indices) * train_fraction)) if len(indices) > 1 else 1
        for index in indices[n_train:]:
            splits[index] = "test"
    return splits


def _guess_language(examples: list[Example]) -> str:
    """'zh' when CJK characters dominate a sample of texts, else 'en' (only used to pick an encoder)."""
    sample = "".join(example.text for example in examples[:200])
    letters = [char for char in sample if char.isalpha()]
    cjk = sum(1 for char in letters if "\u4e00" <= char <= "\u9fff")
    return "zh" if letters and cjk / len(letters) > 0.3 else "en"


def _listing(items: list, limit: int = SHOWN) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _where(unit: str, positions: list[int]) -> str:
    """'1 line (line 4)' or '3 lines (lines 2, 5, 9)'."""
    plural = "" if len(positions) == 1 else "s"
    return f"{len(positions)} {unit}{plural} ({unit}{plural} {_listing(positions)})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _human_size(n_bytes: int) -> str:
    """MB for anything near upload sizes; smaller units only for tiny test limits."""
    if n_bytes >= 2**20:
        return f"{n_bytes / 2**20:.3g} MB"
    return f"{n_bytes / 1024:.3g} KB" if n_bytes >= 1024 else f"{n_bytes} bytes"


def _json_type(value: object) -> str:
    names = {
        list: "array",
        str: "string",
        int: "number",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
