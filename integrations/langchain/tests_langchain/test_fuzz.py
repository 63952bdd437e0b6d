"""Fuzzing the LangChain wrapper and middleware with hostile conversations: random unicode and
control characters, deep and wide JSON, huge lines, content blocks, random budgets.  The step
always completes (typed errors only for bad settings, at construction), the inner model gets the
same messages in the same order with tool calls intact, and every changed text is kept spans."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import ValidationError
from specprefill_agents import ConfigError, SpecPrefillCompressor

from langchain_specprefill import SpecPrefillLLM

from .conftest import FAST
from .fakes import RecordingChatModel
from .test_properties import IMAGE, _check_invariants

pytestmark = pytest.mark.slow

_SETTINGS = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_hostile_text = st.one_of(
    st.text(min_size=0, max_size=1500),
    st.text(alphabet=st.characters(categories=["Cc", "Zs", "So", "Lo"]), min_size=100, max_size=1500),
    st.builds(lambda n: "[" * n + "]" * n, st.integers(500, 3000)),  # deeper than json's recursion limit
    st.builds(lambda n: json.dumps({f"k{i}": {"v": [i, str(i) * 3]} for i in range(n)}), st.integers(1, 400)),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "🙂", "\n", "=", "\x00"]), st.integers(1, 20_000)),
    st.builds(lambda words: " ".join(words), st.lists(st.sampled_from(
        ["2026-12-01T12:00:00Z", "x=1;", "ERROR", "the", "value", "\t", "{}", "}{", "\"", "\\"]),
        min_size=50, max_size=600)),
)
_content = st.one_of(_hostile_text, _hostile_text.map(lambda t: [{"type": "text", "text": t}, IMAGE]),
                     _hostile_text.map(lambda t: [{"type": "mystery", "data": t[:50]}, {"type": "text", "text": t}]))


@st.composite
def _conversation(draw: st.DrawFn) -> list[BaseMessage]:
    msgs: list[BaseMessage] = [SystemMessage(draw(st.text(max_size=60)) or "sys"), HumanMessage("What failed?")]
    for n in range(draw(st.integers(1, 3))):
        args = {"q": draw(st.text(max_size=40)), "blob": draw(_hostile_text)[:3000]}
        msgs.append(AIMessage("", tool_calls=[{"name": "read", "args": args, "id": f"c{n}"}]))
        msgs.append(ToolMessage(draw(_content), tool_call_id=f"c{n}", name="read", id=f"t{n}"))
    return msgs


_budget = st.one_of(st.none(), st.floats(0.01, 1.0), st.floats(0.01, 0.3), st.sampled_from([-1.0, 2.0, 0, True, "x"]))
_cap = st.one_of(st.none(), st.none(), st.integers(1, 2000), st.sampled_from([0, -5, "x"]))


@_SETTINGS
@given(msgs=_conversation(), keep_ratio=_budget, budget_tokens=_cap)
def test_the_wrapper_completes_every_step_and_keeps_the_invariants(draft, msgs: list[BaseMessage],
                                                                    keep_ratio: object, budget_tokens: object) -> None:
    inner = RecordingChatModel()
    try:
        llm = SpecPrefillLLM(inner=inner, compressor=SpecPrefillCompressor(draft, FAST, on_failure="warn"),
                             keep_ratio=keep_ratio, budget_tokens=budget_tokens, on_failure="warn")
    except (ConfigError, ValidationError):
        event("refused settings")
        return  # bad settings are refused up front, with a typed error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a fallback warns; it must not raise
        reply = llm.invoke(msgs)
    assert isinstance(reply, AIMessage)
    report = reply.response_metadata.get("specprefill", {})
    event("passed through" if report.get("failure") else "compressed" if report.get("compressed_tokens", 0)
          < report.get("original_tokens", 0) else "unchanged")
    assert len(inner.calls) == 1
    _check_invariants(inner.calls[0]["messages"], msgs)
