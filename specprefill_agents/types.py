"""Data types passed between the stages (data only, no behaviour beyond views)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .errors import GapNotFoundError, InputError

__all__ = [
    "DOCUMENT_ROLE",
    "Segment",
    "KeptSpan",
    "Gap",
    "SegmentScores",
    "TokenScores",
    "TokenCounts",
    "CompressionStats",
    "CompressionResult",
]

SegmentKind = Literal["auto", "prose", "code"]
SEGMENT_KINDS: tuple[SegmentKind, ...] = ("auto", "prose", "code")


DOCUMENT_ROLE = "document"
"""The role of a retrieved passage (document, node): the document entry points give it to each text."""


@dataclass(frozen=True)
class Segment:
    """One piece of the prompt: a message body, a tool output, a retrieved document.

    ``compressible`` segments may be shortened; ``protected`` ones are byte-identical
    in the output whatever else is set (system prompts, the latest user turn...).
    ``id`` and ``role`` are carried through untouched so callers can map results back.
    The segments of role :data:`DOCUMENT_ROLE` (retrieved passages) compress as one set: no
    anchors (when there are two or more) and ``min_tokens`` for their sum, so a passage may be
    dropped whole.
    """

    text: str
    role: str = "context"
    compressible: bool = True
    protected: bool = False
    id: str | None = None
    kind: SegmentKind = "auto"

    @property
    def may_compress(self) -> bool:
        return self.compressible and not self.protected


@dataclass(frozen=True)
class KeptSpan:
    """A kept character range ``[start, end)`` of the original segment text."""

    start: int
    end: int


@dataclass(frozen=True)
class Gap:
    """Text a compression left out: characters ``[start, end)`` of segment ``segment``'s original.

    ``ref`` is derived from the content (the segment's prefix-hash chain and the range), so the
    same gap of the same conversation prefix has the same reference at every step and in every
    process; ``omitted_tokens`` counts the left-out text with the result's counter.
    """

    ref: str
    segment: int
    start: int
    end: int
    omitted_tokens: int


def normalize_ref(ref: object) -> str:
    """``ref`` as stored: ``"ref 3F2A1"``, ``"3f2a1"`` and ``" 3f2a1 "`` all give ``"3f2a1"``."""
    if not isinstance(ref, str):
        raise InputError(f"a gap reference is a str such as '3f2a1', got {type(ref).__name__}")
    text = ref.strip().lower()
    return text[3:].strip(" :") if text.startswith("ref") else text


@dataclass(frozen=True)
class SegmentScores:
    """Draft-token importance for one segment: character offsets and scores."""

    offsets: np.ndarray  # (k, 2) int64, character spans into the segment text
    scores: np.ndarray  # (k,) float32

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass(frozen=True)
class TokenScores:
    """Draft-token importance for a whole prompt, per segment, plus what it cost."""

    segments: tuple[SegmentScores, ...]
    draft_tokens_forwarded: int
    windows: int
    lookahead_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    draft_tokens_reused: int = 0  # prompt tokens whose draft KV came from the prefix cache
    score_cache_hits: int = 0  # 1 when the whole result came from the score cache


@dataclass(frozen=True)
class TokenCounts:
    """Tokens before and after compression, and the counter that counted them (the target's
    tokenizer when one was given): what every stats record of the core and the integrations has."""

    original_tokens: int
    compressed_tokens: int
    counted_with: str

    @property
    def saved_tokens(self) -> int:
        return self.original_tokens - self.compressed_tokens

    @property
    def ratio(self) -> float:
        """compressed / original (1.0 when nothing was counted)."""
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0


@dataclass(frozen=True)
class CompressionStats(TokenCounts):
    """What a compression did and what it cost.

    ``original_tokens`` / ``compressed_tokens`` count every segment (protected ones
    included); ``budget_tokens`` applies to the compressible segments only.
    """

    budget_tokens: int
    budget_exceeded: bool
    segments_total: int
    segments_compressed: int
    draft_tokens_forwarded: int = 0
    draft_tokens_reused: int = 0
    score_cache_hits: int = 0
    windows: int = 0
    lookahead_tokens: int = 0
    # seconds per phase: tokenize, prefill (KV restore / context forward), query (query-block
    # forwards), lookahead (decode steps), score (attention folded), select, total; score_cache on a hit
    timings: dict[str, float] = field(default_factory=dict)
    failure: str | None = None  # set when compression failed and the input passed through
    # set when an optional part was skipped and the rest compressed as configured (the semantic
    # prior's encoder could not be loaded or failed)
    degraded: str | None = None
    # why a compressible segment came back whole: {segment index: reason}
    passthrough_reasons: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CompressionResult:
    """Compressed segments (same count and order as the input) with their provenance.

    ``originals`` are the input texts, by index (what ``kept_spans`` point into); ``scores`` the
    draft's token scores when the draft ran (None on a pass-through).  Both are references to
    what the compression already held, not copies.
    """

    segments: tuple[Segment, ...]
    kept_spans: tuple[tuple[KeptSpan, ...], ...]
    stats: CompressionStats
    gaps: tuple[Gap, ...] = ()  # every left-out range, by segment then position
    originals: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the input texts (gaps index them)
    scores: TokenScores | None = field(default=None, repr=False, compare=False)

    def to_html(self, path: str | os.PathLike[str] | None = None, *, title: str | None = None) -> str:
        """A self-contained HTML page of what was kept (see :mod:`specprefill_agents.view`);
        written to ``path`` (UTF-8) when given, and returned."""
        from .view import write_html

        return write_html(self, path, title=title)

    @property
    def text(self) -> str:
        """All segments' texts joined by a blank line."""
        return "\n\n".join(s.text for s in self.segments)

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.segments]

    @property
    def original_tokens(self) -> int:
        return self.stats.original_tokens

    @property
    def compressed_tokens(self) -> int:
        return self.stats.compressed_tokens

    def gap(self, ref: str) -> Gap:
        """The gap whose reference is ``ref`` (``"3f2a1"`` or ``"ref 3f2a1"``); :class:`GapNotFoundError`
        if this result has none (a reference from another result never resolves here)."""
        wanted = normalize_ref(ref)
        for gap in self.gaps:
            if gap.ref == wanted:
                return gap
        raise GapNotFoundError(
            f"no gap has the reference {ref!r} in this result; use a reference listed in result.gaps "
            f"(written in gap markers as 'ref 3f2a1' when CompressionConfig.gap_refs is on)")

    def expand(self, ref: str, *, context: int = 0) -> str:
        """The original text of gap ``ref``, exactly; ``context`` characters of the original on each
        side widen it into the kept text around it."""
        gap = self.gap(ref)
        return self.original_range(gap.segment, gap.start - max(context, 0), gap.end + max(context, 0))

    def around(self, segment: int, span: int, *, context: int = 200) -> str:
        """The original text around kept span ``span`` of segment ``segment``, ``context``
        characters wider on each side."""
        kept = self.kept_spans[segment][span]
        return self.original_range(segment, kept.start - max(context, 0), kept.end + max(context, 0))

    def original_range(self, segment: int, start: int, end: int) -> str:
        """Characters ``[start, end)`` of segment ``segment``'s original text (clipped to it)."""
        if not 0 <= segment < len(self.originals):
            raise InputError(f"segment must be in [0, {len(self.originals)}), got {segment}")
        text = self.originals[segment]
        return text[max(start, 0) : max(min(end, len(text)), 0)]
