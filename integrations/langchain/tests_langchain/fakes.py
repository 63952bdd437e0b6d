"""Fakes that record their calls: a tool-calling chat model, a failing draft, counters."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field


class RecordingChatModel(BaseChatModel):
    """A tool-calling chat model that records what it receives and answers from a script.

    ``script(messages, call_index) -> AIMessage | str``; without one it answers with the
    number of messages and characters it got.  ``calls`` is shared by bound copies.
    """

    model_name: str = "recording-fake-1"
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int | None = None
    script: Callable[[list[BaseMessage], int], AIMessage | str] | None = Field(default=None, exclude=True)
    calls: list[dict[str, Any]] = Field(default_factory=list, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "recording-fake"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _answer(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> AIMessage:
        fields = {k: getattr(self, k) for k in ("model_name", "temperature", "max_tokens", "stop", "timeout")}
        self.calls.append({"messages": list(messages), "stop": stop, "kwargs": dict(kwargs), "fields": fields})
        if self.script is None:
            chars = sum(len(m.text) for m in messages)
            return AIMessage(content=f"got {len(messages)} messages, {chars} chars")
        reply = self.script(list(messages), len(self.calls) - 1)
        return AIMessage(content=reply) if isinstance(reply, str) else reply

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, stop, kwargs))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        message = self._answer(messages, stop, kwargs)
        words = re.split(r"(\s)", message.text) if message.text else []
        for word in words:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word, id=message.id))
            if run_manager:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_calls=message.tool_calls,
                                                         id=message.id, chunk_position="last"))

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)


class SerializableRecordingModel(RecordingChatModel):
    """The recording model, serializable the LangChain way (as provider chat models are)."""

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return cls.__module__.split(".")


class FailingCompressor:
    """Has the compressor's interface; raises on every call (a draft that fails)."""

    def __init__(self, exc: Exception | None = None) -> None:
        self.exc = exc or RuntimeError("draft exploded")
        self.calls = 0

    def compress_segments(self, segments: Any, query: Any = None, **kwargs: Any) -> Any:
        self.calls += 1
        raise self.exc


class EventRecorder(BaseCallbackHandler):
    """Records custom events and chat-model starts."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []
        self.chat_starts: list[dict[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any,
                            parent_run_id: Any = None, **kwargs: Any) -> None:
        self.chat_starts.append({"run_id": run_id, "parent_run_id": parent_run_id, "messages": messages[0],
                                 "name": kwargs.get("name") or (serialized or {}).get("name")})
