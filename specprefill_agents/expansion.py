"""Getting left-out text back: by reference (optionally only the statements mentioning a string),
or by a lexical search (BM25) over everything a conversation's compressions left out.

Framework-free: an integration collects the :class:`OmittedText` of its own conversation (from
the originals it holds, never from a shared pool) and turns an :class:`Expansion` into a tool
message.  A reference that is not among them raises :class:`GapNotFoundError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .alignment import detect_kind, resolve_unit, split_units
from .budget import approximate_tokens
from .errors import GapNotFoundError, InputError
from .lexical import bm25_scores, expand_query
from .types import CompressionResult, normalize_ref

__all__ = ["OmittedText", "Expansion", "omitted_texts", "expand_ref", "search_omitted"]

Counter = Callable[[str], int]


@dataclass(frozen=True)
class OmittedText:
    """The original text of one gap, under its reference."""

    ref: str
    text: str


@dataclass(frozen=True)
class Expansion:
    """What an expansion returns: ``(ref, original text)`` parts in order, and their token count."""

    parts: tuple[tuple[str, str], ...]
    tokens: int

    def to_text(self) -> str:
        """The parts as one text, each under a ``[ref 3f2a1]`` line ("" when there are none)."""
        return "\n\n".join(f"[ref {ref}]\n{text}" for ref, text in self.parts)


def omitted_texts(results: Iterable[CompressionResult]) -> list[OmittedText]:
    """The left-out text of every gap of ``results``, in order."""
    return [OmittedText(g.ref, r.original_range(g.segment, g.start, g.end)) for r in results for g in r.gaps]


def _units(text: str) -> list[tuple[int, int]]:
    """Statements of prose, lines of code (the units a compression keeps whole)."""
    spans = split_units(text, resolve_unit("auto", detect_kind(text)))
    return [(int(a), int(b)) for a, b in spans]


def expand_ref(
    omitted: Sequence[OmittedText], ref: str, search: str | None = None, counter: Counter = approximate_tokens
) -> Expansion:
    """The original text of gap ``ref`` exactly; with ``search``, only its statements / lines that
    mention it (case-insensitive), joined by newlines (no part when none does)."""
    wanted = normalize_ref(ref)
    matches = [o for o in omitted if o.ref == wanted]
    if not matches:
        raise GapNotFoundError(
            f"no text was left out under the reference {ref!r} here; use a reference "
            f"from a gap marker ('ref 3f2a1'), or search by query"
        )
    if search is not None and not isinstance(search, str):
        raise InputError(f"search must be a str or None, got {type(search).__name__}")
    parts = []
    for match in matches:
        text = match.text
        if search and search.strip():
            needle = search.strip().casefold()
            text = "\n".join(
                match.text[a:b].strip() for a, b in _units(match.text) if needle in match.text[a:b].casefold()
            )
        if text:
            parts.append((match.ref, text))
    return Expansion(tuple(parts), sum(counter(t) for _, t in parts))


#: A unit scoring under this share of the best BM25 match is not returned (it matched stop words).
MIN_SHARE = 0.2


def search_omitted(
    omitted: Sequence[OmittedText],
    query: str,
    max_tokens: int,
    counter: Counter = approximate_tokens,
    feedback: int = 3,
    seen: Sequence[str] = (),
) -> Expansion:
    """The left-out statements / lines that best match ``query`` (BM25 over all of them), best first
    while they fit in ``max_tokens`` (their ``[ref ...]`` lines included) and score at least
    :data:`MIN_SHARE` of the best, then written back in their original order, grouped by reference.

    The query first grows by ``feedback`` rounds of pseudo-relevance feedback over the omitted text
    and ``seen`` (what the reader was shown: the kept text), so the second hop of a question whose
    first hop was kept is found although it shares no word with the question; ``seen`` is never
    returned."""
    if not isinstance(query, str) or not query.strip():
        raise InputError("query must be a non-empty str")
    units = [(o, a, b) for o, item in enumerate(omitted) for a, b in _units(item.text)]
    texts = [omitted[o].text[a:b] for o, a, b in units]
    if not texts:
        return Expansion((), 0)
    known = [text[a:b] for text in seen for a, b in _units(text)]
    asked = expand_query(texts + known, query, feedback) if feedback else query
    scores = bm25_scores(texts, asked)
    header = counter(Expansion(((omitted[0].ref, ""),), 0).to_text() + "\n\n")  # a part's "[ref ...]" line
    chosen, used, floor = [], 0, max(float(scores.max()) * MIN_SHARE, 1e-12)
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < floor:
            break
        cost = counter(texts[i]) + header  # at most one header per unit: the whole text stays in budget
        if used + cost <= max_tokens:
            chosen.append(int(i))
            used += cost
    found = Expansion(_written(omitted, units, sorted(chosen)), 0)
    return Expansion(found.parts, counter(found.to_text()) if found.parts else 0)


def _written(
    omitted: Sequence[OmittedText], units: list[tuple[int, int, int]], chosen: list[int]
) -> tuple[tuple[str, str], ...]:
    """Chosen units as ``(ref, text)`` parts: neighbouring units as one exact slice of the original,
    runs of one reference joined by newlines."""
    runs: list[list[int]] = []  # [omitted index, start, end, last unit]
    for i in chosen:
        o, start, end = units[i]
        if runs and runs[-1][0] == o and runs[-1][3] == i - 1:
            runs[-1][2:] = [end, i]
        else:
            runs.append([o, start, end, i])
    parts: list[tuple[str, str]] = []
    for o, start, end, _ in runs:
        ref, text = omitted[o].ref, omitted[o].text[start:end].strip()
        if parts and parts[-1][0] == ref:
            parts[-1] = (ref, f"{parts[-1][1]}\n{text}")
        else:
            parts.append((ref, text))
    return tuple(parts)
