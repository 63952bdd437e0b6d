"""A LlamaIndex FunctionAgent whose tools read real files, its tool outputs compressed at every step.

Offline: the LLM is a scripted function-calling stand-in (no API key, no network) that reads
parts of the installed Python standard library, then answers from what it was shown.
``SpecPrefillLLM`` wraps it: every tool output is compressed by the embedded SmolLM2-135M
draft before the model sees it, and each step prints its compression stats (collected from
LlamaIndex's instrumentation by ``SpecPrefillStats``).

    python examples/llamaindex_agent.py [--question Q] [--keep 0.25] [--draft embedded|HUB_ID|DIR|FILE.gguf]

Swap the stand-in for any function-calling LLM (``OpenAI(model="gpt-4.1-mini")``, ``Ollama(...)``...).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from llama_index.llms.specprefill import SpecPrefillLLM
from llama_index.postprocessor.specprefill import SpecPrefillStats
from specprefill_agents import SpecPrefillCompressor

STDLIB = Path(textwrap.__file__).parent


def read_file(path: str, start: int = 1, lines: int = 60) -> str:
    """Read `lines` lines of a Python standard-library file, from line `start` (1-based)."""
    text = (STDLIB / path).read_text(encoding="utf-8").splitlines()
    chunk = text[start - 1 : start - 1 + lines]
    return "\n".join(f"{start + i:4d}  {line}" for i, line in enumerate(chunk))


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


def scripted_target(keyword: str) -> MockFunctionCallingLLM:
    """Stands in for the LLM: follows PLAN, then answers from the tool outputs it saw."""

    def respond(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        seen = [m for m in messages if m.role == MessageRole.TOOL]
        if len(seen) < len(PLAN):
            name, args = PLAN[len(seen)]
            return ChatMessage(
                role="assistant",
                blocks=[ToolCallBlock(tool_call_id=f"call_{len(seen)}", tool_name=name, tool_kwargs=args)],
            )
        evidence = [line.strip() for m in seen for line in (m.content or "").splitlines() if keyword in line]
        found = "\n  ".join(dict.fromkeys(evidence)) or "(nothing about it survived compression)"
        return ChatMessage(role="assistant", content=f"Lines about {keyword} in what I was shown:\n  {found}")

    return MockFunctionCallingLLM(response_generator=respond)


async def run(agent: FunctionAgent, question: str) -> str:
    return str(await agent.run(user_msg=question))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="What does the max_lines option of textwrap.TextWrapper do?")
    parser.add_argument("--keep", type=float, default=0.25, help="keep ratio for tool outputs")
    parser.add_argument("--draft", default="embedded", help="draft model: embedded, hub id, directory or .gguf")
    args = parser.parse_args(argv)

    stats = SpecPrefillStats()
    get_dispatcher().add_event_handler(stats)
    llm = SpecPrefillLLM(scripted_target("max_lines"), SpecPrefillCompressor(args.draft), keep_ratio=args.keep)
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(read_file), FunctionTool.from_defaults(grep)],
        llm=llm,
        system_prompt="Answer from the files you read. Cite line numbers.",
    )
    print(f"question: {args.question}\n")
    answer = asyncio.run(run(agent, args.question))
    for step, e in enumerate(stats.events, 1):
        print(
            f"step {step}: context {e['original_tokens']:5d} -> {e['compressed_tokens']:5d} tokens "
            f"(saved {e['saved_tokens']}), groups {e['groups']} ({e['groups_reused']} reused), "
            f"draft tokens {e['draft_tokens_forwarded']} forwarded / {e['draft_tokens_reused']} reused, "
            f"scoring {e['scoring_seconds']:.2f}s"
        )
    total = stats.summary()
    print(
        f"\nsaved {total['saved_tokens']} prompt tokens over {total['compressions']} LLM calls "
        f"(counted with {stats.events[-1]['counted_with']})\n"
    )
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
