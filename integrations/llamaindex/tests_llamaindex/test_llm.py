"""The LLM wrapper: what reaches the inner model, tool calls intact, agents end to end, stream/async parity."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.mock import MockLLM
from llama_index.core.tools import FunctionTool
from llama_index.llms.specprefill import METADATA_KEY, SpecPrefillFunctionCallingLLM, SpecPrefillLLM

from .conftest import recording_llm

QUESTION = "What does dedent do?"


def _conversation(source: str) -> list[ChatMessage]:
    call = ToolCallBlock(tool_call_id="call_1", tool_name="read_file", tool_kwargs={"path": "textwrap.py"})
    return [
        ChatMessage(role="system", content="Answer from the tool output. " + source[:300]),
        ChatMessage(role="user", content=QUESTION),
        ChatMessage(role="assistant", blocks=[TextBlock(text="Let me read it."), call]),
        ChatMessage(
            role="tool",
            blocks=[TextBlock(text=source[:6000]), ImageBlock(url="https://example.com/a.png")],
            additional_kwargs={"tool_call_id": "call_1"},
        ),
    ]


def test_wraps_function_calling_llms_as_function_calling(compressor) -> None:
    inner, _ = recording_llm()
    llm = SpecPrefillLLM(inner, compressor)
    assert isinstance(llm, SpecPrefillFunctionCallingLLM) and isinstance(llm, FunctionCallingLLM)
    assert llm.metadata == inner.metadata and llm.metadata.is_function_calling_model
    plain = SpecPrefillLLM(MockLLM(), compressor)
    assert type(plain) is SpecPrefillLLM and not isinstance(plain, FunctionCallingLLM)
    assert type(plain.model_copy()) is SpecPrefillLLM and type(llm.model_copy()) is SpecPrefillFunctionCallingLLM


def test_the_inner_model_gets_the_compressed_tool_output_and_everything_else_intact(
    compressor, source_text, stats
) -> None:
    inner, recorder = recording_llm()
    messages = _conversation(source_text)
    response = SpecPrefillLLM(inner, compressor, keep_ratio=0.3).chat(messages, temperature=0.1)
    sent, kwargs = recorder.calls[0]
    assert kwargs == {"temperature": 0.1}
    assert [m.role for m in sent] == [m.role for m in messages]
    assert sent[:3] == messages[:3]  # system, latest user turn, assistant with its tool call block
    assert sent[3].additional_kwargs == {"tool_call_id": "call_1"} and sent[3].blocks[1] == messages[3].blocks[1]
    new, old = sent[3].blocks[0].text, messages[3].blocks[0].text
    assert len(new) < 0.6 * len(old)
    report = response.additional_kwargs[METADATA_KEY]
    assert report["items_compressed"] == 1 and report["compressed_tokens"] < report["original_tokens"]
    assert [e["component"] for e in stats.events] == ["SpecPrefillFunctionCallingLLM"]
    assert messages[3].blocks[0].text == source_text[:6000]  # the caller's messages are not mutated


def test_json_tool_output_stays_valid_json(compressor, source_text) -> None:
    inner, recorder = recording_llm()
    payload = {"path": "textwrap.py", "content": source_text[:5000], "lines": 120}
    messages = [
        ChatMessage(role="user", content=QUESTION),
        ChatMessage(role="tool", content=json.dumps(payload), additional_kwargs={"tool_call_id": "c"}),
    ]
    SpecPrefillLLM(inner, compressor).chat(messages)
    out = json.loads(recorder.calls[0][0][1].content)
    assert list(out) == list(payload) and out["lines"] == 120 and len(out["content"]) < 5000


def test_protected_messages_are_not_compressed(compressor, source_text) -> None:
    inner, recorder = recording_llm()
    messages = _conversation(source_text)
    messages[3] = messages[3].model_copy(
        update={"additional_kwargs": {"tool_call_id": "call_1", "specprefill": "protect"}}
    )
    SpecPrefillLLM(inner, compressor).chat(messages)
    assert recorder.calls[0][0] == messages


def test_stream_and_async_match_chat(compressor, source_text) -> None:
    messages = _conversation(source_text)
    inner, recorder = recording_llm()
    llm = SpecPrefillLLM(inner, compressor)
    chat = llm.chat(messages)
    streamed = list(llm.stream_chat(messages))

    async def run() -> tuple[Any, list[Any]]:
        achat = await llm.achat(messages)
        astream = [r async for r in await llm.astream_chat(messages)]
        return achat, astream

    achat, astreamed = asyncio.run(run())
    texts = [call[0][3].blocks[0].text for call in recorder.calls]
    assert len(texts) == 4 and len(set(texts)) == 1
    assert chat.message.content == streamed[-1].message.content == achat.message.content
    assert astreamed[-1].message.content == chat.message.content
    assert all(METADATA_KEY in r.additional_kwargs for r in [*streamed, *astreamed])
    assert streamed[-1].additional_kwargs[METADATA_KEY]["groups_reused"] == 1  # the memo served the repeat


def test_completion_and_structured_output_delegate(compressor) -> None:
    inner, _ = recording_llm()
    llm = SpecPrefillLLM(inner, compressor)
    assert llm.complete("hello").text == "hello"
    assert [r.text for r in llm.stream_complete("hi")] == ["hi"]


class _ChatStarts(BaseEventHandler):
    starts: int = 0

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, LLMChatStartEvent):
            self.starts += 1


def _read_file(path: str) -> str:
    """Read a file of the standard library and return its text."""
    import inspect
    import textwrap

    return inspect.getsource(textwrap)[:6000]


def test_function_agent_loop_completes_with_compressed_tool_outputs(compressor, stats) -> None:
    def script(messages: list[ChatMessage], index: int, kwargs: dict) -> ChatMessage:
        assert [t.metadata.name for t in kwargs["tools"]] == ["_read_file"]
        if index == 0:
            call = ToolCallBlock(tool_call_id="c1", tool_name="_read_file", tool_kwargs={"path": "textwrap.py"})
            return ChatMessage(role="assistant", blocks=[call])
        return ChatMessage(role="assistant", content="dedent removes common leading whitespace.")

    inner, recorder = recording_llm(script)
    starts = _ChatStarts()
    get_dispatcher().add_event_handler(starts)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(_read_file)], llm=SpecPrefillLLM(inner, compressor))

    async def run() -> Any:
        return await agent.run(user_msg=QUESTION)

    try:
        result = asyncio.run(run())
    finally:
        get_dispatcher().event_handlers.remove(starts)
    assert "leading whitespace" in str(result)
    second = recorder.calls[1][0]
    assert [m.role for m in second][-3:] == [MessageRole.USER, MessageRole.ASSISTANT, MessageRole.TOOL]
    assert second[-2].blocks[0].tool_call_id == "c1" and second[-2].blocks[0].tool_kwargs == {"path": "textwrap.py"}
    assert second[-1].additional_kwargs["tool_call_id"] == "c1" and len(second[-1].content) < 0.6 * 6000
    assert len(stats.events) == 2 and stats.events[1]["items_compressed"] == 1
    assert starts.starts == 2  # the inner model's own start events, one per step: none added


def test_react_agent_runs_end_to_end(compressor) -> None:
    def script(messages: list[ChatMessage], index: int, kwargs: dict) -> ChatMessage:
        if index == 0:
            return ChatMessage(
                role="assistant",
                content='Thought: I need the file.\nAction: _read_file\nAction Input: {"path": "textwrap.py"}',
            )
        return ChatMessage(role="assistant", content="Thought: I can answer.\nAnswer: it dedents.")

    inner, recorder = recording_llm(script)
    agent = ReActAgent(tools=[FunctionTool.from_defaults(_read_file)], llm=SpecPrefillLLM(inner, compressor))

    async def run() -> Any:
        return await agent.run(user_msg=QUESTION)

    assert "it dedents" in str(asyncio.run(run()))
    assert len(recorder.calls) == 2
    observation = recorder.calls[1][0][-1]
    assert "Observation" in observation.content and "dedent" in observation.content


def test_bad_settings_raise_config_errors(compressor) -> None:
    from specprefill_agents import ConfigError

    inner, _ = recording_llm()
    with pytest.raises(ConfigError):
        SpecPrefillLLM(inner, compressor, keep_ratio=1.5)
    with pytest.raises(ConfigError):
        SpecPrefillLLM(inner, object())
