"""Gap references and markers: pure functions, no torch.

A gap is a left-out range ``[start, end)`` of a segment's original text.  Its reference is a
short prefix of ``H(seed, start, end)``, where ``seed`` is the segment's prefix-hash chain over
the original texts (:func:`gap_seed`): the same range of the same conversation prefix gets the
same reference at every step and in every process, and a reference says nothing about the text
itself.  Inside one result references are unique: a reference that an earlier gap already took
grows by one hex digit at a time (:func:`assign_refs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from .cache import segment_chain
from .config import CompressionConfig
from .types import KeptSpan

__all__ = ["REF_CHARS", "GapMark", "assign_refs", "gap_marker", "gap_ranges", "gap_seed", "mark_gaps"]

#: Hex digits of a reference (a 5-digit prefix: about one collision per million gap pairs).
REF_CHARS = 5
#: What a marker's placeholders hold while the selection estimates a marker's cost.
_ESTIMATE_REF, _ESTIMATE_TOKENS = "0" * REF_CHARS, "100"

_SEED_NAMESPACE = "specprefill-gaps-v1"


@dataclass(frozen=True)
class GapMark:
    """A gap of one segment as the renderer writes it: its range, reference and token count."""

    start: int
    end: int
    ref: str
    tokens: int


def gap_seed(texts: Sequence[str]) -> list[str]:
    """One seed per segment: a hash chain over the original texts up to and including it."""
    return segment_chain(texts, _SEED_NAMESPACE, "")


def _digest(seed: str, start: int, end: int) -> str:
    return hashlib.blake2b(f"{seed}:{start}:{end}".encode(), digest_size=16).hexdigest()


def assign_refs(digests: Sequence[str], taken: Collection[str] = ()) -> list[str]:
    """Short references for ``digests``, in order: the first :data:`REF_CHARS` hex digits, one more
    each time the prefix is already taken (by ``taken`` or an earlier digest)."""
    used, refs = set(taken), []
    for digest in digests:
        length = REF_CHARS
        while digest[:length] in used and length < len(digest):
            length += 1
        used.add(digest[:length])
        refs.append(digest[:length])
    return refs


def gap_ranges(length: int, spans: Sequence[KeptSpan]) -> list[tuple[int, int]]:
    """The ranges of ``[0, length)`` that ``spans`` (sorted, disjoint) leave out."""
    out, pos = [], 0
    for span in spans:
        if span.start > pos:
            out.append((pos, span.start))
        pos = max(pos, span.end)
    if pos < length:
        out.append((pos, length))
    return out


def mark_gaps(
    text: str, seed: str, spans: Sequence[KeptSpan], counter: Callable[[str], int], taken: Collection[str] = ()
) -> list[GapMark]:
    """Every gap ``spans`` leave in ``text``, with its reference (unique against ``taken``) and its
    text's token count."""
    ranges = gap_ranges(len(text), spans)
    refs = assign_refs([_digest(seed, start, end) for start, end in ranges], taken)
    return [GapMark(start, end, ref, counter(text[start:end])) for (start, end), ref in zip(ranges, refs)]


def gap_marker(kind: str, config: CompressionConfig, mark: GapMark | None = None) -> str:
    """What replaces a removed gap: ``" [...] "`` for prose, ``"\\n# [...]\\n"`` for code; with
    ``config.gap_refs`` the reference markers, filled from ``mark`` (typical values when None)."""
    if config.gap_refs:
        template = config.code_ref_marker if kind == "code" else config.ref_marker
        ref, tokens = (mark.ref, str(mark.tokens)) if mark is not None else (_ESTIMATE_REF, _ESTIMATE_TOKENS)
        marker = template.replace("{tokens}", tokens).replace("{ref}", ref)
    else:
        marker = config.code_gap_marker if kind == "code" else config.gap_marker
    if kind == "code":
        return f"\n{marker}\n" if marker else "\n"
    return f" {marker} " if marker else " "
