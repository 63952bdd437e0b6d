"""The ``expand_context`` tool: the agent gets back text that compression cut from its context.

Gap markers in compressed tool outputs carry references (``[... 212 tokens, ref 3f2a1]``).  The
tool answers from the agent's own state: it plans the state's messages as the middleware does,
and looks each compressible text up in the :class:`~specprefill_agents.GapStore` under that
text's own namespace (:func:`~specprefill_agents.content_namespace`), so only text this
conversation holds can come back; an unknown or forged reference gets an error message.  Its
outputs are never compressed (:func:`protect_expansions`).
"""

from collections.abc import Sequence
from typing import Any

from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool, tool

from specprefill_agents import (
    GapNotFoundError,
    GapStore,
    InputError,
    OmittedText,
    content_namespace,
    expand_ref,
    search_omitted,
)

from .engine import MessageCompressor
from .policy import MessagePolicy, plan_messages

__all__ = ["TOOL_NAME", "make_expand_tool", "conversation_omitted", "expansion_indices", "protect_expansions"]

TOOL_NAME = "expand_context"

DESCRIPTION = (
    "Get back text that was cut from earlier tool outputs to save space. Each cut is marked like "
    "'[... 212 tokens, ref 3f2a1]'. Call it when the answer may be in a cut: with ref='3f2a1' for that "
    "cut's original text (add search='word' for only its lines mentioning the word), or with "
    "query='what you are looking for' to search everything that was cut when you do not know where it is."
)


def conversation_omitted(
    messages: Sequence[BaseMessage], policy: MessagePolicy, store: GapStore
) -> tuple[list[OmittedText], list[str]]:
    """What compressions of ``messages``' own texts left out, as ``store`` holds it, and the rest of
    those texts (what the model was shown of them: it steers a query's feedback)."""
    plan = plan_messages(messages, policy)
    seen: set[str] = set()
    omitted: list[OmittedText] = []
    kept: list[str] = []
    for segment in plan.segments:
        namespace = content_namespace(segment.text)
        if segment.may_compress and namespace not in seen:
            seen.add(namespace)
            held = store.omitted(namespace)
            omitted.extend(held)
            if held:
                kept.append(_without(segment.text, [o.text for o in held]))
    return omitted, kept


def _without(text: str, cuts: list[str]) -> str:
    for cut in cuts:
        text = text.replace(cut, "\n", 1)
    return text


def _answer(
    omitted: list[OmittedText],
    kept: list[str],
    ref: str | None,
    search: str | None,
    query: str | None,
    max_tokens: int,
    counter: Any,
) -> tuple[str, int]:
    """The tool message for one call, and the tokens of original text it carries."""
    try:
        if ref:
            found = expand_ref(omitted, ref, search, counter)
            if not found.parts:
                return f"No line of the text cut at ref {ref} mentions {search!r}.", 0
            if len(found.parts) == 1:
                return f"Original text cut at ref {found.parts[0][0]}:\n{found.parts[0][1]}", found.tokens
            return found.to_text(), found.tokens
        if query:
            hits = search_omitted(omitted, query, max_tokens, counter, seen=kept)
            if not hits.parts:
                return "Nothing that was cut matches the query.", 0
            return f"Cut text matching the query, by reference:\n{hits.to_text()}", hits.tokens
    except (GapNotFoundError, InputError) as exc:
        return f"Error: {exc}", 0
    return "Error: give ref='...' (from a marker such as '[... 212 tokens, ref 3f2a1]') or query='...'.", 0


def make_expand_tool(engine: MessageCompressor, store: GapStore, max_tokens: int) -> BaseTool:
    """The ``expand_context`` tool over ``store`` (which ``engine`` fills); ``max_tokens`` caps what a
    query returns (counted with the engine's counter)."""

    @tool(TOOL_NAME, description=DESCRIPTION)
    def expand_context(
        runtime: ToolRuntime, ref: str | None = None, search: str | None = None, query: str | None = None
    ) -> str:
        omitted, kept = conversation_omitted(runtime.state["messages"], engine.policy, store)
        return _answer(omitted, kept, ref, search, query, max_tokens, engine.counter)[0]

    return expand_context


def expansion_indices(messages: Sequence[BaseMessage]) -> list[int]:
    """Indices of the tool messages that answer an ``expand_context`` call."""
    calls = {
        c.get("id") for m in messages if isinstance(m, AIMessage) for c in m.tool_calls if c.get("name") == TOOL_NAME
    }
    return [
        i
        for i, m in enumerate(messages)
        if isinstance(m, ToolMessage) and (m.name == TOOL_NAME or m.tool_call_id in calls)
    ]


def protect_expansions(messages: Sequence[BaseMessage], policy: MessagePolicy) -> tuple[list[BaseMessage], list[int]]:
    """``messages`` with every expansion output marked ``"protect"`` (never compressed), and their indices."""
    indices = expansion_indices(messages)
    out = list(messages)
    for i in indices:
        metadata = {**(out[i].response_metadata or {}), policy.marker_key: "protect"}
        out[i] = out[i].model_copy(update={"response_metadata": metadata})
    return out, indices
