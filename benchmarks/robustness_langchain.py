"""The LangChain part of the robustness report: one hostile tool output through ``SpecPrefillLLM``."""

from __future__ import annotations

import json
import warnings
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, ValidationError

from langchain_specprefill import SpecPrefillLLM
from specprefill_agents import CompressionConfig, DraftModel, SpecPrefillCompressor, SpecPrefillError
from specprefill_agents.testing import kept_in_order


class _Recording(BaseChatModel):
    received: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.received.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])


def run_conversation(draft: DraftModel, config: CompressionConfig, text: str, keep_ratio: float | None,
                     calls: int) -> str:
    """Outcome of one agent step whose ``calls`` tool outputs are ``text``."""
    msgs: list[BaseMessage] = [SystemMessage("Answer from the tools."), HumanMessage("Which port?")]
    for n in range(calls):
        msgs += [AIMessage("", tool_calls=[{"name": "read", "args": {"blob": text[:2000]}, "id": f"c{n}"}]),
                 ToolMessage(text, tool_call_id=f"c{n}", id=f"t{n}")]
    inner = _Recording()
    try:
        llm = SpecPrefillLLM(inner=inner, compressor=SpecPrefillCompressor(draft, config), keep_ratio=keep_ratio)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            llm.invoke(msgs)
    except (SpecPrefillError, ValidationError):
        return "typed error"
    except Exception as exc:  # the report counts it
        return f"crash: {type(exc).__name__}: {str(exc)[:80]}"
    got = inner.received[0]
    if [(type(m), m.id) for m in got] != [(type(m), m.id) for m in msgs]:
        return "corruption: message count, order, types or ids changed"
    for new, old in zip(got, msgs):
        if not isinstance(old, ToolMessage):
            if new.content != old.content or getattr(new, "tool_calls", None) != getattr(old, "tool_calls", None):
                return "corruption: a protected message changed"
        elif new.content != old.content and not _json_kept(str(new.content), str(old.content)):
            return "corruption: a tool output's kept text is not in order, or its JSON broke"
    changed = any(n.content != o.content for n, o in zip(got, msgs))
    return "compressed" if changed else "pass-through"


def _json_kept(new: str, old: str) -> bool:
    try:
        parsed = json.loads(old)
    except (ValueError, RecursionError):
        return kept_in_order(new, old)
    if not isinstance(parsed, (dict, list)):
        return kept_in_order(new, old)
    try:
        json.loads(new)
    except ValueError:
        return False
    return True
