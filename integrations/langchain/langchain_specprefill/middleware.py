"""Agent hooks for ``create_agent``: a middleware and a ``ContextEdit`` (needs ``langchain>=1``).

Both are ephemeral: the model sees compressed tool outputs, the agent state keeps the
originals.  Compression is step-stable (see :mod:`langchain_specprefill.engine`): a message
compresses the same way at every later step, so provider prefix caches keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.messages import AnyMessage, BaseMessage

try:
    from langchain.agents.middleware.context_editing import ContextEdit
    from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "langchain_specprefill.middleware needs langchain>=1.0: pip install 'langchain-specprefill[agents]'"
    ) from exc

from specprefill_agents import ConfigError, GapStore, OnFailure

from ._callbacks import aemit_in_context, emit_in_context
from .engine import CompressionReport, MessageCompressor
from .expand_tool import make_expand_tool, protect_expansions
from .policy import MessagePolicy

__all__ = ["SpecPrefillMiddleware", "SpecPrefillEdit"]


class SpecPrefillMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Compress tool outputs (and other compressible context) before every model call.

    Example:
        .. code-block:: python

            agent = create_agent(model, tools=[read_file],
                                 middleware=[SpecPrefillMiddleware(keep_ratio=0.3)])

    Args:
        compressor: a ``SpecPrefillCompressor`` (or compatible client), a draft spec, or
            None for the embedded draft (loaded at the first model call).
        policy, keep_ratio, budget_tokens, token_counter, on_failure, memo_size: see
            :class:`~langchain_specprefill.engine.MessageCompressor`.
        expandable: gap markers carry references and the middleware registers the
            ``expand_context`` tool, which returns cut text from the agent's state by reference
            (optionally only the lines mentioning a search string) or by a lexical query over
            everything cut; its outputs are never compressed.
        expand_tokens: the most tokens one query to ``expand_context`` returns.
        gap_store_chars: bound on the cut text kept for the tool (characters, least recently used
            conversation text first out).

    Each model call emits the ``"specprefill_compression"`` custom event; ``last_report``
    holds the latest :class:`CompressionReport`.  Middleware listed before this one (outer
    layers) see the original messages, those after it the compressed ones: list it last to
    have it run closest to the model.
    """

    def __init__(self, compressor: Any = None, *, policy: MessagePolicy | None = None,
                 keep_ratio: float | None = None, budget_tokens: int | None = None, token_counter: Any = None,
                 on_failure: OnFailure = "warn", memo_size: int = 256, expandable: bool = False,
                 expand_tokens: int = 512, gap_store_chars: int = 4_000_000) -> None:
        super().__init__()
        if not isinstance(expandable, bool):
            raise ConfigError(f"expandable must be a bool, got {type(expandable).__name__}")
        if isinstance(expand_tokens, bool) or not isinstance(expand_tokens, int) or expand_tokens < 1:
            raise ConfigError(f"expand_tokens must be an int >= 1, got {expand_tokens!r}")
        store = GapStore(gap_store_chars) if expandable else None
        self.gap_store = store
        self.engine = MessageCompressor(compressor, policy=policy, keep_ratio=keep_ratio,
                                        budget_tokens=budget_tokens, token_counter=token_counter,
                                        on_failure=on_failure, memo_size=memo_size, name=type(self).__name__,
                                        gap_store=store)
        self.tools = [make_expand_tool(self.engine, store, expand_tokens)] if store is not None else []
        self.last_report: CompressionReport | None = None

    @staticmethod
    def _prompt(request: ModelRequest) -> list[BaseMessage]:
        system = [request.system_message] if request.system_message is not None else []
        return [*system, *request.messages]

    def _request(self, request: ModelRequest, compressed: list[BaseMessage]) -> ModelRequest:
        offset = 1 if request.system_message is not None else 0
        return request.override(messages=cast("list[AnyMessage]", compressed[offset:]))

    def _protected(self, prompt: list[BaseMessage]) -> tuple[list[BaseMessage], list[int]]:
        """``prompt`` with the expansion tool's outputs protected (when expandable)."""
        return protect_expansions(prompt, self.engine.policy) if self.gap_store is not None else (prompt, [])

    def _restored(self, prompt: list[BaseMessage], compressed: list[BaseMessage], report: CompressionReport,
                  expansions: list[int]) -> tuple[list[BaseMessage], CompressionReport]:
        """The expansion outputs as they were (not the protected copies), their tokens in the report."""
        for i in expansions:
            compressed[i] = prompt[i]
        if expansions:
            counts, _ = self.engine.counter.count_all([prompt[i].text for i in expansions])
            report = dataclasses.replace(report, expanded_tokens=sum(counts))
        return compressed, report

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        prompt = self._prompt(request)
        marked, expansions = self._protected(prompt)
        compressed, report = self._restored(prompt, *self.engine.compress(marked), expansions)
        self.last_report = report
        emit_in_context(report, type(self).__name__)
        return handler(self._request(request, compressed))

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> Any:
        prompt = self._prompt(request)
        marked, expansions = self._protected(prompt)
        compressed, report = self._restored(prompt, *await self.engine.acompress(marked), expansions)
        self.last_report = report
        await aemit_in_context(report, type(self).__name__)
        return await handler(self._request(request, compressed))


@dataclass
class SpecPrefillEdit(ContextEdit):
    """A ``ContextEdit`` for ``ContextEditingMiddleware``: compress once the context is large.

    ``ContextEditingMiddleware(edits=[SpecPrefillEdit(trigger=20_000)])`` compresses the
    messages (the system message is not among them) whenever they count more than
    ``trigger`` tokens with the middleware's counter; ``trigger=0`` always compresses.
    """

    trigger: int = 0
    engine: MessageCompressor = field(default_factory=MessageCompressor)
    last_report: CompressionReport | None = None

    @classmethod
    def create(cls, compressor: Any = None, *, trigger: int = 0, **engine_kwargs: Any) -> SpecPrefillEdit:
        """Build the edit and its :class:`MessageCompressor` (same keywords as the middleware)."""
        return cls(trigger=trigger, engine=MessageCompressor(compressor, name=cls.__name__, **engine_kwargs))

    def apply(self, messages: list[AnyMessage], *, count_tokens: Callable[[list[AnyMessage]], int]) -> None:
        if self.trigger and count_tokens(messages) <= self.trigger:
            return
        compressed, report = self.engine.compress(messages)
        self.last_report = report
        emit_in_context(report, type(self).__name__)
        messages[:] = cast("list[AnyMessage]", compressed)
