"""Failure injection: a draft that raises never kills a call unless on_failure="raise"."""

from __future__ import annotations

import asyncio
import logging
import warnings

import pytest
from langchain.agents import create_agent
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from specprefill_agents import SpecPrefillCompressor

from langchain_specprefill import (
    METADATA_KEY,
    SpecPrefillCallbackHandler,
    SpecPrefillDocumentCompressor,
    SpecPrefillLLM,
    SpecPrefillMiddleware,
)

from .conftest import broken_draft
from .fakes import FailingCompressor, RecordingChatModel


@pytest.fixture(scope="module")
def broken():
    return broken_draft()


@pytest.fixture
def conversation(source_text: str):
    return [SystemMessage("sys"), HumanMessage("What does dedent do?"),
            AIMessage("", tool_calls=[{"name": "read", "args": {}, "id": "c1"}]),
            ToolMessage(source_text[:2000], tool_call_id="c1")]


def _failing(kind: str, broken):
    if kind == "broken-draft":  # the in-process compressor built by the integration (core raises)
        return broken
    if kind == "core-falls-back":  # a user's compressor with the core's own fallback
        return SpecPrefillCompressor(broken, on_failure="passthrough")
    return FailingCompressor()  # any object with the interface (a remote client...)


@pytest.mark.parametrize("kind", ["broken-draft", "core-falls-back", "foreign"])
def test_warn_passes_through(kind: str, broken, conversation) -> None:
    inner = RecordingChatModel()
    llm = SpecPrefillLLM(inner=inner, compressor=_failing(kind, broken))
    with pytest.warns(RuntimeWarning, match="compression failed"):
        answer = llm.invoke(conversation)
    assert inner.calls[0]["messages"] == conversation
    assert answer.response_metadata[METADATA_KEY]["failure"]


def test_passthrough_is_silent_but_logged(broken, conversation, caplog: pytest.LogCaptureFixture) -> None:
    inner = RecordingChatModel()
    llm = SpecPrefillLLM(inner=inner, compressor=broken, on_failure="passthrough")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING, logger="langchain_specprefill"):
            llm.invoke(conversation)
    assert inner.calls[0]["messages"] == conversation
    assert "injected" in caplog.text


def test_raise_raises(broken, conversation) -> None:
    inner = RecordingChatModel()
    llm = SpecPrefillLLM(inner=inner, compressor=broken, on_failure="raise")
    with pytest.raises(RuntimeError, match="injected"):
        llm.invoke(conversation)
    with pytest.raises(RuntimeError, match="injected"):
        asyncio.run(llm.ainvoke(conversation))
    with pytest.raises(RuntimeError, match="draft exploded"):
        SpecPrefillLLM(inner=inner, compressor=FailingCompressor(), on_failure="raise").invoke(conversation)
    assert inner.calls == []


def test_async_and_stream_fall_back_too(broken, conversation) -> None:
    inner = RecordingChatModel()
    llm = SpecPrefillLLM(inner=inner, compressor=broken, on_failure="passthrough")
    asyncio.run(llm.ainvoke(conversation))
    list(llm.stream(conversation))
    assert all(c["messages"] == conversation for c in inner.calls) and len(inner.calls) == 2


def test_agent_survives_a_failing_draft(broken, source_text: str) -> None:
    @tool
    def read(path: str) -> str:
        """Read a file."""
        return source_text[:2000]

    def script(messages, i):
        if not any(isinstance(m, ToolMessage) for m in messages):
            return AIMessage("", tool_calls=[{"name": "read", "args": {"path": "a"}, "id": "c1"}])
        return "done"

    inner = RecordingChatModel(script=script)
    handler = SpecPrefillCallbackHandler()
    agent = create_agent(inner, tools=[read], middleware=[SpecPrefillMiddleware(broken)])
    with pytest.warns(RuntimeWarning, match="compression failed"):
        state = agent.invoke({"messages": [HumanMessage("q")]}, config={"callbacks": [handler]})
    assert state["messages"][-1].content == "done"
    assert inner.calls[1]["messages"][-1].content == source_text[:2000]
    assert handler.total.failures == 1 and handler.total.compressions == 2  # step 1 had no tool output


def test_documents_fall_back(broken) -> None:
    docs = [Document("alpha " * 200, metadata={"source": "a"}, id="a")]
    with pytest.warns(RuntimeWarning):
        out = SpecPrefillDocumentCompressor(compressor=broken).compress_documents(docs, "alpha?")
    assert out[0].page_content == docs[0].page_content and out[0].id == "a"
    assert out[0].metadata["specprefill"]["failure"].startswith("RuntimeError")
    with pytest.raises(RuntimeError):
        SpecPrefillDocumentCompressor(compressor=broken, on_failure="raise").compress_documents(docs, "alpha?")


@pytest.mark.parametrize("depth", [1_000, 20_000])
def test_a_tool_output_of_deeply_nested_json_never_ends_the_step(compressor, depth: int) -> None:
    """``json.loads`` raises RecursionError past ~1,000 levels (fewer on a deeper stack): such
    output is kept whole, since compressing it as text could break what a parser with more stack
    reads as JSON, and the call goes on."""
    hostile = "[" * depth + "]" * depth
    conversation = [HumanMessage("What does the tool say?"),
                    AIMessage("", tool_calls=[{"name": "read", "args": {}, "id": "c1"}]),
                    ToolMessage(hostile, tool_call_id="c1")]
    inner = RecordingChatModel()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no failure either: it is just text
        answer = SpecPrefillLLM(inner=inner, compressor=compressor, keep_ratio=0.3).invoke(conversation)
    sent = inner.calls[0]["messages"]
    assert len(sent) == 3 and sent[:2] == conversation[:2] and sent[2].tool_call_id == "c1"
    assert sent[2].content == hostile
    assert answer.response_metadata[METADATA_KEY]["failure"] is None


def test_a_planning_failure_passes_the_messages_through(monkeypatch: pytest.MonkeyPatch, compressor,
                                                        conversation) -> None:
    import langchain_specprefill.engine as engine

    def fail(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded (simulated)")

    monkeypatch.setattr(engine, "plan_messages", fail)
    inner = RecordingChatModel()
    with pytest.warns(RuntimeWarning, match="compression failed"):
        answer = SpecPrefillLLM(inner=inner, compressor=compressor).invoke(conversation)
    assert inner.calls[0]["messages"] == conversation
    report = answer.response_metadata[METADATA_KEY]
    assert report["failure"].startswith("RecursionError") and report["counted_with"] == "chars/4"
    assert report["original_tokens"] == report["compressed_tokens"] > 0


def test_a_token_counter_that_raises_passes_through_without_crashing(compressor, conversation) -> None:
    def broken(text: str) -> int:
        return len(text) // 0

    inner = RecordingChatModel()
    with pytest.warns(RuntimeWarning, match="compression failed"):
        answer = SpecPrefillLLM(inner=inner, compressor=compressor, token_counter=broken).invoke(conversation)
    assert inner.calls[0]["messages"] == conversation
    report = answer.response_metadata[METADATA_KEY]
    assert report["failure"] and report["counted_with"] == "chars/4"
    docs = [Document(page_content=conversation[-1].content)]
    with pytest.warns(RuntimeWarning, match="compression failed"):
        out = SpecPrefillDocumentCompressor(compressor=compressor, token_counter=broken).compress_documents(
            docs, "dedent")
    assert out[0].page_content == docs[0].page_content
    assert out[0].metadata["specprefill"]["counted_with"] == "chars/4"


def test_a_failing_semantic_encoder_is_reported_and_the_step_still_compresses(draft, conversation) -> None:
    import numpy as np
    from specprefill_agents import SemanticModel

    from .conftest import FAST

    class Broken(SemanticModel):
        def __init__(self) -> None:
            self.name = "broken"

        def similarities(self, query: str, texts: object) -> np.ndarray:
            raise RuntimeError("encoder out of memory (injected)")

    compressor = SpecPrefillCompressor(draft, FAST.replace(semantic_boost=8.0), on_failure="passthrough",
                                       semantic=Broken())
    inner = RecordingChatModel()
    answer = SpecPrefillLLM(inner=inner, compressor=compressor, keep_ratio=0.3).invoke(conversation)
    report = answer.response_metadata[METADATA_KEY]
    assert report["failure"] is None and "injected" in (report["degraded"] or "")
    assert report["compressed_tokens"] < report["original_tokens"]
    assert len(inner.calls[0]["messages"][-1].content) < len(conversation[-1].content)
