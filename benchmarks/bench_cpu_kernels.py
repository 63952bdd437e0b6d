"""CPU kernels of the scorer, side by side: fused segment attention and one-row GEMV linears on/off.

Two kernel choices only matter on the CPU and change no result in fp32 (in bf16, rounding only);
each variant forces its choice, whatever the library picks for this CPU (``kernels``:
fused in fp32 and with AMX, GEMV with AMX):

* ``fused``: the query block and the lookahead read every window's KV through torch's fused
  flash kernel per window, merged by log-sum-exp (``kernels.attend_with_segments``);
  off = one fp32 softmax over all windows' logits (the path other devices and softcaps take);
* ``gemv``: a bf16 draft's one-row linears (decode steps, the vocab projection) run through
  ``torch.mv`` (``kernels.install_cpu_gemv``); off = ``F.linear`` (oneDNN GEMM).

Two workloads, each variant run in turn (order rotated per repeat) in one process:

* ``warm``: the last step of ``bench_agent_loop``'s 20-step loop (final context ~4.8k tokens,
  5 windows) with every window's KV cached, so a call is the query block + lookahead + fold:
  the per-call cost that the KV prefix cache cannot remove;
* ``cold``: the same messages with no cache (every window forwarded).

The compressed texts must be identical across variants (reported).

    python -m benchmarks.bench_cpu_kernels [--repeats 5] [--draft-dtype bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import specprefill_agents.kernels as kernels
from benchmarks.bench_agent_loop import build_steps, loop_arguments, machine_info, messages_at, save
from specprefill_agents import CacheConfig, CompressionConfig, DraftConfig, SpecPrefillCompressor, load_draft
from specprefill_agents.kernels import fused_attention_available, fused_attention_pays, install_cpu_gemv

VARIANTS = {"fused+gemv": (True, True), "fused": (True, False), "gemv": (False, True), "neither": (False, False)}
PHASES = ("prefill", "query", "lookahead", "score")


def _set_variant(model: Any, fused: bool, gemv: bool) -> None:
    """The A/B switch: the fused-attention choice, and each linear's instance ``forward``."""
    kernels.fused_attention_pays = fused_attention_available if fused else (lambda _t: False)
    if gemv:
        install_cpu_gemv(model, force=True)
    else:
        for module in model.modules():
            vars(module).pop("forward", None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    draft = load_draft(DraftConfig(model=args.draft, dtype=args.draft_dtype))
    config = CompressionConfig(keep_ratio=args.keep)
    warm = SpecPrefillCompressor(draft, config, cache=CacheConfig(score_cache_entries=0), on_failure="raise")
    cold = SpecPrefillCompressor(draft, config, cache=CacheConfig(kv_cache_bytes=0, score_cache_entries=0),
                                 on_failure="raise")
    steps = build_steps(draft.tokenizer, args.steps, args.step_tokens)
    for t in range(len(steps)):  # fills the KV prefix cache as the loop would
        warm.compress_segments(messages_at(steps, t))
    segments = messages_at(steps, len(steps) - 1)
    rows: dict[str, dict[str, list[dict[str, float]]]] = {w: {v: [] for v in VARIANTS} for w in ("warm", "cold")}
    texts: dict[str, set[tuple[str, ...]]] = {"warm": set(), "cold": set()}
    names = list(VARIANTS)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            _set_variant(draft.model, *VARIANTS[name])
            for workload, comp in (("warm", warm), ("cold", cold)):
                t0 = time.perf_counter()
                res = comp.compress_segments(segments)
                rows[workload][name].append({"seconds": time.perf_counter() - t0,
                                             **{k: res.stats.timings.get(k, 0.0) for k in PHASES}})
                texts[workload].add(tuple(res.texts))
    kernels.fused_attention_pays = fused_attention_pays  # the library's own choices again
    _set_variant(draft.model, False, False)
    install_cpu_gemv(draft.model)
    summary = {w: {v: {k: round(statistics.median(x[k] for x in runs), 4) for k in ("seconds", *PHASES)}
                   for v, runs in by_variant.items()} for w, by_variant in rows.items()}
    return {"machine": {**machine_info(), "draft_dtype": str(draft.dtype),
                        "fused_attention_available": fused_attention_available(torch.zeros(1, dtype=draft.dtype)),
                        "amx": kernels.cpu_has_amx(), "native_bf16": kernels.cpu_has_native_bf16()},
            "args": vars(args), "runs": rows, "median": summary,
            "identical_texts": {w: len(t) == 1 for w, t in texts.items()}}


def markdown(result: dict[str, Any]) -> str:
    m, med = result["machine"], result["median"]
    lines = [f"# CPU kernels of the scorer: fused segment attention, one-row GEMV ({m['draft_dtype']})", "",
             f"Machine: {m['cpu']} ({m['logical_cpus']} threads), CUDA: {m['cuda']}; torch {m['torch']}, "
             f"transformers {m['transformers']}; {m['date']}. Median of {result['args']['repeats']} runs per "
             "variant, variants interleaved; `warm` = the agent loop's last step (context "
             "~4.8k draft tokens, 5 windows) with every window's KV cached; `cold` = the same call, no cache. "
             f"AMX: {m.get('amx', '?')}, native bf16 (AMX or AVX512-BF16): {m.get('native_bf16', '?')}.", "",
             "| workload | variant | seconds | vs neither | query | lookahead | score | prefill |",
             "|---|---|---|---|---|---|---|---|"]
    for workload, by_variant in med.items():
        base = by_variant["neither"]["seconds"]
        for name, r in by_variant.items():
            lines.append(f"| {workload} | {name} | {r['seconds']:.3f} | {base / r['seconds']:.2f}x | "
                         f"{r['query']:.3f} | {r['lookahead']:.3f} | {r['score']:.3f} | {r['prefill']:.3f} |")
    same = result["identical_texts"]
    lines += ["", f"Compressed texts identical across the four variants: warm **{same['warm']}**, "
              f"cold **{same['cold']}**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    loop_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--draft-dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_kernels_bf16.json"))
    args = parser.parse_args(argv)
    result = run(args)
    save(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
