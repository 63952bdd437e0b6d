"""LlamaIndex chat messages as the core's message views, and new texts written back by index.

The policy (what may be compressed, JSON tool outputs, the query, the step-stable memo) is
the core's (:mod:`specprefill_agents.messages`, :mod:`specprefill_agents.message_compression`);
this module only translates.  Only ``TextBlock`` blocks are text parts; tool-call blocks,
thinking, citations, images, audio, video and documents are carried over untouched, and so
are roles and ``additional_kwargs`` (tool-call ids).  A message whose
``additional_kwargs["specprefill"]`` is ``"protect"`` is never compressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from specprefill_agents.message_compression import BaseMessageCompressor
from specprefill_agents.messages import (
    Kind,
    MessagePlan,
    MessagePolicy,
    MessageView,
    TextPart,
    plan_edits,
    plan_messages,
    render_tool_call,
)

__all__ = ["ChatMessageCompressor", "message_view", "apply_plan"]

_KINDS: dict[MessageRole, Kind] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "human",
    MessageRole.ASSISTANT: "ai",
    MessageRole.CHATBOT: "ai",
    MessageRole.MODEL: "ai",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _tool_calls(message: ChatMessage) -> tuple[str, ...]:
    """Tool calls as the draft sees them: ``ToolCallBlock`` blocks and OpenAI-style
    ``additional_kwargs["tool_calls"]``."""
    calls = [render_tool_call(b.tool_name, b.tool_kwargs) for b in message.blocks if isinstance(b, ToolCallBlock)]
    for call in message.additional_kwargs.get("tool_calls") or []:
        function = _get(call, "function")
        if function is not None:
            calls.append(render_tool_call(_get(function, "name"), _get(function, "arguments")))
        elif _get(call, "tool_name") is not None:  # ToolSelection
            calls.append(render_tool_call(_get(call, "tool_name"), _get(call, "tool_kwargs")))
    return tuple(calls)


def message_view(message: ChatMessage, policy: MessagePolicy) -> MessageView:
    parts = tuple(TextPart(i, b.text) for i, b in enumerate(message.blocks) if isinstance(b, TextBlock))
    return MessageView(
        _KINDS.get(message.role, "other"), parts, _tool_calls(message), policy.marker(message.additional_kwargs)
    )


def apply_plan(messages: Sequence[ChatMessage], plan: MessagePlan, texts: Sequence[str]) -> list[ChatMessage]:
    """``messages`` with the segment texts of ``plan`` replaced by ``texts``; unchanged messages
    are the same objects, changed ones copies differing only in their text blocks."""
    out = list(messages)
    for index, edits in plan_edits(plan, texts).items():
        blocks = list(messages[index].blocks)
        for block, text in edits:
            if block is not None:
                blocks[block] = blocks[block].model_copy(update={"text": text})
        out[index] = messages[index].model_copy(update={"blocks": blocks})
    return out


class ChatMessageCompressor(BaseMessageCompressor[ChatMessage]):
    """The core's message compressor for LlamaIndex ``ChatMessage`` lists (same arguments)."""

    def _plan(self, messages: list[ChatMessage]) -> MessagePlan:
        return plan_messages([message_view(m, self.policy) for m in messages], self.policy)

    def _apply(self, messages: list[ChatMessage], plan: MessagePlan, texts: list[str]) -> list[ChatMessage]:
        return apply_plan(messages, plan, texts)

    def _fallback_text(self, message: ChatMessage) -> str:
        return message.content or ""
