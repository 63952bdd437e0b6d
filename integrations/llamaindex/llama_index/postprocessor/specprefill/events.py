"""One instrumentation event per compression, through LlamaIndex's dispatcher.

Every component of this package (the postprocessor, the transform, the LLM wrapper) emits
a :class:`SpecPrefillCompressionEvent` carrying the compression's stats
(:meth:`~specprefill_agents.message_compression.CompressionReport.to_dict`) after each
compression; LLM start/end events stay the inner model's own.  :class:`SpecPrefillStats`
is an event handler that collects them.
"""

from __future__ import annotations

import threading
from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from pydantic import Field, PrivateAttr
from specprefill_agents.message_compression import CompressionReport

__all__ = ["SpecPrefillCompressionEvent", "SpecPrefillStats", "emit"]

dispatcher = get_dispatcher(__name__)


class SpecPrefillCompressionEvent(BaseEvent):
    """A compression happened: ``component`` names who compressed, ``stats`` what it did
    (tokens before/after and their counter, items, draft tokens, seconds, ``failure``)."""

    component: str
    stats: dict[str, Any]

    @classmethod
    def class_name(cls) -> str:
        return "SpecPrefillCompressionEvent"


def emit(component: str, report: CompressionReport) -> None:
    dispatcher.event(SpecPrefillCompressionEvent(component=component, stats=report.to_dict()))


class SpecPrefillStats(BaseEventHandler):
    """Collects every :class:`SpecPrefillCompressionEvent` (add it to a dispatcher:
    ``get_dispatcher().add_event_handler(stats)``).  ``events`` holds their stats in order."""

    events: list[dict[str, Any]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "SpecPrefillStats"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, SpecPrefillCompressionEvent):
            with self._lock:
                self.events.append({"component": event.component, **event.stats})

    def summary(self) -> dict[str, Any]:
        """Totals over the collected events."""
        with self._lock:
            events = list(self.events)
        return {
            "compressions": len(events),
            "original_tokens": sum(e["original_tokens"] for e in events),
            "compressed_tokens": sum(e["compressed_tokens"] for e in events),
            "saved_tokens": sum(e["saved_tokens"] for e in events),
            "failures": sum(1 for e in events if e["failure"]),
        }
