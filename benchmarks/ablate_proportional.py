"""The proportional sample's window and its passes, on RULER's frequency tasks (cwe, fwe).

A question about how often things occur is answered from a proportional sample
(``selection.proportional_plans``): each next chunk is the best, by least squares on the kept word
counts, among the next ``PROPORTION_WINDOW`` chunks of an even spread; a candidate passed over
``PROPORTION_PASSES`` times goes to the back of the spread.  This runs the library's compressor with the
draft's scores replaced by zeros (the sample reads none; no draft forward runs) once per setting,
on many RULER seeds with a few instances each (RULER gives every cwe/fwe instance of a seed the same
word-position pattern), and counts the instances whose gold words are still the most frequent of
the kept text, per budget.  ``--passes never`` is the sample without passes (a candidate holds its
place until taken).  Usage::

    python -m benchmarks.ablate_proportional --lengths 8192 --seeds 2-9 --n 2 \
        --settings never 1 4 8 16 w128:never --out benchmarks/results/proportional_passes_cpu_epyc/tune_8k.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import ruler
from benchmarks.bench_retention import quiet_offline
from benchmarks.bench_ruler import budget_name, segments_of
from benchmarks.bench_scoring import machine_info, write_result
from specprefill_agents import DraftConfig, SpecPrefillCompressor, load_draft
from specprefill_agents import selection
from specprefill_agents.compressor import _plans
from specprefill_agents.draft import draft_cache_root
from specprefill_agents.segment_scoring import segment_offsets
from specprefill_agents.types import SegmentScores, TokenScores

NEVER = 1 << 30


def parse_setting(text: str) -> tuple[int, int]:
    """``"8"`` -> (window 32, 8 passes); ``"never"``; ``"w128:never"``, ``"w64:4"``."""
    window, _, passes = text.rpartition(":")
    size = int(window[1:]) if window.startswith("w") else selection.PROPORTION_WINDOW
    if window and not window.startswith("w"):
        raise ValueError(f"bad setting {text!r}: [wWINDOW:]PASSES|never")
    return size, NEVER if passes == "never" else int(passes)


def seeds_of(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


class ZeroScores:
    """The compressor's scorer with every draft score zero (what the proportional sample reads)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def score(self, segments: Any, query: Any = None, max_input_tokens: int | None = None) -> TokenScores:
        offsets = [segment_offsets(self.tokenizer, s) for s in segments]
        return TokenScores(tuple(SegmentScores(o, np.zeros(len(o), dtype=np.float32)) for o in offsets), 0, 1, 0)


@contextmanager
def applied(setting: str) -> Iterator[None]:
    """The library's window and passes set to ``setting`` inside the block, restored after."""
    saved = selection.PROPORTION_WINDOW, selection.PROPORTION_PASSES
    selection.PROPORTION_WINDOW, selection.PROPORTION_PASSES = parse_setting(setting)
    try:
        yield
    finally:
        selection.PROPORTION_WINDOW, selection.PROPORTION_PASSES = saved


def run(compressor: Any, instances: list[Any], settings: list[str], budgets: list[float | int]) -> list[dict[str, Any]]:
    rows = []
    for setting in settings:
        with applied(setting):
            for inst in instances:
                for budget in budgets:
                    kw = {"keep_ratio": budget} if isinstance(budget, float) else {"max_tokens": budget}
                    out = compressor.compress_segments(segments_of(inst), inst.question, **kw)
                    kept, alive = ruler.evidence_kept(inst, out.segments[1].text)
                    rows.append({"setting": setting, "task": inst.task, "length": inst.length, "seed": inst.seed,
                                 "index": inst.index, "budget": budget, "kept": kept, "alive": alive})
    return rows


def timings(compressor: Any, instances: list[Any], settings: list[str], repeats: int) -> dict[str, Any]:
    """Seconds of ``proportional_plans`` alone per setting on each instance's chunks, the settings
    alternating (their order flipped every repeat); the median per setting, and chunks per instance."""
    tokenizer = compressor.draft.tokenizer
    seconds: dict[str, list[float]] = {s: [] for s in settings}
    chunks = []
    for inst in instances:
        segments = segments_of(inst)
        offsets = segment_offsets(tokenizer, segments[1])
        plans = _plans(segments, [1], [SegmentScores(offsets, np.zeros(len(offsets), dtype=np.float32))],
                       compressor.config)
        chunks.append(len(plans[0].chunks))
        for r in range(repeats):
            for setting in settings if r % 2 == 0 else settings[::-1]:
                with applied(setting):
                    t0 = time.perf_counter()
                    selection.proportional_plans(plans)
                    seconds[setting].append(time.perf_counter() - t0)
    return {"median_seconds": {s: float(np.median(v)) for s, v in seconds.items()},
            "chunks_median": float(np.median(chunks)), "repeats": repeats, "instances": len(instances)}


def markdown(result: dict[str, Any]) -> str:
    a, budgets = result["args"], result["budgets"]
    lines = [f"# The proportional sample's window and passes (lengths in {result['draft']} tokens, "
             "draft scores zeroed)", "",
             f"{result['machine']['cpu_model']}, {result['machine']['date']}. RULER cwe and fwe at "
             f"{', '.join(map(str, a['lengths']))} tokens, seeds {a['seeds']}, n = {a['n']} each. Instances whose "
             "gold words are still the most frequent of the kept text, at "
             + " / ".join(budget_name(b) for b in budgets) + ". Setting: passes before a candidate goes "
             "to the back (`never`: it holds its place), `wN:` a window of N instead of 32.", "",
             "| setting | length | cwe | fwe |", "|---|---|---|---|"]
    for setting in a["settings"]:
        for length in a["lengths"]:
            cells = []
            for task in ("cwe", "fwe"):
                got = [sum(r["kept"] for r in result["rows"] if r["setting"] == setting and r["task"] == task
                           and r["length"] == length and r["budget"] == b) for b in budgets]
                total = sum(1 for r in result["rows"] if r["setting"] == setting and r["task"] == task
                            and r["length"] == length and r["budget"] == budgets[0])
                cells.append(" / ".join(map(str, got)) + f" of {total}")
            lines.append(f"| {setting} | {length} | " + " | ".join(cells) + " |")
    if result.get("timings"):
        t = result["timings"]
        lines += ["", f"`proportional_plans` alone, median seconds per call over {t['instances']} instances x "
                  f"{t['repeats']} alternating repeats, at {a['lengths'][0]} tokens ({t['chunks_median']:.0f} chunks): "
                  + ", ".join(f"{s} {v:.3f}" for s, v in t["median_seconds"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[8192])
    p.add_argument("--seeds", default="2-9", help="FIRST-LAST (RULER's 42 is held out)")
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--settings", nargs="+", default=["never", "8"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-repeats", type=int, default=0,
                   help="also time proportional_plans alone per setting (at the first length)")
    p.add_argument("--out", default="/tmp/ablate_proportional.json")
    args = p.parse_args(argv)
    quiet_offline(args.threads)
    draft = load_draft(DraftConfig())
    compressor = SpecPrefillCompressor(draft, on_failure="raise")
    compressor._ensure_scorer().score = ZeroScores(draft.tokenizer).score  # no draft forward
    instances = []
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        draft.tokenizer.save_pretrained(tokenizer_dir)
        for length in args.lengths:
            for task in ("cwe", "fwe"):
                for seed in seeds_of(args.seeds):
                    instances += ruler.generate(task, length, args.n, seed, tokenizer_dir, draft_cache_root() / "ruler")
    budgets: list[float | int] = [0.25, 0.1, 1024, 2048]
    result = {"machine": machine_info(), "args": vars(args), "draft": draft.name, "budgets": budgets,
              "rows": run(compressor, instances, args.settings, budgets)}
    if args.time_repeats:
        first = [i for i in instances if i.length == args.lengths[0]]
        result["timings"] = timings(compressor, first, args.settings, args.time_repeats)
    write_result(Path(args.out), result, markdown(result))


if __name__ == "__main__":
    main()
