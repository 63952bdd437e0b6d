"""Draft-token scores → character units (the cross-tokenizer step).

The draft model scores its own tokens; the target never sees them.  This module
maps those scores onto tokenizer-independent *units* of the text:

* ``word``: maximal runs of non-whitespace (prose),
* ``line``: non-blank lines, leading indentation included (code, JSON, logs, tables),
* ``sentence``: runs of words ending after ``. ! ?`` or at a blank line,
* ``statement``: sentences that also end at a line break after a short line or a ``:``
  (headings, titles, list items, log lines), while hard-wrapped prose lines continue.

A unit's score is the max (or mean) of the draft tokens whose character span
overlaps it.  Everything is vectorised with numpy so 100k+ character texts cost
O((u + k) log(u + k)) for ``u`` units and ``k`` draft tokens.  No torch here.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import numpy as np

from .errors import ConfigError, InputError

__all__ = ["detect_kind", "resolve_unit", "split_units", "unit_scores"]

logger = logging.getLogger(__name__)

Kind = Literal["prose", "code"]
Unit = Literal["word", "line", "sentence", "statement"]

# --- kind detection ---------------------------------------------------------------

#: Only this many leading characters are inspected by :func:`detect_kind`.
DETECT_CHARS = 50_000
#: Share of code-like non-blank lines from which a multi-line text counts as code.
CODE_LINE_SHARE = 0.5
#: Share of symbol characters (not letter/digit/space) that marks a line or text as code.
SYMBOL_DENSITY = 0.3
#: Words from which a line holding a sentence end is a line of prose (see :func:`_heading`).
PROSE_WORDS = 6

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}|\b\d{1,2}:\d{2}:\d{2}\b")
_ASSIGN = re.compile(r"^\s*[A-Za-z_$][\w.$\[\]'\"]*\s*(?:[-+*/%|&^]?=|:=)\s*\S")
_KEY_VALUE = re.compile(r"^\s*[\w.\-\"']+\s*:(?:\s|$)")
_SYMBOL = re.compile(r"[^\w\s]")
_SENTENCE_END = re.compile(r"\w[.!?][\"')\]]*(?:\s|$)")
_MARKUP_START = ("{", "}", "[", "]", "<", "|")
_CODE_END = ("{", "}", "[", "(", ";", ":", ",")


def _symbol_density(line: str) -> float:
    visible = len("".join(line.split()))
    return len(_SYMBOL.findall(line)) / visible if visible else 0.0


def _strong_code_line(line: str) -> bool:
    """Signals that mark even a single line as code/data."""
    stripped = line.strip()
    return (
        (stripped.startswith(_MARKUP_START) and _symbol_density(stripped) > 0.15)
        or bool(_TIMESTAMP.search(line))
        or bool(_ASSIGN.match(line))
        or _symbol_density(stripped) > SYMBOL_DENSITY
    )


def _weak_code_line(line: str) -> bool:
    """Signals that only count when many lines share them (prose lines end with ',' too)."""
    return (
        line.startswith(("  ", "\t"))
        or line.rstrip().endswith(_CODE_END)
        or line.lstrip().startswith(_MARKUP_START)
        or bool(_KEY_VALUE.match(line))
    )


def _code_like(line: str) -> bool:
    return _weak_code_line(line) or _strong_code_line(line)


def _prose_line(line: str) -> bool:
    """An unindented line of at least :data:`PROSE_WORDS` words holding a sentence end, with no
    code signal: a paragraph, not a statement."""
    return len(line.split()) >= PROSE_WORDS and bool(_SENTENCE_END.search(line)) and not _code_like(line)


def _heading(line: str, following: str) -> bool:
    """A line ending in ``:`` that introduces a paragraph (``Document 1:`` above a passage), which
    code never does (a block opened by ``:`` is indented, a YAML key holds short values)."""
    return line.rstrip().endswith(":") and _prose_line(following)


def detect_kind(text: str) -> Kind:
    """Guess whether ``text`` is ``"code"`` (source, JSON, YAML, logs, tables) or ``"prose"``.

    A line is *code-like* when it is indented, ends with one of ``{ } [ ( ; : ,``,
    starts with ``{ } [ ] < |``, is a ``key: value`` or ``name = value`` line,
    carries a timestamp, or more than 30% of its visible characters are symbols;
    a heading (a line ending in ``:`` followed by a line of prose sentences) is not.
    A multi-line text is code when at least half its non-blank lines are code-like;
    a single line only on the strong signals (markup with symbols, timestamp,
    assignment, symbol density), so a prose sentence ending in ``:`` stays prose.
    Only the first :data:`DETECT_CHARS` characters are inspected.
    """
    lines = [line for line in text[:DETECT_CHARS].split("\n") if line.strip()]
    if not lines:
        return "prose"
    if len(lines) == 1:
        return "code" if _strong_code_line(lines[0]) else "prose"
    code_like = sum(
        1 for line, following in zip(lines, [*lines[1:], ""])
        if _code_like(line) and not _heading(line, following)
    )
    return "code" if code_like >= CODE_LINE_SHARE * len(lines) else "prose"


def resolve_unit(config_unit: str, kind: str) -> Unit:
    """The selection unit for a segment: ``"auto"`` → whole statements, ``"line"`` for code and
    ``"statement"`` for prose."""
    if config_unit == "auto":
        if kind not in ("prose", "code"):
            raise ConfigError(f"kind must be 'prose' or 'code', got {kind!r}")
        return "line" if kind == "code" else "statement"
    if config_unit not in ("word", "line", "sentence"):
        raise ConfigError(f"unit must be 'auto', 'word', 'line' or 'sentence', got {config_unit!r}")
    return config_unit  # type: ignore[return-value]


# --- units ------------------------------------------------------------------------

_WORD = re.compile(r"\S+")
_LINE = re.compile(r"^[^\S\n]*\S(?:[^\n]*\S)?", re.MULTILINE)
_TERMINATORS = np.array([ord(c) for c in ".!?。！？…"], dtype=np.uint32)
_CLOSERS = np.array([ord(c) for c in "\"')]}’”»"], dtype=np.uint32)


def _spans(pattern: re.Pattern[str], text: str) -> np.ndarray:
    flat = np.fromiter((x for m in pattern.finditer(text) for x in m.span()), dtype=np.int64)
    return flat.reshape(-1, 2)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


#: A line shorter than this that ends in a line break ends a statement (a heading, a title,
#: a list item); longer lines are taken as hard-wrapped prose that goes on.
SHORT_LINE = 40


def _sentence_spans(text: str, words: np.ndarray, lines: bool = False) -> np.ndarray:
    """Group word spans into sentences: break after a terminator (optionally closed by a
    quote or bracket) and wherever the whitespace between two words holds a blank line;
    with ``lines``, also at a line break after ``:`` or after a line under :data:`SHORT_LINE`."""
    if len(words) == 0:
        return words
    cps = _code_points(text)
    starts, ends = words[:, 0], words[:, 1]
    last = cps[ends - 1]
    before_last = cps[np.maximum(ends - 2, 0)]
    closed = np.isin(last, _CLOSERS) & np.isin(before_last, _TERMINATORS) & (ends - 2 >= starts)
    terminal = np.isin(last, _TERMINATORS) | closed
    newlines = np.concatenate(([0], np.cumsum(cps == 10)))
    gap_newlines = newlines[starts[1:]] - newlines[ends[:-1]]
    breaks_at = terminal[:-1] | (gap_newlines >= 2)
    if lines:
        line_start = np.concatenate(([0], np.nonzero(cps == 10)[0] + 1))
        own_line = line_start[newlines[ends[:-1]]]  # where the line holding each word's end begins
        short = (ends[:-1] - own_line) < SHORT_LINE
        breaks_at |= (gap_newlines >= 1) & (short | (last[:-1] == ord(":")))
    breaks = np.nonzero(breaks_at)[0]
    first = np.concatenate(([0], breaks + 1))
    final = np.concatenate((breaks, [len(words) - 1]))
    return np.stack((starts[first], ends[final]), axis=1)


def split_units(text: str, unit: Unit) -> np.ndarray:
    """Character spans ``[start, end)`` of the non-whitespace content units of ``text``.

    Returns an ``(u, 2)`` int64 array in text order; units never overlap and never
    start or end with whitespace, except that ``line`` units include the line's
    leading indentation.  Empty or all-whitespace text gives shape ``(0, 2)``.
    Sentence splitting is deliberately naive (``e.g. x`` splits after ``e.g.``).
    """
    if unit == "word":
        return _spans(_WORD, text)
    if unit == "line":
        return _spans(_LINE, text)
    if unit == "sentence":
        return _sentence_spans(text, _spans(_WORD, text))
    if unit == "statement":
        return _sentence_spans(text, _spans(_WORD, text), lines=True)
    raise ConfigError(f"unit must be 'word', 'line', 'sentence' or 'statement', got {unit!r}")


# --- scores -----------------------------------------------------------------------


def _range_max(n: int, lo: np.ndarray, hi: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-position max of ``values[t]`` over the ranges ``[lo[t], hi[t])`` (−inf where none).

    A reversed sparse table: each range is written as two overlapping power-of-two
    blocks, then the blocks are pushed down level by level.  O(k + n log n).
    """
    level = np.frexp((hi - lo).astype(np.float64))[1].astype(np.int64) - 1
    levels = int(level.max()) + 1 if len(level) else 1
    table = np.full((levels, n), -np.inf)
    np.maximum.at(table, (level, lo), values)
    np.maximum.at(table, (level, hi - (np.int64(1) << level)), values)
    for lev in range(levels - 1, 0, -1):
        half, width = 1 << (lev - 1), n - (1 << lev) + 1
        if width <= 0:
            continue
        row = table[lev, :width]
        np.maximum(table[lev - 1, :width], row, out=table[lev - 1, :width])
        np.maximum(table[lev - 1, half : half + width], row, out=table[lev - 1, half : half + width])
    return table[0]


def _validated(
    units: np.ndarray, token_offsets: np.ndarray, token_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    units = np.asarray(units, dtype=np.int64).reshape(-1, 2)
    offsets = np.asarray(token_offsets, dtype=np.int64)
    scores = np.asarray(token_scores, dtype=np.float64).reshape(-1)
    if offsets.size == 0:
        offsets = offsets.reshape(0, 2)
    if offsets.ndim != 2 or offsets.shape[1] != 2 or offsets.shape[0] != scores.shape[0]:
        raise InputError(
            f"token_offsets must be (k, 2) and token_scores (k,); got {offsets.shape} and {scores.shape}"
        )
    if not np.all(np.isfinite(scores)):
        logger.debug("non-finite draft scores replaced by 0")
        scores = np.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
    return units, offsets, scores


def unit_scores(
    units: np.ndarray,
    token_offsets: np.ndarray,
    token_scores: np.ndarray,
    reduce: Literal["max", "mean"] = "max",
) -> tuple[np.ndarray, np.ndarray]:
    """Score each unit from the draft tokens that overlap it.

    A token ``[ts, te)`` overlaps a unit ``[us, ue)`` when ``ts < ue and te > us``;
    zero-length (or inverted) token spans are ignored.  Offsets may overlap or step
    back by a character (byte-level BPE gives several tokens the same span).

    Returns ``(scores, counts)``: float64 ``(u,)`` max or mean of the overlapping
    token scores, and int64 ``(u,)`` number of such tokens.  A unit no token
    overlaps gets score 0 and count 1 (so counts are always ≥ 1).
    """
    if reduce not in ("max", "mean"):
        raise ConfigError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    units, offsets, scores = _validated(units, token_offsets, token_scores)
    n = units.shape[0]
    valid = offsets[:, 1] > offsets[:, 0]
    offsets, scores = offsets[valid], scores[valid]
    lo = np.searchsorted(units[:, 1], offsets[:, 0], side="right")
    hi = np.searchsorted(units[:, 0], offsets[:, 1], side="left")
    hit = hi > lo
    lo, hi, scores = lo[hit], hi[hit], scores[hit]
    counts = np.cumsum(np.bincount(lo, minlength=n + 1) - np.bincount(hi, minlength=n + 1))[:n]
    if reduce == "max":
        out = _range_max(n, lo, hi, scores) if n else np.zeros(0)
    else:
        sums = np.cumsum(
            np.bincount(lo, weights=scores, minlength=n + 1)
            - np.bincount(hi, weights=scores, minlength=n + 1)
        )[:n]
        out = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)
    empty = counts == 0
    out[empty] = 0.0
    return out.astype(np.float64), np.where(empty, 1, counts).astype(np.int64)
