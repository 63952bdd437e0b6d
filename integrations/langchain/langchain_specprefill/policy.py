"""Which parts of a LangChain message list may be compressed, and the mapping both ways.

:func:`plan_messages` turns messages into core :class:`~specprefill_agents.Segment` objects
(one per text part, JSON values split out), remembering where each came from;
:func:`apply_plan` writes new segment texts back by index.  Only text parts change:
message count, order, types, ids, tool calls, non-text blocks and everything else are
carried over untouched.  Same messages and policy, same segments, in the same order.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from specprefill_agents import ConfigError, Segment

from ._json import split_json, write_value

__all__ = ["MessagePolicy", "MessagePlan", "plan_messages", "apply_plan", "message_kind"]

Kind = Literal["system", "human", "ai", "tool", "other"]
JsonMode = Literal["values", "text", "skip"]

_ROLE_KINDS: dict[str, Kind] = {
    "system": "system", "developer": "system", "user": "human", "human": "human",
    "assistant": "ai", "ai": "ai", "tool": "tool", "function": "tool",
}


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class MessagePolicy:
    """What may be compressed.  Never: the system message, the latest human turn, tool-call
    ids or arguments, reasoning/thinking blocks, non-text blocks (images, files, audio),
    text blocks carrying citations/annotations, or messages marked ``"protect"``."""

    tool_messages: bool = _help("Compress the text of ToolMessage (and FunctionMessage) outputs.", True)
    context_blocks: bool = _help(
        "Compress long text parts of older human turns (pasted or retrieved context).", True)
    context_min_chars: int = _help("A human text part this long (characters) counts as a context block.", 2000)
    older_human: bool = _help("Compress every text part of older human turns, whatever its length.", False)
    older_ai: bool = _help("Compress the text of earlier AI messages (their tool calls never change).", False)
    json_mode: JsonMode = _help(
        "JSON objects/arrays: 'values' compresses long string values and keeps the JSON valid; "
        "'text' compresses them as plain text; 'skip' leaves them alone.", "values")
    json_value_min_chars: int = _help("JSON string values shorter than this stay in the skeleton.", 200)
    query_tail_chars: int = _help(
        "With no human text to use as the query, the last N characters of the conversation are.", 2000)
    marker_key: str = _help(
        "A message whose response_metadata[marker_key] is 'protect' is never compressed; "
        "'compress' makes it compressible (except the system message and the latest human turn).",
        "specprefill")

    def __post_init__(self) -> None:
        for name in ("context_min_chars", "json_value_min_chars", "query_tail_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"MessagePolicy.{name} must be an int >= 1, got {value!r}")
        if self.json_mode not in ("values", "text", "skip"):
            raise ConfigError(f"MessagePolicy.json_mode must be 'values', 'text' or 'skip', got {self.json_mode!r}")
        if not isinstance(self.marker_key, str) or not self.marker_key:
            raise ConfigError("MessagePolicy.marker_key must be a non-empty str")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Piece:
    segment: int  # index into MessagePlan.segments
    literal: str | None = None  # the JSON string literal this segment's text came from


@dataclass(frozen=True)
class _Part:
    message: int
    block: int | None  # None: the message content is one str
    pieces: tuple[_Piece, ...]


@dataclass(frozen=True)
class MessagePlan:
    """Segments for the core plus where each text came from.  ``segment_message[i]`` is the
    message index of segment ``i``; context-only segments (rendered tool calls) belong to
    no part."""

    segments: tuple[Segment, ...]
    segment_message: tuple[int, ...]
    parts: tuple[_Part, ...]
    kinds: tuple[Kind, ...]
    query: str | None


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
        return _ROLE_KINDS.get(message.role.lower(), "other")
    return "other"


def _text_parts(content: Any) -> list[tuple[int | None, str, bool]]:
    """(block index, text, editable) for every text part; other blocks are not text."""
    if isinstance(content, str):
        return [(None, content, True)]
    parts: list[tuple[int | None, str, bool]] = []
    for i, block in enumerate(content or []):
        if isinstance(block, str):
            parts.append((i, block, True))
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            cited = bool(block.get("annotations") or block.get("citations"))  # offsets point into the text
            parts.append((i, block["text"], not cited))
    return parts


def _mode(message: BaseMessage, kind: Kind, is_query_turn: bool, policy: MessagePolicy) -> bool | str:
    """True: every text part may be compressed; "long": long parts only; False: none."""
    if kind == "system" or is_query_turn:
        return False
    marker = (message.response_metadata or {}).get(policy.marker_key)
    if marker == "protect":
        return False
    if marker == "compress":
        return True
    if kind == "tool":
        return policy.tool_messages
    if kind == "human":
        return True if policy.older_human else ("long" if policy.context_blocks else False)
    if kind == "ai":
        return policy.older_ai
    return False


def _query(messages: Sequence[BaseMessage], latest: int | None, policy: MessagePolicy) -> str | None:
    """The latest human turn's text; else the tail of the conversation's text."""
    if latest is not None:
        text = "\n".join(t for _, t, _ in _text_parts(messages[latest].content)).strip()
        if text:
            return text
    everything = "\n\n".join(t for m in messages for _, t, _ in _text_parts(m.content) if t.strip())
    tail = everything[-policy.query_tail_chars:].strip()
    return tail or None


def _tool_call_text(call: dict[str, Any]) -> str:
    return f"{call.get('name')}({json.dumps(call.get('args'), ensure_ascii=False, sort_keys=True, default=str)})"


class _Builder:
    def __init__(self, policy: MessagePolicy) -> None:
        self.policy = policy
        self.segments: list[Segment] = []
        self.owner: list[int] = []
        self.parts: list[_Part] = []

    def add(self, index: int, kind: Kind, text: str, compressible: bool) -> int:
        self.segments.append(Segment(text, role=kind, compressible=compressible, protected=not compressible,
                                     id=f"{index}.{len(self.segments)}"))
        self.owner.append(index)
        return len(self.segments) - 1

    def part(self, index: int, kind: Kind, block: int | None, text: str, compressible: bool) -> None:
        pieces = None
        if compressible and self.policy.json_mode != "text":
            pieces = split_json(text, self.policy.json_value_min_chars)
            if pieces is not None and self.policy.json_mode == "skip":
                pieces, compressible = None, False
        if pieces is None:
            self.parts.append(_Part(index, block, (_Piece(self.add(index, kind, text, compressible)),)))
            return
        out = tuple(_Piece(self.add(index, kind, p.text, p.literal is not None), p.literal) for p in pieces)
        self.parts.append(_Part(index, block, out))


def plan_messages(messages: Sequence[BaseMessage], policy: MessagePolicy) -> MessagePlan:
    """Segments for ``messages`` under ``policy``, in message order (deterministic)."""
    kinds = tuple(message_kind(m) for m in messages)
    latest = next((i for i in range(len(messages) - 1, -1, -1) if kinds[i] == "human"), None)
    builder = _Builder(policy)
    for index, (message, kind) in enumerate(zip(messages, kinds)):
        mode = _mode(message, kind, index == latest, policy)
        for block, text, editable in _text_parts(message.content):
            if not text:
                continue
            long_enough = mode is True or (mode == "long" and len(text) >= policy.context_min_chars)
            builder.part(index, kind, block, text, bool(editable and long_enough))
        for call in getattr(message, "tool_calls", None) or []:
            builder.add(index, kind, _tool_call_text(call), False)  # context for the draft only
    return MessagePlan(tuple(builder.segments), tuple(builder.owner), tuple(builder.parts), kinds,
                       _query(messages, latest, policy))


def _part_text(part: _Part, plan: MessagePlan, texts: Sequence[str]) -> str:
    out = []
    for piece in part.pieces:
        new = texts[piece.segment]
        if piece.literal is None:
            out.append(new)
        else:
            out.append(write_value(piece.literal, plan.segments[piece.segment].text, new))
    return "".join(out)


def apply_plan(messages: Sequence[BaseMessage], plan: MessagePlan, texts: Sequence[str]) -> list[BaseMessage]:
    """``messages`` with the segment texts of ``plan`` replaced by ``texts`` (same length).

    Unchanged messages are returned as the same objects; changed ones are copies whose
    only difference is the text of their text parts.
    """
    changed: dict[int, list[tuple[int | None, str]]] = {}
    for part in plan.parts:
        if any(texts[p.segment] != plan.segments[p.segment].text for p in part.pieces):
            changed.setdefault(part.message, []).append((part.block, _part_text(part, plan, texts)))
    out = list(messages)
    for index, edits in changed.items():
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
