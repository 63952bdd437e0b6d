"""``SpecPrefillLLM``: any LlamaIndex LLM, with its long context compressed by a draft model first."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.postprocessor.specprefill.events import emit
from pydantic import Field, PrivateAttr
from specprefill_agents import OnFailure
from specprefill_agents.message_compression import CompressionReport
from specprefill_agents.messages import MessagePolicy

from .messages import ChatMessageCompressor

__all__ = ["SpecPrefillLLM", "SpecPrefillFunctionCallingLLM", "METADATA_KEY"]

METADATA_KEY = "specprefill"
"""Key of the compression stats in each response's ``additional_kwargs``."""


def _annotated(response: ChatResponse, report: CompressionReport) -> ChatResponse:
    return response.model_copy(
        update={"additional_kwargs": {**response.additional_kwargs, METADATA_KEY: report.to_dict()}}
    )


class SpecPrefillLLM(LLM):
    """Wrap any LlamaIndex ``LLM``: compress the compressible parts of each chat, then delegate.

    Tool outputs (``MessageRole.TOOL``) and long pasted context in older user turns are
    compressed (see :class:`~specprefill_agents.messages.MessagePolicy`); the system prompt,
    the latest user turn, tool-call blocks with their ids and arguments, thinking blocks and
    images never change.  Constructed around a ``FunctionCallingLLM`` it is a
    :class:`SpecPrefillFunctionCallingLLM`, so ``FunctionAgent`` accepts it.  Stats land in
    ``response.additional_kwargs["specprefill"]`` and in one
    :class:`~llama_index.postprocessor.specprefill.SpecPrefillCompressionEvent` per call;
    LLM start/end events are the inner model's.  A completion prompt is a single latest user
    turn, which the policy never compresses: ``complete`` and its variants delegate as they are.

    Example:
        .. code-block:: python

            agent = FunctionAgent(tools=[read_file], llm=SpecPrefillLLM(OpenAI(model="gpt-4.1-mini")))

    Args:
        inner: the LLM that answers.
        compressor: a ``SpecPrefillCompressor`` (or a client of the resident service), a draft
            spec (``"embedded"``, hub id, directory, ``.gguf``); None = the embedded SmolLM2
            draft, loaded on first use.
        policy: what may be compressed.
        keep_ratio, budget_tokens: per-group budget (None: the compressor's config).
        token_counter: the target's tokenizer or a ``str -> int`` callable.
        on_failure: ``"warn"`` (default) / ``"passthrough"``: the chat goes through uncompressed;
            ``"raise"``.
        memo_size: finished message groups remembered (an agent loop re-sends them every step).
    """

    inner: LLM = Field(exclude=True)
    policy: MessagePolicy = Field(default_factory=MessagePolicy, exclude=True)
    keep_ratio: float | None = None
    budget_tokens: int | None = None
    on_failure: OnFailure = "warn"
    memo_size: int = 256

    _engine: ChatMessageCompressor = PrivateAttr()

    def __new__(cls, *args: Any, **kwargs: Any) -> SpecPrefillLLM:
        inner = kwargs.get("inner", args[0] if args else None)
        if cls is SpecPrefillLLM and isinstance(inner, FunctionCallingLLM):
            cls = SpecPrefillFunctionCallingLLM
        return super().__new__(cls)

    def __init__(self, inner: LLM, compressor: Any = None, *, token_counter: Any = None, **data: Any) -> None:
        super().__init__(inner=inner, **data)  # type: ignore[call-arg]  # pydantic fields
        self._engine = ChatMessageCompressor(
            compressor,
            policy=self.policy,
            keep_ratio=self.keep_ratio,
            budget_tokens=self.budget_tokens,
            token_counter=token_counter,
            on_failure=self.on_failure,
            memo_size=self.memo_size,
            name=self.class_name(),
        )

    @classmethod
    def class_name(cls) -> str:
        return "SpecPrefillLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.inner.metadata

    @property
    def engine(self) -> ChatMessageCompressor:
        """The message compressor (policy, memo, failure policy) this LLM uses."""
        return self._engine

    def _extend_messages(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        return self.inner._extend_messages(messages)

    def _extend_prompt(self, formatted_prompt: str) -> str:
        return self.inner._extend_prompt(formatted_prompt)

    def _compress(self, messages: Sequence[ChatMessage]) -> tuple[list[ChatMessage], CompressionReport]:
        compressed, report = self._engine.compress(messages)
        emit(self.class_name(), report)
        return compressed, report

    async def _acompress(self, messages: Sequence[ChatMessage]) -> tuple[list[ChatMessage], CompressionReport]:
        compressed, report = await self._engine.acompress(messages)
        emit(self.class_name(), report)
        return compressed, report

    # ------------------------------------------------------------ chat: compressed
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        compressed, report = self._compress(messages)
        return _annotated(self.inner.chat(compressed, **kwargs), report)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        compressed, report = await self._acompress(messages)
        return _annotated(await self.inner.achat(compressed, **kwargs), report)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        compressed, report = self._compress(messages)
        stream = self.inner.stream_chat(compressed, **kwargs)

        def gen() -> Generator[ChatResponse, None, None]:
            for response in stream:
                yield _annotated(response, report)

        return gen()

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        compressed, report = await self._acompress(messages)
        stream = await self.inner.astream_chat(compressed, **kwargs)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            async for response in stream:
                yield _annotated(response, report)

        return gen()

    # ------------------------------------------------------------ completion and structured output: delegated
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.inner.complete(prompt, formatted=formatted, **kwargs)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await self.inner.acomplete(prompt, formatted=formatted, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self.inner.stream_complete(prompt, formatted=formatted, **kwargs)

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return await self.inner.astream_complete(prompt, formatted=formatted, **kwargs)

    def structured_predict(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.structured_predict(*args, **kwargs)

    async def astructured_predict(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.astructured_predict(*args, **kwargs)

    def stream_structured_predict(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.stream_structured_predict(*args, **kwargs)

    async def astream_structured_predict(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.astream_structured_predict(*args, **kwargs)


class SpecPrefillFunctionCallingLLM(SpecPrefillLLM, FunctionCallingLLM):
    """:class:`SpecPrefillLLM` around a ``FunctionCallingLLM``: tool preparation, response
    validation and tool-call parsing are the inner model's; the chat it leads to is compressed."""

    inner: FunctionCallingLLM = Field(exclude=True)

    @classmethod
    def class_name(cls) -> str:
        return "SpecPrefillFunctionCallingLLM"

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return self.inner._prepare_chat_with_tools_compat(
            tools,
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            **kwargs,
        )

    def _validate_chat_with_tools_response(
        self, response: ChatResponse, tools: Sequence[Any], allow_parallel_tool_calls: bool = False, **kwargs: Any
    ) -> ChatResponse:
        return self.inner._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        return self.inner.get_tool_calls_from_response(response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)
