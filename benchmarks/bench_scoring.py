"""Scoring cost vs a plain draft forward (speed, side by side) and peak memory vs context length.

One process, one draft model, real text (the installed Python standard library's source)::

    A  model(input_ids, logits_to_keep=1) on context + query, plain SDPA, inference_mode
    B  DraftScorer(draft, ScoringConfig(lookahead=0)).score(context, query)
    C  DraftScorer(draft, ScoringConfig()).score(context, query)   (the default: 4 lookahead tokens)

A, B and C are interleaved within each repeat (the order flips every repeat) and the median
is reported, with B/A and C/A, the scorer's own phase timings (prefill / query / lookahead),
wall and process-CPU time, and the load average around each run (the machine is shared).
Torch runs single-threaded by default (``--threads``): see the option's help for why.

Memory: each (mode, length) runs in a fresh subprocess.  After the model is loaded and a
64-token warm-up has run, the kernel's RSS high-water mark is reset (``/proc/self/clear_refs``)
and the peak RSS of one call is read back (``VmHWM``) and diffed against the RSS before the
call.  ``ru_maxrss`` is recorded too, but it cannot be reset and a child started from a large
parent can inherit the parent's peak, so it is only a cross-check.

No timing assertions: this script measures and reports.  Usage::

    python benchmarks/bench_scoring.py                      # embedded SmolLM2: 9-13 min on 2 shared CPU cores
    python benchmarks/bench_scoring.py --draft /tmp/smol --lengths 1024 --repeats 1 --memory-lengths 512 1024
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np
import torch

from specprefill_agents.config import ScoringConfig

TEXT_MODULES = ("argparse", "textwrap", "dataclasses", "functools", "inspect")
QUESTION = "Which function parses the command line and reports errors?"
CHILD_TAG = "BENCH_CHILD_RESULT "
DEFAULT_LOOKAHEAD = ScoringConfig().lookahead


# --------------------------------------------------------------------------- inputs


def load_bench_draft(spec: str) -> Any:
    """The draft named by ``spec`` ('embedded', a HF directory, a .gguf file or a hub id)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from specprefill_agents.draft import load_draft

    return load_draft(spec)


def bench_inputs(draft: Any, n_max: int) -> tuple[list[int], list[int]]:
    """``n_max`` context token ids of stdlib source, and the query block (prefix + question + suffix,
    as the compressor wraps an explicit query)."""
    from specprefill_agents.segment_scoring import QUERY_PREFIX, QUERY_SUFFIX

    tok, ids = draft.tokenizer, []
    for name in TEXT_MODULES:
        module = __import__(name, fromlist=["_"])
        ids += tok(inspect.getsource(module), add_special_tokens=False)["input_ids"]
        if len(ids) >= n_max:
            break
    if len(ids) < n_max:
        raise SystemExit(f"only {len(ids)} tokens of stdlib text; lower the lengths (max asked {n_max})")
    query = tok(QUERY_PREFIX + QUESTION + QUERY_SUFFIX, add_special_tokens=False)["input_ids"]
    return ids[:n_max], query


def plain_forward(draft: Any) -> Callable[[list[int], list[int]], Any]:
    """(A): one plain SDPA forward of context + query, last logits only, no cache tricks."""
    model = draft.model

    def run(context: list[int], query: list[int]) -> dict[str, float]:
        model.set_attn_implementation("sdpa")
        with torch.inference_mode():
            model(torch.tensor([context + query], device=draft.device), logits_to_keep=1)
        return {}

    return run


def scorer_call(draft: Any, **config: Any) -> Callable[[list[int], list[int]], dict[str, float]]:
    """(B)/(C): ``DraftScorer.score`` with ``ScoringConfig(**config)``; returns its phase timings."""
    from specprefill_agents._compat import install_scoring_attention
    from specprefill_agents.config import ScoringConfig
    from specprefill_agents.scoring import DraftScorer

    scorer = DraftScorer(draft, ScoringConfig(**config))

    def run(context: list[int], query: list[int]) -> dict[str, Any]:
        install_scoring_attention(draft.model)  # A switched the shared model back to plain "sdpa"
        raw = scorer.score(context, query)
        return {**raw.timings, "lookahead_tokens": raw.lookahead_tokens, "forwarded": raw.forwarded}

    return run


# --------------------------------------------------------------------------- speed


def device_sync() -> None:
    """Wait for queued GPU work, so a wall-clock timer measures it (a no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    gc.collect()
    load0 = os.getloadavg()[0]
    device_sync()
    w0, c0 = time.perf_counter(), time.process_time()
    extra = fn()
    device_sync()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "load1_before": load0, "load1_after": os.getloadavg()[0], **extra}


def speed_variants(draft: Any, chunks: list[int]) -> dict[str, Callable[..., dict[str, Any]]]:
    variants = {"A": plain_forward(draft), "B": scorer_call(draft, lookahead=0),
                "C": scorer_call(draft, lookahead=DEFAULT_LOOKAHEAD)}
    for chunk in chunks:
        variants[f"B@chunk={chunk}"] = scorer_call(draft, lookahead=0, prefill_chunk=chunk)
    return variants


def run_speed(draft: Any, ids: list[int], query: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    variants = speed_variants(draft, args.prefill_chunks)
    warm_n = min(args.lengths)
    for fn in variants.values():  # warm-up: allocator, oneDNN primitives, lazy imports
        fn(ids[:warm_n], query)
    results = []
    for n in args.lengths:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for rep in range(args.repeats):
            order = list(variants) if rep % 2 == 0 else list(reversed(variants))
            for name in order:
                runs[name].append(timed(partial(variants[name], ids[:n], query)))
                log(f"  n={n} rep={rep} {name}: {runs[name][-1]['wall_s']:.2f} s")
        results.append(summarise_speed(n, len(query), runs))
    return results


def summarise_speed(n: int, n_query: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    med = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0] if key not in ("forwarded",)}
           for name, rs in runs.items()}
    out: dict[str, Any] = {"n": n, "query_tokens": n_query, "runs": runs, "median": med, "ratios": {}}
    a = runs["A"]
    for name, rs in runs.items():
        if name == "A":
            continue
        out["ratios"][f"{name}/A"] = {
            "wall_median_ratio": med[name]["wall_s"] / med["A"]["wall_s"],
            "wall_paired_median": statistics.median(r["wall_s"] / x["wall_s"] for r, x in zip(rs, a)),
            "wall_min_ratio": min(r["wall_s"] for r in rs) / min(x["wall_s"] for x in a),
            "cpu_median_ratio": med[name]["cpu_s"] / med["A"]["cpu_s"],
        }
        if name == "C":  # the target excludes lookahead: report C without it as well
            c_no_look = statistics.median(r["wall_s"] - r["lookahead"] for r in rs)
            out["ratios"]["C_minus_lookahead/A"] = {"wall_median_ratio": c_no_look / med["A"]["wall_s"]}
    return out


# --------------------------------------------------------------------------- memory


def proc_status_kib() -> dict[str, int]:
    values = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0])
    return values


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # reset the RSS high-water mark (Linux >= 4.0)
        return True
    except OSError:
        return False


def memory_child(mode: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Runs inside a fresh subprocess: peak RSS of one call at length ``n``."""
    draft = load_bench_draft(args.draft)
    ids, query = bench_inputs(draft, n)
    if mode == "plain":
        fn = plain_forward(draft)
    else:
        chunk = int(mode.split("=", 1)[1]) if "=" in mode else None  # None: the library default
        fn = scorer_call(draft, lookahead=DEFAULT_LOOKAHEAD, **({} if chunk is None else {"prefill_chunk": chunk}))
    fn(ids[:64], query)  # warm-up at a tiny length: one-off allocations are not per-token memory
    gc.collect()
    before = proc_status_kib()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = reset_peak_rss()
    t0 = time.perf_counter()
    fn(ids, query)
    seconds = time.perf_counter() - t0
    after = proc_status_kib()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gc.collect()
    return {"mode": mode, "n": n, "seconds": seconds, "hwm_reset": reset,
            "rss_after_load_kib": before["VmRSS"], "peak_rss_kib": after["VmHWM"],
            "delta_peak_bytes": (after["VmHWM"] - before["VmRSS"]) * 1024,
            "ru_maxrss_before_kib": maxrss_before, "ru_maxrss_after_kib": maxrss_after,
            "delta_ru_maxrss_bytes": (maxrss_after - before["VmRSS"]) * 1024,
            "rss_anon_kib": [before["RssAnon"], after["RssAnon"]],
            "rss_file_kib": [before["RssFile"], after["RssFile"]],
            "rss_after_call_kib": proc_status_kib()["VmRSS"]}


def spawn_memory_child(mode: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(n), "--draft", args.draft,
           "--threads", str(args.threads)]
    env = dict(os.environ)
    if args.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG):])
    raise RuntimeError(f"memory child {mode} n={n} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    modes = ["scorer", "plain"] + [f"scorer@chunk={c}" for c in args.memory_prefill_chunks]
    points = []
    for n in args.memory_lengths:
        for mode in modes:
            points.append(spawn_memory_child(mode, n, args))
            p = points[-1]
            log(f"  mem {mode} n={n}: +{p['delta_peak_bytes'] / 2**20:.1f} MiB in {p['seconds']:.1f} s")
    return {"method": "VmHWM after /proc/self/clear_refs reset, minus VmRSS before the call (fresh "
                      "subprocess per point, 64-token warm-up first); ru_maxrss delta kept as a cross-check",
            "malloc_mmap_threshold": args.malloc_mmap_threshold or "glibc default (dynamic)",
            "points": points,
            "fit": {mode: fit_growth([p for p in points if p["mode"] == mode]) for mode in modes}}


def fit_growth(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares line delta = a + b*n, per-length bytes/token, and growth exponents between lengths."""
    pts = sorted(points, key=lambda p: p["n"])
    n = np.array([p["n"] for p in pts], dtype=float)
    d = np.array([p["delta_peak_bytes"] for p in pts], dtype=float)
    out: dict[str, Any] = {"bytes_per_token": {int(k): v / k for k, v in zip(n, d)}}
    if len(pts) >= 2:
        slope, intercept = np.polyfit(n, d, 1)
        resid = d - (intercept + slope * n)
        r2 = 1 - float(resid @ resid) / float(((d - d.mean()) ** 2).sum() or 1.0)
        out.update(slope_bytes_per_token=float(slope), intercept_bytes=float(intercept), r2=r2)
        out["steps"] = [{"from": int(n0), "to": int(n1), "delta_ratio": float(d1 / d0) if d0 > 0 else None,
                         "length_ratio": float(n1 / n0),
                         "exponent": float(np.log(d1 / d0) / np.log(n1 / n0)) if d0 > 0 < d1 else None}
                        for n0, n1, d0, d1 in zip(n[:-1], n[1:], d[:-1], d[1:])]
    if len(pts) >= 3:
        out["quadratic_coef_bytes_per_token2"] = float(np.polyfit(n, d, 2)[0])
    return out


# --------------------------------------------------------------------------- report


def write_result(out: Path, result: dict[str, Any], text: str) -> None:
    """``result`` as ``out`` (JSON) and ``text`` beside it (``.md``), folders made; ``text`` printed too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def machine_info() -> dict[str, Any]:
    import transformers

    uname = platform.uname()
    return {"processor": platform.processor() or _cpu_model(), "cpu_model": _cpu_model(),
            "uname": " ".join([uname.system, uname.release, uname.machine]), "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "load_avg_start": os.getloadavg()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        return ""


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Draft scoring cost on CPU ({result['draft']})", "",
             f"{m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
             f"transformers {m['transformers']}, {m['date']}; load avg at start {m['load_avg_start'][0]:.1f} "
             f"(shared machine). Medians of {result['args']['repeats']} interleaved repeats; query block "
             f"{result['query_tokens']} tokens; context = stdlib source. Draft dtype "
             f"{result.get('draft_dtype', 'torch.float32')}, scoring windows of "
             f"{result.get('window_tokens') or 'the draft context'} context tokens.", ""]
    lines += speed_table(result.get("speed", []))
    lines += memory_table(result.get("memory"))
    return "\n".join(lines) + "\n"


def speed_table(speed: list[dict[str, Any]]) -> list[str]:
    if not speed:
        return []
    extra = [k for k in speed[0]["median"] if k.startswith("B@")]
    head = (f"| n | A plain (s) | B L=0 (s) | **B/A** | B/A cpu | B prefill | B query | C L={DEFAULT_LOOKAHEAD} (s) "
            "| C/A "
            "| C lookahead (s, tokens) |" + "".join(f" {k} (s) | {k}/A |" for k in extra))
    lines = ["## Speed: scoring vs one plain forward of the same tokens", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for s in speed:
        md, r = s["median"], s["ratios"]
        row = (f"| {s['n']} | {md['A']['wall_s']:.2f} | {md['B']['wall_s']:.2f} "
               f"| **{r['B/A']['wall_median_ratio']:.2f}** | {r['B/A']['cpu_median_ratio']:.2f} "
               f"| {md['B']['prefill']:.2f} | {md['B']['query']:.2f} | {md['C']['wall_s']:.2f} "
               f"| {r['C/A']['wall_median_ratio']:.2f} | {md['C']['lookahead']:.2f}, "
               f"{md['C']['lookahead_tokens']:.0f} |")
        row += "".join(f" {md[k]['wall_s']:.2f} | {r[k + '/A']['wall_median_ratio']:.2f} |" for k in extra)
        lines.append(row)
    return lines + ["", "B/A = ratio of median wall times (target <= 1.25); 'cpu' = same with process CPU time. "
                        "C/A includes the lookahead, reported separately in the last column.", ""]


def memory_table(memory: dict[str, Any] | None) -> list[str]:
    if not memory:
        return []
    modes = list(memory["fit"])
    by = {(p["mode"], p["n"]): p for p in memory["points"]}
    lengths = sorted({p["n"] for p in memory["points"]})
    head = "| n |" + "".join(f" {m} peak +MiB | {m} B/token |" for m in modes)
    lines = ["## Peak memory (RSS) of one call vs context length, fresh process per point", "",
             f"Peak RSS during the call minus RSS before it; MALLOC_MMAP_THRESHOLD_ = "
             f"{memory['malloc_mmap_threshold']}.", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for n in lengths:
        cells = [(by[(m, n)]["delta_peak_bytes"] / 2**20, by[(m, n)]["delta_peak_bytes"] / n)
                 if (m, n) in by else (float("nan"),) * 2 for m in modes]
        lines.append(f"| {n} |" + "".join(f" {mib:.1f} | {bpt:,.0f} |" for mib, bpt in cells))
    lines.append("")
    for mode, fit in memory["fit"].items():
        if "slope_bytes_per_token" not in fit:
            continue
        exps = ", ".join(f"{s['from']}->{s['to']}: x{s['delta_ratio']:.2f} (exp {s['exponent']:.2f})"
                         for s in fit["steps"] if s["exponent"] is not None)
        lines.append(f"- **{mode}**: fit {fit['slope_bytes_per_token']:,.0f} B/token + "
                     f"{fit['intercept_bytes'] / 2**20:.1f} MiB (R^2 {fit['r2']:.3f}); growth {exps}")
    return lines + [f"- {memory['kv_note']}", ""]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096], help="speed: context tokens")
    p.add_argument("--repeats", type=int, default=3, help="speed: interleaved repeats per length")
    p.add_argument("--draft", default="embedded", help="'embedded', a HF model dir, a .gguf file or a hub id")
    p.add_argument("--out", default="benchmarks/results/scoring_cpu.json", help="JSON; a .md goes next to it")
    p.add_argument("--memory-lengths", type=int, nargs="*", default=[512, 1024, 2048, 4096, 8000])
    p.add_argument("--prefill-chunks", type=int, nargs="*", default=[1024],
                   help="speed: extra B variants with these ScoringConfig.prefill_chunk values (default 1024: "
                        "what chunked prefill costs against the default one forward per window)")
    p.add_argument("--memory-prefill-chunks", type=int, nargs="*", default=[],
                   help="memory: extra scorer variants with these prefill_chunk values")
    p.add_argument("--malloc-mmap-threshold", type=int, default=1 << 20,
                   help="memory children: MALLOC_MMAP_THRESHOLD_ in bytes (0 = glibc's dynamic default). A fixed "
                        "threshold returns freed tensors to the OS at once, so RSS tracks live memory; with "
                        "the default, heap fragmentation made the 8000-token plain forward peak anywhere "
                        "from 615 to 1127 MiB across identical runs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads; 0 = torch's default. Default 1: on a shared 2-core machine "
                        "2 OpenMP threads stall at every barrier when another process holds a core "
                        "(a 1-token forward measured 1.3 s with 2 threads vs 0.06 s with 1)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(CHILD_TAG + json.dumps(memory_child(args.child[0], int(args.child[1]), args)), flush=True)
        return
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    if args.memory_lengths:  # first, while this parent is still small (see ru_maxrss note above)
        log("memory (fresh subprocess per point) ...")
        result["memory"] = run_memory(args)
    draft = load_bench_draft(args.draft)
    n_max = max(args.lengths + args.memory_lengths)
    ids, query = bench_inputs(draft, n_max)
    from specprefill_agents.config import ScoringConfig

    result.update(draft=draft.name, draft_dtype=str(draft.dtype), window_tokens=ScoringConfig().window_tokens,
                  query_tokens=len(query), text_modules=list(TEXT_MODULES))
    if "memory" in result:
        result["memory"]["kv_note"] = kv_note(draft, ScoringConfig())
    if not args.skip_speed:
        log("speed (interleaved A/B/C) ...")
        result["speed"] = run_speed(draft, ids, query, args)
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["total_seconds"] = time.perf_counter() - started
    write_outputs(result, Path(args.out))


def kv_note(draft: Any, config: Any) -> str:
    """KV bytes per token of the draft, and what the scorer holds at once."""
    cfg = draft.model.config
    layers, kv_heads = cfg.num_hidden_layers, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    size = torch.empty(0, dtype=draft.dtype).element_size()
    per_token = layers * 2 * kv_heads * head_dim * size
    return (f"draft KV ({draft.dtype}): {layers} layers x 2 x {kv_heads} kv heads x {head_dim} dims x {size} B = "
            f"{per_token:,} B/token; the scorer holds the windows of one query block at once (up to the "
            f"draft's context, {draft.max_context} tokens, then one group of windows after another), so its "
            f"peak stops growing past the draft's context")


def write_outputs(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    table = markdown(result)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    log(f"wrote {out} and {out.with_suffix('.md')} in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
