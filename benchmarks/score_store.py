"""Draft scores kept on disk between benchmark runs, so selection settings are compared on the
same draft scores without scoring again.

The draft's token scores depend on the draft and its dtype, the scoring settings
(:class:`~specprefill_agents.ScoringConfig`), the segments and the query; everything else in
:class:`~specprefill_agents.CompressionConfig` (units, chunk sizes, lexical prior, budget) acts
after scoring.  :class:`StoredScoresCompressor` is the library's compressor whose scorer reads
and writes ``<root>/<key>.npz`` under that key, and records how long the scoring took when it
ran, so a run from the store still reports the real scoring time (``scored_seconds``).
A benchmark helper: the library never writes scores to disk.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specprefill_agents import Segment, SpecPrefillCompressor
from specprefill_agents.budget import countable
from specprefill_agents.segment_scoring import PROTECTED_EDGE_TOKENS, SegmentScorer, asked_query
from specprefill_agents.types import SegmentScores, TokenScores

__all__ = ["StoredScoresCompressor"]


class _StoredScorer:
    """A :class:`SegmentScorer` in front of a folder of ``.npz`` files."""

    def __init__(self, inner: SegmentScorer, root: Path) -> None:
        self.inner, self.root = inner, root
        self.scorer = inner.scorer
        self.last_seconds = 0.0
        self._lock = threading.Lock()

    def key(self, segments: Sequence[Segment], query: str | None) -> str:
        parts = [[s.role, s.text, s.kind, *self._edges(s)] for s in segments]
        draft = self.scorer.draft
        blob = json.dumps([draft.name, str(draft.dtype), self.inner.config.to_json(), parts,
                           asked_query(segments, query)])
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def _edges(self, segment: Segment) -> list[Any]:
        """``["edges", n]`` when the draft reads ``segment`` only by its first and last ``n`` tokens
        (a long segment that is never cut), else nothing: a key names what the draft reads."""
        edge = PROTECTED_EDGE_TOKENS
        if segment.may_compress or len(segment.text) <= 2 * edge:
            return []
        ids = self.scorer.draft.tokenizer(countable(segment.text), add_special_tokens=False)["input_ids"]
        return ["edges", edge] if len(ids) > 2 * edge else []

    def score(self, segments: Sequence[Segment], query: str | None,
              max_input_tokens: int | None = None) -> TokenScores:
        path = self.root / f"{self.key(segments, query)}.npz"
        with self._lock:
            if path.exists():
                return self._load(path)
            t0 = time.perf_counter()
            result = self.inner.score(segments, query, max_input_tokens)
            self.last_seconds = time.perf_counter() - t0
            self._save(path, result, self.last_seconds)
            return result

    def _load(self, path: Path) -> TokenScores:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            segments = tuple(SegmentScores(data[f"o{i}"], data[f"s{i}"]) for i in range(meta["segments"]))
        self.last_seconds = meta["seconds"]
        return TokenScores(segments, meta["forwarded"], meta["windows"], meta["lookahead"], meta["timings"])

    def _save(self, path: Path, result: TokenScores, seconds: float) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        for i, seg in enumerate(result.segments):
            arrays[f"o{i}"], arrays[f"s{i}"] = seg.offsets, seg.scores
        meta = {"segments": len(result.segments), "seconds": seconds, "forwarded": result.draft_tokens_forwarded,
                "windows": result.windows, "lookahead": result.lookahead_tokens, "timings": result.timings}
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)


class StoredScoresCompressor(SpecPrefillCompressor):
    """:class:`SpecPrefillCompressor` whose draft scores come from (and go to) ``store``."""

    def __init__(self, *args: Any, store: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store = Path(store)
        self._stored: _StoredScorer | None = None

    def _ensure_scorer(self) -> Any:
        if self._stored is None:
            self._stored = _StoredScorer(super()._ensure_scorer(), self._store)
        return self._stored

    @property
    def scored_seconds(self) -> float:
        """How long the draft took on the latest call's segments when they were scored."""
        return self._stored.last_seconds if self._stored is not None else 0.0
