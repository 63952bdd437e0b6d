"""Property tests over random conversations with tool calls: design invariants 1, 2 and 3.

1. Same number, order, types and ids of messages; tool-call ids and arguments, the system
   prompt, the latest human turn, protected messages and non-text blocks byte-identical.
2. Every changed text is kept spans of the original, in order, joined by gap markers
   (for JSON: every changed string value is; the skeleton is identical).
3. Deterministic: a fresh compressor gives the same output; so does the memo.
"""

from __future__ import annotations

import inspect
import json
import textwrap

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from specprefill_agents import SpecPrefillCompressor
from specprefill_agents.testing import kept_in_order

from langchain_specprefill import MessageCompressor, MessagePolicy

from .conftest import FAST

SOURCE = inspect.getsource(textwrap)
IMAGE = {"type": "image", "url": "https://example.com/plot.png"}
THINKING = {"type": "thinking", "thinking": SOURCE[:400], "signature": "sig"}


@st.composite
def snippets(draw: st.DrawFn) -> str:
    start = draw(st.integers(0, len(SOURCE) - 1500))
    return SOURCE[start : start + draw(st.integers(20, 1000))]


@st.composite
def tool_contents(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["text", "json", "blocks"]))
    text = draw(snippets())
    if kind == "json":
        return json.dumps({"path": "textwrap.py", "content": text, "meta": {"n": len(text), "note": draw(snippets())}},
                          indent=draw(st.sampled_from([None, 2])))
    if kind == "blocks":
        return [{"type": "text", "text": text}, IMAGE]
    return text


@st.composite
def conversations(draw: st.DrawFn) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    if draw(st.booleans()):
        messages.append(SystemMessage("You answer from the tool outputs. " + draw(snippets())[:200]))
    n = 0
    for _ in range(draw(st.integers(1, 2))):
        messages.append(HumanMessage(draw(st.sampled_from(["What does dedent do?", "Explain wrap.", "Why?"]))))
        for _ in range(draw(st.integers(1, 2))):
            calls = [{"name": draw(st.sampled_from(["read", "grep"])), "id": f"call_{n + k}",
                      "args": {"path": "textwrap.py", "line": draw(st.integers(0, 400))}}
                     for k in range(draw(st.integers(1, 2)))]
            n += len(calls)
            content = [THINKING, {"type": "text", "text": "Let me look."}] if draw(st.booleans()) else ""
            messages.append(AIMessage(content, tool_calls=calls))
            for call in calls:
                protect = {"specprefill": "protect"} if draw(st.integers(0, 5)) == 0 else {}
                messages.append(ToolMessage(draw(tool_contents()), tool_call_id=call["id"], name=call["name"],
                                            response_metadata=protect, id=f"tm-{call['id']}"))
        if draw(st.booleans()):
            messages.append(AIMessage("An answer. " + draw(snippets())[:300]))
    return messages


def _check_json(new: object, old: object) -> None:
    assert type(new) is type(old)
    if isinstance(old, dict):
        assert list(new) == list(old)
        for k in old:
            _check_json(new[k], old[k])
    elif isinstance(old, list):
        assert len(new) == len(old)
        for a, b in zip(new, old):
            _check_json(a, b)
    elif isinstance(old, str):
        assert new == old or kept_in_order(new, old)
    else:
        assert new == old


def _check_text(new: str, old: str) -> None:
    if new == old:
        return
    try:
        parsed = json.loads(old)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than this stack parses
        parsed = None
    if isinstance(parsed, (dict, list)):
        _check_json(json.loads(new), parsed)
    else:
        assert kept_in_order(new, old)


def _check_invariants(out: list[BaseMessage], msgs: list[BaseMessage]) -> None:
    # 1: same shape; everything but text identical; protected messages identical.
    assert [(type(m), m.id) for m in out] == [(type(m), m.id) for m in msgs]
    latest = max((i for i, m in enumerate(msgs) if isinstance(m, HumanMessage)), default=None)
    for i, (new, old) in enumerate(zip(out, msgs)):
        assert new.model_dump(exclude={"content"}) == old.model_dump(exclude={"content"})
        protected = (isinstance(old, (SystemMessage, AIMessage)) or i == latest
                     or old.response_metadata.get("specprefill") == "protect")
        if protected:
            assert new.content == old.content
        elif isinstance(old.content, str):
            _check_text(new.content, old.content)
        else:
            assert len(new.content) == len(old.content)
            for a, b in zip(new.content, old.content):
                assert {k: v for k, v in a.items() if k != "text"} == {k: v for k, v in b.items() if k != "text"}
                if b.get("type") == "text":
                    _check_text(a["text"], b["text"])
                else:
                    assert a == b


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(msgs=conversations())
def test_invariants_hold_on_random_conversations(draft, msgs: list[BaseMessage]) -> None:
    engine = MessageCompressor(SpecPrefillCompressor(draft, FAST, on_failure="raise"), on_failure="raise")
    snapshot = [m.model_copy(deep=True) for m in msgs]
    out, report = engine.compress(msgs)
    assert msgs == snapshot  # the input is never mutated
    assert report.failure is None and report.compressed_tokens <= report.original_tokens
    _check_invariants(out, msgs)
    # 3: deterministic, with or without the memo, in a fresh compressor.
    again, reused = engine.compress(msgs)
    fresh, _ = MessageCompressor(SpecPrefillCompressor(draft, FAST, on_failure="raise"), memo_size=0).compress(msgs)
    assert [m.content for m in again] == [m.content for m in out] == [m.content for m in fresh]
    assert reused.calls == 0 and reused.groups_reused == report.groups


@settings(max_examples=15, deadline=None, derandomize=True)
@given(msgs=conversations(), older=st.booleans())
def test_policy_options_keep_the_invariants_without_a_model(msgs: list[BaseMessage], older: bool) -> None:
    """With a stand-in compressor that keeps every other line, over more policies, quickly."""
    from specprefill_agents import CompressionResult, CompressionStats

    class HalfLines:
        def compress_segments(self, segments, query=None, **kw):
            out = []
            for s in segments:
                lines = s.text.split("\n")
                text = "\n# [...]\n".join(lines[::2]) if s.may_compress and len(lines) > 2 else s.text
                out.append(type(s)(text, s.role, s.compressible, s.protected, s.id, s.kind))
            stats = CompressionStats(0, 0, "none", 0, False, len(out), 0)
            return CompressionResult(tuple(out), tuple(() for _ in out), stats)

    policy = MessagePolicy(older_human=older, json_value_min_chars=50)
    out, _ = MessageCompressor(HalfLines(), policy=policy, token_counter=len).compress(msgs)
    _check_invariants(out, msgs)
