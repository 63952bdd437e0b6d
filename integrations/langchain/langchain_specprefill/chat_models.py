"""``SpecPrefillLLM``: any chat model, with its long context compressed by a draft model first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableLambda, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.uuid import uuid7
from pydantic import ConfigDict, Field, PrivateAttr

from specprefill_agents import OnFailure

from ._callbacks import (
    achild_manager,
    aemit,
    aemit_in_context,
    child_manager,
    emit,
    emit_in_context,
    stand_in_run,
    stash,
    take,
)
from .engine import CompressionReport, MessageCompressor
from .policy import MessagePolicy

__all__ = ["SpecPrefillLLM", "METADATA_KEY"]

METADATA_KEY = "specprefill"
"""Key of the compression stats in ``response_metadata``."""


def _as_chunk(message: BaseMessage) -> AIMessageChunk:
    """The inner model's ``stream`` yields a whole ``AIMessage`` when it cannot stream."""
    if isinstance(message, AIMessageChunk):
        return message
    ai = message if isinstance(message, AIMessage) else AIMessage(content=message.content)
    return AIMessageChunk(content=ai.content, additional_kwargs=ai.additional_kwargs,
                          response_metadata=ai.response_metadata, tool_calls=ai.tool_calls,
                          invalid_tool_calls=ai.invalid_tool_calls, usage_metadata=ai.usage_metadata,
                          id=ai.id, name=ai.name, chunk_position="last")


def _annotated(message: BaseMessage, report: CompressionReport) -> Any:
    metadata = {**(message.response_metadata or {}), METADATA_KEY: report.to_dict()}
    return message.model_copy(update={"response_metadata": metadata})


class _DelegatesToInner(BaseChatModel):
    """What LangChain asks of a model that only the wrapped ``inner`` model can answer."""

    inner: BaseChatModel

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.inner._get_ls_params(stop=stop, **kwargs)

    def _resolve_model_profile(self) -> ModelProfile | None:
        return self.inner.profile

    @property
    def model_name(self) -> str | None:
        """The inner model's name (``model_name``, ``model`` or ``model_id``)."""
        for attr in ("model_name", "model", "model_id"):
            value = getattr(self.inner, attr, None)
            if isinstance(value, str):
                return value
        return None

    def get_token_ids(self, text: str) -> list[int]:
        return self.inner.get_token_ids(text)

    def get_num_tokens(self, text: str) -> int:
        return self.inner.get_num_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        return self.inner.get_num_tokens_from_messages(messages, tools)


class SpecPrefillLLM(_DelegatesToInner):
    """Wrap any chat model: compress the compressible parts of each prompt, then delegate.

    Tool outputs, long pasted/retrieved context and (optionally) older turns are compressed
    by a small draft model's attention (see :class:`MessagePolicy`); the system message, the
    latest human turn, tool-call ids and arguments, reasoning and non-text blocks never
    change.  The inner model runs as a child run receiving the compressed messages, and
    the stats land in ``response_metadata["specprefill"]`` and in a custom callback event
    named ``"specprefill_compression"``.

    Example:
        .. code-block:: python

            llm = SpecPrefillLLM(inner=ChatOpenAI(model="gpt-4.1-mini"), keep_ratio=0.3)
            agent = create_agent(llm, tools=[read_file])

    Args:
        inner: the chat model that answers.
        compressor: a ``SpecPrefillCompressor`` (or compatible client), a draft spec
            (``"embedded"``, hub id, directory, ``.gguf``); None = the embedded SmolLM2 draft,
            loaded on first use.
        policy, keep_ratio, budget_tokens, token_counter, on_failure, memo_size: see
            :class:`~langchain_specprefill.engine.MessageCompressor`.
    """

    compressor: Any = Field(default=None, exclude=True)
    policy: MessagePolicy = Field(default_factory=MessagePolicy)
    keep_ratio: float | None = None
    budget_tokens: int | None = None
    token_counter: Any = Field(default=None, exclude=True)
    on_failure: OnFailure = "warn"
    memo_size: int = 256

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _engine: MessageCompressor = PrivateAttr()

    @property
    def _llm_type(self) -> str:
        return f"specprefill-{self.inner._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"inner": {"_type": self.inner._llm_type, **self.inner._identifying_params},
                "specprefill": self._engine.identity()}

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._engine = MessageCompressor(
            self.compressor, policy=self.policy, keep_ratio=self.keep_ratio, budget_tokens=self.budget_tokens,
            token_counter=self.token_counter, on_failure=self.on_failure, memo_size=self.memo_size,
            name=type(self).__name__)
        self.compressor = self._engine.compressor

    @property
    def engine(self) -> MessageCompressor:
        """The message compressor this model uses (shared by its bound copies)."""
        return self._engine

    # ------------------------------------------------------------ generation
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        take(CallbackManagerForLLMRun)  # not streaming: nothing stashed is needed
        compressed, report = self._engine.compress(messages)
        emit(run_manager, report, type(self).__name__)
        result = self.inner.generate([compressed], stop=stop, callbacks=child_manager(run_manager), **kwargs)
        return self._result(result.generations[0], result.llm_output, report)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        take(AsyncCallbackManagerForLLMRun)
        compressed, report = await self._engine.acompress(messages)
        await aemit(run_manager, report, type(self).__name__)
        result = await self.inner.agenerate([compressed], stop=stop, callbacks=achild_manager(run_manager),
                                            **kwargs)
        return self._result(result.generations[0], result.llm_output, report)

    @staticmethod
    def _result(generations: list[Any], llm_output: dict[str, Any] | None, report: CompressionReport) -> ChatResult:
        out = [ChatGeneration(message=_annotated(g.message, report), generation_info=g.generation_info)
               for g in generations]
        return ChatResult(generations=out, llm_output=llm_output)

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        if run_manager is not None:  # invoke() is about to call _stream without it
            stash(run_manager)
        return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid7()
        manager = CallbackManager.configure(config.get("callbacks"), verbose=self.verbose)
        stash(stand_in_run(manager, run_id, dict(config), self.callbacks, self.tags, self.metadata,
                           CallbackManagerForLLMRun))
        yield from super().stream(input, {**config, "callbacks": manager, "run_id": run_id}, stop=stop, **kwargs)

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid7()
        manager = AsyncCallbackManager.configure(config.get("callbacks"), verbose=self.verbose)
        stash(stand_in_run(manager, run_id, dict(config), self.callbacks, self.tags, self.metadata,
                           AsyncCallbackManagerForLLMRun))
        async for chunk in super().astream(input, {**config, "callbacks": manager, "run_id": run_id}, stop=stop,
                                           **kwargs):
            yield chunk

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        run_manager = run_manager or take(CallbackManagerForLLMRun)
        compressed, report = self._engine.compress(messages)
        emit(run_manager, report, type(self).__name__)
        config: RunnableConfig = {"callbacks": child_manager(run_manager)}
        first = True
        for chunk in self.inner.stream(compressed, config=config, stop=stop, **kwargs):
            message = _as_chunk(chunk)
            yield ChatGenerationChunk(message=_annotated(message, report) if first else message)
            first = False

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        run_manager = run_manager or take(AsyncCallbackManagerForLLMRun)
        compressed, report = await self._engine.acompress(messages)
        await aemit(run_manager, report, type(self).__name__)
        config: RunnableConfig = {"callbacks": achild_manager(run_manager)}
        first = True
        async for chunk in self.inner.astream(compressed, config=config, stop=stop, **kwargs):
            message = _as_chunk(chunk)
            yield ChatGenerationChunk(message=_annotated(message, report) if first else message)
            first = False

    # ------------------------------------------------------------ tools and structured output
    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools the inner model's way, then re-bind its provider-formatted kwargs onto
        this wrapper, so calls still go through compression and the tools reach the inner model."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        bound = self.inner.bind_tools(tools, **kwargs)
        if not (isinstance(bound, RunnableBinding) and isinstance(bound.bound, BaseChatModel)):
            raise NotImplementedError(
                f"{type(self.inner).__name__}.bind_tools returned a {type(bound).__name__}, not a binding of a "
                "chat model; SpecPrefillLLM cannot re-bind it. Wrap the inner model after binding tools instead.")
        target = self if bound.bound is self.inner else self.model_copy(update={"inner": bound.bound})
        rebound = target.bind(**bound.kwargs)
        return rebound.with_config(bound.config) if bound.config else rebound

    def with_structured_output(self, schema: dict[str, Any] | type, *, include_raw: bool = False,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """The inner model's own structured output (its method, parser, ``include_raw``),
        with a compression step in front of it."""
        structured = self.inner.with_structured_output(schema, include_raw=include_raw, **kwargs)
        return self.compression_step() | structured

    def compression_step(self) -> Runnable[LanguageModelInput, list[BaseMessage]]:
        """A runnable that turns any chat-model input into compressed messages (emits the stats event)."""

        def compress(value: LanguageModelInput, config: RunnableConfig) -> list[BaseMessage]:
            messages, report = self._engine.compress(self._convert_input(value).to_messages())
            emit_in_context(report, type(self).__name__, config)
            return messages

        async def acompress(value: LanguageModelInput, config: RunnableConfig) -> list[BaseMessage]:
            messages, report = await self._engine.acompress(self._convert_input(value).to_messages())
            await aemit_in_context(report, type(self).__name__, config)
            return messages

        return RunnableLambda(compress, afunc=acompress, name="SpecPrefillCompress")
