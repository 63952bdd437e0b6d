"""LangChain messages as the core's message views, and new texts written back by index.

The policy itself (what may be compressed, JSON values, the query) is the core's
:mod:`specprefill_agents.messages`; this module only translates.  :func:`plan_messages`
describes each message (kind, text parts, tool calls, the ``response_metadata`` marker)
and plans them; :func:`apply_plan` writes the new segment texts back.  Only text parts
change: message count, order, types, ids, tool calls, non-text blocks and everything
else are carried over untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from specprefill_agents.messages import (
    Kind,
    MessagePlan,
    MessagePolicy,
    MessageView,
    TextPart,
    plan_edits,
    render_tool_call,
    role_kind,
)
from specprefill_agents.messages import plan_messages as plan_views

__all__ = ["MessagePolicy", "MessagePlan", "plan_messages", "apply_plan", "message_kind"]


def message_kind(message: BaseMessage) -> Kind:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "human"
    if isinstance(message, AIMessage):
        return "ai"
    if isinstance(message, (ToolMessage, FunctionMessage)):
        return "tool"
    if isinstance(message, ChatMessage):
        return role_kind(message.role)
    return "other"


def _text_parts(content: Any) -> tuple[TextPart, ...]:
    """Every text part; other blocks are not text."""
    if isinstance(content, str):
        return (TextPart(None, content),)
    parts: list[TextPart] = []
    for i, block in enumerate(content or []):
        if isinstance(block, str):
            parts.append(TextPart(i, block))
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            cited = bool(block.get("annotations") or block.get("citations"))  # offsets point into the text
            parts.append(TextPart(i, block["text"], not cited))
    return tuple(parts)


def message_view(message: BaseMessage, policy: MessagePolicy) -> MessageView:
    calls = tuple(render_tool_call(c.get("name"), c.get("args")) for c in getattr(message, "tool_calls", None) or [])
    return MessageView(
        message_kind(message), _text_parts(message.content), calls, policy.marker(message.response_metadata)
    )


def plan_messages(messages: Sequence[BaseMessage], policy: MessagePolicy) -> MessagePlan:
    """Segments for ``messages`` under ``policy``, in message order (deterministic)."""
    return plan_views([message_view(m, policy) for m in messages], policy)


def apply_plan(messages: Sequence[BaseMessage], plan: MessagePlan, texts: Sequence[str]) -> list[BaseMessage]:
    """``messages`` with the segment texts of ``plan`` replaced by ``texts`` (same length).

    Unchanged messages are returned as the same objects; changed ones are copies whose
    only difference is the text of their text parts.
    """
    out = list(messages)
    for index, edits in plan_edits(plan, texts).items():
        content: Any = messages[index].content
        content = content if isinstance(content, str) else list(content)
        for block, text in edits:
            if block is None:
                content = text
            elif isinstance(content[block], str):
                content[block] = text
            else:
                content[block] = {**content[block], "text": text}
        out[index] = messages[index].model_copy(update={"content": content})
    return out
