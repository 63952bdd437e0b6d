"""Messages <-> segments: what may change, what never does, JSON stays JSON (no model needed)."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from specprefill_agents import ConfigError
from specprefill_agents.json_values import JsonPiece, split_json, write_value

from langchain_specprefill import MessagePolicy
from langchain_specprefill.policy import apply_plan, plan_messages

LONG = "The quick brown fox jumps over the lazy dog. " * 60  # ~2,700 characters


def _compressible(plan) -> list[str]:
    return [s.text for s in plan.segments if s.may_compress]


def test_defaults_compress_tool_output_and_long_context_only() -> None:
    msgs = [
        SystemMessage(LONG),
        HumanMessage("Context:\n" + LONG),
        HumanMessage("short older turn"),
        AIMessage(LONG, tool_calls=[{"name": "read", "args": {"path": "a.py"}, "id": "c1"}]),
        ToolMessage(LONG, tool_call_id="c1"),
        HumanMessage(LONG),
    ]
    plan = plan_messages(msgs, MessagePolicy())
    owners = {plan.segment_message[i] for i, s in enumerate(plan.segments) if s.may_compress}
    assert owners == {1, 4}  # long older human context, tool output; not system/AI/latest human
    assert plan.query == LONG.strip()  # the latest human turn


def test_options_open_older_turns() -> None:
    msgs = [HumanMessage("short older turn"), AIMessage("an older answer"), HumanMessage("now?")]
    plan = plan_messages(msgs, MessagePolicy(older_human=True, older_ai=True))
    assert _compressible(plan) == ["short older turn", "an older answer"]
    assert _compressible(plan_messages(msgs, MessagePolicy(context_blocks=False))) == []


def test_markers_protect_and_compress() -> None:
    protected = ToolMessage(LONG, tool_call_id="c1", response_metadata={"specprefill": "protect"})
    marked = AIMessage("an older answer", response_metadata={"specprefill": "compress"})
    system = SystemMessage(LONG, response_metadata={"specprefill": "compress"})
    latest = HumanMessage("q", response_metadata={"specprefill": "compress"})
    plan = plan_messages([system, protected, marked, latest], MessagePolicy())
    assert _compressible(plan) == ["an older answer"]


def test_blocks_keep_structure_and_only_text_is_eligible() -> None:
    image = {"type": "image", "url": "https://example.com/a.png"}
    thinking = {"type": "thinking", "thinking": LONG}
    reasoning = {"type": "reasoning", "reasoning": LONG}
    cited = {"type": "text", "text": LONG, "annotations": [{"start": 0, "end": 5}]}
    content = [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}},
        image,
        thinking,
        reasoning,
        cited,
        "plain " + LONG,
    ]
    msgs = [HumanMessage("q0"), ToolMessage(content, tool_call_id="c1"), HumanMessage("q")]
    plan = plan_messages(msgs, MessagePolicy())
    assert _compressible(plan) == [LONG, "plain " + LONG]
    texts = [("X" if s.may_compress else s.text) for s in plan.segments]
    out = apply_plan(msgs, plan, texts)
    new = out[1].content
    assert new[0] == {"type": "text", "text": "X", "cache_control": {"type": "ephemeral"}}
    assert new[1:5] == content[1:5] and new[5] == "X"
    assert out[0] is msgs[0] and out[2] is msgs[2]
    assert content[0]["text"] == LONG  # the caller's message is not mutated


def test_tool_calls_are_context_only_and_never_change() -> None:
    call = {"name": "read", "args": {"path": "a.py", "n": 3}, "id": "call_1", "type": "tool_call"}
    msgs = [HumanMessage("q"), AIMessage("", tool_calls=[call]), ToolMessage(LONG, tool_call_id="call_1")]
    plan = plan_messages(msgs, MessagePolicy())
    rendered = [s.text for s in plan.segments if s.role == "ai"]
    assert rendered == ['read({"n": 3, "path": "a.py"})']
    out = apply_plan(msgs, plan, ["short" if s.may_compress else s.text for s in plan.segments])
    assert out[1] is msgs[1] and out[2].tool_call_id == "call_1" and out[2].content == "short"
    assert out[2].id == msgs[2].id


def test_json_values_compress_and_json_stays_valid() -> None:
    doc = {"path": "a.py", "content": LONG, "items": [{"k": "short", "v": "é" + LONG}], "n": 3}
    raw = json.dumps(doc, indent=2)
    msgs = [HumanMessage("q0"), ToolMessage(raw, tool_call_id="c"), HumanMessage("q")]
    plan = plan_messages(msgs, MessagePolicy())
    assert _compressible(plan) == [LONG, "é" + LONG]
    out = apply_plan(msgs, plan, ['a "quoted" [...] end\n' if s.may_compress else s.text for s in plan.segments])
    parsed = json.loads(out[1].content)
    assert parsed["content"] == 'a "quoted" [...] end\n' and parsed["items"][0]["k"] == "short"
    assert parsed["path"] == "a.py" and parsed["n"] == 3
    unchanged = apply_plan(msgs, plan, [s.text for s in plan.segments])
    assert unchanged[1] is msgs[1]


def test_json_modes() -> None:
    raw = json.dumps({"content": LONG})
    msgs = [HumanMessage("q0"), ToolMessage(raw, tool_call_id="c"), HumanMessage("q")]
    assert _compressible(plan_messages(msgs, MessagePolicy(json_mode="text"))) == [raw]
    assert _compressible(plan_messages(msgs, MessagePolicy(json_mode="skip"))) == []
    assert _compressible(plan_messages(msgs, MessagePolicy(json_value_min_chars=10**6))) == []


@pytest.mark.parametrize("text", ['{"a": "x"}', '[1, "two", {"k": "v: \\"q\\""}]', '  {"k" : "v"}  ', "[]"])
def test_split_json_round_trips(text: str) -> None:
    pieces = split_json(text, 1)
    assert pieces is not None
    assert "".join(p.literal if p.literal is not None else p.text for p in pieces) == text
    keys = [p for p in pieces if p.literal is not None and p.text in ("k", "a")]
    assert not keys  # keys are never values


@pytest.mark.parametrize("text", ["not json", '"a string"', "42", "{broken", ""])
def test_non_json_is_plain_text(text: str) -> None:
    assert split_json(text, 1) is None


def test_json_nested_too_deep_to_parse_is_one_piece_kept_whole() -> None:
    deep = "[" * 50_000 + '"' + "v" * 300 + '"' + "]" * 50_000
    assert split_json(deep, 1) == [JsonPiece(deep)]
    msgs = [HumanMessage("q0"), ToolMessage(deep, tool_call_id="c"), HumanMessage("q")]
    assert _compressible(plan_messages(msgs, MessagePolicy())) == []


def test_write_value_keeps_ascii_escaping() -> None:
    assert write_value('"caf\\u00e9"', "café", "café") == '"caf\\u00e9"'
    assert write_value('"caf\\u00e9 x"', "café x", "café") == '"caf\\u00e9"'
    assert write_value('"café x"', "café x", "café") == '"café"'


def test_query_falls_back_to_the_tail() -> None:
    msgs = [
        SystemMessage("sys"),
        AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "1"}]),
        ToolMessage("x" * 50 + "TAIL", tool_call_id="1"),
    ]
    assert plan_messages(msgs, MessagePolicy(query_tail_chars=10)).query == "xxxxxxTAIL"
    image_only = [HumanMessage("older question"), HumanMessage([{"type": "image", "url": "u"}])]
    assert plan_messages(image_only, MessagePolicy()).query == "older question"
    assert plan_messages([], MessagePolicy()).query is None


def test_chat_message_roles() -> None:
    msgs = [
        ChatMessage(role="developer", content=LONG),
        ChatMessage(role="tool", content=LONG),
        ChatMessage(role="user", content="q"),
    ]
    plan = plan_messages(msgs, MessagePolicy())
    assert [plan.segment_message[i] for i, s in enumerate(plan.segments) if s.may_compress] == [1]
    assert plan.query == "q"


def test_plan_is_deterministic_and_prefix_stable() -> None:
    msgs = [
        HumanMessage("q"),
        AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "1"}]),
        ToolMessage(LONG, tool_call_id="1"),
    ]
    a, b = plan_messages(msgs, MessagePolicy()), plan_messages(list(msgs), MessagePolicy())
    assert a == b
    longer = plan_messages([*msgs, AIMessage("next"), ToolMessage(LONG, tool_call_id="2")], MessagePolicy())
    assert longer.segments[: len(a.segments)] == a.segments


@pytest.mark.parametrize(
    "bad", [{"context_min_chars": 0}, {"json_mode": "yaml"}, {"marker_key": ""}, {"query_tail_chars": True}]
)
def test_bad_policy_raises_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        MessagePolicy(**bad)
