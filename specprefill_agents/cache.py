"""Pay only for what is new: prefix hashes, the draft KV prefix cache, the score cache.

* :func:`segment_chain` gives each segment a hash of everything up to and including it
  (h_i = H(h_{i-1}, draft id, config, text_i)), stable across processes.
* :class:`KVPrefixCache` keeps the draft's KV states of scored contexts, bounded by bytes
  (LRU).  A later call finds the longest cached prefix at a segment boundary and forwards
  only the rest.  Entries are never modified: a restored cache grows by concatenation, so
  two agents sharing a prefix cannot corrupt each other.  Concurrent calls that need the same
  uncached prefix compute it once: the first claims its keys (:meth:`KVPrefixCache.claim`), the
  others wait for its entry.
* :class:`ScoreCache` maps (prompt, query, config) to finished token scores.
* :func:`cache_namespace` keeps what one tenant caches to itself: inside it, KV prefixes and
  scores are stored and looked up under that namespace only.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Hashable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
from cachetools import LRUCache

__all__ = [
    "cache_namespace",
    "namespaced",
    "segment_chain",
    "token_prefix_keys",
    "KVEntry",
    "KVPrefixCache",
    "ScoreCache",
]

_NAMESPACE: ContextVar[str] = ContextVar("specprefill_cache_namespace", default="")


@contextlib.contextmanager
def cache_namespace(name: str) -> Iterator[None]:
    """KV prefixes and scores cached by calls inside this block (this thread or task) are stored and
    looked up under ``name`` only: calls in another namespace neither hit them nor learn, from
    their own reuse or timing, that they exist.  ``""`` is the default, shared namespace."""
    token = _NAMESPACE.set(name)
    try:
        yield
    finally:
        _NAMESPACE.reset(token)


def namespaced(key: str) -> str:
    """``key`` within the current :func:`cache_namespace`."""
    name = _NAMESPACE.get()
    return f"{key}|namespace={name}" if name else key


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def segment_chain(texts: Sequence[str], draft_id: str, config_json: str) -> list[str]:
    """Chained hash per segment: equal hashes mean equal prefixes up to that segment."""
    chain, prev = [], b""
    head = _digest(draft_id.encode(), config_json.encode()).encode()
    for text in texts:
        prev = _digest(prev or head, text.encode("utf-8", "surrogatepass")).encode()
        chain.append(prev.decode())
    return chain


def token_prefix_keys(namespace: str, ids: Sequence[int], lengths: Sequence[int]) -> list[str]:
    """One key per prefix length of ``ids`` (lengths ascending), hashed incrementally in O(n)."""
    h = hashlib.blake2b(namespace.encode(), digest_size=16)
    arr = np.asarray(ids, dtype=np.int64)
    keys, done = [], 0
    for n in lengths:
        h.update(arr[done:n].tobytes())
        done = n
        keys.append(h.copy().hexdigest())
    return keys


@dataclass(frozen=True)
class KVEntry:
    """Snapshot of a KV cache after ``length`` tokens: per layer (keys, values, seq_length)."""

    layers: tuple[tuple[Any, Any, int], ...]
    length: int
    sliding: bool  # has sliding-window layers: can only be resumed at its full length
    nbytes: int
    prefix_keys: tuple[str, ...]  # index keys pointing at this entry


class _ByteLRU(LRUCache):  # type: ignore[type-arg]
    """LRU by bytes that tells its owner which entries it evicts."""

    def __init__(self, maxsize: int, on_evict: Any) -> None:
        super().__init__(maxsize=maxsize, getsizeof=lambda e: max(e.nbytes, 1))
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self._on_evict(key, value)
        return key, value


class KVPrefixCache:
    """Draft KV states of scored contexts, looked up by their longest cached prefix.

    Thread-safe. ``max_bytes`` bounds the tensors held (an entry larger than the bound
    is not kept). Keys include the draft identity, dtype and device.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entries = _ByteLRU(max(self.max_bytes, 1), self._forget)
        self._index: dict[str, tuple[str, int]] = {}  # prefix key -> (entry key, length)
        self._inflight: dict[str, threading.Event] = {}  # prefix key -> set once its claimer is done

    def claim(self, prefix_keys: Sequence[str]) -> tuple[threading.Event, bool]:
        """Claim the prefixes ``prefix_keys`` that the caller is about to compute: ``(event, True)``
        when claimed (call :meth:`release` with the event once stored, or on failure), or
        ``(event, False)`` when another caller is computing one of them (wait for the event, then
        look up again)."""
        with self._lock:
            for key in prefix_keys:
                busy = self._inflight.get(key)
                if busy is not None:
                    return busy, False
            event = threading.Event()
            for key in prefix_keys:
                self._inflight[key] = event
            return event, True

    def release(self, prefix_keys: Sequence[str], event: threading.Event) -> None:
        """End a claim (idempotent): the waiters look up again."""
        with self._lock:
            for key in prefix_keys:
                if self._inflight.get(key) is event:
                    del self._inflight[key]
        event.set()

    def _forget(self, key: str, entry: KVEntry) -> None:
        for pk in entry.prefix_keys:
            if self._index.get(pk, (None,))[0] == key:
                del self._index[pk]

    def lookup(self, prefix_keys: Sequence[str], lengths: Sequence[int]) -> tuple[KVEntry, int] | None:
        """The entry covering the longest of the given prefixes (keys ascending by length)."""
        with self._lock:
            for key, length in zip(reversed(prefix_keys), reversed(lengths)):
                found = self._index.get(key)
                if found is None or found[1] != length:
                    continue
                entry = self._entries.get(found[0])
                if entry is None or (entry.sliding and length != entry.length):
                    continue
                return entry, length
            return None

    def put(self, entry_key: str, entry: KVEntry, lengths: Sequence[int]) -> None:
        """Store ``entry``; every prefix key of it at ``lengths`` (ascending) points to it."""
        if self.max_bytes <= 0 or entry.nbytes > self.max_bytes:
            return
        with self._lock:
            if entry_key in self._entries:
                self._entries.get(entry_key)  # refresh recency
                return
            self._entries[entry_key] = entry
            for pk, length in zip(entry.prefix_keys, lengths):
                if not entry.sliding or length == entry.length:
                    self._index[pk] = (entry_key, length)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return int(self._entries.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._index.clear()


class ScoreCache:
    """Finished results by key, bounded by entry count (LRU). Thread-safe."""

    def __init__(self, max_entries: int) -> None:
        self._lock = threading.Lock()
        self._data: LRUCache[Hashable, Any] | None = LRUCache(max_entries) if max_entries > 0 else None

    def get(self, key: Hashable) -> Any:
        if self._data is None:
            return None
        with self._lock:
            return self._data.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        if self._data is None:
            return
        with self._lock:
            self._data[key] = value

    def __len__(self) -> int:
        if self._data is None:
            return 0
        with self._lock:
            return len(self._data)
