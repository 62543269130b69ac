"""Turn a parsed table into labelled examples, or explain which rows and columns to fix.

Hard problems (a missing column, empty texts or labels) raise ``DataError``; soft ones (repeated
rows, one text with several labels, entities not found) are appended to ``warnings`` so the
dataset still loads and the user sees what was changed.
"""

from __future__ import annotations

import difflib

from metanlp.data.entities import mark_entities
from metanlp.data.errors import DataError
from metanlp.data.file_reading import Table
from metanlp.data.messages import count, listing, row_positions, short
from metanlp.data.types import Example

_COMMON_NAMES = {
    "text": ("text", "sentence", "utterance", "content", "review", "document", "body", "question", "query"),
    "label": ("label", "labels", "category", "class", "intent", "target", "topic", "relation", "tag", "y"),
}


def check_columns(wanted: dict[str, str], found: list[str]) -> None:
    """Raise ``DataError`` unless every wanted column (role → name) exists, suggesting the likely one."""
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


def build_examples(
    table: Table,
    text_column: str,
    label_column: str,
    head_column: str | None,
    tail_column: str | None,
    warnings: list[str],
) -> tuple[list[Example], list[int]]:
    """One example per row (whitespace tidied, entities marked); returns (examples, their row positions)."""
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
        f"{what} in {row_positions(table.unit, where)}"
        for what, where in (("Empty text", empty_text), ("Empty label", empty_label))
        if where
    ]
    if problems:
        raise DataError("; ".join(problems) + ". Remove those rows or fill them in.")
    for role, marker in (("head", "[E1]"), ("tail", "[E2]")):
        if missing_entity[role]:
            where = missing_entity[role]
            warnings.append(
                f"The {role} entity was not found in the text of {row_positions(table.unit, where)}; "
                f"those examples have no {marker} marker."
            )
    return examples, positions


def drop_duplicates(
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
        shown = "; ".join(f"{unit} {pos}: '{short(text)}'" for pos, text in repeats[:3])
        warnings.append(
            f"Removed {count(len(repeats), 'duplicate row')} (same text and label as an earlier row, "
            f"e.g. {shown}), "
            "so no text can appear in both the support and the query set."
        )
    conflicts = {text: labels for text, labels in labels_of.items() if len(labels) > 1}
    if conflicts:
        shown = "; ".join(
            f"'{short(text)}' as {listing(sorted(labels))}" for text, labels in list(conflicts.items())[:3]
        )
        warnings.append(
            f"Found {count(len(conflicts), 'text')} with more than one label (e.g. {shown}). They were kept, but they make "
            "those classes ambiguous; consider fixing the labels."
        )
    return kept
