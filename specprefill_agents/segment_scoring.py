"""Segments -> per-token scores, paying only for what is new.

:class:`SegmentScorer` is the draft's view of a list of segments: it tokenizes each
segment on its own (offsets stay segment-relative), joins them with a blank line, picks
the query block, and asks :class:`~specprefill_agents.scoring.DraftScorer` for scores.
Across calls it reuses work three ways (DESIGN section 4):

* identical (segments, query, config) -> the finished scores from the score cache;
* a context that extends an earlier one -> the draft KV of the longest cached prefix
  (at a segment boundary), so only the new tokens are forwarded (exact);
* ``mode="approximate"`` -> segments scored in an earlier call keep those scores and
  only the new segments run through the draft, on their own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .budget import countable
from .cache import ScoreCache, namespaced, segment_chain
from .config import CacheConfig, ScoringConfig
from .limits import check_input_size, default_input_limit
from .scoring import DraftScorer
from .types import Segment, SegmentScores, TokenScores

__all__ = ["SegmentScorer", "asked_query", "latest_user_turn", "segment_offsets", "smooth_scores"]

_SEPARATOR = "\n\n"
_USER_ROLES = frozenset({"user", "human"})
QUERY_WINDOW = 64  # with no query, the prompt's last draft tokens act as the query (and are kept)
QUERY_PREFIX, QUERY_SUFFIX = "\n\nQuestion: ", "\nAnswer:"  # around an explicit query in the query block
POOL_KERNEL = 13  # odd width of the average-pool smoothing over token scores


@dataclass
class _Prompt:
    """One token sequence for all segments, with each segment's token range and char offsets."""

    ids: list[int]
    ranges: list[tuple[int, int]]
    offsets: list[np.ndarray]


class SegmentScorer:
    """Scores lists of segments with one draft; owns the reuse caches. Thread-safe."""

    def __init__(self, scorer: DraftScorer, cache: CacheConfig | None = None) -> None:
        self.scorer = scorer
        self._default_limit: int | None = None
        self.cache_config = cache or CacheConfig()
        cfg = self.cache_config
        self.results = ScoreCache(cfg.score_cache_entries)
        self.segment_scores = ScoreCache(cfg.score_cache_entries * 16 if cfg.mode == "approximate" else 0)
        self._config_json = scorer.config.to_json()

    @property
    def config(self) -> ScoringConfig:
        return self.scorer.config

    def score(self, segments: Sequence[Segment], query: str | None,
              max_input_tokens: int | None = None) -> TokenScores:
        """Smoothed per-token scores for every segment (see the module doc for reuse).

        :class:`~specprefill_agents.errors.InputTooLargeError` when the draft would read more than
        ``max_input_tokens`` tokens (None: the default for the draft and its device).
        """
        t0 = time.perf_counter()
        query = asked_query(segments, query)
        chain = segment_chain([s.text for s in segments], namespaced(self.scorer.draft.name), self._config_json)
        key = (chain[-1] if chain else "", query)
        cached = self.results.get(key)
        if cached is not None:
            return _as_cache_hit(cached, time.perf_counter() - t0)
        known = self._known_prefix(chain)
        if query is not None and known:
            result = self._score_approximate(segments, chain, known, query, max_input_tokens)
        else:
            result = self._score_fresh(segments, query, max_input_tokens)
        for h, seg_scores in zip(chain, result.segments):
            self.segment_scores.put(h, seg_scores)
        self.results.put(key, result)
        return result

    def _known_prefix(self, chain: list[str]) -> int:
        """How many leading segments have scores from an earlier call (approximate mode only)."""
        known = 0
        while known < len(chain) - 1 and self.segment_scores.get(chain[known]) is not None:
            known += 1
        return known

    def _score_approximate(self, segments: Sequence[Segment], chain: list[str], known: int,
                           query: str, max_input_tokens: int | None) -> TokenScores:
        fresh = self._score_fresh(segments[known:], query, max_input_tokens)
        old = tuple(self.segment_scores.get(h) for h in chain[:known])
        return TokenScores(old + fresh.segments, fresh.draft_tokens_forwarded, fresh.windows,
                           fresh.lookahead_tokens, fresh.timings, draft_tokens_reused=fresh.draft_tokens_reused)

    def input_limit(self, max_input_tokens: int | None) -> int:
        """``max_input_tokens``, or the default for this draft on its device (computed once)."""
        if max_input_tokens:
            return max_input_tokens
        if self._default_limit is None:
            draft = self.scorer.draft
            self._default_limit = default_input_limit(draft.model, draft.device)
        return self._default_limit

    def _score_fresh(self, segments: Sequence[Segment], query: str | None,
                     max_input_tokens: int | None = None) -> TokenScores:
        tok = self.scorer.draft.tokenizer
        t0 = time.perf_counter()
        prompt = _tokenize(tok, segments)
        if query is not None:
            query_ids = _encode(tok, QUERY_PREFIX + countable(query) + QUERY_SUFFIX)
            context_ids, tail = prompt.ids, 0
        else:  # the prompt's own tail is the query; it scores as "keep"
            tail = min(QUERY_WINDOW, max(len(prompt.ids) - 1, 0))
            context_ids, query_ids = prompt.ids[: len(prompt.ids) - tail], prompt.ids[len(prompt.ids) - tail:]
        check_input_size(len(context_ids) + len(query_ids), self.input_limit(max_input_tokens))
        if not query_ids:  # a one-token prompt: nothing to rank
            flat = tuple(SegmentScores(off, np.ones(len(off), dtype=np.float32)) for off in prompt.offsets)
            return TokenScores(flat, 0, 0, 0, {"tokenize": time.perf_counter() - t0})
        splits = sorted({p for r in prompt.ranges for p in r if 0 < p <= len(context_ids)})
        t1 = time.perf_counter()
        raw = self.scorer.score(context_ids, query_ids, split_points=splits)
        top = float(raw.scores.max()) if raw.scores.size else 1.0
        full = np.concatenate([raw.scores, np.full(tail, top, dtype=np.float32)])
        full = smooth_scores(full, POOL_KERNEL, [a for a, _ in prompt.ranges])
        per_segment = tuple(SegmentScores(off, full[a:b]) for off, (a, b) in zip(prompt.offsets, prompt.ranges))
        return TokenScores(per_segment, raw.forwarded, raw.windows, raw.lookahead_tokens,
                           {"tokenize": t1 - t0, **raw.timings}, draft_tokens_reused=raw.reused)


def _as_cache_hit(result: TokenScores, seconds: float) -> TokenScores:
    return TokenScores(result.segments, 0, 0, 0, {"score_cache": seconds}, draft_tokens_reused=0,
                       score_cache_hits=1)


def asked_query(segments: Sequence[Segment], query: str | None) -> str | None:
    """The query a request is scored against: ``query`` unless blank, else the latest user turn."""
    return query if query is not None and query.strip() else latest_user_turn(segments)


def latest_user_turn(segments: Sequence[Segment]) -> str | None:
    """The text of the latest user turn, whatever the chat template: the implicit query."""
    for seg in reversed(segments):
        if seg.role.lower() in _USER_ROLES and seg.text.strip():
            return countable(seg.text)
    return None


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _tokenize(tokenizer: Any, segments: Sequence[Segment]) -> _Prompt:
    sep = _encode(tokenizer, _SEPARATOR)
    ids: list[int] = []
    ranges, offsets = [], []
    for i, seg in enumerate(segments):
        if i:
            ids.extend(sep)
        seg_ids, seg_offsets = _context_view(seg, *_segment_tokens(tokenizer, seg))
        ranges.append((len(ids), len(ids) + len(seg_ids)))
        ids.extend(seg_ids)
        offsets.append(seg_offsets)
    return _Prompt(ids, ranges, offsets)


def _segment_tokens(tokenizer: Any, seg: Segment) -> tuple[list[int], np.ndarray]:
    enc = tokenizer(countable(seg.text), add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)


def segment_offsets(tokenizer: Any, seg: Segment) -> np.ndarray:
    """The character offsets of the draft tokens the scores of ``seg`` will come with (one row
    per token), without scoring: what the chunks of a compressible segment are cut by."""
    return _context_view(seg, *_segment_tokens(tokenizer, seg))[1]


#: A segment that is never cut (protected, or not compressible) is read by the draft whole up to
#: twice this many tokens, as context for the others (instructions with a worked example, a
#: system prompt); past that (a huge tool-call argument), only its first and last this many.
#: 64 cost RULER's vt 3 to 4 of 8 instances at every budget (its 422-token worked example read
#: by its edges): ``benchmarks/results/ruler_4k_vt_protected_whole_cpu_epyc.md``.
PROTECTED_EDGE_TOKENS = 1024


def _context_view(seg: Segment, ids: list[int], offsets: np.ndarray) -> tuple[list[int], np.ndarray]:
    """What the draft reads of ``seg``: all of a compressible segment; of one that is never cut and
    longer than twice :data:`PROTECTED_EDGE_TOKENS`, its first and last that many tokens (a bounded
    cost for what cannot be cut)."""
    edge = PROTECTED_EDGE_TOKENS
    if seg.may_compress or len(ids) <= 2 * edge:
        return ids, offsets
    return ids[:edge] + ids[-edge:], np.concatenate([offsets[:edge], offsets[-edge:]])


def smooth_scores(scores: np.ndarray, kernel: int, boundaries: Sequence[int] = ()) -> np.ndarray:
    """Average-pool ``scores`` with an odd ``kernel``, never across ``boundaries``.

    Edges average over the part of the window that exists (no zero padding).
    """
    if kernel <= 1 or scores.size == 0:
        return scores.astype(np.float32, copy=True)
    out = np.empty_like(scores, dtype=np.float32)
    cuts = [0, *[b for b in boundaries if 0 < b < scores.size], scores.size]
    half = kernel // 2
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b <= a:
            continue
        part = scores[a:b].astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(part)])
        idx = np.arange(b - a)
        lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, b - a)
        out[a:b] = (csum[hi] - csum[lo]) / (hi - lo)
    return out
