"""JSON texts (tool outputs): compress long string values, keep the skeleton byte-identical.

A JSON text is cut into *pieces*: raw skeleton text (keys, punctuation, numbers, short
strings) and the literals of long string values.  Only values are compressed; each is
written back with ``json.dumps``, so the result is valid JSON with the same structure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["JsonPiece", "split_json", "write_value"]

# In valid JSON a double quote outside a string never occurs, so scanning left to right
# finds exactly the string literals, escapes included.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SPACE = " \t\r\n"


@dataclass(frozen=True)
class JsonPiece:
    """``text`` is raw skeleton when ``literal`` is None, else the decoded value of ``literal``."""

    text: str
    literal: str | None = None


def _parsed(text: str) -> str | None:
    """``"json"`` for a JSON object or array (the only JSON worth treating as structure),
    ``"deep"`` for one that opens like it but is nested deeper than ``json`` parses here (its
    limit depends on the caller's stack), None otherwise."""
    stripped = text.lstrip(_SPACE)
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        json.loads(text)
    except RecursionError:
        return "deep"
    except ValueError:
        return None
    return "json"


def _is_key(text: str, end: int) -> bool:
    while end < len(text) and text[end] in _SPACE:
        end += 1
    return end < len(text) and text[end] == ":"


def split_json(text: str, min_chars: int) -> list[JsonPiece] | None:
    """Pieces of a JSON object/array text, or None if ``text`` is not one.

    String values of at least ``min_chars`` characters become value pieces; everything
    else stays in raw pieces.  ``"".join`` of the raw texts and literals is ``text``.  A text
    nested too deep to parse is one raw piece, kept whole: it may be valid JSON to a reader with
    a deeper stack, which a compression as plain text would break.
    """
    parsed = _parsed(text)
    if parsed is None:
        return None
    if parsed == "deep":
        return [JsonPiece(text)]
    pieces: list[JsonPiece] = []
    pos = 0
    for match in _STRING.finditer(text):
        if _is_key(text, match.end()):
            continue
        literal = match.group(0)
        value = json.loads(literal)
        if len(value) < min_chars:
            continue
        if match.start() > pos:
            pieces.append(JsonPiece(text[pos : match.start()]))
        pieces.append(JsonPiece(value, literal))
        pos = match.end()
    if pos < len(text):
        pieces.append(JsonPiece(text[pos:]))
    return pieces


def write_value(literal: str, old_text: str, new_text: str) -> str:
    """The literal to write for a value: ``literal`` when unchanged, else a new one.

    ASCII-only originals stay ASCII (non-ASCII characters escaped, as they were).
    """
    if new_text == old_text:
        return literal
    return json.dumps(new_text, ensure_ascii=literal.isascii())
