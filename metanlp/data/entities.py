"""Entity markers for relation data: wrap the head in [E1] ... [/E1] and the tail in [E2] ... [/E2].

The bundled relation datasets carry these markers already; a user file names its entities in two
columns instead, and this puts the same markers into the text so every method sees one format.
"""

from __future__ import annotations

import re


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
