"""Scoring time with 1 vs 2 (or more) torch threads, on an idle core and with another process
holding one core busy: what ``DraftConfig(num_threads=None)`` should pick.

One process, the embedded draft in fp32 (the dtype of CPUs without AMX), caches off, each
configuration run ``--repeats`` times interleaved (busy/idle x thread counts), median reported.

    .venv/bin/python benchmarks/bench_threads.py --out benchmarks/results/threads_cpu_epyc.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_agent_loop import machine_info
from specprefill_agents import CacheConfig, DraftConfig, SpecPrefillCompressor
from specprefill_agents.draft import load_draft

BUSY = "while True: pass"


def _context(draft: Any, tokens: int) -> str:
    source = Path(textwrap.__file__).read_text(encoding="utf-8")
    ids = draft.tokenizer(source, add_special_tokens=False)["input_ids"][:tokens]
    return str(draft.tokenizer.decode(ids))


def _time_once(comp: SpecPrefillCompressor, text: str, threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    comp.compress(text, query="What does the max_lines option do?", keep_ratio=0.25)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = _loadavg()
    draft = load_draft(DraftConfig(device="cpu", dtype="float32", num_threads=1))
    comp = SpecPrefillCompressor(draft, cache=CacheConfig(kv_cache_bytes=0, score_cache_entries=0), on_failure="raise")
    text = _context(draft, args.tokens)
    _time_once(comp, text, 1)  # warm-up
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
            try:
                time.sleep(0.5 if busy else 0.0)
                for threads in args.threads:
                    key = f"{'busy' if busy else 'idle'}-{threads}"
                    times.setdefault(key, []).append(round(_time_once(comp, text, threads), 3))
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    rows = {key: {"median_s": round(statistics.median(v), 3), "runs_s": v} for key, v in times.items()}
    loads = {"load_average_start": load_start, "load_average_end": _loadavg()}
    return {"args": vars(args), "machine": {**machine_info(), **loads}, "rows": rows}


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _loads(machine: dict[str, Any]) -> str:
    keys = ("load_average_start", "load_average_end")
    return ", ".join(f"{key.rsplit('_', 1)[-1]} {machine[key]}" for key in keys if key in machine)


def markdown(result: dict[str, Any]) -> str:
    m, a = result["machine"], result["args"]
    lines = [
        f"# Scoring time vs torch threads ({a['tokens']} draft tokens, fp32, caches off)",
        "",
        f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), torch {m['torch']}, transformers "
        f"{m['transformers']}, {m['date']}; load average (1, 5, 15 min) {_loads(m)} (the machine is "
        "shared with other work). *busy*: a second process spins on one core (`while True: pass`). "
        f"Median of {a['repeats']} interleaved runs.",
        "",
        "| core state | threads | median s | runs s |",
        "|---|---|---|---|",
    ]
    for key, row in result["rows"].items():
        state, threads = key.split("-")
        lines.append(f"| {state} | {threads} | {row['median_s']} | {', '.join(map(str, row['runs_s']))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/threads_cpu_epyc.json")
    args = parser.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
