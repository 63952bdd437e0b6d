"""What the semantic prior costs next to the draft, side by side in one process.

The library encodes a request's chunks on a worker thread while the draft scores
(``specprefill_agents.semantic_call``); a CPU draft leaves a core free for it by default.  Both
parts run on RULER qa_1 / qa_2 at 4k draft tokens (``benchmarks/ruler.py``), the tasks the prior
is for, and time whole compressions with and without the prior, alternating, best of
``--reps``:

* **one call** per instance, no cache on the draft's side, the encoder's vector cache empty;
  then the encoder alone over the same chunks (what the prior costs where no core is free), in
  the library's dtype and in fp32, and again with every vector cached (a second budget).
* **an agent loop** per instance: the context split into ``--steps`` parts, step ``k`` sending
  the first ``k`` with the question (a growing tool history); the draft has its KV prefix cache,
  the encoder its vector cache; the encoder alone over the same calls with and without it.

``--dtypes auto float32`` runs every measurement a second time with the draft and the encoder in
fp32 (what a CPU without native bf16 runs).  Medians over instances; ratios are with / without
the prior, or encoder alone / without the prior.  Usage::

    python benchmarks/bench_semantic.py --n 8 --steps 8 --dtypes auto float32 \
        --out benchmarks/results/semantic_cost_cpu_epyc.json
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks import ruler
from benchmarks.bench_retention import log, quiet_offline
from benchmarks.bench_scoring import machine_info
from specprefill_agents import (CacheConfig, CompressionConfig, DraftConfig, DraftModel, Segment, SemanticModel,
                                SpecPrefillCompressor, load_draft, load_semantic)
from specprefill_agents.draft import draft_cache_root

NO_CACHE = CacheConfig(kv_cache_bytes=0, score_cache_entries=0)


class Recording(SemanticModel):
    """An encoder (vector cache empty at first) that records the texts of every call."""

    def __init__(self, base: SemanticModel) -> None:
        super().__init__(base.model, base.tokenizer, base.name)
        self.calls: list[list[str]] = []

    def similarities(self, query: str, texts: Any) -> np.ndarray:
        self.calls.append([query, *texts])
        return super().similarities(query, texts)


def timed_encode(base: SemanticModel, calls: list[list[str]], cache_size: int = 8192) -> float:
    """Seconds to encode ``calls`` in order on a fresh encoder over ``base``'s model."""
    encoder = SemanticModel(base.model, base.tokenizer, base.name, cache_size=cache_size)
    t0 = time.perf_counter()
    for texts in calls:
        encoder.encode(texts)
    return time.perf_counter() - t0


def segments(parts: list[str], question: str) -> list[Segment]:
    return [*(Segment(p, role="tool") for p in parts), Segment(question, role="user", protected=True)]


def split(context: str, k: int) -> list[str]:
    """``context`` in ``k`` parts of about equal length, cut at paragraph (else line) breaks."""
    sep = "\n\n" if context.count("\n\n") >= k else "\n"
    size = len(context) / k
    parts: list[str] = []
    cur: list[str] = []
    held = 0
    for piece in context.split(sep):
        cur.append(piece)
        held += len(piece)
        if held >= size and len(parts) < k - 1:
            parts.append(sep.join(cur))
            cur, held = [], 0
    return [*parts, sep.join(cur)] if cur else parts


def one_call(draft: DraftModel, encoder: SemanticModel, fp32: SemanticModel, context: str, question: str,
             boost: float, reps: int) -> dict[str, Any]:
    segs = segments([context], question)
    plain_s, prior_s, recorder = [], [], Recording(encoder)
    for _ in range(reps):
        plain_s.append(SpecPrefillCompressor(draft, CompressionConfig(keep_ratio=0.25), cache=NO_CACHE,
                                             on_failure="raise").compress_segments(segs).stats.timings["total"])
        recorder = Recording(encoder)
        prior = SpecPrefillCompressor(draft, CompressionConfig(keep_ratio=0.25, semantic_boost=boost),
                                      cache=NO_CACHE, semantic=recorder, on_failure="raise")
        prior_s.append(prior.compress_segments(segs).stats.timings["total"])
    calls = recorder.calls[:1]
    warm = SemanticModel(encoder.model, encoder.tokenizer, encoder.name)
    warm.encode(calls[0])
    t0 = time.perf_counter()
    warm.encode(calls[0])  # a second budget over the same text: every vector cached
    second_budget_s = time.perf_counter() - t0
    return {"plain_s": min(plain_s), "prior_s": min(prior_s), "chunks": len(calls[0]) - 1,
            "encoder_s": timed_encode(encoder, calls), "fp32_s": timed_encode(fp32, calls),
            "second_budget_s": second_budget_s}


def agent_loop(draft: DraftModel, encoder: SemanticModel, context: str, question: str, boost: float,
               steps: int) -> dict[str, Any]:
    parts = split(context, steps)
    plain = SpecPrefillCompressor(draft, CompressionConfig(keep_ratio=0.25), on_failure="raise")
    recorder = Recording(encoder)
    prior = SpecPrefillCompressor(draft, CompressionConfig(keep_ratio=0.25, semantic_boost=boost),
                                  semantic=recorder, on_failure="raise")
    plain_s = prior_s = 0.0
    for step in range(1, len(parts) + 1):
        segs = segments(parts[:step], question)
        plain_s += plain.compress_segments(segs).stats.timings["total"]
        prior_s += prior.compress_segments(segs).stats.timings["total"]
    return {"steps": len(parts), "plain_s": plain_s, "prior_s": prior_s,
            "encoder_cached_s": timed_encode(encoder, recorder.calls),
            "encoder_uncached_s": timed_encode(encoder, recorder.calls, cache_size=0),
            "texts_reused": recorder.hits, "texts_encoded": recorder.misses}


def summarise(calls: list[dict[str, Any]], loops: list[dict[str, Any]]) -> dict[str, Any]:
    def med(rows: list[dict[str, Any]], num: str, den: str) -> float:
        return statistics.median(r[num] / r[den] for r in rows)

    return {
        "one_call": {"plain_s": statistics.median(r["plain_s"] for r in calls),
                     "prior_over_plain": med(calls, "prior_s", "plain_s"),
                     "encoder_over_plain": med(calls, "encoder_s", "plain_s"),
                     "fp32_encoder_over_plain": med(calls, "fp32_s", "plain_s"),
                     "second_budget_over_plain": med(calls, "second_budget_s", "plain_s")},
        "agent_loop": {"plain_s": statistics.median(r["plain_s"] for r in loops),
                       "prior_over_plain": med(loops, "prior_s", "plain_s"),
                       "encoder_cached_over_plain": med(loops, "encoder_cached_s", "plain_s"),
                       "encoder_uncached_over_plain": med(loops, "encoder_uncached_s", "plain_s"),
                       "texts_reused_share": statistics.median(
                           r["texts_reused"] / max(1, r["texts_reused"] + r["texts_encoded"]) for r in loops)},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["qa_1", "qa_2"])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--boost", type=float, default=8.0)
    p.add_argument("--dtypes", nargs="+", default=["auto"], choices=["auto", "float32"],
                   help="auto: the library's choice for this CPU; float32: draft and encoder in fp32")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the library's)")
    p.add_argument("--out", default="benchmarks/results/semantic_cost_cpu.json")
    args = p.parse_args(argv)
    from specprefill_agents.threads import default_num_threads

    quiet_offline(args.threads or default_num_threads())
    started, machine = time.perf_counter(), machine_info()
    drafts = {d: load_draft(DraftConfig(dtype=None if d == "auto" else d)) for d in args.dtypes}
    tokenizer = next(iter(drafts.values())).tokenizer
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tokenizer.save_pretrained(tokenizer_dir)
        instances = [inst for task in args.tasks
                     for inst in ruler.generate(task, 4096, args.n, args.seed, tokenizer_dir,
                                                draft_cache_root() / "ruler")]
    encoder = load_semantic(device="cpu")
    from transformers import AutoModel

    fp32_model = AutoModel.from_pretrained(encoder.model.name_or_path, dtype=torch.float32).eval()
    fp32 = SemanticModel(fp32_model, encoder.tokenizer, encoder.name)
    encoders = {"auto": encoder, "float32": fp32}
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {d: {"one_call": [], "agent_loop": []} for d in args.dtypes}
    for k, inst in enumerate(instances):
        context, question = inst.segments[1][1], inst.question
        for d, draft in drafts.items():
            call = one_call(draft, encoders[d], fp32, context, question, args.boost, args.reps)
            loop = agent_loop(draft, encoders[d], context, question, args.boost, args.steps)
            for name, row in (("one_call", call), ("agent_loop", loop)):
                rows[d][name].append({"task": inst.task, "index": inst.index, **row})
            log(f"[{k + 1}/{len(instances)}] {inst.task} #{inst.index} {d}: one call {call['plain_s']:.2f} s -> "
                f"{call['prior_s']:.2f} s with the prior (encoder alone {call['encoder_s']:.2f} s); loop "
                f"{loop['plain_s']:.2f} s -> {loop['prior_s']:.2f} s")
    result = {"machine": machine, "args": vars(args), "encoder": encoder.name,
              "runs": {d: {"draft": drafts[d].name, "draft_dtype": str(drafts[d].dtype),
                           "encoder_dtype": str(next(encoders[d].model.parameters()).dtype),
                           "summary": summarise(rows[d]["one_call"], rows[d]["agent_loop"]), **rows[d]}
                       for d in args.dtypes},
              "total_seconds": time.perf_counter() - started}
    result["machine"]["load_avg_end"] = os.getloadavg()
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    log(f"wrote {out} and .md in {result['total_seconds']:.0f} s")


def markdown(result: dict[str, Any]) -> str:
    m, a = result["machine"], result["args"]
    lines = [
        f"# Semantic prior: cost next to the draft ({result['encoder']}, boost {a['boost']})", "",
        f"{m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} intra-op thread(s) "
        f"for the draft; the encoder runs on a worker thread), {m['date']}; load avg at start "
        f"{m['load_avg_start'][0]:.1f}. RULER {', '.join(a['tasks'])} at 4k, seed {a['seed']}, n={a['n']} each. "
        f"Whole compressions with and without the prior, alternating, best of {a['reps']}; medians over "
        "instances; every ratio is measured side by side in one process.", ""]
    for d, run in result["runs"].items():
        one, loop = run["summary"]["one_call"], run["summary"]["agent_loop"]
        lines += [
            f"## draft {run['draft_dtype']}, encoder {run['encoder_dtype']}"
            + (" (the library's choice on this CPU)" if d == "auto" else " (as on a CPU without native bf16)"), "",
            "| one call (keep 25%, no cache) | value |", "|---|---|",
            f"| compression without the prior | {one['plain_s']:.2f} s |",
            f"| **with the prior / without** (encoder on the worker) | **{one['prior_over_plain']:.3f}** |",
            f"| encoder alone over the request's chunks / without (no core free) | {one['encoder_over_plain']:.1%} |",
            f"| the encoder in fp32 alone / without | {one['fp32_encoder_over_plain']:.1%} |",
            f"| a second budget over the same text (vectors cached) / without | "
            f"{one['second_budget_over_plain']:.2%} |", "",
            f"| agent loop ({a['steps']} steps, growing context, KV prefix cache) | value |", "|---|---|",
            f"| compressions without the prior, all steps | {loop['plain_s']:.2f} s |",
            f"| **with the prior / without** | **{loop['prior_over_plain']:.3f}** |",
            f"| encoder alone with its vector cache / without | {loop['encoder_cached_over_plain']:.1%} |",
            f"| encoder alone without the vector cache / without | {loop['encoder_uncached_over_plain']:.1%} |",
            f"| texts found in the vector cache | {loop['texts_reused_share']:.0%} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
