"""SpecPrefillLLM: delegation, callbacks, tools, structured output, caching, parity."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from pydantic import BaseModel, ValidationError

from langchain_specprefill import EVENT_NAME, METADATA_KEY, SpecPrefillLLM

from .fakes import EventRecorder, RecordingChatModel


@tool
def read_file(path: str) -> str:
    """Read a file."""
    return path


class Person(BaseModel):
    """A person."""

    name: str


@pytest.fixture
def conversation(source_text: str) -> list[BaseMessage]:
    return [SystemMessage("You are terse."), HumanMessage("What does the max_lines option do?"),
            AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": "textwrap.py"}, "id": "call_1"}]),
            ToolMessage(source_text[:3000], tool_call_id="call_1", id="tool-msg-1")]


def _wrap(compressor, **kw) -> tuple[SpecPrefillLLM, RecordingChatModel]:
    inner = kw.pop("inner", None) or RecordingChatModel()
    return SpecPrefillLLM(inner=inner, compressor=compressor, **kw), inner


def _check_received(received: list[BaseMessage], sent: list[BaseMessage]) -> None:
    assert [type(m) for m in received] == [type(m) for m in sent]
    assert received[:3] == sent[:3]  # system, latest human turn, tool call: untouched
    assert received[3].tool_call_id == "call_1" and received[3].id == "tool-msg-1"
    assert len(received[3].content) < len(sent[3].content)


def test_invoke_compresses_then_delegates_with_stats_and_child_run(compressor, conversation) -> None:
    llm, inner = _wrap(compressor)
    recorder = EventRecorder()
    answer = llm.invoke(conversation, config={"callbacks": [recorder]})
    _check_received(inner.calls[0]["messages"], conversation)
    stats = answer.response_metadata[METADATA_KEY]
    assert stats["compressed_tokens"] < stats["original_tokens"] and stats["failure"] is None
    assert stats["items"] == 4 and stats["items_compressed"] == 1
    outer, child = recorder.chat_starts
    assert child["parent_run_id"] == outer["run_id"]  # the inner model runs as a child run...
    assert child["messages"][3].content == inner.calls[0]["messages"][3].content  # ...seeing the compressed input
    assert outer["messages"][3].content == conversation[3].content
    [(name, data, run_id)] = recorder.events
    assert name == EVENT_NAME and run_id == outer["run_id"] and data["saved_tokens"] == stats["saved_tokens"]
    assert len(conversation[3].content) == 3000  # the caller's messages are not mutated


def test_sync_async_stream_parity(compressor, conversation) -> None:
    llm, inner = _wrap(compressor, memo_size=0)  # every mode recomputes: outputs must agree anyway
    invoked = llm.invoke(conversation)
    streamed = list(llm.stream(conversation))
    ainvoked = asyncio.run(llm.ainvoke(conversation))

    async def astream() -> list:
        return [c async for c in llm.astream(conversation)]

    astreamed = asyncio.run(astream())
    received = [c["messages"] for c in inner.calls]
    assert all(r == received[0] for r in received)
    for chunks in (streamed, astreamed):
        assert "".join(c.text for c in chunks) == invoked.text == ainvoked.text
        assert chunks[0].response_metadata[METADATA_KEY]["items_compressed"] == 1
    merged = streamed[0]
    for c in streamed[1:]:
        merged += c
    assert merged.response_metadata[METADATA_KEY] == streamed[0].response_metadata[METADATA_KEY]


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_streaming_runs_the_inner_model_as_a_child_run_too(compressor, conversation, mode: str) -> None:
    """langchain-core's stream paths give _stream no run manager; the wrapper still nests."""
    llm, inner = _wrap(compressor)
    recorder = EventRecorder()
    config = {"callbacks": [recorder], "tags": ["t"], "metadata": {"k": "v"}}
    if mode == "stream":
        chunks = list(llm.stream(conversation, config=config))
    else:

        async def collect() -> list:
            return [c async for c in llm.astream(conversation, config=config)]

        chunks = asyncio.run(collect())
    outer, child = recorder.chat_starts
    assert outer["parent_run_id"] is None and child["parent_run_id"] == outer["run_id"]
    assert child["messages"][3].content == inner.calls[0]["messages"][3].content != conversation[3].content
    [(name, data, run_id)] = recorder.events
    assert run_id == outer["run_id"] and data == chunks[0].response_metadata[METADATA_KEY] | {"source": data["source"]}


def test_batch(compressor, conversation) -> None:
    llm, inner = _wrap(compressor)
    out = llm.batch([conversation, conversation[:2]])
    assert len(out) == 2 and len(inner.calls) == 2
    assert sorted(len(c["messages"]) for c in inner.calls) == [2, 4]


def test_bind_tools_reaches_the_inner_model(compressor, conversation) -> None:
    llm, inner = _wrap(compressor)
    bound = llm.bind_tools([read_file], tool_choice="any")
    assert bound.bound is llm
    bound.invoke(conversation)
    kwargs = inner.calls[0]["kwargs"]
    assert kwargs["tool_choice"] == "any" and kwargs["tools"][0]["function"]["name"] == "read_file"
    _check_received(inner.calls[0]["messages"], conversation)


def test_bind_tools_when_the_inner_model_binds_a_copy(compressor, conversation) -> None:
    class CopyingModel(RecordingChatModel):
        def bind_tools(self, tools, *, tool_choice=None, **kwargs):
            return super(CopyingModel, self.model_copy(update={"model_name": "copied"})).bind_tools(tools, **kwargs)

    llm, inner = _wrap(compressor, inner=CopyingModel())
    bound = llm.bind_tools([read_file])
    assert isinstance(bound.bound, SpecPrefillLLM) and bound.bound.inner.model_name == "copied"
    bound.invoke(conversation)
    assert inner.calls[0]["kwargs"]["tools"]  # the copy shares the recorder


def test_bind_tools_unsupported_inner_says_so(compressor) -> None:
    # an inner model without tool support: its own NotImplementedError reaches the caller
    llm = SpecPrefillLLM(inner=GenericFakeChatModel(messages=iter(["x"])), compressor=compressor)
    with pytest.raises(NotImplementedError):
        llm.bind_tools([read_file])


class _UnbindableToolModel(GenericFakeChatModel):
    """bind_tools returns a plain runnable, not a binding of a chat model."""

    def bind_tools(self, tools, **kwargs):  # type: ignore[override]
        return RunnableLambda(lambda x: x)


def test_bind_tools_that_returns_no_binding_says_what_to_do(compressor) -> None:
    llm = SpecPrefillLLM(inner=_UnbindableToolModel(messages=iter(["x"])), compressor=compressor)
    with pytest.raises(NotImplementedError, match="Wrap the inner model after binding tools instead"):
        llm.bind_tools([read_file])


@pytest.mark.parametrize("include_raw", [False, True])
def test_with_structured_output_uses_the_inner_method_after_compression(compressor, conversation,
                                                                       include_raw: bool) -> None:
    def script(messages, i):
        return AIMessage("", tool_calls=[{"name": "Person", "args": {"name": "Ada"}, "id": "s1"}])

    llm, inner = _wrap(compressor, inner=RecordingChatModel(script=script))
    recorder = EventRecorder()
    out = llm.with_structured_output(Person, include_raw=include_raw).invoke(conversation,
                                                                           config={"callbacks": [recorder]})
    parsed = out["parsed"] if include_raw else out
    assert parsed == Person(name="Ada")
    assert inner.calls[0]["kwargs"]["tools"][0]["function"]["name"] == "Person"
    _check_received(inner.calls[0]["messages"], conversation)
    assert [e[0] for e in recorder.events] == [EVENT_NAME]


def test_identifying_params_key_the_llm_cache(compressor, conversation) -> None:
    cache = InMemoryCache()
    a, inner_a = _wrap(compressor, keep_ratio=0.3, cache=cache)
    b, inner_b = _wrap(compressor, keep_ratio=0.5, cache=cache)
    assert a._identifying_params["specprefill"]["keep_ratio"] == 0.3
    assert a._get_llm_string() != b._get_llm_string()
    a.invoke(conversation)
    a.invoke(conversation)
    b.invoke(conversation)
    assert len(inner_a.calls) == 1 and len(inner_b.calls) == 1


def test_forwards_tracing_params_profile_name_and_token_counting(compressor) -> None:
    inner = RecordingChatModel(model_name="fake-xl", temperature=0.2, profile={"max_input_tokens": 1234},
                               custom_get_token_ids=lambda s: list(range(len(s.split()))))
    llm = SpecPrefillLLM(inner=inner, compressor=compressor)
    assert llm._get_ls_params(stop=["x"]) == inner._get_ls_params(stop=["x"])
    assert llm._get_ls_params(model="other")["ls_model_name"] == "other"
    assert llm.profile == {"max_input_tokens": 1234} and llm.model_name == "fake-xl"
    assert llm.get_num_tokens("a b c") == 3 == inner.get_num_tokens("a b c")
    assert llm.get_token_ids("a b") == [0, 1]
    msgs = [HumanMessage("one two three")]
    assert llm.get_num_tokens_from_messages(msgs) == inner.get_num_tokens_from_messages(msgs)
    assert llm._llm_type == "specprefill-recording-fake"


def test_nothing_compressible_passes_through(compressor) -> None:
    llm, inner = _wrap(compressor)
    msgs = [SystemMessage("sys"), HumanMessage("hello")]
    answer = llm.invoke(msgs)
    assert inner.calls[0]["messages"] == msgs
    assert answer.response_metadata[METADATA_KEY]["groups"] == 0


def test_settings_are_validated(compressor) -> None:
    with pytest.raises(ValidationError):
        SpecPrefillLLM(inner=RecordingChatModel(), compressor=compressor, temprature=0)  # a typo
    with pytest.raises(ValueError, match="keep_ratio"):
        SpecPrefillLLM(inner=RecordingChatModel(), compressor=compressor, keep_ratio=1.5)
    with pytest.raises(ValidationError):
        SpecPrefillLLM(inner=RecordingChatModel(), compressor=compressor, on_failure="ignore")
    with pytest.raises(ValueError, match="compress_segments"):
        SpecPrefillLLM(inner=RecordingChatModel(), compressor=object())


def test_a_wrapper_keep_ratio_keeps_the_cap_set_on_its_compressor(draft, source_text: str) -> None:
    from specprefill_agents import CompressionConfig, ScoringConfig, SpecPrefillCompressor

    comp = SpecPrefillCompressor(draft, CompressionConfig(max_tokens=60, min_tokens=32,
                                                          scoring=ScoringConfig(lookahead=2)), on_failure="raise")
    budgets: list[int] = []
    compress = comp.compress_segments

    def recording(*args: object, **kwargs: object):
        result = compress(*args, **kwargs)  # type: ignore[arg-type]
        budgets.append(result.stats.budget_tokens)
        return result

    comp.compress_segments = recording  # type: ignore[method-assign]
    llm = SpecPrefillLLM(inner=RecordingChatModel(), compressor=comp, keep_ratio=0.5)
    llm.invoke([HumanMessage("What does dedent do?"),
                AIMessage("", tool_calls=[{"name": "read", "args": {}, "id": "c1"}]),
                ToolMessage(source_text[:3000], tool_call_id="c1")])
    assert budgets == [60]
