"""Small phrase builders for ``DataError`` messages, so every data message lists and counts alike."""

from __future__ import annotations

SHOWN = 5  # how many rows / classes a message lists before "and N more"


def listing(items: list, limit: int = SHOWN) -> str:
    """'a, b, c' or 'a, b, c, d, e and 3 more'."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def row_positions(unit: str, positions: list[int]) -> str:
    """'1 line (line 4)' or '3 lines (lines 2, 5, 9)'."""
    plural = "" if len(positions) == 1 else "s"
    return f"{len(positions)} {unit}{plural} ({unit}{plural} {listing(positions)})"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 text' or '3 texts' ('2 classes' with ``plural="classes"``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def short(text: str, width: int = 60) -> str:
    """A text cut to ``width`` characters, so one long row cannot flood a message."""
    return text if len(text) <= width else text[: width - 3] + "..."
