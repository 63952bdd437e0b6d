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
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

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
from ._inner import (
    STANDARD_PARAMS,
    chat_model_of,
    check_inner,
    configurable_from,
    current_configurable,
    delegate,
    describe,
    inner_config,
    with_params,
)
from ._serialize import serialized
from .engine import CompressionReport, MessageCompressor
from .policy import MessagePolicy

__all__ = ["SpecPrefillLLM", "ChatSpecPrefill", "METADATA_KEY"]

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


def _message(output: Any) -> BaseMessage:
    if not isinstance(output, BaseMessage):
        raise TypeError(f"the inner model returned a {type(output).__name__}, not a message; SpecPrefillLLM "
                        "wraps chat models (a parser or chain goes after the wrapper)")
    return output


def _annotated(message: BaseMessage, report: CompressionReport) -> Any:
    metadata = {**(message.response_metadata or {}), METADATA_KEY: report.to_dict()}
    return message.model_copy(update={"response_metadata": metadata})


class _DelegatesToInner(BaseChatModel):
    """What LangChain asks of a model that only the wrapped ``inner`` model can answer."""

    inner: Runnable[LanguageModelInput, Any]
    inner_params: dict[str, Any] = Field(default_factory=dict)

    _resolved: tuple[Any, Runnable[Any, Any], dict[str, Any], BaseChatModel | None] | None = PrivateAttr(
        default=None)

    @model_validator(mode="before")
    @classmethod
    def _take_standard_params(cls, data: Any) -> Any:
        """``temperature=``, ``max_tokens=``... given to the wrapper are for its inner model."""
        if isinstance(data, dict) and any(k in data for k in STANDARD_PARAMS):
            data = dict(data)
            data["inner_params"] = {**(data.get("inner_params") or {}),
                                    **{k: data.pop(k) for k in STANDARD_PARAMS if k in data}}
        return data

    @field_validator("inner", mode="before")
    @classmethod
    def _check_inner(cls, inner: Any) -> Any:
        return check_inner(inner)

    def _resolve(self) -> tuple[Any, Runnable[Any, Any], dict[str, Any], BaseChatModel | None]:
        """(inner, what is called: inner with the standard params applied, the params that go with
        each call, the chat model behind it); worked out on first use, again for a new ``inner``."""
        resolved = self._resolved
        if resolved is None or resolved[0] is not self.inner:
            target, call_kwargs = with_params(self.inner, self.inner_params)
            resolved = self._resolved = (self.inner, target, call_kwargs, chat_model_of(target))
        return resolved

    @property
    def _chat(self) -> BaseChatModel | None:
        return self._resolve()[3]

    def _call_args(self, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[Runnable[Any, Any], dict[str, Any]]:
        """What to call and with which keyword arguments: the call's own win over the standard params."""
        _, target, call_kwargs, _ = self._resolve()
        merged = {**call_kwargs, **kwargs}
        stop = stop if stop is not None else merged.pop("stop", None)
        merged.pop("stop", None)
        return target, {**merged, "stop": stop} if stop is not None else merged

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        chat = self._chat
        return chat._get_ls_params(stop=stop, **kwargs) if chat else super()._get_ls_params(stop=stop, **kwargs)

    def _resolve_model_profile(self) -> ModelProfile | None:
        return self._chat.profile if self._chat else None

    @property
    def model_name(self) -> str | None:
        """The inner model's name (``model_name``, ``model`` or ``model_id``)."""
        for attr in ("model_name", "model", "model_id"):
            value = getattr(self._chat, attr, None)
            if isinstance(value, str):
                return value
        return None

    def get_token_ids(self, text: str) -> list[int]:
        return self._chat.get_token_ids(text) if self._chat else super().get_token_ids(text)

    def get_num_tokens(self, text: str) -> int:
        return self._chat.get_num_tokens(text) if self._chat else super().get_num_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        if self._chat:
            return self._chat.get_num_tokens_from_messages(messages, tools)
        return super().get_num_tokens_from_messages(messages, tools)


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
        inner: the chat model that answers: a ``BaseChatModel``, a binding of one (``.bind(...)``,
            ``.bind_tools(...)``, ``.with_config(...)``), ``.with_retry()`` / ``.with_fallbacks()``
            of those, or ``init_chat_model(..., configurable_fields=...)`` (each call's
            ``configurable`` values reach it).
        temperature, max_tokens, top_p, stop, timeout, max_retries, seed: for the inner model
            (collected in ``inner_params``): a chat model that declares one as a field gets it
            there, in a copy; otherwise it goes with every call.
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
    _compressor_spec: Any = PrivateAttr(default=None)

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_from_dict(cls, policy: Any) -> Any:  # as serialized
        return MessagePolicy(**policy) if isinstance(policy, dict) else policy

    @property
    def _llm_type(self) -> str:
        return f"specprefill-{self._chat._llm_type if self._chat else type(self.inner).__name__}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        _, target, call_kwargs, _ = self._resolve()
        return {"inner": describe(target), "inner_call_params": call_kwargs, "specprefill": self._engine.identity()}

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_specprefill", "chat_models"]

    def to_json(self) -> Any:
        """LangChain's serialized form when ``inner`` is serializable and the compressor is a draft
        spec (a string or None); else a ``not_implemented`` entry saying why (loading it raises that)."""
        return serialized(self, super().to_json(), self._compressor_spec)

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        """The LLM-cache key: the identifying params (a serialized form leaves out the compressor) and
        the call's ``configurable`` values (they may choose another inner model)."""
        params = {**self._get_invocation_params(stop=stop, **kwargs), **kwargs}
        configurable = current_configurable()
        if configurable:
            params["configurable"] = configurable
        return str(sorted(params.items()))

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._compressor_spec = self.compressor
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
        inner, kwargs = self._call_args(stop, kwargs)
        callbacks = child_manager(run_manager)
        if isinstance(inner, BaseChatModel):
            result = inner.generate([compressed], callbacks=callbacks, **kwargs)
            return self._result(result.generations[0], result.llm_output, report)
        message = _message(inner.invoke(compressed, inner_config(callbacks), **kwargs))
        return self._result([ChatGeneration(message=message)], None, report)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        take(AsyncCallbackManagerForLLMRun)
        compressed, report = await self._engine.acompress(messages)
        await aemit(run_manager, report, type(self).__name__)
        inner, kwargs = self._call_args(stop, kwargs)
        callbacks = achild_manager(run_manager)
        if isinstance(inner, BaseChatModel):
            result = await inner.agenerate([compressed], callbacks=callbacks, **kwargs)
            return self._result(result.generations[0], result.llm_output, report)
        message = _message(await inner.ainvoke(compressed, inner_config(callbacks), **kwargs))
        return self._result([ChatGeneration(message=message)], None, report)

    @staticmethod
    def _result(generations: list[Any], llm_output: dict[str, Any] | None, report: CompressionReport) -> ChatResult:
        out = [ChatGeneration(message=_annotated(g.message, report), generation_info=g.generation_info)
               for g in generations]
        return ChatResult(generations=out, llm_output=llm_output)

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        config = ensure_config(config)
        with configurable_from(config):
            return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        config = ensure_config(config)
        with configurable_from(config):
            return await super().ainvoke(input, config, stop=stop, **kwargs)

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
        with configurable_from(config):
            yield from super().stream(input, {**config, "callbacks": manager, "run_id": run_id}, stop=stop,
                                      **kwargs)

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid7()
        manager = AsyncCallbackManager.configure(config.get("callbacks"), verbose=self.verbose)
        stash(stand_in_run(manager, run_id, dict(config), self.callbacks, self.tags, self.metadata,
                           AsyncCallbackManagerForLLMRun))
        with configurable_from(config):
            async for chunk in super().astream(input, {**config, "callbacks": manager, "run_id": run_id},
                                               stop=stop, **kwargs):
                yield chunk

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        run_manager = run_manager or take(CallbackManagerForLLMRun)
        compressed, report = self._engine.compress(messages)
        emit(run_manager, report, type(self).__name__)
        inner, kwargs = self._call_args(stop, kwargs)
        first = True
        for chunk in inner.stream(compressed, config=inner_config(child_manager(run_manager)), **kwargs):
            message = _as_chunk(chunk)
            yield ChatGenerationChunk(message=_annotated(message, report) if first else message)
            first = False

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        run_manager = run_manager or take(AsyncCallbackManagerForLLMRun)
        compressed, report = await self._engine.acompress(messages)
        await aemit(run_manager, report, type(self).__name__)
        inner, kwargs = self._call_args(stop, kwargs)
        first = True
        async for chunk in inner.astream(compressed, config=inner_config(achild_manager(run_manager)), **kwargs):
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
        if not isinstance(self.inner, BaseChatModel):  # as LangChain binds them on it (fallbacks: on each model)
            return self.model_copy(update={"inner": delegate(self.inner, "bind_tools", tools, **kwargs)})
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
        with a compression step in front of it (standard params reach the inner model where it
        declares them as fields)."""
        _, target, _, _ = self._resolve()
        structured = delegate(target, "with_structured_output", schema, include_raw=include_raw, **kwargs)
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


ChatSpecPrefill = SpecPrefillLLM
"""The same class under LangChain's ``Chat<Name>`` naming convention."""
