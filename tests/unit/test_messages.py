"""The framework-free message policy: views -> segments -> edits, and the step-stable compressor."""

from __future__ import annotations

import json

import pytest

from specprefill_agents import CompressionResult, CompressionStats, ConfigError
from specprefill_agents.message_compression import BaseMessageCompressor
from specprefill_agents.messages import MessagePolicy, MessageView, TextPart, plan_edits, plan_messages, role_kind

LONG = "The quick brown fox jumps over the lazy dog. " * 60


def _view(kind: str, *texts: str, marker: str | None = None, calls: tuple[str, ...] = ()) -> MessageView:
    return MessageView(kind, tuple(TextPart(i, t) for i, t in enumerate(texts)), calls, marker)  # type: ignore[arg-type]


def test_roles_and_defaults() -> None:
    assert [role_kind(r) for r in ("developer", "USER", "assistant", "function", "critic")] == [
        "system",
        "human",
        "ai",
        "tool",
        "other",
    ]
    views = [
        _view("system", LONG),
        _view("human", LONG),
        _view("ai", LONG, calls=('read({"p": 1})',)),
        _view("tool", LONG),
        _view("tool", LONG, marker="protect"),
        _view("human", "now?"),
    ]
    plan = plan_messages(views, MessagePolicy())
    owners = [plan.segment_message[i] for i, s in enumerate(plan.segments) if s.may_compress]
    assert owners == [1, 3] and plan.query == "now?"
    assert [s.text for s in plan.segments if s.role == "ai"] == [LONG, 'read({"p": 1})']


def test_edits_map_back_by_block_and_keep_json_valid() -> None:
    doc = json.dumps({"path": "a.py", "content": LONG, "n": 3})
    views = [_view("human", "q0"), _view("tool", "short", doc), _view("human", "q")]
    plan = plan_messages(views, MessagePolicy())
    texts = ["X" if s.may_compress else s.text for s in plan.segments]
    edits = plan_edits(plan, texts)
    assert list(edits) == [1]
    ((block_a, text_a), (block_b, text_b)) = edits[1]
    assert (block_a, text_a) == (0, "X") and block_b == 1
    assert json.loads(text_b) == {"path": "a.py", "content": "X", "n": 3}
    assert plan_edits(plan, [s.text for s in plan.segments]) == {}


def test_marker_reads_the_policys_key() -> None:
    policy = MessagePolicy(marker_key="mine")
    assert policy.marker({"mine": "protect"}) == "protect" and policy.marker({"specprefill": "x"}) is None
    assert policy.marker(None) is None and policy.marker({"mine": 3}) is None
    with pytest.raises(ConfigError):
        MessagePolicy(json_mode="yaml")  # type: ignore[arg-type]


class _HalfLines:
    """Keeps every other line of compressible segments; counts its calls."""

    calls = 0

    def compress_segments(self, segments, query=None, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        out = []
        for s in segments:
            lines = s.text.split("\n")
            text = "\n".join(lines[::2]) if s.may_compress and len(lines) > 2 else s.text
            out.append(type(s)(text, s.role, s.compressible, s.protected, s.id, s.kind))
        return CompressionResult(tuple(out), tuple(() for _ in out), CompressionStats(0, 0, "none", 0, False, 0, 0))


class _TextCompressor(BaseMessageCompressor[tuple[str, str]]):
    """Messages are (kind, text) pairs."""

    def _plan(self, messages):  # type: ignore[no-untyped-def]
        return plan_messages([_view(k, t) for k, t in messages], self.policy)

    def _apply(self, messages, plan, texts):  # type: ignore[no-untyped-def]
        out = list(messages)
        for index, edits in plan_edits(plan, texts).items():
            out[index] = (messages[index][0], edits[0][1])
        return out


def test_base_compressor_groups_memo_and_identity() -> None:
    lines = "\n".join(f"line {i}" for i in range(40))
    stand_in = _HalfLines()
    engine = _TextCompressor(stand_in, token_counter=len)
    messages = [("human", "q"), ("ai", ""), ("tool", lines), ("tool", lines), ("human", "and?")]
    out, report = engine.compress(messages)
    assert [m[0] for m in out] == [m[0] for m in messages] and out[2][1] == "\n".join(lines.split("\n")[::2])
    assert out[0] is messages[0] and report.groups == 1 and report.items_compressed == 2
    assert report.counted_with == "len" and report.compressed_tokens < report.original_tokens
    again, reused = engine.compress(messages)
    assert again == out and reused.groups_reused == 1 and stand_in.calls == 1
    assert engine.identity()["token_counter"] == "len"
