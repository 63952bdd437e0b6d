"""Shared fixtures: tiny in-process drafts (no weights, no network), real stdlib texts, fakes."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.base.llms.types import ChatMessage
from llama_index.postprocessor.specprefill import SpecPrefillStats
from specprefill_agents import CompressionConfig, DraftModel, ScoringConfig, SpecPrefillCompressor
from specprefill_agents.testing import tiny_draft

FAST = CompressionConfig(keep_ratio=0.3, min_tokens=32, scoring=ScoringConfig(lookahead=2))


@pytest.fixture(scope="session")
def draft() -> DraftModel:
    """A random 3-layer Llama with a long enough context that nothing is windowed."""
    return tiny_draft("llama", max_pos=4096)


@pytest.fixture
def compressor(draft: DraftModel) -> SpecPrefillCompressor:
    """A fresh in-process compressor on the tiny draft (its caches start empty)."""
    return SpecPrefillCompressor(draft, FAST, on_failure="raise")


@pytest.fixture(scope="session")
def source_text() -> str:
    """About 2,500 draft tokens of real code and prose (textwrap's source)."""
    return inspect.getsource(textwrap)[:9000]


@pytest.fixture
def stats() -> Iterator[SpecPrefillStats]:
    """Collects this test's compression events from the root dispatcher."""
    handler = SpecPrefillStats()
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers = [h for h in root.event_handlers if h is not handler]


class Recorder:
    """A response generator for ``MockFunctionCallingLLM`` that records what the model got.

    ``script(messages, call_index, kwargs) -> ChatMessage``; ``calls`` holds (messages, kwargs).
    """

    def __init__(self, script: Any = None) -> None:
        self.script = script
        self.calls: list[tuple[list[ChatMessage], dict[str, Any]]] = []

    def __call__(self, messages: Any, **kwargs: Any) -> ChatMessage:
        self.calls.append((list(messages), dict(kwargs)))
        if self.script is None:
            chars = sum(len(m.content or "") for m in messages)
            return ChatMessage(role="assistant", content=f"got {len(messages)} messages, {chars} chars")
        return self.script(list(messages), len(self.calls) - 1, kwargs)


def recording_llm(script: Any = None) -> tuple[MockFunctionCallingLLM, Recorder]:
    recorder = Recorder(script)
    return MockFunctionCallingLLM(response_generator=recorder), recorder
