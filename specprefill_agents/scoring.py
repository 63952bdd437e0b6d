"""Token importance from the draft model's attention (SpecPrefill / SpecPC).

The context runs through the draft with SDPA and a KV cache, so no n x n attention is ever
materialised.  Then the query block (an explicit query or the prompt's tail) and ``lookahead``
greedily generated tokens run on top of that cache; their query rows are collected and, per
layer, their fp32 softmax over the context keys is folded (``attention_capture``).  The context
is scored in windows (1024 tokens by default, never more than the draft's context) whose KV is
computed independently, each from position 0: attention cost stays linear in the context, and
every window is as close to the question as the latest one, which counters the draft's recency
bias (against one 8k window: retention 0.84 vs 0.79 at keep 25% pooled over 120 instances,
scoring 2x faster at 8k; benchmarks/results).  By default (``window_query="parallel"``) one
query block reads all the windows side by side (parallel context windows, up to the draft's
context per group) and each window's scores are its own softmax: in an agent loop an unchanged
window costs no forward at all.  ``"forward"`` runs the query block after each window instead
(the earlier, full ones batched ``window_batch`` per forward); ``"shift"`` reuses the latest
window's query rows moved by RoPE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from ._compat import (capture_attention, cut_kv, has_sliding_layer, install_cpu_gemv, install_scoring_attention,
                      kv_nbytes, new_kv_cache, restore_kv, rope_frequencies, rope_shift, snapshot_kv, stack_kv)
from .attention_capture import BatchCapture, Capture, ParallelCapture
from .cache import KVEntry, KVPrefixCache, token_prefix_keys
from .config import ScoringConfig
from .draft import DraftModel
from .errors import ScoringError

__all__ = ["DraftScorer", "RawScores", "smooth_scores", "plan_windows"]

logger = logging.getLogger(__name__)

_UNPROBED = object()


@dataclass(frozen=True)
class RawScores:
    """Per-token importance of the context tokens, and what computing it cost."""

    scores: np.ndarray  # (n_context,) float32; 1.0 = the attention a uniform spread would give
    forwarded: int  # draft tokens run through the model (context + query + lookahead, all windows)
    reused: int  # prompt tokens whose KV came from the prefix cache instead of a forward
    windows: int
    lookahead_tokens: int
    timings: dict[str, float] = field(default_factory=dict)


def plan_windows(n_context: int, room: int) -> list[tuple[int, int]]:
    """Split ``n_context`` tokens into windows of ``room`` tokens (the last one shorter).

    Windows start at fixed multiples of ``room`` so that, as an agent's context grows,
    every window but the last keeps the same tokens and its KV can be reused.
    """
    return [(a, min(a + room, n_context)) for a in range(0, max(n_context, 0), room)]


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


@dataclass
class _Tally:
    """What one :meth:`DraftScorer.score` call cost, added up over its windows."""

    forwarded: int = 0
    reused: int = 0
    lookahead: int = 0
    timings: dict[str, float] = field(
        default_factory=lambda: {"prefill": 0.0, "query": 0.0, "lookahead": 0.0, "score": 0.0})

    def count(self, prompt_tokens: int, reused: int, block: int) -> None:
        """A window of ``prompt_tokens`` (BOS prefix + context), ``reused`` of them from the KV
        cache, followed by ``block`` forwarded query / lookahead tokens."""
        self.forwarded += prompt_tokens - reused + block
        self.reused += reused


class DraftScorer:
    """Scores context tokens with one draft model. Thread-safe: no per-call state on self."""

    def __init__(self, draft: DraftModel, config: ScoringConfig | None = None) -> None:
        self.draft = draft
        self.config = config or ScoringConfig()
        install_scoring_attention(draft.model)
        install_cpu_gemv(draft.model)
        self._prefix = _bos_prefix(draft.tokenizer)
        self._eos = draft.stop_token_ids
        self._rope_freqs: object = _UNPROBED
        self._no_logits = torch.zeros(0, dtype=torch.long, device=draft.device)  # logits_to_keep: none
        self._kv_namespace = f"{draft.name}|{draft.dtype}|{draft.device}"  # KV depends on these, not the config

    def query_limit(self) -> int:
        """Most query tokens a window can take while leaving room for context."""
        return max(1, min(self.config.max_query_tokens, self.draft.max_context // 4))

    def window_room(self, query_tokens: int) -> int:
        """Context tokens per window: ``window_tokens``, or fewer when the draft's context cannot
        hold that many plus the BOS prefix, the query block and the lookahead tokens."""
        fits = self.draft.max_context - len(self._prefix) - query_tokens - self.config.lookahead
        return max(1, min(self.config.window_tokens or fits, fits))

    def score(self, context_ids: Sequence[int], query_ids: Sequence[int], *,
              split_points: Sequence[int] = (), kv_cache: KVPrefixCache | None = None) -> RawScores:
        """Importance of each context token for answering ``query_ids`` (which follow the context).

        With ``kv_cache``, the longest cached prefix ending at one of ``split_points``
        (context token positions, e.g. segment boundaries) or at a window's end is
        restored instead of recomputed; scores are the same either way.
        """
        query = list(query_ids)[-self.query_limit():]
        if not query:
            raise ScoringError("the query block is empty: pass a query or a non-empty prompt")
        windows = plan_windows(len(context_ids), self.window_room(len(query)))
        tally = _Tally()
        spans = [(list(context_ids[a:b]), sorted({p - a for p in split_points if a < p < b} | {b - a}))
                 for a, b in windows]
        parts = self._score_spans(spans, query, kv_cache, tally) if spans else [np.zeros(0, np.float32)]
        return RawScores(np.concatenate(parts), tally.forwarded, tally.reused, len(windows), tally.lookahead,
                         tally.timings)

    def _score_spans(self, spans: list[tuple[list[int], list[int]]], query: list[int],
                     kv_cache: KVPrefixCache | None, tally: _Tally) -> list[np.ndarray]:
        """Scores of each window's context, given as (context, split points) spans.

        Several windows under ``window_query="parallel"``: :meth:`_score_parallel`.  Otherwise
        the latest window goes first: it generates the lookahead tokens.  Earlier windows (all
        full) then get the query block per ``window_query``: moved by RoPE ("shift"), or run after
        them: their own decode steps (``lookahead_per_window``) or batched with the shared tokens.
        """
        if len(spans) > 1 and self.config.window_query == "parallel":
            return self._score_parallel(spans, query, kv_cache, tally)
        latest_scores, latest, tokens = self._score_window(*spans[-1], query, kv_cache, tally)
        earlier = spans[:-1]
        if not earlier:
            return [latest_scores]
        if self.config.window_query == "shift" and self._rope() is not None:
            moved = latest.queries()
            scores = [self._score_window_shifted(*span, kv_cache, tally, latest, moved, len(spans[-1][0]))
                      for span in earlier]
        elif self.config.lookahead_per_window:
            scores = [self._score_window(*span, query, kv_cache, tally)[0] for span in earlier]
        else:
            step = self.config.window_batch
            scores = [s for start in range(0, len(earlier), step)
                      for s in self._score_windows_batched(earlier[start:start + step], query + tokens, kv_cache,
                                                           tally)]
        return [*scores, latest_scores]

    def _score_parallel(self, spans: list[tuple[list[int], list[int]]], query: list[int],
                        kv_cache: KVPrefixCache | None, tally: _Tally) -> list[np.ndarray]:
        """Windows side by side under one query block per group (``window_query="parallel"``).

        A group holds as many windows as the draft's context takes with the block (at most
        ``parallel_windows``); groups are counted from the latest window back.  The latest group
        decodes the lookahead tokens; earlier ones (only past the draft's context) append them
        to their block, no decode.
        """
        room = len(spans[0][0])
        fits = (self.draft.max_context - len(query) - self.config.lookahead) // (len(self._prefix) + room)
        per_group = max(1, min(fits, self.config.parallel_windows or fits))
        ends = range(len(spans), 0, -per_group)
        scores, tokens = self._score_group(spans[max(0, ends[0] - per_group):ends[0]], query, room, kv_cache, tally,
                                           decode=True)
        for end in ends[1:]:
            scores = self._score_group(spans[max(0, end - per_group):end], query + tokens, room, kv_cache, tally,
                                       decode=False)[0] + scores
        return scores

    @torch.inference_mode()
    def _score_group(self, group: list[tuple[list[int], list[int]]], block: list[int], room: int,
                     kv_cache: KVPrefixCache | None, tally: _Tally, decode: bool) -> tuple[list[np.ndarray], list[int]]:
        """One group of windows: each window's KV (cached as is, or forwarded and stored), then
        ``block`` (and, with ``decode``, the greedy lookahead) at positions past a full window,
        attending to every window at once."""
        device = self.draft.device
        install_scoring_attention(self.draft.model)
        pre = len(self._prefix)
        t0 = time.perf_counter()
        windows = []
        for context, splits in group:
            layers, reused = self._window_kv(self._prefix + context, [pre + s for s in splits], kv_cache)
            tally.count(pre + len(context), reused, 0)
            windows.append((layers, Capture(pre, len(context), self.config, device)))
        t1 = time.perf_counter()
        parallel = ParallelCapture(windows)
        lookahead = self.config.lookahead if decode else 0
        cache = new_kv_cache(self.draft.model, len(block) + lookahead)
        with capture_attention(parallel):
            logits = self._step(block, 0, parallel, cache, device, logits=lookahead > 0, position=pre + room)
            t2 = time.perf_counter()
            tokens = self._lookahead(logits, len(block), parallel, cache, device, position=pre + room)
        t3 = time.perf_counter()
        if any(not capture.collected for _, capture in windows):
            raise self._nothing_captured()
        tally.count(0, 0, len(block) + len(tokens))
        tally.lookahead += len(tokens)
        scores = [capture.finish() for _, capture in windows]
        tally.timings["prefill"] += t1 - t0
        tally.timings["query"] += t2 - t1
        tally.timings["lookahead"] += t3 - t2
        tally.timings["score"] += time.perf_counter() - t3
        return scores, tokens

    def _rope(self) -> dict[int, torch.Tensor] | None:
        """The draft's per-layer RoPE frequencies if its queries can be moved (probed once)."""
        if self._rope_freqs is _UNPROBED:
            token = (self.draft.tokenizer("the", add_special_tokens=False)["input_ids"] or [0])[0]
            install_scoring_attention(self.draft.model)
            self._rope_freqs = rope_frequencies(self.draft.model, token)
            if self._rope_freqs is None:
                logger.info("draft %s: queries cannot be moved by RoPE; every window forwards its own "
                            "query block", self.draft.name)
        return self._rope_freqs  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_window_shifted(self, context: list[int], splits: list[int], kv_cache: KVPrefixCache | None,
                              tally: _Tally, latest: Capture, queries: dict[int, torch.Tensor],
                              latest_len: int) -> np.ndarray:
        """An earlier window scored with the latest window's query rows (``queries``, per layer), moved
        by RoPE to sit right after this window's context: only this window's keys are needed (from
        the prefix cache when it has them, so an unchanged window costs no forward at all)."""
        ids = self._prefix + context
        t0 = time.perf_counter()
        layers, reused = self._window_kv(ids, [len(self._prefix) + s for s in splits], kv_cache)
        t1 = time.perf_counter()
        freqs = cast(dict[int, torch.Tensor], self._rope_freqs)
        capture = Capture(len(self._prefix), len(context), self.config, self.draft.device)
        capture.settings = latest.settings
        for layer, q in queries.items():
            key = layers[layer][0][0]
            capture.add(layer, rope_shift(q, len(context) - latest_len, freqs[layer]), key,
                        len(ids) - key.shape[-2], len(ids), 0)
        capture.row = latest.row  # as many rows as the latest window scored
        scores = capture.finish()
        tally.count(len(ids), reused, 0)
        tally.timings["prefill"] += t1 - t0
        tally.timings["score"] += time.perf_counter() - t1
        return scores

    def _window_kv(self, ids: list[int], lengths: list[int],
                   kv_cache: KVPrefixCache | None) -> tuple[tuple[tuple[Any, Any, int], ...], int]:
        """The KV snapshot of ``ids`` (per layer: keys, values, tokens seen): views of the cached
        entry when it covers all of them (no copy, no forward; the entry may hold a longer
        context), else the cached prefix plus a forward of the rest (then stored).  Also returns
        the tokens reused."""
        entry, reused, keys = self._lookup(ids, lengths, kv_cache)
        if entry is not None and reused == len(ids):
            return cut_kv(entry.layers, reused), reused
        cache = self._resume(entry, reused, len(ids))
        self._prefill(ids, cache, self.draft.device, reused)
        self._store(cache, ids, lengths, keys, kv_cache, reused)
        return snapshot_kv(cache, len(ids))[0], reused

    @torch.inference_mode()
    def _score_windows_batched(self, batch: list[tuple[list[int], list[int]]], block: list[int],
                               kv_cache: KVPrefixCache | None, tally: _Tally) -> list[np.ndarray]:
        """Full windows of equal length, (context, splits) each: their KV (cached or forwarded),
        then ``block`` (the query and the shared lookahead tokens) after each, as one batch."""
        t0 = time.perf_counter()

        def snapshots() -> Any:  # one window's KV at a time: a forwarded window is freed once copied
            for context, splits in batch:
                layers, n = self._window_kv(self._prefix + context, [len(self._prefix) + s for s in splits],
                                            kv_cache)
                tally.count(len(self._prefix) + len(context), n, len(block))
                yield layers

        n_ids = len(self._prefix) + len(batch[0][0])
        cache = stack_kv(self.draft.model, snapshots(), len(batch), n_ids, len(block))
        t1 = time.perf_counter()
        captures = [Capture(len(self._prefix), len(context), self.config, self.draft.device) for context, _ in batch]
        group = BatchCapture(captures)
        with capture_attention(group):
            group.begin(len(block), n_ids + len(block))
            self.draft.model(input_ids=torch.tensor([block] * len(batch), device=self.draft.device),
                             past_key_values=cache, use_cache=True, logits_to_keep=self._no_logits)
            group.advance()
        t2 = time.perf_counter()
        scores = [capture.finish() for capture in captures]
        tally.timings["prefill"] += t1 - t0
        tally.timings["query"] += t2 - t1
        tally.timings["score"] += time.perf_counter() - t2
        return scores

    @torch.inference_mode()
    def _score_window(self, context: list[int], splits: list[int], query: list[int],
                      kv_cache: KVPrefixCache | None, tally: _Tally) -> tuple[np.ndarray, Capture, list[int]]:
        """One window: restore or run the context, then the query block and the greedy lookahead
        tokens with capture.  Returns the scores, the capture (whose query rows
        :meth:`_score_window_shifted` reuses) and the lookahead tokens.

        The query block rides in the same forward as the last new context tokens (one pass
        fewer per call) unless the KV must be snapshotted at the context's end and a layer
        slides (a sliding layer cannot be cut back to the context once the query is in it).
        """
        device = self.draft.device
        install_scoring_attention(self.draft.model)  # idempotent; the model may be shared and switched back
        ids = self._prefix + context
        lengths = [len(self._prefix) + s for s in splits]
        t0 = time.perf_counter()
        cache, reused, keys = self._open_cache(ids, lengths, kv_cache, len(query) + self.config.lookahead)
        fused = kv_cache is None or not has_sliding_layer(cache)
        tail = self._last_chunk_start(len(ids), reused) if fused else len(ids)
        self._prefill(ids[:tail], cache, device, reused)
        if not fused:
            self._store(cache, ids, lengths, keys, kv_cache, reused)
        t1 = time.perf_counter()
        capture = Capture(len(self._prefix), len(context), self.config, device)
        with capture_attention(capture):
            logits = self._step(ids[tail:] + query, tail, capture, cache, device, rows=len(query),
                                logits=self.config.lookahead > 0)
            t2 = time.perf_counter()
            tokens = self._lookahead(logits, len(ids) + len(query), capture, cache, device)
        t3 = time.perf_counter()
        if fused:
            self._store(cache, ids, lengths, keys, kv_cache, reused)
        if context and not capture.collected:
            raise self._nothing_captured()
        tally.count(len(ids), reused, len(query) + len(tokens))
        tally.lookahead += len(tokens)
        tally.timings["prefill"] += t1 - t0
        tally.timings["query"] += t2 - t1  # with the fused forward: the last new context tokens + the query block
        tally.timings["lookahead"] += t3 - t2
        scores = capture.finish()
        tally.timings["score"] += time.perf_counter() - t3
        return scores, capture, tokens

    def _nothing_captured(self) -> ScoringError:
        impl = getattr(self.draft.model.config, "_attn_implementation", None)
        return ScoringError(f"no attention layer reported to the scorer (attn_implementation={impl!r}); "
                            "the draft must dispatch attention through transformers' AttentionInterface")

    def _lookup(self, ids: list[int], lengths: list[int],
                kv_cache: KVPrefixCache | None) -> tuple[KVEntry | None, int, list[str]]:
        """The cached entry covering the longest prefix of ``ids`` ending at one of ``lengths``
        (None), the tokens it covers and the prefix keys of ``ids`` (for storing it later)."""
        if kv_cache is None:
            return None, 0, []
        keys = token_prefix_keys(self._kv_namespace, ids, lengths)
        hit = kv_cache.lookup(keys, lengths)
        return (None, 0, keys) if hit is None else (hit[0], hit[1], keys)

    def _open_cache(self, ids: list[int], lengths: list[int], kv_cache: KVPrefixCache | None,
                    extra: int) -> tuple[Any, int, list[str]]:
        """A KV cache holding the longest cached prefix of ``ids`` (or nothing), sized once for
        the rest of ``ids`` plus ``extra`` tokens (query block and lookahead)."""
        entry, start, keys = self._lookup(ids, lengths, kv_cache)
        return self._resume(entry, start, len(ids) + extra), start, keys

    def _resume(self, entry: KVEntry | None, start: int, capacity: int) -> Any:
        """A fresh cache for ``capacity`` tokens holding the first ``start`` tokens of ``entry``."""
        if entry is None:
            return new_kv_cache(self.draft.model, capacity)
        return restore_kv(self.draft.model, entry.layers, start, capacity - start)

    @staticmethod
    def _store(cache: Any, ids: list[int], lengths: list[int], keys: list[str], kv_cache: KVPrefixCache | None,
               reused: int) -> None:
        """Keep the KV of the context tokens (never the query block or lookahead) for later calls."""
        if kv_cache is None or reused >= len(ids):
            return
        layers, sliding = snapshot_kv(cache, len(ids))
        kv_cache.put(keys[-1], KVEntry(layers, len(ids), sliding, kv_nbytes(layers), tuple(keys)), lengths)

    def _last_chunk_start(self, n: int, begin: int) -> int:
        """Where the last prefill chunk of ``ids[begin:n]`` starts (it runs together with the query)."""
        if n <= begin:
            return n
        step = self.config.prefill_chunk or (n - begin)
        return begin + ((n - begin - 1) // step) * step

    def _prefill(self, ids: list[int], cache: Any, device: torch.device, begin: int = 0) -> None:
        step = self.config.prefill_chunk or max(len(ids) - begin, 1)
        for start in range(begin, len(ids), step):
            chunk = torch.tensor([ids[start:start + step]], device=device)
            self.draft.model(input_ids=chunk, past_key_values=cache, use_cache=True, logits_to_keep=self._no_logits)

    def _step(self, ids: list[int], done: int, capture: Capture | ParallelCapture, cache: Any,
              device: torch.device, rows: int | None = None, logits: bool = True,
              position: int | None = None) -> torch.Tensor | None:
        """Forward ``ids`` after ``done`` cached tokens; the last ``rows`` of them (default all) are
        scored.  Returns the next-token logits (None with ``logits=False``: no vocab projection).
        ``position``: where the cache's first token sits (default: its slot, 0)."""
        start = done + (position or 0)
        capture.begin(len(ids) if rows is None else rows, start + len(ids))
        positions = None if position is None else torch.arange(start, start + len(ids), device=device)[None]
        out = self.draft.model(input_ids=torch.tensor([ids], device=device), past_key_values=cache,
                               position_ids=positions, use_cache=True,
                               logits_to_keep=1 if logits else self._no_logits)
        capture.advance()
        return out.logits[0, -1] if logits else None

    def _lookahead(self, logits: torch.Tensor | None, done: int, capture: Capture | ParallelCapture, cache: Any,
                   device: torch.device, position: int | None = None) -> list[int]:
        """Greedy tokens, each forwarded for its query rows (the last one without logits)."""
        generated: list[int] = []
        while logits is not None and len(generated) < self.config.lookahead:
            token = int(torch.argmax(logits).item())
            if token in self._eos:
                break
            generated.append(token)
            logits = self._step([token], done + len(generated) - 1, capture, cache, device,
                                logits=len(generated) < self.config.lookahead, position=position)
        return generated


def _bos_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before text (BOS for Gemma/Llama-2), if any."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    if plain and len(with_special) > len(plain) and with_special[-len(plain):] == plain:
        return list(with_special[: len(with_special) - len(plain)])
    return []
