"""A small bounded store of left-out text, by namespace and reference.

For callers that do not keep the originals themselves (the LangChain middleware reads them from
the agent's state instead).  Every entry lives in a namespace (a conversation, a user): a lookup
only ever sees its own namespace, so a reference from another conversation, or a forged one,
never resolves to someone else's text.
"""

from __future__ import annotations

import hashlib
import threading

from cachetools import LRUCache

from .errors import ConfigError, GapNotFoundError, InputError
from .expansion import OmittedText, omitted_texts
from .types import CompressionResult, normalize_ref

__all__ = ["GapStore", "content_namespace"]


def content_namespace(text: str) -> str:
    """A namespace named by ``text`` itself: whoever holds the original text, and only they, can
    name it (an integration files each segment's gaps under its original text's namespace)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class GapStore:
    """Left-out text by namespace and reference, bounded by characters (the least recently used
    namespace goes first).

    Thread-safe.  ``add(result, namespace)`` records every gap of ``result``, ``put`` one text;
    ``expand(ref, namespace)`` returns a gap's original text exactly; ``omitted(namespace)`` lists
    what a namespace holds (for :func:`~specprefill_agents.expansion.search_omitted`).
    """

    def __init__(self, max_chars: int = 4_000_000) -> None:
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise ConfigError(f"max_chars must be an int >= 1, got {max_chars!r}")
        self.max_chars = max_chars
        self._lock = threading.Lock()
        self._data: LRUCache[str, dict[str, tuple[str, ...]]] = LRUCache(max_chars, getsizeof=_chars)

    def add(self, result: CompressionResult, namespace: str = "") -> int:
        """Record the gaps of ``result`` under ``namespace``; returns how many were new."""
        return sum(self.put(namespace, item.ref, item.text) for item in omitted_texts([result]))

    def put(self, namespace: str, ref: str, text: str) -> bool:
        """Record ``text`` as gap ``ref`` of ``namespace``; False when it was held already or the
        namespace would outgrow the whole store."""
        namespace, ref = _checked_namespace(namespace), normalize_ref(ref)
        with self._lock:
            held = dict(self._data.get(namespace, {}))
            if text in held.get(ref, ()):
                return False
            held[ref] = (*held.get(ref, ()), text)
            if _chars(held) > self.max_chars:
                return False
            self._data[namespace] = held  # evicts the least recently used namespaces to fit
            return True

    def expand(self, ref: str, namespace: str = "") -> str:
        """The original text of gap ``ref`` in ``namespace``; :class:`GapNotFoundError` when it is
        not held there (never stored, evicted, or two different texts share the reference)."""
        namespace, wanted = _checked_namespace(namespace), normalize_ref(ref)
        with self._lock:
            held = self._data.get(namespace, {}).get(wanted, ())
        if len(held) != 1:
            why = "two texts share it" if held else "it is not held here (unknown, or evicted)"
            raise GapNotFoundError(f"cannot expand reference {ref!r}: {why}")
        return held[0]

    def omitted(self, namespace: str = "") -> list[OmittedText]:
        """Everything ``namespace`` holds, in the order it was recorded."""
        namespace = _checked_namespace(namespace)
        with self._lock:
            held = self._data.get(namespace, {})
        return [OmittedText(ref, text) for ref, texts in held.items() for text in texts]

    @property
    def chars(self) -> int:
        with self._lock:
            return int(self._data.currsize)

    def __len__(self) -> int:
        """Gaps held."""
        with self._lock:
            return sum(len(texts) for held in self._data.values() for texts in held.values())


def _chars(held: dict[str, tuple[str, ...]]) -> int:
    return max(sum(len(t) for texts in held.values() for t in texts), 1)


def _checked_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise InputError(f"namespace must be a str, got {type(namespace).__name__}")
    return namespace
