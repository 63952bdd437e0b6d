"""An agent loop whose tools read real files, its tool outputs compressed at every step.

Offline: the target is a scripted tool-calling chat model (no API key, no network) that
reads parts of the installed Python standard library, then answers from what it was
shown.  ``SpecPrefillMiddleware`` compresses every tool output with the embedded
SmolLM2-135M draft before the model sees it; the agent's state keeps the originals.
Each model step prints its compression stats.

    python examples/agent_loop.py [--question Q] [--keep 0.25] [--draft embedded|HUB_ID|DIR|FILE.gguf]
                                  [--service http://127.0.0.1:8765]   # a running `specprefill serve`

Swap ``ScriptedTarget()`` for any chat model (``init_chat_model("openai:gpt-4.1-mini")``...).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from specprefill_agents import SpecPrefillCompressor
from specprefill_agents.service import RemoteCompressor

from langchain_specprefill import SpecPrefillCallbackHandler, SpecPrefillMiddleware

STDLIB = Path(textwrap.__file__).parent


@tool
def read_file(path: str, start: int = 1, lines: int = 60) -> str:
    """Read `lines` lines of a Python standard-library file, from line `start` (1-based)."""
    text = (STDLIB / path).read_text(encoding="utf-8").splitlines()
    chunk = text[start - 1 : start - 1 + lines]
    return "\n".join(f"{start + i:4d}  {line}" for i, line in enumerate(chunk))


@tool
def grep(path: str, pattern: str, context: int = 2) -> str:
    """Lines of a standard-library file matching a regex, with `context` lines around each."""
    text = (STDLIB / path).read_text(encoding="utf-8").splitlines()
    hits = [i for i, line in enumerate(text) if re.search(pattern, line)]
    keep = sorted({j for i in hits for j in range(max(0, i - context), min(len(text), i + context + 1))})
    return "\n".join(f"{j + 1:4d}  {text[j]}" for j in keep) or "no match"


PLAN = [
    ("read_file", {"path": "textwrap.py", "start": 1, "lines": 40}),
    ("read_file", {"path": "textwrap.py", "start": 41, "lines": 40}),
    ("grep", {"path": "textwrap.py", "pattern": "max_lines", "context": 1}),
]


class ScriptedTarget(BaseChatModel):
    """Stands in for the target LLM: follows PLAN, then answers from the tool outputs it saw."""

    keyword: str = "max_lines"

    @property
    def _llm_type(self) -> str:
        return "scripted-target"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        seen = [m for m in messages if isinstance(m, ToolMessage)]
        if len(seen) < len(PLAN):
            name, args = PLAN[len(seen)]
            reply = AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call_{len(seen)}"}])
        else:
            evidence = [line.strip() for m in seen for line in m.text.splitlines() if self.keyword in line]
            found = "\n  ".join(dict.fromkeys(evidence)) or "(nothing about it survived compression)"
            reply = AIMessage(f"Lines about {self.keyword} in what I was shown:\n  {found}")
        return ChatResult(generations=[ChatGeneration(message=reply)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="What does the max_lines option of textwrap.TextWrapper do?")
    parser.add_argument("--keep", type=float, default=0.25, help="keep ratio for tool outputs")
    parser.add_argument("--draft", default="embedded", help="draft model: embedded, hub id, directory or .gguf")
    parser.add_argument("--service", metavar="URL", help="use the draft service at URL instead of a draft in-process")
    args = parser.parse_args(argv)

    compressor = RemoteCompressor(args.service) if args.service else SpecPrefillCompressor(args.draft)
    middleware = SpecPrefillMiddleware(compressor, keep_ratio=args.keep)
    agent = create_agent(ScriptedTarget(), tools=[read_file, grep], middleware=[middleware],
                         system_prompt="Answer from the files you read. Cite line numbers.")
    stats = SpecPrefillCallbackHandler()
    print(f"question: {args.question}\n")
    step, state = 0, None
    for state in agent.stream({"messages": [HumanMessage(args.question)]}, config={"callbacks": [stats]},
                              stream_mode="values"):
        last = state["messages"][-1]
        if isinstance(last, AIMessage):
            step += 1
            e = stats.events[-1]
            calls = ", ".join(f"{c['name']}({c['args'].get('path')})" for c in last.tool_calls) or "answer"
            print(f"step {step}: context {e['original_tokens']:5d} -> {e['compressed_tokens']:5d} tokens "
                  f"(saved {e['saved_tokens']}), groups {e['groups']} ({e['groups_reused']} reused), "
                  f"draft tokens {e['draft_tokens_forwarded']} forwarded / {e['draft_tokens_reused']} reused, "
                  f"scoring {e['scoring_seconds']:.2f}s -> {calls}")
    assert state is not None
    kept = sum(len(m.text) for m in state["messages"] if isinstance(m, ToolMessage))
    total = stats.summary()
    print(f"\nstate keeps the original tool outputs ({kept} characters); "
          f"saved {total['saved_tokens']} prompt tokens over {total['compressions']} model calls "
          f"(counted with {stats.events[-1]['counted_with']})\n")
    print(state["messages"][-1].text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
