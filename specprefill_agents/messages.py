"""Which parts of a chat message list may be compressed, and the mapping both ways.

Framework-free: an integration describes each of its messages as a :class:`MessageView`
(kind, text parts, rendered tool calls, marker); :func:`plan_messages` turns the views into
:class:`~specprefill_agents.Segment` objects (one per text part, JSON values split out),
remembering where each came from; :func:`plan_edits` says, per message, which text part
gets which new text, so the integration writes them back by index.  Only text parts
change: message count, order, roles, ids, tool calls and non-text blocks never do.  Same
views and policy, same segments, in the same order.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError
from .json_values import split_json, write_value
from .types import Segment

__all__ = [
    "Kind",
    "MessagePolicy",
    "MessagePlan",
    "MessageView",
    "TextPart",
    "plan_messages",
    "plan_edits",
    "role_kind",
    "render_tool_call",
]

Kind = Literal["system", "human", "ai", "tool", "other"]
JsonMode = Literal["values", "text", "skip"]

_ROLE_KINDS: dict[str, Kind] = {
    "system": "system",
    "developer": "system",
    "user": "human",
    "human": "human",
    "assistant": "ai",
    "ai": "ai",
    "tool": "tool",
    "function": "tool",
}


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class MessagePolicy:
    """What may be compressed.  Never: the system message, the latest human turn, tool-call
    ids or arguments, reasoning/thinking blocks, non-text blocks (images, files, audio),
    text blocks carrying citations/annotations, or messages marked ``"protect"``."""

    tool_messages: bool = _help("Compress the text of tool (and function) outputs.", True)
    context_blocks: bool = _help("Compress long text parts of older human turns (pasted or retrieved context).", True)
    context_min_chars: int = _help("A human text part this long (characters) counts as a context block.", 2000)
    older_human: bool = _help("Compress every text part of older human turns, whatever its length.", False)
    older_ai: bool = _help("Compress the text of earlier AI messages (their tool calls never change).", False)
    json_mode: JsonMode = _help(
        "JSON objects/arrays: 'values' compresses long string values and keeps the JSON valid; "
        "'text' compresses them as plain text; 'skip' leaves them alone.",
        "values",
    )
    json_value_min_chars: int = _help("JSON string values shorter than this stay in the skeleton.", 200)
    query_tail_chars: int = _help(
        "With no human text to use as the query, the last N characters of the conversation are.", 2000
    )
    marker_key: str = _help(
        "A message whose metadata[marker_key] is 'protect' is never compressed; 'compress' makes it "
        "compressible (except the system message and the latest human turn).  Which metadata: "
        "each integration says (LangChain: response_metadata).",
        "specprefill",
    )

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

    def marker(self, metadata: Mapping[str, Any] | None) -> str | None:
        """The marker (``"protect"`` / ``"compress"``) in a message's ``metadata``, if any."""
        value = (metadata or {}).get(self.marker_key)
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class TextPart:
    """One text part of a message: ``block`` is its index in the message's content list
    (None when the content is one str); ``editable`` False keeps it as context only."""

    block: int | None
    text: str
    editable: bool = True


@dataclass(frozen=True)
class MessageView:
    """What the policy needs to know of one message, whatever the framework."""

    kind: Kind
    parts: tuple[TextPart, ...]
    tool_calls: tuple[str, ...] = ()  # rendered calls (:func:`render_tool_call`): draft context only
    marker: str | None = None


@dataclass(frozen=True)
class _Piece:
    segment: int  # index into MessagePlan.segments
    literal: str | None = None  # the JSON string literal this segment's text came from


@dataclass(frozen=True)
class _Part:
    message: int
    block: int | None
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


def role_kind(role: str) -> Kind:
    """The kind of a message with chat role ``role`` (``"user"``, ``"assistant"``, ``"tool"``...)."""
    return _ROLE_KINDS.get(str(role).lower(), "other")


def render_tool_call(name: Any, args: Any) -> str:
    """A tool call as the draft sees it (``name({"arg": ...})``, keys sorted): never sent on."""
    return f"{name}({json.dumps(args, ensure_ascii=False, sort_keys=True, default=str)})"


def _mode(view: MessageView, is_query_turn: bool, policy: MessagePolicy) -> bool | str:
    """True: every text part may be compressed; "long": long parts only; False: none."""
    if view.kind == "system" or is_query_turn or view.marker == "protect":
        return False
    if view.marker == "compress":
        return True
    if view.kind == "tool":
        return policy.tool_messages
    if view.kind == "human":
        return True if policy.older_human else ("long" if policy.context_blocks else False)
    if view.kind == "ai":
        return policy.older_ai
    return False


def _query(views: Sequence[MessageView], latest: int | None, policy: MessagePolicy) -> str | None:
    """The latest human turn's text; else the tail of the conversation's text."""
    if latest is not None:
        text = "\n".join(p.text for p in views[latest].parts).strip()
        if text:
            return text
    everything = "\n\n".join(p.text for v in views for p in v.parts if p.text.strip())
    tail = everything[-policy.query_tail_chars :].strip()
    return tail or None


class _Builder:
    def __init__(self, policy: MessagePolicy) -> None:
        self.policy = policy
        self.segments: list[Segment] = []
        self.owner: list[int] = []
        self.parts: list[_Part] = []

    def add(self, index: int, kind: Kind, text: str, compressible: bool) -> int:
        self.segments.append(
            Segment(
                text,
                role=kind,
                compressible=compressible,
                protected=not compressible,
                id=f"{index}.{len(self.segments)}",
            )
        )
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


def plan_messages(views: Sequence[MessageView], policy: MessagePolicy) -> MessagePlan:
    """Segments for the messages ``views`` describe, under ``policy``, in order (deterministic)."""
    latest = next((i for i in range(len(views) - 1, -1, -1) if views[i].kind == "human"), None)
    builder = _Builder(policy)
    for index, view in enumerate(views):
        mode = _mode(view, index == latest, policy)
        for part in view.parts:
            if not part.text:
                continue
            long_enough = mode is True or (mode == "long" and len(part.text) >= policy.context_min_chars)
            builder.part(index, view.kind, part.block, part.text, bool(part.editable and long_enough))
        for call in view.tool_calls:
            builder.add(index, view.kind, call, False)  # context for the draft only
    return MessagePlan(
        tuple(builder.segments),
        tuple(builder.owner),
        tuple(builder.parts),
        tuple(v.kind for v in views),
        _query(views, latest, policy),
    )


def _part_text(part: _Part, plan: MessagePlan, texts: Sequence[str]) -> str:
    out = []
    for piece in part.pieces:
        new = texts[piece.segment]
        if piece.literal is None:
            out.append(new)
        else:
            out.append(write_value(piece.literal, plan.segments[piece.segment].text, new))
    return "".join(out)


def plan_edits(plan: MessagePlan, texts: Sequence[str]) -> dict[int, list[tuple[int | None, str]]]:
    """``{message index: [(block, new text), ...]}`` for the text parts whose segments got a new
    text in ``texts`` (one per segment of ``plan``); messages that did not change are absent."""
    changed: dict[int, list[tuple[int | None, str]]] = {}
    for part in plan.parts:
        if any(texts[p.segment] != plan.segments[p.segment].text for p in part.pieces):
            changed.setdefault(part.message, []).append((part.block, _part_text(part, plan, texts)))
    return changed
