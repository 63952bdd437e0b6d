"""Token importance of a context for a query, from one draft model.

The context is cut into windows (``window_tokens``, 1024 by default) whose KV is computed
independently, each from position 0 (:class:`~.window_kv.WindowKV`), so attention cost stays
linear in the context.  A context that fits one window is scored with its query block riding
in the forward of its last new tokens.  Several windows are read side by side by one query
block (parallel context windows, :class:`~.capture.ParallelWindows`) that sits right after a
full window: every window is as close to the question as the latest one, which counters a
small draft's recency bias, and an unchanged window costs no forward at all.  Past the draft's
context, windows form groups, each under its own query block; the earlier groups append the
latest group's lookahead tokens instead of decoding their own.

Inside :meth:`~.batching.BlockBatcher.joined` (concurrent calls, as the service runs them) every
context goes the parallel-windows way, a single window too, and the query block runs as one row
of a batch shared with the other calls' blocks (:mod:`.batching`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._compat import has_sliding_layer, install_scoring_attention, new_kv_cache
from ..cache import KVPrefixCache
from ..config import ScoringConfig
from ..draft import DraftModel
from ..errors import ScoringError
from ..kernels import install_cpu_gemv
from ..progress import window_bar
from .batching import joined_batcher
from .capture import ParallelWindows, WindowCapture
from .query_block import BlockRun, QueryBlock
from .window_kv import WindowKV

__all__ = ["Cost", "DraftScorer", "RawScores", "plan_windows"]

MAX_QUERY_TOKENS = 512  # a longer query block keeps its last tokens (the text itself is never altered)
PHASES = ("prefill", "query", "lookahead", "score")

Span = tuple[list[int], list[int]]  # a window's context ids and its split points (window-relative)


@dataclass(frozen=True)
class RawScores:
    """Per-token importance of the context tokens, and what computing it cost."""

    scores: np.ndarray  # (n_context,) float32; 1.0 = the attention a uniform spread would give
    forwarded: int  # draft tokens run through the model (context + query + lookahead, all windows)
    reused: int  # prompt tokens whose KV came from the prefix cache instead of a forward
    windows: int
    lookahead_tokens: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Cost:
    """What scoring some windows cost; costs add up."""

    forwarded: int = 0
    reused: int = 0
    lookahead: int = 0
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.forwarded + other.forwarded, self.reused + other.reused, self.lookahead + other.lookahead,
                    {k: self.timings[k] + other.timings[k] for k in PHASES})


def plan_windows(n_context: int, room: int) -> list[tuple[int, int]]:
    """Split ``n_context`` tokens into windows of ``room`` tokens (the last one shorter).

    Windows start at fixed multiples of ``room`` so that, as an agent's context grows,
    every window but the last keeps the same tokens and its KV can be reused.
    """
    return [(a, min(a + room, n_context)) for a in range(0, max(n_context, 0), room)]


class DraftScorer:
    """Scores context tokens with one draft model. Thread-safe: no per-call state on self.

    Installs the scoring attention (and, for a bf16 draft on the CPU, GEMV decode linears) on
    the draft once, here.  ``kv_cache`` keeps windows' KV across calls (None: nothing reused).
    """

    def __init__(self, draft: DraftModel, config: ScoringConfig | None = None,
                 kv_cache: KVPrefixCache | None = None) -> None:
        self.draft = draft
        self.config = config or ScoringConfig()
        install_scoring_attention(draft.model)
        install_cpu_gemv(draft.model)
        self._prefix = _bos_prefix(draft.tokenizer)
        self.windows = WindowKV(draft, kv_cache, self.config.prefill_chunk)
        self.block = QueryBlock(draft.model, self.config.lookahead, draft.stop_token_ids)

    def query_limit(self) -> int:
        """Most query tokens a window can take while leaving room for context."""
        return max(1, min(MAX_QUERY_TOKENS, self.draft.max_context // 4))

    def window_room(self, query_tokens: int) -> int:
        """Context tokens per window: ``window_tokens``, or fewer when the draft's context cannot
        hold that many plus the BOS prefix, the query block and the lookahead tokens."""
        fits = self.draft.max_context - len(self._prefix) - query_tokens - self.config.lookahead
        return max(1, min(self.config.window_tokens or fits, fits))

    @torch.inference_mode()
    def score(self, context_ids: Sequence[int], query_ids: Sequence[int], *,
              split_points: Sequence[int] = ()) -> RawScores:
        """Importance of each context token for answering ``query_ids`` (which follow the context).

        With a KV prefix cache, the longest cached prefix ending at one of ``split_points``
        (context token positions, e.g. segment boundaries) or at a window's end is restored
        instead of recomputed; scores are the same either way.
        """
        query = list(query_ids)[-self.query_limit():]
        if not query:
            raise ScoringError("the query block is empty: pass a query or a non-empty prompt")
        windows = plan_windows(len(context_ids), self.window_room(len(query)))
        spans = [(list(context_ids[a:b]), sorted({p - a for p in split_points if a < p < b} | {b - a}))
                 for a, b in windows]
        if not spans:
            scores, cost = [np.zeros(0, np.float32)], Cost()
        elif len(spans) == 1 and joined_batcher(self.draft.model) is None:
            scores, cost = self._score_window(spans[0], query)
        elif len(spans) == 1:  # a row of a shared batch: the window's KV, then the block beside it
            with window_bar(1) as bar:
                scores, _, cost = self._score_group(spans, query, len(spans[0][0]), True, bar)
        else:
            with window_bar(len(spans)) as bar:
                scores, cost = self._score_groups(spans, query, bar)
        return RawScores(np.concatenate(scores), cost.forwarded, cost.reused, len(windows), cost.lookahead,
                         cost.timings)

    def _score_window(self, span: Span, query: list[int]) -> tuple[list[np.ndarray], Cost]:
        """A context that fits one window: restore or run it, then the query block and the lookahead.

        The query block rides in the same forward as the last new context tokens (one pass
        fewer per call) unless the KV must be stored at the context's end and a layer slides
        (a sliding layer cannot be cut back to the context once the query is in it).
        """
        context, splits = span
        pre = len(self._prefix)
        t0 = time.perf_counter()
        window = self.windows.open(self._prefix + context, [pre + s for s in splits],
                                   len(query) + self.config.lookahead)
        try:
            fused = self.windows.kv_cache is None or not has_sliding_layer(window.cache)
            tail = self.windows.last_chunk_start(window) if fused else len(window.ids)
            self.windows.prefill(window, tail)
            if not fused:
                self.windows.store(window)
            t1 = time.perf_counter()
            capture = WindowCapture(pre, len(context), self.draft.device)
            run = self.block.run(window.ids[tail:] + query, window.cache, capture, done=tail, rows=len(query))
            if fused:
                self.windows.store(window)
        finally:
            self.windows.release(window)
        if context and not capture.collected:
            raise self._nothing_captured()
        t2 = time.perf_counter()
        scores = capture.finish()
        forwarded = len(window.ids) - window.reused + len(query) + len(run.tokens)
        return [scores], _cost(forwarded, window.reused, run, t1 - t0, time.perf_counter() - t2)

    def _score_groups(self, spans: list[Span], query: list[int], bar: Any) -> tuple[list[np.ndarray], Cost]:
        """Several windows side by side, as many per query block as the draft's context holds,
        counted from the latest window back; the latest group decodes the lookahead tokens."""
        room = len(spans[0][0])
        fits = (self.draft.max_context - len(query) - self.config.lookahead) // (len(self._prefix) + room)
        per_group = max(1, fits)
        ends = range(len(spans), 0, -per_group)
        scores, tokens, cost = self._score_group(spans[max(0, ends[0] - per_group):ends[0]], query, room, True, bar)
        for end in ends[1:]:
            earlier, _, more = self._score_group(spans[max(0, end - per_group):end], query + tokens, room, False, bar)
            scores, cost = earlier + scores, cost + more
        return scores, cost

    def _score_group(self, group: list[Span], block: list[int], room: int,
                     decode: bool, bar: Any) -> tuple[list[np.ndarray], list[int], Cost]:
        """Each window's KV (cached as is, or forwarded and stored), then ``block`` (and, with
        ``decode``, the lookahead) at positions past a full window, attending to every window."""
        pre = len(self._prefix)
        t0 = time.perf_counter()
        windows, forwarded, reused = [], 0, 0
        for context, splits in group:
            layers, hit = self.windows.snapshot(self._prefix + context, [pre + s for s in splits])
            forwarded, reused = forwarded + pre + len(context) - hit, reused + hit
            windows.append((layers, WindowCapture(pre, len(context), self.draft.device)))
            bar.update()
        t1 = time.perf_counter()
        parallel = ParallelWindows(windows)
        batcher = joined_batcher(self.draft.model)
        if batcher is not None:
            run = batcher.run(block, parallel, position=pre + room, lookahead=self.config.lookahead, decode=decode)
        else:
            cache = new_kv_cache(self.draft.model, len(block) + (self.config.lookahead if decode else 0))
            run = self.block.run(block, cache, parallel, done=0, position=pre + room, decode=decode)
        if not parallel.collected:
            raise self._nothing_captured()
        t2 = time.perf_counter()
        scores = parallel.finish()
        forwarded += len(block) + len(run.tokens)
        return scores, run.tokens, _cost(forwarded, reused, run, t1 - t0, time.perf_counter() - t2)

    def _nothing_captured(self) -> ScoringError:
        impl = getattr(self.draft.model.config, "_attn_implementation", None)
        return ScoringError(f"no attention layer reported to the scorer (attn_implementation={impl!r}); "
                            "the draft must dispatch attention through transformers' AttentionInterface "
                            "and keep the scoring attention the scorer installed")


def _cost(forwarded: int, reused: int, run: BlockRun, prefill: float, score: float) -> Cost:
    timings = {"prefill": prefill, "query": run.query_seconds, "lookahead": run.lookahead_seconds, "score": score}
    return Cost(forwarded, reused, len(run.tokens), timings)


def _bos_prefix(tokenizer: object) -> list[int]:
    """The special tokens the tokenizer puts before text (BOS for Gemma/Llama-2), if any."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]  # type: ignore[operator]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    if plain and len(with_special) > len(plain) and with_special[-len(plain):] == plain:
        return list(with_special[: len(with_special) - len(plain)])
    return []
