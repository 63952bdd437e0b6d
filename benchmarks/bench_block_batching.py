"""Shared query-block forwards, measured alone: B agents whose context KV is already cached each
score a new question (the per-step cost a KV cache cannot remove: the query block, the lookahead
decode steps and the fold of their attention onto the context).

Per batch size B, side by side in one run (rounds alternate, best round per mode):

* ``sequential``: the B calls one after another on one thread;
* ``threads``: the B calls on B threads at once, each with its own forwards;
* ``shared``: the B calls on B threads seated at one :class:`BlockBatcher`, their blocks and
  lookahead steps as the rows of shared forwards (on a CPU, one batch per free core at a time);
* ``shared_one_lane``: the same with one batch at a time.

    python -m benchmarks.bench_block_batching [--draft embedded] [--sizes 1 2 4 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_scoring import machine_info
from specprefill_agents import DraftConfig, KVPrefixCache, load_draft
from specprefill_agents.config import ScoringConfig
from specprefill_agents.scoring import DraftScorer
from specprefill_agents.threads import usable_cpus
from specprefill_agents.scoring.batching import BlockBatcher

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["textwrap", "shlex", "fnmatch", "glob", "heapq", "bisect", "base64", "calendar"]


def _calls(scorer: DraftScorer, n: int, context_tokens: int) -> list[tuple[list[int], list[int]]]:
    tok = scorer.draft.tokenizer
    out = []
    for i in range(n):
        source = inspect.getsource(__import__(MODULES[i % len(MODULES)]))
        ids = tok(source, add_special_tokens=False)["input_ids"][:context_tokens]
        question = tok(f"\n\nQuestion: which function of {MODULES[i % len(MODULES)]} should I call first?\nAnswer:",
                       add_special_tokens=False)["input_ids"]
        out.append((ids, question))
    return out


MODES = ("sequential", "threads", "shared_one_lane", "shared")


def measure(scorer: DraftScorer, calls: list[tuple[list[int], list[int]]], rounds: int) -> dict[str, Any]:
    """One row: the calls' contexts cached first, then each mode timed (alternating rounds, the best kept)."""
    for ctx, query in calls:  # the contexts' KV into the cache: every timed call restores it
        scorer.score(ctx, query)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for mode in MODES:
            seconds = _run(mode, scorer, calls)
            best[mode] = min(best.get(mode, seconds), seconds)
    size = len(calls)
    return {
        "calls": size,
        **{f"{m}_ms_per_call": round(1000 * s / size, 1) for m, s in best.items()},
        "shared_over_sequential": round(best["sequential"] / best["shared"], 2),
        "shared_over_threads": round(best["threads"] / best["shared"], 2),
    }


def _run(mode: str, scorer: DraftScorer, calls: list[tuple[list[int], list[int]]]) -> float:
    t0 = time.perf_counter()
    if mode == "sequential":
        for ctx, query in calls:
            scorer.score(ctx, query)
        return time.perf_counter() - t0
    lanes = 1 if mode == "shared_one_lane" else None  # None: one batch per free core on a CPU
    batcher = BlockBatcher(scorer.draft.model, scorer.draft.stop_token_ids, lanes=lanes) if "shared" in mode else None
    seats = batcher.seats(len(calls)) if batcher is not None else [None] * len(calls)

    def work(i: int) -> None:
        seat = seats[i]
        if seat is None:
            scorer.score(*calls[i])
            return
        with seat:
            scorer.score(*calls[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def bench(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    draft = load_draft(DraftConfig(model=args.draft, device=args.device))
    scorer = DraftScorer(draft, ScoringConfig(lookahead=args.lookahead), KVPrefixCache(4 << 30))
    info, load = machine_info(), os.getloadavg()[0]
    rows = []
    for size in args.sizes:
        rows.append(measure(scorer, _calls(scorer, size, args.context), args.rounds))
        print(json.dumps(rows[-1]), flush=True)
    return {
        "machine": {**info, "cores": usable_cpus(),
                    "device": str(draft.device),
                    "dtype": str(draft.dtype), "load_average_before_after": [round(load, 2),
                                                                             round(os.getloadavg()[0], 2)]},
        "draft": draft.name, "torch_threads": args.threads, "context_tokens": args.context,
        "lookahead": args.lookahead, "rounds": args.rounds, "rows": rows,
    }


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of :func:`measure` rows."""
    return ["| calls at once | " + " | ".join(f"{m} ms/call" for m in MODES)
            + " | shared: speed-up over sequential | over threads |", "|---" * (len(MODES) + 3) + "|",
            *("| " + " | ".join(str(x) for x in [x["calls"], *(x[f"{m}_ms_per_call"] for m in MODES)])
              + f" | {x['shared_over_sequential']}x | {x['shared_over_threads']}x |" for x in rows)]


def _markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    return (f"# Shared query-block forwards ({m['cpu_model']}, {m['cores']} cores, {m['device']}, {m['dtype']})\n\n"
            f"Draft `{r['draft']}`; each call: a {r['context_tokens']}-token context whose KV is cached, a new "
            f"question, {r['lookahead']} lookahead tokens; torch threads {r['torch_threads']}; best of "
            f"{r['rounds']} alternating rounds; 1-minute load average {m['load_average_before_after'][0]} before, "
            f"{m['load_average_before_after'][1]} after.\n\n"
            "`sequential`: one call after another on one thread; `threads`: the calls on as many threads, each "
            "with its own forwards; `shared`: the same threads seated at one block batcher (query blocks and "
            "lookahead steps as the rows of shared forwards, one batch per free core at a time); "
            "`shared_one_lane`: one batch at a time.\n\n" + "\n".join(table(r["rows"])) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draft", default="embedded")
    p.add_argument("--device", default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--context", type=int, default=1000, help="context tokens per call (one window)")
    p.add_argument("--lookahead", type=int, default=ScoringConfig().lookahead)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/block_batching_cpu.json"))
    args = p.parse_args()
    result = bench(args)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(result))


if __name__ == "__main__":
    main()
