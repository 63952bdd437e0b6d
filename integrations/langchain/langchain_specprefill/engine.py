"""Compress a LangChain message list, step-stable: what the chat model, middleware and edit share.

The work (groups, memo, budget, failure policy, report) is the core's
:class:`~specprefill_agents.message_compression.BaseMessageCompressor`; this class only
translates LangChain messages (:mod:`.policy`).
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage
from langchain_core.runnables.config import run_in_executor

from specprefill_agents.message_compression import BaseMessageCompressor, CompressionReport, CompressorFailure
from specprefill_agents.messages import MessagePlan

from .policy import apply_plan, plan_messages

__all__ = ["CompressionReport", "CompressorFailure", "MessageCompressor", "EVENT_NAME"]

EVENT_NAME = "specprefill_compression"
"""Name of the custom callback event every compression emits (data: ``CompressionReport.to_dict()``)."""


class MessageCompressor(BaseMessageCompressor[BaseMessage]):
    """Compress the compressible parts of message lists with any compressor.

    Args:
        compressor: a :class:`~specprefill_agents.SpecPrefillCompressor` (or anything with its
            ``compress_segments``), a draft spec (``"embedded"``, hub id, dir, ``.gguf``), or
            None for the embedded draft.  Nothing loads before the first compression.
        policy: what may be compressed (:class:`MessagePolicy`).
        keep_ratio / budget_tokens: per-group budget overrides; None uses the compressor's config.
        token_counter: the target's tokenizer or a ``str -> int`` callable; budgets and stats
            count with it.
        on_failure: ``"warn"`` (default), ``"passthrough"`` or ``"raise"``.
        memo_size: finished groups remembered (0 disables the memo).
    """

    def _plan(self, messages: list[BaseMessage]) -> MessagePlan:
        return plan_messages(messages, self.policy)

    def _apply(self, messages: list[BaseMessage], plan: MessagePlan, texts: list[str]) -> list[BaseMessage]:
        return apply_plan(messages, plan, texts)

    def _fallback_text(self, message: BaseMessage) -> str:
        return str(message.content)

    async def acompress(self, messages: Sequence[BaseMessage]) -> tuple[list[BaseMessage], CompressionReport]:
        """:meth:`compress` in a worker thread (the draft is compute-bound), in the caller's context."""
        return await run_in_executor(None, self.compress, messages)
