"""The service's compressors: one draft, one KV prefix cache, one compressor per config.

Requests that only change the budget (``keep_ratio`` / ``max_tokens``) use the default
compressor; other per-request overrides get a compressor of their own (bounded, LRU) that
shares the draft model and the KV prefix cache, so every client's context KV is reusable by
every other client.  Only scores and draft KV are cached, never text handed back to a caller.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from cachetools import LRUCache

from ..cache import KVPrefixCache, cache_namespace
from ..compressor import SpecPrefillCompressor
from ..config import CacheConfig, CompressionConfig, DraftConfig
from ..draft import DraftModel, load_draft
from ..scoring.batching import BlockBatcher
from ..types import CompressionResult, Segment

__all__ = ["Engine", "CALL_FIELDS", "CONFIG_FIELDS", "SCORING_FIELDS"]

CALL_FIELDS = ("keep_ratio", "max_tokens", "gap_refs")  # passed per call: no compressor of their own
CONFIG_FIELDS = (
    "min_tokens",
    "unit",
    "chunk_tokens",
    "code_chunk_tokens",
    "top_p",
    "lexical_boost",
    "lexical_feedback",
    "semantic_boost",
    "sampling",
)
SCORING_FIELDS = ("lookahead",)
WARM_UP_TEXT = "The service loads its draft model once. " * 24


class Engine:
    """Owns the draft, the KV prefix cache and the compressors built on them. Thread-safe.

    ``draft`` is a draft spec (loaded by :meth:`load`) or a loaded :class:`DraftModel`.
    """

    def __init__(
        self,
        draft: str | DraftConfig | DraftModel = "embedded",
        config: CompressionConfig | None = None,
        cache: CacheConfig | None = None,
        max_configs: int = 8,
    ) -> None:
        self.config = config or CompressionConfig()
        self.cache_config = cache or CacheConfig()
        self._spec = draft
        size = self.cache_config.kv_cache_bytes
        self.kv_cache = KVPrefixCache(size) if size > 0 else None
        self._draft: DraftModel | None = draft if isinstance(draft, DraftModel) else None
        self._compressors: LRUCache[str, SpecPrefillCompressor] = LRUCache(maxsize=max_configs)
        self._batcher: BlockBatcher | None = None
        self.on_shared_forward: Any = None  # sees the rows of each shared query-block forward
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._draft is not None

    def load(self) -> DraftModel:
        """Load the draft (once)."""
        with self._lock:
            if self._draft is None:
                spec = self._spec if isinstance(self._spec, DraftConfig) else DraftConfig(model=str(self._spec))
                self._draft = load_draft(spec)
            return self._draft

    def batcher(self) -> BlockBatcher:
        """The draft's :class:`BlockBatcher`: calls joined to it share their query-block forwards."""
        draft = self.load()
        with self._lock:
            if self._batcher is None:
                self._batcher = BlockBatcher(draft.model, draft.stop_token_ids, on_batch=self.on_shared_forward)
            return self._batcher

    def warm_up(self) -> None:
        """Load the draft and run one compression through it (first-call costs paid here)."""
        self.compress([Segment(WARM_UP_TEXT)], "What does the service load?", {})

    def compressor(self, overrides: dict[str, Any]) -> SpecPrefillCompressor:
        """The compressor for these non-budget overrides (created once per distinct config)."""
        config = self.configured(overrides)
        key = config.to_json()
        with self._lock:
            comp = self._compressors.get(key)
        if comp is None:
            comp = SpecPrefillCompressor(  # errors reach the client; an optional part is left out (logged)
                self.load(), config, on_failure="raise", on_part_failure="passthrough", cache=self.cache_config,
                kv_cache=self.kv_cache)
            with self._lock:
                comp = self._compressors.setdefault(key, comp)
        return comp

    def configured(self, overrides: dict[str, Any]) -> CompressionConfig:
        """The default config with ``overrides`` applied (budget fields excluded; validated)."""
        changes = {k: v for k, v in overrides.items() if k in CONFIG_FIELDS and v is not None}
        scoring = {k: v for k, v in overrides.items() if k in SCORING_FIELDS and v is not None}
        if scoring:
            changes["scoring"] = dataclasses.replace(self.config.scoring, **scoring)
        return self.config.replace(**changes) if changes else self.config

    def compress(self, segments: list[Segment], query: str | None, overrides: dict[str, Any],
                 namespace: str = "") -> CompressionResult:
        """Compress on the shared draft, caching under ``namespace`` (:func:`cache_namespace`); errors
        raise (the service reports them, the client decides)."""
        per_call = {k: overrides[k] for k in CALL_FIELDS if overrides.get(k) is not None}
        with cache_namespace(namespace):
            return self.compressor(overrides).compress_segments(segments, query, **per_call)

    def cache_bytes(self) -> int:
        return self.kv_cache.nbytes if self.kv_cache is not None else 0

    def info(self) -> dict[str, Any]:
        """Draft identity and defaults, loading nothing."""
        draft = self._draft
        spec = self._spec
        name = draft.name if draft is not None else (spec.to_dict() if isinstance(spec, DraftConfig) else str(spec))
        described: dict[str, Any] = {"name": name, "loaded": draft is not None}
        if draft is not None:
            described.update(device=str(draft.device), dtype=str(draft.dtype), max_context=draft.max_context)
        return {"draft": described, "config": self.config.to_dict(), "cache": self.cache_config.to_dict()}
