"""Two drafts side by side: seconds per whole compression on the same RULER prompts.

Each prompt is compressed once by each draft (cold caches, keep 10%), the order flipping every
prompt, so both see the same load on a shared machine; the table gives the median seconds per
length and their ratio. Quality is measured separately (``bench_ruler.py --draft-variants``,
``bench_target.py --draft-variants``); this measures what a draft costs::

    python -m benchmarks.models fetch gemma-270m
    .venv/bin/python benchmarks/bench_drafts.py \
        --other gemma=~/.cache/specprefill-agents/bench-models/gemma-3-270m-q4_k_m.gguf \
        --out benchmarks/results/draft_gemma_cpu_epyc/cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks import ruler
from benchmarks.bench_retention import log, named_drafts, quiet_offline, token_counter
from benchmarks.bench_ruler import segments_of
from benchmarks.bench_scoring import machine_info
from specprefill_agents import CacheConfig, DraftConfig, DraftModel, SpecPrefillCompressor, load_draft
from specprefill_agents.draft import draft_cache_root


def seconds(compressor: SpecPrefillCompressor, inst: ruler.RulerInstance, counter: Any, keep: float) -> float:
    started = time.perf_counter()
    compressor.compress_segments(list(segments_of(inst)), inst.question, keep_ratio=keep, token_counter=counter)
    return time.perf_counter() - started


def run(drafts: dict[str, DraftModel], instances: list[ruler.RulerInstance], counter: Any,
        keep: float) -> list[dict[str, Any]]:
    cold = CacheConfig(kv_cache_bytes=0, score_cache_entries=0)
    compressors = {name: SpecPrefillCompressor(d, cache=cold, on_failure="raise") for name, d in drafts.items()}
    for compressor in compressors.values():  # warm-up: first-call costs are not a draft's
        seconds(compressor, instances[0], counter, keep)
    rows = []
    for k, inst in enumerate(instances):
        order = list(compressors) if k % 2 == 0 else list(reversed(compressors))
        took = {name: seconds(compressors[name], inst, counter, keep) for name in order}
        rows += [{"task": inst.task, "length": inst.length, "index": inst.index, "draft": name, "seconds": s,
                  "first": name == order[0]} for name, s in took.items()]
        log(f"[{k + 1}/{len(instances)}] {inst.task} {inst.length} #{inst.index}: "
            + " ".join(f"{name}={s:.2f}s" for name, s in took.items()))
    return rows


def summarise(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    out = []
    for length in sorted({r["length"] for r in rows}):
        med = {n: statistics.median(r["seconds"] for r in rows if r["length"] == length and r["draft"] == n)
               for n in names}
        by_prompt: dict[tuple[str, int], dict[str, float]] = {}
        for r in rows:
            if r["length"] == length:
                by_prompt.setdefault((r["task"], r["index"]), {})[r["draft"]] = r["seconds"]
        out.append({"length": length, "n": len(by_prompt), "median_s": med,
                    "ratio_median": {n: med[n] / med[names[0]] for n in names[1:]},
                    "ratio_of_pairs_median": {n: statistics.median(t[n] / t[names[0]] for t in by_prompt.values())
                                              for n in names[1:]}})
    return out


def markdown(result: dict[str, Any]) -> str:
    names = result["drafts"]
    m = result["machine"]
    lines = [f"# Drafts side by side: seconds per compression ({', '.join(names)})", "",
             f"{m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} thread(s)), "
             f"transformers {m['transformers']}, {m['date']}; load avg {m['load_avg_start'][0]:.1f} at start, "
             f"{m['load_avg_end'][0]:.1f} at the end (shared machine). RULER prompts "
             f"({', '.join(result['args']['tasks'])}, seed "
             f"{result['args']['seed']}, first {result['args']['n']} each), keep {result['args']['keep']:.0%}, cold "
             "caches, the order of the drafts flipping every prompt; dtypes: "
             + ", ".join(f"{n} {result['dtypes'][n]}" for n in names) + ".", "",
             "| length (draft tokens) | n | " + " | ".join(f"{n} (s, median)" for n in names)
             + " | " + " | ".join(f"{n} / {names[0]}" for n in names[1:]) + " |",
             "|---|---|" + "---|" * (2 * len(names) - 1)]
    for s in result["summary"]:
        lines.append(f"| {s['length']} | {s['n']} | " + " | ".join(f"{s['median_s'][n]:.2f}" for n in names)
                     + " | " + " | ".join(f"{s['ratio_median'][n]:.2f}x" for n in names[1:]) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", nargs="+", required=True, metavar="NAME=SPEC",
                   help="the draft(s) to time against the embedded one (a .gguf file, a model directory, a hub id)")
    p.add_argument("--tasks", nargs="+", default=["qa_2", "vt"], choices=list(ruler.TASKS))
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--n", type=int, default=4, help="prompts per task and length")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/drafts_cost_cpu.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_offline(args.threads)
    drafts = {"smollm2": load_draft(DraftConfig())}
    for name, spec in named_drafts(args.other, "--other"):
        drafts[name] = load_draft(DraftConfig(model=spec))
    tok = drafts["smollm2"].tokenizer
    counter = token_counter(tok)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tok.save_pretrained(tokenizer_dir)
        instances = [inst for length in args.lengths for task in args.tasks
                     for inst in ruler.generate(task, length, args.n, args.seed, tokenizer_dir,
                                                draft_cache_root() / "ruler")]
    machine = machine_info()
    rows = run(drafts, instances, counter, args.keep)
    machine["load_avg_end"] = os.getloadavg()
    names = list(drafts)
    result = {"machine": machine, "args": vars(args), "drafts": names,
              "dtypes": {n: str(d.dtype) for n, d in drafts.items()},
              "draft_names": {n: d.name for n, d in drafts.items()}, "rows": rows, "summary": summarise(rows, names)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    log(f"wrote {out} and .md")


if __name__ == "__main__":
    main()
