"""What every integration needs from a compressor: resolution, identity, token counting.

A compressor implements the core's :class:`~specprefill_agents.Compressor` protocol: the
in-process :class:`~specprefill_agents.SpecPrefillCompressor`, a user's own, or a client of
the resident service.  Nothing here loads a model.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from cachetools import LRUCache

from .budget import APPROXIMATE, TokenCounter, approximate_tokens, count_or_approximate, countable, make_counter
from .compressor import SpecPrefillCompressor
from .config import CompressionConfig, DraftConfig
from .draft import DraftModel
from .errors import ConfigError

__all__ = ["DOCUMENT_SETTINGS", "resolve_compressor", "compressor_identity", "check_budget", "Counter"]

#: The config of a compressor that a document entry point (LangChain's document compressor and
#: transformer, LlamaIndex's node postprocessor and transform) builds itself: retrieved documents
#: are question answering over many passages on one topic, where the semantic prior keeps the
#: answering sentence that shares few words with the question (RULER qa_1 at keep 10%: 11 -> 18 of 20),
#: and targets answered more from it on RULER's passages (179 against 162 of 400); an agent's tool
#: outputs keep the plain default (there it kept look-alike distractors: benchmarks/README.md).
DOCUMENT_SETTINGS: Mapping[str, Any] = MappingProxyType({"semantic_boost": 8.0})


def resolve_compressor(compressor: Any, settings: Mapping[str, Any] | None = None) -> Any:
    """``compressor``, or one built here: for ``None`` a client of the draft service at
    ``$SPECPREFILL_URL`` when that is set, else a new in-process compressor (embedded draft,
    loaded on first use); for a draft spec (a hub id, a path, a ``DraftConfig``, a loaded
    ``DraftModel``) an in-process compressor of that draft.

    ``settings``: :class:`CompressionConfig` fields of a compressor built here (the client sends
    them as per-request overrides); a compressor given is used as it is.  One built here raises
    on scoring errors, so that the integration's own ``on_failure`` decides alone, and leaves an
    optional part that fails (the semantic prior's encoder) out of the call with one warning.
    """
    settings = dict(settings or {})
    if compressor is None:
        url = os.environ.get("SPECPREFILL_URL")
        if url:
            from specprefill_agents.service.client import RemoteCompressor

            return RemoteCompressor(url, config=settings or None)
        compressor = "embedded"
    if isinstance(compressor, (str, DraftConfig, DraftModel)):
        config = CompressionConfig(**settings) if settings else None
        return SpecPrefillCompressor(compressor, config, on_failure="raise", on_part_failure="warn")
    if not callable(getattr(compressor, "compress_segments", None)):
        raise ConfigError(
            f"compressor must implement specprefill_agents.Compressor (at least compress_segments): a "
            f"SpecPrefillCompressor or a client, "
            f"a draft spec such as 'embedded', or None; got {type(compressor).__name__}"
        )
    return compressor


def compressor_identity(compressor: Any) -> dict[str, Any]:
    """A plain dict naming the compressor, its draft and its config: part of cache keys."""
    cls = type(compressor)
    ident: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    identity = getattr(compressor, "identity", None)
    if callable(identity):  # SpecPrefillCompressor (and clients with the same interface)
        ident.update(identity())
        return ident
    to_dict = getattr(getattr(compressor, "config", None), "to_dict", None)
    if callable(to_dict):
        ident["config"] = to_dict()
    return ident


def check_budget(keep_ratio: Any, budget_tokens: Any) -> None:
    """Validate per-call budget overrides (``None`` means: the compressor's config)."""
    if keep_ratio is not None and (
        isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < keep_ratio <= 1.0
    ):
        raise ConfigError(f"keep_ratio must be a number in (0, 1] or None, got {keep_ratio!r}")
    if budget_tokens is not None and (
        isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 1
    ):
        raise ConfigError(f"budget_tokens must be an int >= 1 or None, got {budget_tokens!r}")


class Counter:
    """Counts tokens for an integration's stats, with a small cache of recent texts.

    The caller's counter when given (the target's tokenizer), else the one the compressor
    counts with (:meth:`~specprefill_agents.Compressor.counter`: its draft's tokenizer), else an
    approximation (4 characters a token, :data:`~specprefill_agents.APPROXIMATE`) when the
    compressor cannot say.
    """

    def __init__(self, token_counter: Any, compressor: Any, cache_size: int = 4096) -> None:
        self._spec = token_counter
        self._compressor = compressor
        self._count: TokenCounter | None = None
        self.name = ""
        self._cache: LRUCache[bytes, int] = LRUCache(maxsize=cache_size)  # keyed by digest, not text
        self._lock = threading.Lock()
        if token_counter is not None:
            self._count, self.name = make_counter(token_counter)

    def _resolve(self) -> TokenCounter:
        if self._count is None:
            try:  # loads the draft if needed: it is loaded for compression anyway
                self._count, self.name = self._compressor.counter()
            except Exception:  # no counter, or a draft that cannot load: compression reports why
                self._count, self.name = approximate_tokens, APPROXIMATE
        return self._count

    def __call__(self, text: str) -> int:
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        count = self._resolve()(countable(text))  # undecodable bytes count as "?"
        with self._lock:
            self._cache[key] = count
        return count

    def count_all(self, texts: list[str]) -> tuple[list[int], str]:
        """Each text's count and the counter's name; all approximated if the counter raises
        (a failing counter must not turn a pass-through into a crash)."""
        self._resolve()  # the counter's name is known once it is resolved
        return count_or_approximate(self, self.name, texts)
