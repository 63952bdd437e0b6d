"""SpecPrefillLLM(inner=...) with what users hold: bindings, retries, fallbacks, configurable
models; standard parameters for the inner model; serialization."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.load import dumpd, dumps, loads
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from langchain_specprefill import ChatSpecPrefill, MessagePolicy, SpecPrefillLLM

from .fakes import EventRecorder, RecordingChatModel, SerializableRecordingModel


@tool
def read_file(path: str) -> str:
    """Read a file."""
    return path


@pytest.fixture
def conversation(source_text: str) -> list[BaseMessage]:
    return [
        SystemMessage("You are terse."),
        HumanMessage("What does the max_lines option do?"),
        AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": "textwrap.py"}, "id": "call_1"}]),
        ToolMessage(source_text[:3000], tool_call_id="call_1"),
    ]


def _compressed(call: dict, sent: list[BaseMessage]) -> bool:
    received = call["messages"]
    return received[:3] == sent[:3] and len(received[3].content) < len(sent[3].content)


def test_standard_params_reach_the_inner_model_without_changing_it(compressor, conversation) -> None:
    inner = RecordingChatModel()
    llm = SpecPrefillLLM(inner=inner, compressor=compressor, temperature=0.1, max_tokens=7, stop=["END"], seed=3)
    assert llm.inner_params == {"temperature": 0.1, "max_tokens": 7, "stop": ["END"], "seed": 3}
    llm.invoke(conversation)
    call = inner.calls[0]
    assert call["fields"]["temperature"] == 0.1 and call["fields"]["max_tokens"] == 7  # declared: set as fields
    assert call["fields"]["stop"] == ["END"]
    assert call["kwargs"] == {"seed": 3}  # not a field of this model: passed with the call
    assert inner.temperature is None and inner.max_tokens is None  # the caller's model is unchanged
    llm.invoke(conversation, stop=["HALT"], seed=4, temperature=0.9)  # the call's own values win
    assert inner.calls[1]["stop"] == ["HALT"] and inner.calls[1]["kwargs"] == {"seed": 4, "temperature": 0.9}
    assert llm._get_ls_params()["ls_temperature"] == 0.1 and llm._get_ls_params()["ls_max_tokens"] == 7


def test_a_binding_of_a_chat_model(compressor, conversation) -> None:
    inner = RecordingChatModel()
    llm = SpecPrefillLLM(inner=inner.bind(stop=["-"], logprobs=True), compressor=compressor, seed=1)
    recorder = EventRecorder()
    llm.invoke(conversation, config={"callbacks": [recorder]})
    call = inner.calls[0]
    assert _compressed(call, conversation)
    assert call["stop"] == ["-"] and call["kwargs"] == {"logprobs": True, "seed": 1}
    outer, child = recorder.chat_starts
    assert child["parent_run_id"] == outer["run_id"] and len(recorder.events) == 1
    chunks = list(llm.stream(conversation))
    assert "".join(c.text for c in chunks) and inner.calls[1]["kwargs"] == call["kwargs"]
    asyncio.run(llm.ainvoke(conversation))
    assert inner.calls[2]["messages"] == call["messages"] and llm.model_name == "recording-fake-1"


def test_a_tool_binding_and_tools_bound_on_the_wrapper(compressor, conversation) -> None:
    inner = RecordingChatModel()
    llm = SpecPrefillLLM(inner=inner.bind_tools([read_file]), compressor=compressor)
    llm.invoke(conversation)
    assert [t["function"]["name"] for t in inner.calls[0]["kwargs"]["tools"]] == ["read_file"]

    @tool
    def grep(pattern: str) -> str:
        """Search files."""
        return pattern

    rebound = llm.bind_tools([grep], tool_choice="any")  # as LangChain does: the new tools replace the old
    assert isinstance(rebound, SpecPrefillLLM) and rebound.engine is llm.engine
    rebound.invoke(conversation)
    assert [t["function"]["name"] for t in inner.calls[1]["kwargs"]["tools"]] == ["grep"]
    assert inner.calls[1]["kwargs"]["tool_choice"] == "any" and _compressed(inner.calls[1], conversation)


def test_with_retry_retries_with_the_compressed_messages(compressor, conversation) -> None:
    def flaky(messages: list[BaseMessage], i: int) -> str:
        if i == 0:
            raise ConnectionError("provider hiccup")
        return "second try"

    inner = RecordingChatModel(script=flaky)
    llm = SpecPrefillLLM(
        inner=inner.with_retry(stop_after_attempt=2, wait_exponential_jitter=False),
        compressor=compressor,
        temperature=0.3,
    )
    answer = llm.invoke(conversation)
    assert answer.text == "second try" and len(inner.calls) == 2
    assert all(_compressed(c, conversation) for c in inner.calls)
    assert inner.calls[1]["fields"]["temperature"] == 0.3  # reaches the model inside the retry


def test_structured_output_through_a_retry_keeps_retrying(compressor, conversation) -> None:
    def flaky(messages: list[BaseMessage], i: int) -> AIMessage:
        if i == 0:
            raise ConnectionError("provider hiccup")
        return AIMessage("", tool_calls=[{"name": "Answer", "args": {"text": "hi"}, "id": "s1"}])

    inner = RecordingChatModel(script=flaky)
    llm = SpecPrefillLLM(
        inner=inner.with_retry(stop_after_attempt=2, wait_exponential_jitter=False), compressor=compressor
    )
    schema = {
        "title": "Answer",
        "description": "An answer.",
        "type": "object",
        "properties": {"text": {"type": "string"}},
    }
    assert llm.with_structured_output(schema).invoke(conversation) == {"text": "hi"}
    assert len(inner.calls) == 2 and all(_compressed(c, conversation) for c in inner.calls)
    assert inner.calls[1]["kwargs"]["tools"][0]["function"]["name"] == "Answer"


def test_with_fallbacks_the_fallback_gets_the_compressed_messages(compressor, conversation) -> None:
    def down(messages: list[BaseMessage], i: int) -> str:
        raise ConnectionError("primary down")

    primary, backup = RecordingChatModel(model_name="primary", script=down), RecordingChatModel(model_name="backup")
    llm = SpecPrefillLLM(inner=primary.with_fallbacks([backup]), compressor=compressor)
    answer = llm.invoke(conversation)
    assert answer.text.startswith("got 4 messages") and _compressed(backup.calls[0], conversation)
    assert len(primary.calls) == 1 and primary.calls[0]["messages"] == backup.calls[0]["messages"]
    assert llm.model_name == "primary"  # tracing names the first model
    tooled = llm.bind_tools([read_file])
    tooled.invoke(conversation)
    assert backup.calls[1]["kwargs"]["tools"][0]["function"]["name"] == "read_file"
    assert primary.calls[1]["kwargs"]["tools"][0]["function"]["name"] == "read_file"


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[RecordingChatModel]:
    """init_chat_model's provider lookup, replaced by recording models (no provider package offline)."""
    import langchain.chat_models.base as chat_base

    models: list[RecordingChatModel] = []

    def build(model: str, *, model_provider: str | None = None, **kwargs: object) -> RecordingChatModel:
        models.append(RecordingChatModel(model_name=model, **kwargs))
        return models[-1]

    monkeypatch.setattr(chat_base, "_init_chat_model_helper", build)
    return models


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream", "batch"])
def test_a_configurable_model_gets_each_calls_configurable_values(compressor, conversation, built, mode: str) -> None:
    from langchain.chat_models import init_chat_model

    inner = init_chat_model("fake-a", configurable_fields=("model", "temperature"))
    llm = SpecPrefillLLM(inner=inner, compressor=compressor)
    config = {"configurable": {"model": "fake-b", "temperature": 0.5}}
    if mode == "invoke":
        llm.invoke(conversation, config=config)
    elif mode == "ainvoke":
        asyncio.run(llm.ainvoke(conversation, config=config))
    elif mode == "stream":
        list(llm.stream(conversation, config=config))
    elif mode == "astream":

        async def collect() -> list:
            return [c async for c in llm.astream(conversation, config=config)]

        asyncio.run(collect())
    else:
        llm.batch([conversation, conversation], config=config)
    answered = [m for m in built if m.calls]
    assert answered and all(m.model_name == "fake-b" and m.temperature == 0.5 for m in answered)
    assert all(_compressed(c, conversation) for m in answered for c in m.calls)


def test_a_configurable_model_defaults_queued_tools_and_tracing(compressor, conversation, built) -> None:
    from langchain.chat_models import init_chat_model

    llm = SpecPrefillLLM(inner=init_chat_model("fake-a", configurable_fields="any"), compressor=compressor)
    llm.bind_tools([read_file]).invoke(conversation)  # no configurable values: the default model
    [answered] = [m for m in built if m.calls]
    assert answered.model_name == "fake-a" and answered.calls[0]["kwargs"]["tools"][0]["function"]["name"]
    assert llm.model_name == "fake-a" and llm._llm_type == "specprefill-recording-fake"


def test_the_llm_cache_keys_on_the_configurable_values(compressor, conversation, built) -> None:
    from langchain.chat_models import init_chat_model
    from langchain_core.caches import InMemoryCache

    llm = SpecPrefillLLM(
        inner=init_chat_model("fake-a", configurable_fields=("model",)), compressor=compressor, cache=InMemoryCache()
    )
    for model in ("fake-b", "fake-c", "fake-b"):
        llm.invoke(conversation, config={"configurable": {"model": model}})
    assert sorted(m.model_name for m in built if m.calls) == ["fake-b", "fake-c"]  # the third came from the cache


def test_what_cannot_be_an_inner_model_says_what_can(compressor) -> None:
    with pytest.raises(TypeError, match="a binding of one"):
        SpecPrefillLLM(inner="openai:gpt-4.1", compressor=compressor)
    with pytest.raises(TypeError, match=r"prompt \| SpecPrefillLLM"):
        SpecPrefillLLM(inner=RunnableLambda(lambda x: x), compressor=compressor)


@pytest.mark.filterwarnings("ignore:The function `loads` is in beta")
def test_serializable_when_the_inner_model_is() -> None:
    inner = SerializableRecordingModel(model_name="ser-1")
    llm = SpecPrefillLLM(
        inner=inner, compressor="embedded", keep_ratio=0.3, temperature=0.2, policy=MessagePolicy(older_ai=True)
    )
    namespace = type(inner).get_lc_namespace()[0]
    loaded = loads(
        dumps(llm),
        valid_namespaces=["langchain_specprefill", namespace],
        allowed_objects=[SpecPrefillLLM, SerializableRecordingModel],
    )
    assert isinstance(loaded, SpecPrefillLLM) and isinstance(loaded.inner, SerializableRecordingModel)
    assert loaded.inner.model_name == "ser-1" and loaded.keep_ratio == 0.3
    assert loaded.inner_params == {"temperature": 0.2} and loaded.policy == MessagePolicy(older_ai=True)
    assert loaded.engine.identity() == llm.engine.identity()  # the same draft spec and settings


@pytest.mark.filterwarnings("ignore:The function `loads` is in beta")
def test_not_serializable_says_why(compressor) -> None:
    llm = SpecPrefillLLM(inner=GenericFakeChatModel(messages=iter(["x"])), compressor="embedded")
    dumped = dumpd(llm)
    assert dumped["type"] == "not_implemented" and "inner model (GenericFakeChatModel)" in dumped["repr"]
    with pytest.raises(NotImplementedError, match="cannot be serialized"):
        loads(dumps(llm), valid_namespaces=["langchain_specprefill"], allowed_objects=[SpecPrefillLLM])
    live = SpecPrefillLLM(inner=SerializableRecordingModel(), compressor=compressor)
    assert "give a draft spec" in dumpd(live)["repr"]


def test_chat_spec_prefill_is_the_same_class() -> None:
    assert ChatSpecPrefill is SpecPrefillLLM
