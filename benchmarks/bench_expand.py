"""Reversible compression in an agent loop: does the evidence reach the model, and at what cost?

Each instance of the retention suite (``benchmarks/tasks``) becomes a LangChain agent run:
the question, then the context as tool outputs (``read`` calls), through
``SpecPrefillMiddleware(expandable=True)`` (the embedded SmolLM2-135M draft, reference markers
on).  A scripted tool-calling model reads what it was shown; when any evidence string is
missing it calls ``expand_context(query=<the question>)`` once, then answers.  Measured per
keep ratio: the share of instances whose evidence all reached the model (compressed only, and
compressed + that one expansion) and the prompt tokens it took (the compressed context plus the
expansion) against the full context, all counted with the draft tokenizer.

The draft's scores are kept in a score store (``benchmarks/score_store.py``): each instance is
scored once, whatever the keep ratio or expansion budget.  Usage::

    python benchmarks/bench_expand.py --lengths 2048 4096 --n 2 1 --store /tmp/expand_scores \\
        --out benchmarks/results/expand_cpu_epyc.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

from benchmarks.bench_retention import build_tasks, log, quiet_offline, token_counter
from benchmarks.bench_scoring import machine_info
from benchmarks.score_store import StoredScoresCompressor
from benchmarks.tasks import FAMILIES, TaskInstance
from langchain_specprefill import SpecPrefillMiddleware
from specprefill_agents import CacheConfig, CompressionConfig, DraftConfig, load_draft


class ScriptedAgentModel(BaseChatModel):
    """Answers when every evidence string is in what it was shown; else asks expand_context once."""

    evidence: tuple[str, ...] = ()
    question: str = ""
    seen: list[list[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-evidence-check"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.seen.append(list(messages))
        shown = "\n".join(m.text for m in messages if isinstance(m, ToolMessage))
        asked = any(
            isinstance(m, AIMessage) and any(c["name"] == "expand_context" for c in m.tool_calls) for m in messages
        )
        if asked or all(e in shown for e in self.evidence):
            reply = AIMessage("answer")
        else:
            reply = AIMessage(
                "", tool_calls=[{"name": "expand_context", "args": {"query": self.question}, "id": "expand"}]
            )
        return ChatResult(generations=[ChatGeneration(message=reply)])


@tool
def read(part: int) -> str:
    """Read part `part` of the material."""
    return ""  # the benchmark hands the outputs in; the agent never calls it


def history(task: TaskInstance) -> tuple[str | None, list[BaseMessage]]:
    """The system prompt, and the question followed by the context as tool outputs."""
    system = next((text for role, text in task.segments if role == "system"), None)
    messages: list[BaseMessage] = [HumanMessage(task.question)]
    note = ""
    for k, (role, text) in enumerate(task.segments):
        if role == "assistant":
            note = text
        elif role != "system":
            messages += [
                AIMessage(note, tool_calls=[{"name": "read", "args": {"part": k}, "id": f"read{k}"}]),
                ToolMessage(text, tool_call_id=f"read{k}", name="read"),
            ]
            note = ""
    return system, messages


def run_one(task: TaskInstance, compressor: Any, counter: Any, ratio: float, expand_tokens: int) -> dict[str, Any]:
    system, messages = history(task)
    model = ScriptedAgentModel(evidence=task.evidence, question=task.question, seen=[])
    middleware = SpecPrefillMiddleware(
        compressor, keep_ratio=ratio, expandable=True, expand_tokens=expand_tokens, on_failure="raise"
    )
    t0 = time.perf_counter()
    create_agent(model, tools=[read], system_prompt=system, middleware=[middleware]).invoke({"messages": messages})
    first, last = model.seen[0], model.seen[-1]
    compressed = [m.text for m in first if isinstance(m, ToolMessage)]
    expansion = [m.text for m in last if isinstance(m, ToolMessage) and m.name == "expand_context"]
    shown, with_expansion = "\n".join(compressed), "\n".join(compressed + expansion)
    return {
        "family": task.family,
        "length": task.meta["length"],
        "seed": task.seed,
        "ratio": ratio,
        "expand_tokens": expand_tokens,
        "full_tokens": sum(counter(m.text) for m in messages if isinstance(m, ToolMessage)),
        "compressed_tokens": sum(counter(t) for t in compressed),
        "expansion_tokens": sum(counter(t) for t in expansion),
        "expanded": bool(expansion),
        "reached_compressed": all(e in shown for e in task.evidence),
        "reached_expanded": all(e in with_expansion for e in task.evidence),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[float, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["ratio"], r["expand_tokens"]), []).append(r)
    out = []
    for (ratio, budget), rs in sorted(cells.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        full = sum(r["full_tokens"] for r in rs)
        out.append(
            {
                "ratio": ratio,
                "expand_tokens": budget,
                "n": len(rs),
                "reached_compressed": sum(r["reached_compressed"] for r in rs) / len(rs),
                "reached_expanded": sum(r["reached_expanded"] for r in rs) / len(rs),
                "expanded_share": sum(r["expanded"] for r in rs) / len(rs),
                "tokens_compressed_x_full": sum(r["compressed_tokens"] for r in rs) / full,
                "tokens_total_x_full": sum(r["compressed_tokens"] + r["expansion_tokens"] for r in rs) / full,
                "by_family": {
                    f: sum(r["reached_expanded"] for r in rs if r["family"] == f)
                    / max(sum(r["family"] == f for r in rs), 1)
                    for f in dict.fromkeys(r["family"] for r in rs)
                },
            }
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    m, a = result["machine"], result["args"]
    lines = [
        f"# Evidence reaching the model with one expansion ({m['cpu_model']})",
        "",
        f"{m['cpu_count']} cores, torch {m['torch']} ({a['threads']} thread), transformers {m['transformers']}, "
        f"{m['date']}; embedded SmolLM2-135M draft, reference markers on; families {', '.join(a['families'])}; "
        f"{a['n']} instances per family at lengths {a['lengths']} draft tokens, seed {a['seed']} "
        f"({result['instances']} instances). Tokens counted with the draft tokenizer; 'total' = compressed "
        f"context + the expansion's output, over the full context's tokens.",
        "",
        "| keep | expansion budget | reached, compressed only | reached, + one expansion | expanded | "
        "tokens compressed / full | tokens total / full |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        lines.append(
            f"| {s['ratio']:.0%} | {s['expand_tokens']} | {s['reached_compressed']:.2f} | "
            f"**{s['reached_expanded']:.2f}** | {s['expanded_share']:.2f} | "
            f"{s['tokens_compressed_x_full']:.3f} | **{s['tokens_total_x_full']:.3f}** |"
        )
    lines += [
        "",
        "Reached with one expansion, per family:",
        "",
        "| keep | budget | " + " | ".join(a["families"]) + " |",
        "|---" * (len(a["families"]) + 2) + "|",
    ]
    for s in result["summary"]:
        lines.append(
            f"| {s['ratio']:.0%} | {s['expand_tokens']} | "
            + " | ".join(f"{s['by_family'].get(f, float('nan')):.2f}" for f in a["families"])
            + " |"
        )
    return "\n".join(lines) + "\n"


def tasks_of(args: argparse.Namespace, counter: Any) -> list[TaskInstance]:
    """The suite's instances: ``args.n[i]`` per family at ``args.lengths[i]`` (one ``n`` for all lengths)."""
    ns = args.n if len(args.n) == len(args.lengths) else args.n[:1] * len(args.lengths)
    return [
        task
        for length, n in zip(args.lengths, ns)
        for task in build_tasks(argparse.Namespace(**{**vars(args), "lengths": [length], "n": n}), counter)
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096], help="context size in draft tokens")
    p.add_argument(
        "--n", type=int, nargs="+", default=[2], help="instances per family and length (one per length, or one for all)"
    )
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.10])
    p.add_argument("--expand-tokens", type=int, nargs="+", default=[256, 512], help="expansion budgets to compare")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--store", default=None, help="folder of draft scores reused across runs")
    p.add_argument("--out", default="benchmarks/results/expand_cpu.json", help="JSON; .md beside it")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_offline(args.threads)
    draft = load_draft(DraftConfig())
    counter = token_counter(draft.tokenizer)
    store = Path(args.store) if args.store else Path(args.out).with_suffix(".scores")
    store.mkdir(parents=True, exist_ok=True)
    compressor = StoredScoresCompressor(
        draft, CompressionConfig(), cache=CacheConfig(kv_cache_bytes=0), on_failure="raise", store=store
    )
    tasks = tasks_of(args, counter)
    rows = []
    for k, task in enumerate(tasks):
        for ratio in args.ratios:
            for budget in args.expand_tokens:
                rows.append(run_one(task, compressor, counter, ratio, budget))
        log(
            f"[{k + 1}/{len(tasks)}] {task.family} {task.meta['length']}: "
            + " ".join(
                f"{r['ratio']}/{r['expand_tokens']}={'Y' if r['reached_compressed'] else 'n'}"
                f"{'Y' if r['reached_expanded'] else 'n'}"
                for r in rows[-len(args.ratios) * len(args.expand_tokens) :]
            )
        )
    result = {
        "machine": machine_info(),
        "args": vars(args),
        "instances": len(tasks),
        "summary": summarise(rows),
        "rows": rows,
    }
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    log(markdown(result))


if __name__ == "__main__":
    main()
