"""A callback handler that aggregates compression stats per top-level run and overall."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from .engine import EVENT_NAME

__all__ = ["SpecPrefillCallbackHandler", "RunStats"]


@dataclass
class RunStats:
    """Totals over the compressions of one run (or of everything the handler saw)."""

    compressions: int = 0
    original_tokens: int = 0
    compressed_tokens: int = 0
    groups: int = 0
    groups_reused: int = 0
    draft_calls: int = 0
    draft_tokens_forwarded: int = 0
    draft_tokens_reused: int = 0
    score_cache_hits: int = 0
    scoring_seconds: float = 0.0
    failures: int = 0

    @property
    def saved_tokens(self) -> int:
        return self.original_tokens - self.compressed_tokens

    def add(self, data: dict[str, Any]) -> None:
        self.compressions += 1
        self.original_tokens += int(data.get("original_tokens", 0))
        self.compressed_tokens += int(data.get("compressed_tokens", 0))
        self.groups += int(data.get("groups", 0))
        self.groups_reused += int(data.get("groups_reused", 0))
        self.draft_calls += int(data.get("calls", 0))
        self.draft_tokens_forwarded += int(data.get("draft_tokens_forwarded", 0))
        self.draft_tokens_reused += int(data.get("draft_tokens_reused", 0))
        self.score_cache_hits += int(data.get("score_cache_hits", 0))
        self.scoring_seconds += float(data.get("scoring_seconds", 0.0))
        self.failures += 1 if data.get("failure") else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saved_tokens": self.saved_tokens}


class SpecPrefillCallbackHandler(BaseCallbackHandler):
    """Collects every ``"specprefill_compression"`` event.

    ``events`` lists them in order (each a dict with ``run_id`` and ``root_run_id`` added),
    ``runs[root_run_id]`` totals them per top-level run (an agent invocation, a chain call)
    and ``total`` over everything.  Pass it in ``config={"callbacks": [handler]}``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.runs: dict[UUID, RunStats] = {}
        self.total = RunStats()
        self._parents: dict[UUID, UUID | None] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ run tree
    def _record(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            self._parents.setdefault(run_id, parent_run_id)

    def root_of(self, run_id: UUID) -> UUID:
        """The top-level run above ``run_id`` among the runs this handler has seen."""
        seen = set()
        while (parent := self._parents.get(run_id)) is not None and run_id not in seen:
            seen.add(run_id)
            run_id = parent
        return run_id

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                       **kwargs: Any) -> None:
        self._record(run_id, parent_run_id)

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._record(run_id, parent_run_id)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kwargs: Any) -> None:
        self._record(run_id, parent_run_id)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, parent_run_id: UUID | None = None,
                      **kwargs: Any) -> None:
        self._record(run_id, parent_run_id)

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None,
                           **kwargs: Any) -> None:
        self._record(run_id, parent_run_id)

    # ------------------------------------------------------------ the event
    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, tags: list[str] | None = None,
                        metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if name != EVENT_NAME or not isinstance(data, dict):
            return
        with self._lock:
            root = self.root_of(run_id)
            self.events.append({**data, "run_id": run_id, "root_run_id": root})
            self.runs.setdefault(root, RunStats()).add(data)
            self.total.add(data)

    def summary(self) -> dict[str, Any]:
        """``total`` as a plain dict (saved tokens included)."""
        with self._lock:
            return self.total.to_dict()
