"""The draft's KV of context windows: looked up in the prefix cache, restored, prefilled, stored.

A window's KV is keyed by the hash of its token prefix at each split point (segment
boundaries): a later call finds the longest cached prefix, restores it and forwards only the
rest.  Entries are never written again once stored (DESIGN section 4).  A window whose
prefix another call is computing right now waits for that call's entry instead of computing
it again (concurrent agents with one system prompt and document, a service's round).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .._compat import KVLayers, cut_kv, forward, kv_nbytes, new_kv_cache, restore_kv, snapshot_kv
from ..cache import KVEntry, KVPrefixCache, namespaced, token_prefix_keys
from ..draft import DraftModel
from ..limits import check_deadline

WAIT_STEP_S = 0.25  # a call waiting for another's prefix checks its own deadline this often

__all__ = ["OpenWindow", "WindowKV"]


@dataclass(frozen=True)
class OpenWindow:
    """A window being filled: its KV cache (holding ``reused`` tokens so far), its token ids, the
    prefix lengths it may be looked up by, and their cache keys."""

    cache: Any
    ids: list[int]
    lengths: list[int]
    keys: list[str]
    reused: int
    claim: tuple[list[str], threading.Event] | None = field(default=None, compare=False)


class WindowKV:
    """KV of context windows for one draft; owns the prefix cache (None: nothing is reused).
    Thread-safe: no per-call state on self."""

    def __init__(self, draft: DraftModel, kv_cache: KVPrefixCache | None, prefill_chunk: int | None) -> None:
        self.model, self.kv_cache, self.prefill_chunk = draft.model, kv_cache, prefill_chunk
        self._namespace = f"{draft.name}|{draft.dtype}|{draft.device}"  # KV depends on these, not the config

    def snapshot(self, ids: list[int], lengths: list[int]) -> tuple[KVLayers, int]:
        """The KV of ``ids``, and how many of its tokens came from the cache: views of a cached
        entry when it covers all of them (no copy, no forward; the entry may hold a longer
        context), else the cached prefix plus a forward of the rest (then stored)."""
        entry, reused, keys, claim = self._lookup(ids, lengths)
        if entry is not None and reused == len(ids):
            return cut_kv(entry.layers, reused), reused
        window = OpenWindow(self._resume(entry, reused, len(ids)), ids, lengths, keys, reused, claim)
        try:
            self.prefill(window, len(ids))
            self.store(window)
        finally:
            self.release(window)
        return snapshot_kv(window.cache, len(ids))[0], reused

    def open(self, ids: list[int], lengths: list[int], extra: int) -> OpenWindow:
        """A window holding the longest cached prefix of ``ids`` (or nothing), its cache sized once
        for the rest of ``ids`` plus ``extra`` tokens (query block and lookahead).  The caller
        ends with :meth:`store` or, on failure, :meth:`release`."""
        entry, reused, keys, claim = self._lookup(ids, lengths)
        return OpenWindow(self._resume(entry, reused, len(ids) + extra), ids, lengths, keys, reused, claim)

    def prefill(self, window: OpenWindow, end: int) -> None:
        """Forward ``window.ids[reused:end]`` into its cache, ``prefill_chunk`` tokens at a time."""
        step = self.prefill_chunk or max(end - window.reused, 1)
        for start in range(window.reused, end, step):
            check_deadline()
            forward(self.model, window.ids[start:min(start + step, end)], window.cache)

    def last_chunk_start(self, window: OpenWindow) -> int:
        """Where the last prefill chunk of the window's new tokens starts (it can run with the query)."""
        n, begin = len(window.ids), window.reused
        if n <= begin:
            return n
        step = self.prefill_chunk or (n - begin)
        return begin + ((n - begin - 1) // step) * step

    def store(self, window: OpenWindow) -> None:
        """Keep the KV of the window's context tokens (never a query block or lookahead) for later calls."""
        if self.kv_cache is None or window.reused >= len(window.ids):
            return self.release(window)
        layers, sliding = snapshot_kv(window.cache, len(window.ids))
        entry = KVEntry(layers, len(window.ids), sliding, kv_nbytes(layers), tuple(window.keys))
        self.kv_cache.put(window.keys[-1], entry, window.lengths)
        self.release(window)

    def release(self, window: OpenWindow) -> None:
        """Let the calls waiting for this window's prefixes look them up (idempotent)."""
        if self.kv_cache is not None and window.claim is not None:
            self.kv_cache.release(*window.claim)

    def _lookup(self, ids: list[int], lengths: list[int]
                ) -> tuple[KVEntry | None, int, list[str], tuple[list[str], threading.Event] | None]:
        """The cached entry covering the longest prefix of ``ids`` ending at one of ``lengths``
        (None), the tokens it covers, the prefix keys of ``ids`` (for storing it later) and the
        claim on the longer prefixes this call computes.  When another call is computing one of
        those, waits for it first and looks again."""
        if self.kv_cache is None:
            return None, 0, [], None
        keys = token_prefix_keys(namespaced(self._namespace), ids, lengths)
        while True:
            hit = self.kv_cache.lookup(keys, lengths)
            entry, reused = (None, 0) if hit is None else hit
            longer = [key for key, n in zip(keys, lengths) if n > reused]
            event, claimed = self.kv_cache.claim(longer)
            if claimed:
                return entry, reused, keys, (longer, event)
            while not event.wait(WAIT_STEP_S):
                check_deadline()

    def _resume(self, entry: KVEntry | None, start: int, capacity: int) -> Any:
        """A fresh cache for ``capacity`` tokens holding the first ``start`` tokens of ``entry``."""
        if entry is None:
            return new_kv_cache(self.model, capacity)
        return restore_kv(self.model, entry.layers, start, capacity - start)
