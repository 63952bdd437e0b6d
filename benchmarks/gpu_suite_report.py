"""The result files of ``gpu_suite.py``: the device named, the JSON, and its markdown tables (one per section)."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

__all__ = ["device_info", "device_slug", "markdown", "write"]


def device_info(dry_run: bool) -> dict[str, Any]:
    cuda = torch.cuda.is_available() and not dry_run
    return {"name": torch.cuda.get_device_name(0) if cuda else "cpu", "kind": "cuda" if cuda else "cpu",
            "dry_run": dry_run, "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda if cuda else None, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def device_slug(device: dict[str, Any]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", device["name"].lower()).strip("-")
    return slug + ("-dry-run" if device["dry_run"] else "")


def write(result: dict[str, Any], out_dir: Path) -> Path:
    """``gpu_suite_<device>.json`` and ``.md`` in ``out_dir``; returns the JSON's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpu_suite_{device_slug(result['device'])}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(f"wrote {path} and {path.with_suffix('.md').name}", file=sys.stderr)
    return path


def markdown(result: dict[str, Any]) -> str:
    d, plan = result["device"], result["plan"]
    title = "GPU suite" + (" (CPU dry run: tiny models, not a measurement)" if d["dry_run"] else "")
    lines = [f"# {title}: {d['name']}", "",
             f"Device **{d['name']}** (CUDA {d['cuda']}), torch {d['torch']}, transformers {d['transformers']}, "
             f"Python {d['python']}, {d['date']}. Weights in {result['dtype']}; draft tokenizer: "
             f"{result['tokenizer']}"
             + (f"; semantic encoder {result['encoder']['name']} ({result['encoder']['dtype']})"
                if "encoder" in result else "")
             + f". Medians of {plan['repeats']} interleaved repeats after a warm-up; "
             f"{plan['lookahead']} lookahead tokens, scoring windows of {plan['window_tokens']} tokens. "
             f"Suite wall time {result['seconds']['total']:.0f} s.", ""]
    lines += [f"- {note}" for note in result["notes"]]
    lines += ["", *_section(result, "scoring", scoring_table), *_section(result, "agent_loop", loop_table)]
    lines += _section(result, "shared_forwards", shared_table)
    lines += _section(result, "ttft", lambda targets: [line for t in targets for line in ttft_table(t)])
    return "\n".join(lines) + "\n"


def _section(result: dict[str, Any], key: str, table: Callable[[Any], list[str]]) -> list[str]:
    if key not in result:  # a file written before the section existed
        return []
    value = result[key]
    if isinstance(value, dict) and "error" in value:
        return [f"## {key}: FAILED", "", f"`{value['error']}`", ""]
    return table(value)


def _mib(value: int | None) -> str:
    return "—" if not value else f"{value / 2**20:,.0f}"


def shared_table(rows: list[dict[str, Any]]) -> list[str]:
    from benchmarks.bench_block_batching import table

    return ["## Shared query-block forwards", "",
            "Agents whose context KV (`plan.shared_context` tokens each) is cached score a new question at once: "
            "one after another, on as many threads with their own forwards, or seated at one block batcher "
            "(their query blocks and lookahead steps as the rows of shared forwards); best of alternating rounds.",
            "",
            *table(rows), ""]


def scoring_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## 1. Draft scoring vs one plain SDPA forward of the same tokens", "",
             "| context tokens | plain forward s | scoring s | **scoring / plain** | prefill s | query s | "
             "lookahead s | score s | windows | draft tokens forwarded | peak MiB plain / scoring |",
             "|---" * 11 + "|"]
    for r in rows:
        ph, peak = r["phases_s"], r["peak_gpu_bytes"]
        lines.append(f"| {r['context_tokens']} | {r['plain_forward_s']:.3f} | {r['scoring_s']:.3f} | "
                     f"**{r['scoring_over_plain']:.2f}** | {ph.get('prefill', 0):.3f} | {ph.get('query', 0):.3f} | "
                     f"{ph.get('lookahead', 0):.3f} | {ph.get('score', 0):.3f} | {r['windows']} | "
                     f"{r['draft_tokens_forwarded']} | {_mib(peak['plain'])} / {_mib(peak['scoring'])} |")
    return lines + ["", "Both forward the context plus the question "
                    f"({rows[0]['query_tokens'] if rows else 0} tokens); scoring adds the lookahead tokens and "
                    "the attention fold. Phases are the scorer's own timers.", ""]


def loop_table(loop: dict[str, Any]) -> list[str]:
    t = loop["totals"]
    lines = [f"## 2. Agent loop: {loop['steps']} steps, final context {loop['final_context_tokens']} draft tokens, "
             f"keep {loop['keep_ratio']:.0%}", "",
             "| KV prefix cache | draft tokens forwarded | compress seconds (sum) |", "|---|---|---|"]
    for mode, label in (("cache_off", "off"), ("cache_on", "on")):
        lines.append(f"| {label} | {t[mode]['draft_tokens_forwarded']} | {t[mode]['seconds']:.3f} |")
    return lines + ["", f"Off / on: **{loop['forwarded_ratio_off_over_on']:.2f}x** draft tokens, "
                    f"**{loop['time_ratio_off_over_on']:.2f}x** time (whole `compress_segments` calls: tokenizing, "
                    "scoring and selection). Each step appends a tool output of real standard-library source "
                    "(`bench_agent_loop.build_steps`).", ""]


def ttft_table(target: dict[str, Any]) -> list[str]:
    ratios = [c["keep_ratio"] for c in target["rows"][0]["compressed"]] if target["rows"] else []
    lines = [f"## 3. TTFT, target {target['target']}: compression + compressed prefill vs full prefill", "",
             "| context tokens | full prefill s | "
             + " | ".join(f"keep {q:.0%}: compress s + prefill s = TTFT s (ratio)" for q in ratios) + " |",
             "|---" * (2 + len(ratios)) + "|"]
    for r in target["rows"]:
        cells = [f"{c['compress_s']:.3f} + {c['prefill_s']:.3f} = {c['ttft_s']:.3f} (**{c['ttft_over_full']:.2f}x**)"
                 + (f"; compress with the semantic prior {c['compress_with_prior_s']:.3f} s "
                    f"({c['prior_over_no_prior']:.2f}x)" if "compress_with_prior_s" in c else "")
                 for c in r["compressed"]]
        lines.append(f"| {r['context_tokens']} | {r['full_prefill_s']:.3f} | " + " | ".join(cells) + " |")
    return lines + ["", "Compression: `SpecPrefillCompressor.compress` of the context's text, cold (no cache), "
                    "without the semantic prior (the default) and, interleaved, with it (`semantic_boost=8`); "
                    "the compressed prefill forwards that fraction of the context tokens plus the question.", ""]
