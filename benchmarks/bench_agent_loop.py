"""A simulated agent loop over real files: draft work and time with the prefix cache on vs off.

Each step appends a tool output (a slice of a real standard-library source file, a few
hundred tokens) and asks a new question about a function defined in an earlier step.
Three compressors see the same messages at every step, side by side in one process:

* ``no-cache``   : every step re-scores the whole context;
* ``exact``      : draft KV prefix cache (scores must equal ``no-cache`` exactly);
* ``approximate``: earlier segments keep their earlier scores; only new ones are scored.

Reported: draft tokens forwarded, cumulative scoring time, ratios, whether exact outputs
equal no-cache outputs, and evidence retention (is the asked-about ``def`` line kept?).

    python benchmarks/bench_agent_loop.py [--steps 20] [--keep 0.25] [--draft embedded]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from specprefill_agents import (CacheConfig, CompressionConfig, DraftConfig, Segment, SpecPrefillCompressor,
                                load_draft)

MODULES = ["textwrap", "shlex", "fnmatch", "glob", "heapq", "bisect", "base64", "calendar", "csv", "string",
           "gettext", "difflib", "filecmp", "getopt", "netrc", "operator", "pprint", "quopri", "sched",
           "secrets", "statistics", "tabnanny", "zipapp", "copy", "linecache", "shutil", "tempfile", "colorsys",
           "codeop", "dis", "ftplib", "graphlib", "imghdr", "mimetypes", "plistlib", "py_compile", "random"]


@dataclass(frozen=True)
class Step:
    tool_call: str
    output: str
    question: str
    evidence: str


def _functions(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines() if line.startswith("def ") and line.rstrip().endswith(":")]


def _slice_around_def(tokenizer: Any, source: str, step_tokens: int) -> tuple[str, str] | None:
    """About ``step_tokens`` draft tokens of whole lines, starting a few lines before a top-level
    ``def`` (so the tool output holds real code), and the ``def`` line asked about."""
    lines = source.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("def ") and len(line.strip()) > 12]
    if not starts:
        return None
    first = max(starts[0] - 4, 0)
    chosen, total = [], 0
    for line in lines[first:]:
        total += len(tokenizer(line, add_special_tokens=False)["input_ids"])
        if total > step_tokens and chosen:
            break
        chosen.append(line)
    text = "".join(chosen)
    defs = [d for d in _functions(text) if len(d) > 12]
    return (text, defs[len(defs) // 2]) if defs else None


def build_steps(tokenizer: Any, steps: int, step_tokens: int) -> list[Step]:
    """One tool output per step: ~``step_tokens`` draft tokens of a real module around a function
    definition; the question at step t asks about a function shown at step t // 2."""
    import importlib

    outputs: list[tuple[str, str, str]] = []
    for name in MODULES:
        try:
            source = inspect.getsource(importlib.import_module(name))
        except (ImportError, OSError):
            continue
        found = _slice_around_def(tokenizer, source, step_tokens)
        if found:
            outputs.append((name, *found))
        if len(outputs) == steps:
            break
    result = []
    for t, (name, text, _) in enumerate(outputs):
        asked = outputs[t // 2]
        fn = asked[2][4:].split("(")[0]
        result.append(Step(f"read_file('{name}.py', max_tokens={step_tokens})", text,
                           f"In {asked[0]}.py, what arguments does the function {fn} take?", asked[2]))
    return result


def messages_at(steps: list[Step], t: int) -> list[Segment]:
    segs = [Segment("You are a coding agent. Read files with tools and answer precisely.", role="system",
                    protected=True),
            Segment("Survey these standard-library modules and answer my questions.", role="user", protected=True)]
    for s in steps[: t + 1]:
        segs.append(Segment(s.tool_call, role="assistant", protected=True))
        segs.append(Segment(s.output, role="tool"))
    segs.append(Segment(steps[t].question, role="user", protected=True))
    return segs


def _digest(texts: list[str]) -> str:
    return hashlib.sha256("\0".join(texts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)  # 1 by default: a shared 2-core machine makes 2 threads erratic
    draft = load_draft(DraftConfig(model=args.draft, dtype=args.draft_dtype))
    config = CompressionConfig(keep_ratio=args.keep)
    if args.window_tokens is not None:  # 0: one window as large as the draft's context
        config = config.replace(scoring=config.scoring.replace(window_tokens=args.window_tokens or None))
    modes = {
        "no-cache": CacheConfig(kv_cache_bytes=0, score_cache_entries=0),
        "exact": CacheConfig(),
        "approximate": CacheConfig(mode="approximate", kv_cache_bytes=0),
    }
    comps = {m: SpecPrefillCompressor(draft, config, cache=c, on_failure="raise") for m, c in modes.items()}
    steps = build_steps(draft.tokenizer, args.steps, args.step_tokens)
    comps["exact"].compress_segments(messages_at(steps, 0)[:1] + [Segment(steps[0].output)], "warm up")
    per_step: list[dict[str, Any]] = []
    for t in range(len(steps)):
        segs = messages_at(steps, t)
        row: dict[str, Any] = {"step": t + 1}
        texts = {}
        for mode in (list(modes) if t % 2 == 0 else list(reversed(modes))):  # alternate order: fair noise
            t0 = time.perf_counter()
            res = comps[mode].compress_segments(segs)
            row[mode] = {"seconds": time.perf_counter() - t0, "forwarded": res.stats.draft_tokens_forwarded,
                         "reused": res.stats.draft_tokens_reused, "lookahead_tokens": res.stats.lookahead_tokens,
                         "phases": dict(res.stats.timings),
                         "evidence_kept": steps[t].evidence in "\n".join(res.texts),
                         "text_sha": _digest(res.texts)}
            texts[mode] = res.texts
        row["exact_equals_no_cache"] = texts["exact"] == texts["no-cache"]
        row["context_tokens"] = sum(len(draft.tokenizer(s.text, add_special_tokens=False)["input_ids"]) for s in segs)
        per_step.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {"machine": {**machine_info(), "draft_dtype": str(draft.dtype),
                        "window_tokens": config.scoring.window_tokens},
            "args": vars(args), "steps": per_step,
            "summary": summarise(per_step)}


PHASES = ("prefill", "query", "lookahead", "score", "select")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    final_unique = rows[-1]["context_tokens"]
    out: dict[str, Any] = {"steps": len(rows), "final_context_tokens": final_unique,
                           "exact_outputs_identical_to_no_cache": all(r["exact_equals_no_cache"] for r in rows),
                           "exact_steps_identical_to_no_cache": sum(bool(r["exact_equals_no_cache"]) for r in rows)}
    for mode in ("no-cache", "exact", "approximate"):
        out[mode] = {
            "draft_tokens_forwarded": sum(r[mode]["forwarded"] for r in rows),
            "seconds": round(sum(r[mode]["seconds"] for r in rows), 2),
            "evidence_retention": sum(r[mode]["evidence_kept"] for r in rows) / len(rows),
        }
        out[mode]["forwarded_over_final_context"] = round(out[mode]["draft_tokens_forwarded"] / final_unique, 3)
        out[mode]["phase_seconds"] = {k: round(sum(r[mode]["phases"].get(k, 0.0) for r in rows), 2)
                                      for k in PHASES}
        out[mode]["lookahead_tokens"] = sum(r[mode]["lookahead_tokens"] for r in rows)
    context = {m: out[m]["phase_seconds"]["prefill"] + out[m]["phase_seconds"]["query"] for m in ("no-cache", "exact")}
    out["context_forward_ratio_no_cache_over_exact"] = round(context["no-cache"] / max(context["exact"], 1e-9), 2)
    out["time_ratio_no_cache_over_exact"] = round(out["no-cache"]["seconds"] / out["exact"]["seconds"], 2)
    out["time_ratio_no_cache_over_approximate"] = round(out["no-cache"]["seconds"] / out["approximate"]["seconds"], 2)
    return out


def machine_info() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"platform": platform.platform(), "cpu": cpu, "logical_cpus": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def markdown(result: dict[str, Any]) -> str:
    s, m = result["summary"], result["machine"]
    lines = [f"# Agent loop: {s['steps']} steps, final context {s['final_context_tokens']} draft tokens",
             "", f"Machine: {m['cpu']} ({m['logical_cpus']} threads), CUDA: {m['cuda']}; "
             f"draft dtype {m.get('draft_dtype', 'torch.float32')}, scoring windows of "
             f"{m.get('window_tokens') or 'the draft context'} tokens; torch {m['torch']}, "
             f"transformers {m['transformers']}; {m['date']}", "",
             "| mode | draft tokens forwarded | / final context | compress seconds (sum) | evidence retention |",
             "|---|---|---|---|---|"]
    for mode in ("no-cache", "exact", "approximate"):
        r = s[mode]
        lines.append(f"| {mode} | {r['draft_tokens_forwarded']} | {r['forwarded_over_final_context']} | "
                     f"{r['seconds']} | {r['evidence_retention']:.2f} |")
    query = ("the query block, once over all windows side by side (while the context fits one window: in one "
             "forward with its last new tokens)")
    lines += ["", "Where the time goes (seconds summed over the steps; `prefill` = KV restore + context forward, "
              f"`query` = {query}, `lookahead` = greedy draft tokens, one decode step each, `score` = "
              "the captured query rows' attention folded per window):", "",
              "| mode | " + " | ".join(PHASES) + " | lookahead tokens |",
              "|---" * (len(PHASES) + 2) + "|"]
    for mode in ("no-cache", "exact", "approximate"):
        r = s[mode]
        lines.append(f"| {mode} | " + " | ".join(str(r.get("phase_seconds", {}).get(k, "—")) for k in PHASES)
                     + f" | {r.get('lookahead_tokens', '—')} |")
    if "context_forward_ratio_no_cache_over_exact" in s:
        lines += ["", f"Context forward (prefill + query) no-cache / exact: "
                  f"**{s['context_forward_ratio_no_cache_over_exact']}x** (the part the KV cache removes)."]
    lines += ["", f"Time ratio no-cache / exact: **{s['time_ratio_no_cache_over_exact']}x**; "
              f"no-cache / approximate: {s['time_ratio_no_cache_over_approximate']}x. "
              f"Exact outputs identical to no-cache at every step: **{s['exact_outputs_identical_to_no_cache']}**"
              + (f" ({s['exact_steps_identical_to_no_cache']} of {s['steps']} steps)."
                 if "exact_steps_identical_to_no_cache" in s else ".")]
    return "\n".join(lines) + "\n"


def loop_arguments(parser: argparse.ArgumentParser) -> None:
    """The loop's own options (shared with ``bench_cpu_kernels``)."""
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-tokens", type=int, default=250)
    parser.add_argument("--keep", type=float, default=0.25)
    parser.add_argument("--draft", default="embedded")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = torch's default")


def save(result: dict[str, Any], out: Path, table: str) -> None:
    """The JSON at ``out``, the markdown ``table`` beside it, and the table printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table)
    print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    loop_arguments(parser)
    parser.add_argument("--draft-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: the library's choice for the device (bfloat16 on AMX CPUs)")
    parser.add_argument("--window-tokens", type=int, default=None,
                        help="ScoringConfig.window_tokens (default: the library's, 1024); 0 = the draft's context")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "agent_loop_cpu.json"))
    args = parser.parse_args(argv)
    result = run(args)
    save(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
