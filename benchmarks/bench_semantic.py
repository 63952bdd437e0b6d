"""What the semantic prior costs next to the draft, side by side in one process.

Two parts, both on RULER qa_1 / qa_2 at 4k draft tokens (``benchmarks/ruler.py``), the tasks
the prior is for:

* **one call** per instance: the draft's scoring time (``timings["total"]`` of a compressor
  without the prior, no cache) next to the encoder's time over the same request's chunks (in the
  dtype the library picks, and in fp32), and the same request again at another budget (every
  vector cached).
* **an agent loop** per instance: the context split into ``--steps`` parts, step ``k`` sending
  the first ``k`` with the question (a growing tool history).  The draft has its KV prefix cache;
  the encoder has its vector cache, and is also timed without it on the same texts.

Medians over instances; ratios are encoder / draft.  Usage::

    python benchmarks/bench_semantic.py --n 8 --steps 8 --out benchmarks/results/semantic_cost_cpu_epyc.json
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
from specprefill_agents import (CacheConfig, CompressionConfig, DraftConfig, Segment, SemanticModel,
                                SpecPrefillCompressor, load_draft, load_semantic)
from specprefill_agents.draft import draft_cache_root


class Recorder(SemanticModel):
    """The library's encoder (vector cache on); each call's texts are also timed on the same model
    without a cache and on the encoder in fp32 (the library runs it in bf16 where the CPU has
    native bf16), side by side."""

    def __init__(self, cached: SemanticModel, uncached: SemanticModel, fp32: SemanticModel) -> None:
        self.cached, self.uncached, self.fp32, self.name = cached, uncached, fp32, cached.name
        self.calls: list[dict[str, Any]] = []

    def similarities(self, query: str, texts: Any) -> np.ndarray:
        texts = [query, *texts]
        t0 = time.perf_counter()
        vectors = self.cached.encode(texts)
        t1 = time.perf_counter()
        fresh = self.uncached.encode(texts)
        t2 = time.perf_counter()
        full = self.fp32.encode(texts)
        t3 = time.perf_counter()
        self.calls.append({"texts": len(texts), "cached_s": t1 - t0, "uncached_s": t2 - t1, "fp32_s": t3 - t2,
                           "max_diff": float(np.abs(vectors - fresh).max()),
                           "max_sim_diff_fp32": float(np.abs(fresh[1:] @ fresh[0] - full[1:] @ full[0]).max())})
        return vectors[1:] @ vectors[0]


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["qa_1", "qa_2"])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--boost", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/semantic_cost_cpu.json")
    args = p.parse_args(argv)
    quiet_offline(args.threads)
    started = time.perf_counter()
    draft = load_draft(DraftConfig())
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        draft.tokenizer.save_pretrained(tokenizer_dir)
        instances = [inst for task in args.tasks
                     for inst in ruler.generate(task, 4096, args.n, args.seed, tokenizer_dir,
                                                draft_cache_root() / "ruler")]
    encoder = load_semantic(device="cpu")
    from transformers import AutoModel

    fp32 = AutoModel.from_pretrained(encoder.model.name_or_path, dtype=torch.float32)

    def recorder() -> Recorder:
        return Recorder(SemanticModel(encoder.model, encoder.tokenizer, encoder.name),
                        SemanticModel(encoder.model, encoder.tokenizer, encoder.name, cache_size=0),
                        SemanticModel(fp32, encoder.tokenizer, encoder.name, cache_size=0))
    plain = CompressionConfig(keep_ratio=0.25)
    boosted = CompressionConfig(keep_ratio=0.25, semantic_boost=args.boost)
    one_call, loop = [], []
    for k, inst in enumerate(instances):
        context, question = inst.segments[1][1], inst.question
        # one call: no cache anywhere on the draft's side; the encoder's cache starts empty
        rec = recorder()
        nocache = CacheConfig(kv_cache_bytes=0, score_cache_entries=0)
        res = SpecPrefillCompressor(draft, plain, cache=nocache, on_failure="raise").compress_segments(
            segments([context], question), query=question)
        with_prior = SpecPrefillCompressor(draft, boosted, cache=CacheConfig(kv_cache_bytes=0), semantic=rec,
                                           on_failure="raise")
        with_prior.compress_segments(segments([context], question), query=question)
        with_prior.compress_segments(segments([context], question), query=question, keep_ratio=0.10)  # second budget
        first, second = rec.calls
        one_call.append({"task": inst.task, "index": inst.index, "draft_s": res.stats.timings["total"],
                         "chunks": first["texts"] - 1, "encoder_s": first["cached_s"], "fp32_s": first["fp32_s"],
                         "max_sim_diff_fp32": first["max_sim_diff_fp32"],
                         "second_budget_s": second["cached_s"], "max_diff_cached": second["max_diff"]})
        # agent loop: growing context, KV prefix cache on the draft, vector cache on the encoder
        rec = recorder()
        agent = SpecPrefillCompressor(draft, boosted, semantic=rec, on_failure="raise")
        parts = split(context, args.steps)
        draft_s = []
        for step in range(1, len(parts) + 1):
            out = agent.compress_segments(segments(parts[:step], question), query=question)
            call = rec.calls[-1]  # the draft's share: the call's total less the encoder's three timings
            draft_s.append(out.stats.timings["total"] - call["cached_s"] - call["uncached_s"] - call["fp32_s"])
        loop.append({"task": inst.task, "index": inst.index, "steps": len(parts), "draft_s": sum(draft_s),
                     "encoder_cached_s": sum(c["cached_s"] for c in rec.calls),
                     "encoder_uncached_s": sum(c["uncached_s"] for c in rec.calls),
                     "max_diff_cached": max(c["max_diff"] for c in rec.calls),
                     "texts_encoded": rec.cached.misses, "texts_reused": rec.cached.hits})
        row = one_call[-1]
        log(f"[{k + 1}/{len(instances)}] {inst.task} #{inst.index}: draft {row['draft_s']:.1f} s, encoder "
            f"{row['encoder_s']:.2f} s (second budget {row['second_budget_s']:.3f} s); "
            f"loop draft {loop[-1]['draft_s']:.1f} s, encoder {loop[-1]['encoder_cached_s']:.2f} s "
            f"(uncached {loop[-1]['encoder_uncached_s']:.2f} s)")

    def med(rows: list[dict[str, Any]], f: Any) -> float:
        return statistics.median(f(r) for r in rows)

    summary = {
        "one_call": {"draft_s": med(one_call, lambda r: r["draft_s"]),
                     "encoder_over_draft": med(one_call, lambda r: r["encoder_s"] / r["draft_s"]),
                     "fp32_over_draft": med(one_call, lambda r: r["fp32_s"] / r["draft_s"]),
                     "max_sim_diff_fp32": max(r["max_sim_diff_fp32"] for r in one_call),
                     "second_budget_over_draft": med(one_call, lambda r: r["second_budget_s"] / r["draft_s"]),
                     "max_diff_cached": max(r["max_diff_cached"] for r in [*one_call, *loop])},
        "agent_loop": {"draft_s": med(loop, lambda r: r["draft_s"]),
                       "cached_over_draft": med(loop, lambda r: r["encoder_cached_s"] / r["draft_s"]),
                       "uncached_over_draft": med(loop, lambda r: r["encoder_uncached_s"] / r["draft_s"]),
                       "texts_reused_share": med(loop, lambda r: r["texts_reused"]
                                                 / (r["texts_reused"] + r["texts_encoded"]))},
    }
    result = {"machine": machine_info(), "args": vars(args), "draft": draft.name, "draft_dtype": str(draft.dtype),
              "encoder": encoder.name,
              "encoder_dtype": str(next(encoder.model.parameters()).dtype),
              "summary": summary, "one_call": one_call, "agent_loop": loop,
              "total_seconds": time.perf_counter() - started}
    result["machine"]["load_avg_end"] = os.getloadavg()
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    log(f"wrote {out} and .md in {result['total_seconds']:.0f} s")


def markdown(result: dict[str, Any]) -> str:
    m, s, a = result["machine"], result["summary"], result["args"]
    one, loop = s["one_call"], s["agent_loop"]
    return "\n".join([
        f"# Semantic prior: cost next to the draft ({result['encoder']}, boost {a['boost']})", "",
        f"{m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} thread), "
        f"{m['date']}; load avg at start {m['load_avg_start'][0]:.1f}. RULER {', '.join(a['tasks'])} at 4k, seed "
        f"{a['seed']}, n={a['n']} each; draft {result['draft']} ({result.get('draft_dtype', 'torch.float32')}). "
        "Medians over instances; every ratio is measured "
        "side by side in one process.", "",
        "| one call (keep 25%) | value |", "|---|---|",
        f"| draft scoring, no cache | {one['draft_s']:.2f} s |",
        f"| encoder over the request's chunks ({result['encoder_dtype']}, the library's choice) / draft | "
        f"{one['encoder_over_draft']:.1%} |",
        f"| the same encoder in fp32 / draft | {one['fp32_over_draft']:.1%} |",
        f"| largest difference in a chunk's similarity, library dtype vs fp32 | {one['max_sim_diff_fp32']:.3f} |",
        f"| a second budget over the same text (vectors cached) / draft | {one['second_budget_over_draft']:.2%} |",
        f"| largest difference, cached vs freshly encoded unit vector | {one['max_diff_cached']:.1e} |", "",
        f"| agent loop ({a['steps']} steps, growing context) | value |", "|---|---|",
        f"| draft scoring over all steps (KV prefix cache) | {loop['draft_s']:.2f} s |",
        f"| encoder with its vector cache / draft | {loop['cached_over_draft']:.1%} |",
        f"| encoder without it / draft | {loop['uncached_over_draft']:.1%} |",
        f"| texts found in the vector cache | {loop['texts_reused_share']:.0%} |", ""])


if __name__ == "__main__":
    main()
