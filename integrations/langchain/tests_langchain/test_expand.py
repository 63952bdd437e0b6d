"""SpecPrefillMiddleware(expandable=True): the expand_context tool end to end with a scripted model."""

from __future__ import annotations

import json
import re

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from langchain_specprefill import SpecPrefillMiddleware

from .fakes import RecordingChatModel

REF = re.compile(r"ref ([0-9a-f]{5,})\]")
QUESTION = "Which options does TextWrapper accept?"


def _reader(text: str, size: int = 3000):
    @tool
    def read(part: int) -> str:
        """Read part `part` of the file."""
        return text[size * part : size * (part + 1)]

    return read


def _script(expand_args):
    """Read part 0, then call expand_context with ``expand_args(messages)``, then answer."""

    def script(messages, i):
        tools = [m for m in messages if isinstance(m, ToolMessage)]
        if not tools:
            return AIMessage("", tool_calls=[{"name": "read", "args": {"part": 0}, "id": "call_read"}])
        if len(tools) == 1:
            return AIMessage(
                "", tool_calls=[{"name": "expand_context", "args": expand_args(tools[0].text), "id": "call_expand"}]
            )
        return "done"

    return script


def _run(compressor, text, expand_args, size=3000, **kw):
    inner = RecordingChatModel(script=_script(expand_args))
    middleware = SpecPrefillMiddleware(compressor, expandable=True, **kw)
    agent = create_agent(inner, tools=[_reader(text, size)], middleware=[middleware])
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    return state, inner, middleware


def test_tool_is_registered_only_when_expandable(compressor) -> None:
    assert SpecPrefillMiddleware(compressor).tools == []
    assert [t.name for t in SpecPrefillMiddleware(compressor, expandable=True).tools] == ["expand_context"]
    schema = SpecPrefillMiddleware(compressor, expandable=True).tools[0].tool_call_schema.model_json_schema()
    assert set(schema["properties"]) == {"ref", "search", "query"}  # the runtime is injected, not asked for


def test_a_reference_brings_back_the_exact_cut_text(compressor, source_text) -> None:
    state, inner, middleware = _run(compressor, source_text, lambda seen: {"ref": REF.findall(seen)[0]})
    original = source_text[:3000]
    read_seen = [m for m in inner.calls[1]["messages"] if isinstance(m, ToolMessage)][0]
    ref = REF.findall(read_seen.text)[0]
    assert len(read_seen.text) < len(original)
    assert {t["function"]["name"] for t in inner.calls[1]["kwargs"]["tools"]} == {"read", "expand_context"}
    expansion = state["messages"][4]
    assert isinstance(expansion, ToolMessage) and expansion.tool_call_id == "call_expand"
    header, cut = expansion.text.split("\n", 1)
    assert header == f"Original text cut at ref {ref}:" and cut in original and len(cut) > 20
    # the model received it uncompressed, the state keeps every original, tool calls intact
    last = inner.calls[2]["messages"]
    assert [m.text for m in last if isinstance(m, ToolMessage)][1] == expansion.text
    assert state["messages"][2].text == original
    assert [m.tool_calls for m in last if isinstance(m, AIMessage)] == [
        m.tool_calls for m in state["messages"] if isinstance(m, AIMessage)
    ][:2]
    assert middleware.last_report is not None and middleware.last_report.expanded_tokens > 0
    # the read output was compressed the same way (same references) at the later step
    assert [m for m in last if isinstance(m, ToolMessage)][0].text == read_seen.text


def test_a_search_string_keeps_only_matching_lines(compressor, source_text) -> None:
    state, _, _ = _run(compressor, source_text, lambda seen: {"ref": REF.findall(seen)[0], "search": "self"})
    body = state["messages"][4].text.split("\n", 1)[-1]
    assert body.startswith("No line") or all("self" in line.lower() for line in body.splitlines())


def test_a_query_finds_cut_text_without_a_reference(compressor, source_text) -> None:
    asked = []

    def ask(seen: str) -> dict:  # the model asks for a line it was not shown
        asked.append(
            next(
                ln.strip() for ln in source_text[:3000].splitlines() if len(ln.strip()) > 30 and ln.strip() not in seen
            )
        )
        return {"query": asked[-1]}

    state, _, middleware = _run(compressor, source_text, ask, expand_tokens=200)
    answer = state["messages"][4].text
    assert answer.startswith("Cut text matching the query") and asked[0] in answer
    assert middleware.engine.counter(answer) <= 200 + 40  # the budget, plus the headers


@pytest.mark.parametrize("ref", ["00000", "ref zzzzz", ""])
def test_unknown_or_forged_reference_is_an_error_message(compressor, source_text, ref) -> None:
    state, _, _ = _run(compressor, source_text, lambda seen: {"ref": ref})
    assert state["messages"][4].text.startswith("Error:")


def test_a_reference_from_another_conversation_does_not_resolve(compressor, source_text) -> None:
    other_text = "Another conversation's secret notes. " * 40 + source_text[6000:9000]
    first, _, middleware = _run(compressor, other_text, lambda seen: {"ref": REF.findall(seen)[0]})
    header, cut = first["messages"][4].text.split("\n", 1)
    foreign = header.removeprefix("Original text cut at ref ").rstrip(":")
    assert cut in other_text and len(foreign) >= 5  # it resolves in its own conversation
    inner = RecordingChatModel(script=_script(lambda seen: {"ref": foreign}))
    agent = create_agent(inner, tools=[_reader(source_text)], middleware=[middleware])  # same store
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert state["messages"][4].text.startswith("Error:") and cut not in state["messages"][4].text


def test_json_tool_output_stays_valid_json_with_reference_markers(compressor, json_output) -> None:
    state, inner, _ = _run(compressor, json_output, lambda seen: {"ref": REF.findall(seen)[0]}, size=10**6)
    seen = [m for m in inner.calls[1]["messages"] if isinstance(m, ToolMessage)][0].text
    original = json.loads(state["messages"][2].text)
    parsed = json.loads(seen)
    assert REF.search(parsed["content"]) and parsed.keys() == original.keys() and parsed["lines"] == 120
    cut = state["messages"][4].text.split("\n", 1)[1]
    assert cut in original["content"] or cut in original["matches"][1]["text"]


def test_a_long_expansion_output_reaches_the_model_uncompressed(compressor, source_text) -> None:
    inner = RecordingChatModel(script=lambda messages, i: "done")
    middleware = SpecPrefillMiddleware(compressor, expandable=True)
    agent = create_agent(inner, tools=[_reader(source_text)], middleware=[middleware])
    long_output = source_text[:3000]
    agent.invoke(
        {
            "messages": [
                HumanMessage(QUESTION),
                AIMessage("", tool_calls=[{"name": "read", "args": {"part": 0}, "id": "r"}]),
                ToolMessage(long_output, tool_call_id="r", name="read"),
                AIMessage("", tool_calls=[{"name": "expand_context", "args": {"query": "x"}, "id": "e"}]),
                ToolMessage(long_output, tool_call_id="e"),  # answers the expand_context call (no name set)
            ]
        }
    )
    seen = [m for m in inner.calls[0]["messages"] if isinstance(m, ToolMessage)]
    assert len(seen[0].text) < len(long_output) and seen[1].text == long_output
    assert seen[1].response_metadata == {}  # the model gets the message as it was, not a marked copy
    report = middleware.last_report
    assert report is not None and report.expanded_tokens == middleware.engine.counter(long_output)
    plain = SpecPrefillMiddleware(compressor)  # not expandable: every tool output is compressed
    plain_inner = RecordingChatModel(script=lambda messages, i: "done")
    create_agent(plain_inner, tools=[_reader(source_text)], middleware=[plain]).invoke(
        {
            "messages": [
                HumanMessage(QUESTION),
                AIMessage("", tool_calls=[{"name": "read", "args": {}, "id": "r"}]),
                ToolMessage(long_output, tool_call_id="r"),
            ]
        }
    )
    assert "ref " not in [m for m in plain_inner.calls[0]["messages"] if isinstance(m, ToolMessage)][0].text


def test_async_agent_expands_like_sync(draft, source_text) -> None:
    import asyncio

    from specprefill_agents import SpecPrefillCompressor

    from .conftest import FAST

    def run(asynchronous: bool) -> list[str]:
        inner = RecordingChatModel(script=_script(lambda seen: {"ref": REF.findall(seen)[-1]}))
        middleware = SpecPrefillMiddleware(SpecPrefillCompressor(draft, FAST, on_failure="raise"), expandable=True)
        agent = create_agent(inner, tools=[_reader(source_text)], middleware=[middleware])
        messages = {"messages": [HumanMessage(QUESTION)]}
        state = asyncio.run(agent.ainvoke(messages)) if asynchronous else agent.invoke(messages)
        return [m.text for m in state["messages"] if isinstance(m, ToolMessage)] + [
            m.text for m in inner.calls[-1]["messages"] if isinstance(m, ToolMessage)
        ]

    sync = run(False)
    assert sync[1].startswith("Original text cut at ref ") and run(True) == sync
