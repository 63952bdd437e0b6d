"""Lossless JSON-ready dicts of the result types, and back.

``result_from_dict(json.loads(json.dumps(result_to_dict(r)))) == r`` for every
:class:`~specprefill_agents.CompressionResult`: floats survive ``json`` exactly (``repr``), and
text holding lone surrogates (undecodable input bytes) survives as long as the JSON is written
with ``ensure_ascii=True`` (``\\udcxx`` escapes), the :mod:`json` module's default.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import InputError
from .types import CompressionResult, CompressionStats, Gap, KeptSpan, Segment

__all__ = ["result_to_dict", "result_from_dict", "segment_to_dict", "segment_from_dict"]

_SEGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Segment))
_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(CompressionStats))


def segment_to_dict(segment: Segment) -> dict[str, Any]:
    """Every field of ``segment`` as a plain dict."""
    return {name: getattr(segment, name) for name in _SEGMENT_FIELDS}


def segment_from_dict(data: dict[str, Any]) -> Segment:
    """The :class:`Segment` of :func:`segment_to_dict`; unknown keys raise :class:`InputError`."""
    unknown = set(data) - set(_SEGMENT_FIELDS)
    if unknown:
        raise InputError(f"unknown segment field(s) {sorted(unknown)}; known: {list(_SEGMENT_FIELDS)}")
    return Segment(**data)


def result_to_dict(result: CompressionResult) -> dict[str, Any]:
    """``result`` as nested plain dicts and lists (segments, kept spans as ``[start, end]``, stats)."""
    return {
        "segments": [segment_to_dict(s) for s in result.segments],
        "kept_spans": [[[span.start, span.end] for span in spans] for spans in result.kept_spans],
        "stats": dataclasses.asdict(result.stats),
        "gaps": [[g.ref, g.segment, g.start, g.end, g.omitted_tokens] for g in result.gaps],
        "originals": list(result.originals),
    }


def result_from_dict(data: dict[str, Any]) -> CompressionResult:
    """The :class:`CompressionResult` of :func:`result_to_dict`; a malformed dict raises :class:`InputError`."""
    try:
        segments = tuple(segment_from_dict(s) for s in data["segments"])
        spans = tuple(tuple(KeptSpan(int(a), int(b)) for a, b in seg) for seg in data["kept_spans"])
        stats_data = dict(data["stats"])
        unknown = set(stats_data) - set(_STATS_FIELDS)
        if unknown:
            raise InputError(f"unknown stats field(s) {sorted(unknown)}")
        stats_data["timings"] = {str(k): float(v) for k, v in stats_data.get("timings", {}).items()}
        stats_data["passthrough_reasons"] = {int(k): str(v) for k, v in
                                             stats_data.get("passthrough_reasons", {}).items()}
        stats = CompressionStats(**stats_data)
        gaps = tuple(Gap(str(r), int(i), int(a), int(b), int(t)) for r, i, a, b, t in data.get("gaps", ()))
        originals = tuple(str(t) for t in data.get("originals", ()))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"not a serialised CompressionResult: {type(exc).__name__}: {exc}") from exc
    if len(spans) != len(segments):
        raise InputError(f"{len(segments)} segments but {len(spans)} kept-span lists")
    return CompressionResult(segments, spans, stats, gaps, originals)
