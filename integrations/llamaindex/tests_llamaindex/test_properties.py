"""Property test over random LlamaIndex conversations: the invariants the LangChain side enforces.

Same number, order and roles of messages; ``additional_kwargs`` (tool-call ids), tool-call
blocks, images, the system prompt, the latest user turn and protected messages unchanged;
every changed text is kept spans of the original in order, joined by gap markers.
"""

from __future__ import annotations

import inspect
import textwrap

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock, ToolCallBlock
from llama_index.llms.specprefill import ChatMessageCompressor
from specprefill_agents import SpecPrefillCompressor
from specprefill_agents.testing import kept_in_order

from .conftest import FAST

SOURCE = inspect.getsource(textwrap)


@st.composite
def snippets(draw: st.DrawFn) -> str:
    start = draw(st.integers(0, len(SOURCE) - 1500))
    return SOURCE[start : start + draw(st.integers(20, 1000))]


@st.composite
def conversations(draw: st.DrawFn) -> list[ChatMessage]:
    messages = []
    if draw(st.booleans()):
        messages.append(ChatMessage(role="system", content="Answer from the tools. " + draw(snippets())[:200]))
    n = 0
    for _ in range(draw(st.integers(1, 2))):
        messages.append(ChatMessage(role="user", content=draw(st.sampled_from(["What does dedent do?", "Why?"]))))
        for _ in range(draw(st.integers(1, 2))):
            n += 1
            call = ToolCallBlock(tool_call_id=f"call_{n}", tool_name="read", tool_kwargs={"line": draw(st.integers())})
            messages.append(ChatMessage(role="assistant", blocks=[TextBlock(text="Looking."), call]))
            blocks = [TextBlock(text=draw(snippets()))]
            if draw(st.booleans()):
                blocks.append(ImageBlock(url="https://example.com/plot.png"))
            extra = {"specprefill": "protect"} if draw(st.integers(0, 5)) == 0 else {}
            messages.append(
                ChatMessage(role="tool", blocks=blocks, additional_kwargs={"tool_call_id": f"call_{n}", **extra})
            )
    return messages


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(msgs=conversations())
def test_invariants_hold_on_random_conversations(draft, msgs: list[ChatMessage]) -> None:
    engine = ChatMessageCompressor(SpecPrefillCompressor(draft, FAST, on_failure="raise"), on_failure="raise")
    snapshot = [m.model_copy(deep=True) for m in msgs]
    out, report = engine.compress(msgs)
    assert msgs == snapshot and report.failure is None
    assert [m.role for m in out] == [m.role for m in msgs]
    latest = max(i for i, m in enumerate(msgs) if m.role == "user")
    for i, (new, old) in enumerate(zip(out, msgs)):
        assert new.additional_kwargs == old.additional_kwargs and len(new.blocks) == len(old.blocks)
        if old.role != "tool" or i == latest or old.additional_kwargs.get("specprefill") == "protect":
            assert new == old
            continue
        for a, b in zip(new.blocks, old.blocks):
            if isinstance(b, TextBlock):
                assert a.text == b.text or kept_in_order(a.text, b.text)
            else:
                assert a == b
    fresh, _ = ChatMessageCompressor(SpecPrefillCompressor(draft, FAST, on_failure="raise"), memo_size=0).compress(msgs)
    assert fresh == out  # deterministic, memo or not
