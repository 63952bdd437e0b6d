"""Retrieved documents (or nodes): one request, one budget across them, results by index.

What every integration's document compressor shares: each text is one segment of role
:data:`~specprefill_agents.types.DOCUMENT_ROLE` (the texts compress as one set: no anchors and
``min_tokens`` for their sum, so a passage with nothing for the query may come back empty), the
compressed texts come back in the same order, and each gets a small stats record for its
metadata.  The integration copies its own document objects with the new texts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .integration import Counter
from .message_compression import CompressionReport, Tally, check_result
from .protocols import OnFailure, handle_failure
from .types import DOCUMENT_ROLE, Segment, TokenCounts

__all__ = ["TextsOutcome", "STATS_KEYS", "compress_texts", "check_stats_key"]

STATS_KEYS = frozenset({"original_tokens", "compressed_tokens", "counted_with", "kept_spans", "query", "failure",
                        "degraded"})
"""The keys of the per-document stats record :func:`compress_texts` returns."""
_EARLIER_STATS_KEYS = STATS_KEYS - {"degraded"}  # what versions before "degraded" wrote


@dataclass(frozen=True)
class TextsOutcome:
    """New texts (same order), one stats record per text, and the batch's report."""

    texts: list[str]
    stats: list[dict[str, Any]]
    report: CompressionReport


def compress_texts(
    compressor: Any,
    counter: Counter,
    texts: Sequence[str],
    query: str | None,
    *,
    keep_ratio: float | None,
    budget_tokens: int | None,
    token_counter: Any,
    on_failure: OnFailure,
    where: str,
) -> TextsOutcome:
    """Compress ``texts`` together for ``query`` (None: the tail of the texts acts as one).

    A failure goes through ``on_failure``: the texts pass through unchanged, their stats
    saying why (``failure``); ``degraded`` says why an optional part (the semantic prior) was
    left out of a compression that went through.
    """
    start = time.perf_counter()
    originals = list(texts)
    segments = [Segment(t, role=DOCUMENT_ROLE, id=str(i)) for i, t in enumerate(originals)]
    out, failure, degraded, tally = list(originals), None, None, Tally()
    spans: list[list[list[int]]] = [[[0, len(t)]] for t in originals]
    if originals:
        try:
            result = compressor.compress_segments(
                segments, query, keep_ratio=keep_ratio, max_tokens=budget_tokens, token_counter=token_counter
            )
            check_result(result, segments, set(range(len(segments))))
            out = [s.text for s in result.segments]
            spans = [[[k.start, k.end] for k in kept] for kept in result.kept_spans]
            degraded = result.stats.degraded
            tally.add(result)
        except Exception as exc:
            failure = handle_failure(on_failure, exc, where)
    counts, name = counter.count_all(originals + out)
    before, after = counts[: len(originals)], counts[len(originals) :]
    stats = [
        {
            "original_tokens": b,
            "compressed_tokens": a,
            "counted_with": name,
            "kept_spans": kept,
            "query": query,
            "failure": failure,
            "degraded": degraded,
        }
        for b, a, kept in zip(before, after, spans)
    ]
    changed = sum(1 for old, new in zip(originals, out) if old != new)
    report = tally.report(
        TokenCounts(sum(before), sum(after), name), len(originals), changed, 1 if originals else 0, failure, start
    )
    return TextsOutcome(out, stats, report)


def check_stats_key(metadatas: Sequence[Mapping[str, Any]], key: str, where: str) -> None:
    """Never overwrite a user's own metadata: ``key`` may only hold stats written before."""
    for i, metadata in enumerate(metadatas):
        value = metadata.get(key)
        if value is not None and not (isinstance(value, dict) and set(value) in (STATS_KEYS, _EARLIER_STATS_KEYS)):
            raise ConfigError(
                f"documents[{i}].metadata already has {key!r}, not written by "
                f"{where}; pass metadata_key=... to store the stats elsewhere"
            )
