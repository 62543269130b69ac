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
_SAMPLE_ROWS = 500  # rows read to judge what a column holds


def check_columns(wanted: dict[str, str], table: Table) -> None:
    """Raise ``DataError`` unless every wanted column (role → name) exists, suggesting the likely one.

    A suggestion is never a column that already plays another role (the text column is never
    offered as the label), so each role gets its own, most plausible column.
    """
    found = table.columns
    problems = []
    for role, column in wanted.items():
        if column in found:
            continue
        taken = {name for other, name in wanted.items() if other != role and name in found}
        suggestion = suggest_column(column, role, [name for name in found if name not in taken], table)
        hint = f" Did you mean '{suggestion}'? Choose it as the {role} column." if suggestion else ""
        problems.append(f"There is no {role} column named '{column}'.{hint}")
    if problems:
        columns = ", ".join(f"'{c}'" for c in found) or "none"
        raise DataError(" ".join(problems) + f" Columns found: {columns}.")


def suggest_column(column: str, role: str, candidates: list[str], table: Table) -> str | None:
    """The candidate most likely meant for ``role``: same name in another case, a usual name for the
    role, a close spelling, then what the cells look like (labels repeat, texts are long and varied)."""
    by_lower = {name.lower(): name for name in candidates}
    if column.lower() in by_lower:
        return by_lower[column.lower()]
    usual_elsewhere = {name for other, names in _COMMON_NAMES.items() if other != role for name in names}
    for usual in _COMMON_NAMES.get(role, ()):
        if usual in by_lower:
            return by_lower[usual]
    plausible = {lower: name for lower, name in by_lower.items() if lower not in usual_elsewhere}
    close = difflib.get_close_matches(column.lower(), list(plausible), n=1, cutoff=0.6)
    if close:
        return plausible[close[0]]
    return _looks_like(role, list(plausible.values()), table)


def _looks_like(role: str, candidates: list[str], table: Table) -> str | None:
    """By content: the label is the column with the fewest distinct values (2 or more, repeating);
    the text the one with the longest cells."""
    rows = table.rows[:_SAMPLE_ROWS]
    cells = {name: [row.cells.get(name, "").strip() for row in rows] for name in candidates}
    cells = {name: [value for value in values if value] for name, values in cells.items()}
    if role == "label":
        repeating = {
            name: len(set(values)) for name, values in cells.items() if 2 <= len(set(values)) <= len(values) / 2
        }
        return min(repeating, key=lambda name: (repeating[name], candidates.index(name)), default=None)
    if role == "text":
        lengths = {name: sum(map(len, values)) / len(values) for name, values in cells.items() if values}
        return max(lengths, key=lambda name: (lengths[name], -candidates.index(name)), default=None)
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
