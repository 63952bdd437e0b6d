"""bench_expand without a draft: the agent history it builds and the scripted model's choice."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from benchmarks.bench_expand import ScriptedAgentModel, history
from benchmarks.tasks import FAMILIES, word_counter


def test_history_hands_every_context_segment_in_as_a_tool_output() -> None:
    task = FAMILIES["code_qa"](2000, 0, word_counter)
    system, messages = history(task)
    tools = [m for m in messages if isinstance(m, ToolMessage)]
    assert system == next(text for role, text in task.segments if role == "system")
    assert isinstance(messages[0], HumanMessage) and messages[0].text == task.question
    assert [m.text for m in tools] == [text for role, text in task.segments if role == "tool"]
    calls = [c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    assert calls == [m.tool_call_id for m in tools]


def test_scripted_model_expands_only_when_evidence_is_missing() -> None:
    model = ScriptedAgentModel(evidence=("the code is 42",), question="What is the code?", seen=[])
    shown = [HumanMessage("q"), AIMessage("", tool_calls=[{"name": "read", "args": {}, "id": "r"}])]
    missing = model.invoke([*shown, ToolMessage("nothing here", tool_call_id="r")])
    assert missing.tool_calls[0]["name"] == "expand_context"
    assert missing.tool_calls[0]["args"] == {"query": "What is the code?"}
    found = model.invoke([SystemMessage("s"), *shown, ToolMessage("so the code is 42.", tool_call_id="r")])
    assert found.text == "answer" and not found.tool_calls
    after = model.invoke(
        [*shown, ToolMessage("nothing", tool_call_id="r"), missing, ToolMessage("still nothing", tool_call_id="expand")]
    )
    assert after.text == "answer"  # one expansion at most
