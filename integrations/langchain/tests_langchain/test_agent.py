"""create_agent end to end: tools arrive, compressed tool output arrives, state keeps originals."""

from __future__ import annotations

import asyncio

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ContextEditingMiddleware
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from specprefill_agents import SpecPrefillCompressor

from langchain_specprefill import (
    MessageCompressor,
    SpecPrefillCallbackHandler,
    SpecPrefillEdit,
    SpecPrefillLLM,
    SpecPrefillMiddleware,
)

from .conftest import FAST
from .fakes import RecordingChatModel

QUESTION = "Which options does TextWrapper accept?"


@pytest.fixture
def read_chunk(source_text: str):
    @tool
    def read_chunk(index: int) -> str:
        """Read chunk `index` (1,500 characters) of textwrap.py."""
        return source_text[1500 * index : 1500 * (index + 1)]

    return read_chunk


def _script(steps: int = 3, parallel: bool = False):
    """Call read_chunk once per step (twice in parallel on the second step), then answer."""

    def script(messages, i):
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done >= steps:
            return f"read {done} chunks"
        calls = [{"name": "read_chunk", "args": {"index": done}, "id": f"call_{done}"}]
        if parallel and done == 1:
            calls.append({"name": "read_chunk", "args": {"index": done + 1}, "id": f"call_{done + 1}"})
        return AIMessage("", tool_calls=calls)

    return script


def _agent(compressor, read_chunk, **kw):
    inner = RecordingChatModel(script=_script(**kw))
    middleware = SpecPrefillMiddleware(compressor)
    agent = create_agent(inner, tools=[read_chunk], system_prompt="Be terse.", middleware=[middleware])
    return agent, inner, middleware


def test_middleware_compresses_what_the_model_sees_and_state_keeps_originals(compressor, read_chunk,
                                                                               source_text) -> None:
    agent, inner, _ = _agent(compressor, read_chunk)
    handler = SpecPrefillCallbackHandler()
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]}, config={"callbacks": [handler]})
    tools_in_state = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in tools_in_state] == [source_text[1500 * i : 1500 * (i + 1)] for i in range(3)]
    assert len(inner.calls) == 4
    for call in inner.calls:
        assert call["kwargs"]["tools"][0]["function"]["name"] == "read_chunk"  # tools arrive
        assert call["messages"][0].content == "Be terse." and call["messages"][1].content == QUESTION
    last = inner.calls[-1]["messages"]
    seen = [m for m in last if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in seen] == ["call_0", "call_1", "call_2"]
    assert all(len(s.content) < len(o.content) for s, o in zip(seen, tools_in_state))
    ai_seen = [m for m in last if isinstance(m, AIMessage)]
    ai_state = [m for m in state["messages"] if isinstance(m, AIMessage)][:-1]
    assert [m.tool_calls for m in ai_seen] == [m.tool_calls for m in ai_state]
    # Step-stable: what the model saw of a tool output never changes at later steps.
    for step in range(2, 4):
        earlier = [m.content for m in inner.calls[step - 1]["messages"] if isinstance(m, ToolMessage)]
        now = [m.content for m in inner.calls[step]["messages"] if isinstance(m, ToolMessage)]
        assert now[: len(earlier)] == earlier
    # One event per model call, all under one top-level run; earlier groups come from the memo.
    assert [e["groups"] for e in handler.events] == [0, 1, 2, 3]
    assert [e["groups_reused"] for e in handler.events] == [0, 0, 1, 2]
    assert [e["calls"] for e in handler.events] == [0, 1, 1, 1]
    assert len(handler.runs) == 1 and handler.total.compressions == 4 and handler.total.saved_tokens > 0


def test_memo_changes_nothing_a_fresh_compressor_would_not_produce(compressor, draft, read_chunk) -> None:
    agent, inner, _ = _agent(compressor, read_chunk, parallel=True)
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    fresh = MessageCompressor(SpecPrefillCompressor(draft, FAST, on_failure="raise"), memo_size=0)
    history = [SystemMessage("Be terse."), *state["messages"][:-1]]
    recomputed, report = fresh.compress(history)
    assert [m.content for m in recomputed[1:]] == [m.content for m in inner.calls[-1]["messages"][1:]]
    assert report.groups == 2 and report.groups_reused == 0  # parallel results: one group


def test_async_agent_matches_sync(draft, read_chunk) -> None:
    sync_agent, sync_inner, _ = _agent(SpecPrefillCompressor(draft, FAST, on_failure="raise"), read_chunk)
    async_agent, async_inner, _ = _agent(SpecPrefillCompressor(draft, FAST, on_failure="raise"), read_chunk)
    sync_agent.invoke({"messages": [HumanMessage(QUESTION)]})
    asyncio.run(async_agent.ainvoke({"messages": [HumanMessage(QUESTION)]}))

    def seen(inner):  # message ids are random per run; the rest must match exactly
        return [[(type(m), m.content, getattr(m, "tool_calls", None), getattr(m, "tool_call_id", None))
                 for m in call["messages"]] for call in inner.calls]

    assert seen(sync_inner) == seen(async_inner)


def test_wrapper_as_the_agent_model(compressor, read_chunk, source_text) -> None:
    inner = RecordingChatModel(script=_script(steps=2))
    agent = create_agent(SpecPrefillLLM(inner=inner, compressor=compressor), tools=[read_chunk])
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert state["messages"][-1].content == "read 2 chunks"
    assert state["messages"][2].content == source_text[:1500]  # state keeps the original
    assert inner.calls[-1]["kwargs"]["tools"][0]["function"]["name"] == "read_chunk"
    assert len(inner.calls[-1]["messages"][2].content) < 1500
    assert state["messages"][-1].response_metadata["specprefill"]["groups"] == 2


def test_messages_stream_shows_each_token_once(compressor) -> None:
    inner = RecordingChatModel(script=lambda messages, i: "alpha beta gamma")
    agent = create_agent(SpecPrefillLLM(inner=inner, compressor=compressor), tools=[])
    tokens = [chunk.content for chunk, _ in agent.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages")]
    assert "".join(tokens) == "alpha beta gamma" and tokens.count("alpha") == 1


def test_context_edit_compresses_past_its_trigger(compressor, read_chunk) -> None:
    for trigger, expect_shorter in ((10**6, False), (100, True)):
        inner = RecordingChatModel(script=_script(steps=2))
        edit = SpecPrefillEdit.create(compressor, trigger=trigger)
        agent = create_agent(inner, tools=[read_chunk], middleware=[ContextEditingMiddleware(edits=[edit])])
        state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
        seen = [m for m in inner.calls[-1]["messages"] if isinstance(m, ToolMessage)]
        original = [m for m in state["messages"] if isinstance(m, ToolMessage)]
        assert [len(s.content) < len(o.content) for s, o in zip(seen, original)] == [expect_shorter] * 2
        assert (edit.last_report is not None) is expect_shorter
