"""Where a chunk sits in its scoring window, and how the draft ranks it there.

The draft reads the context in windows of ``ScoringConfig.window_tokens`` (1024) draft tokens, side
by side, each from position 0, under one query block placed after a full window; the last window
is usually shorter, so its tokens sit farther from the question than a full window's.  This
probe reads ours' draft scores (from the score store, scoring what is missing), cuts the context
into the library's chunks, and reports the mean percentile rank of a chunk's draft score (0 = the
lowest of its instance, 1 = the highest) by its place in its window (eight bands, start to end),
for full windows and for the short last one, for every chunk and for the chunks that hold a
supporting sentence; and, per instance, how deep in the context the supporting sentences sit.
Positions count draft tokens of the segments before the context plus the context's own (the
instructions and the context, as the draft reads them).  Nothing is changed in the library.  Usage::

    python -m benchmarks.probe_window_position --sets qa_1:2 qa_2:2 qa_1:1 qa_2:1 --n 40 \
        --out benchmarks/results/window_position_cpu_epyc/profile.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import ruler
from benchmarks.bench_retention import quiet_offline
from benchmarks.bench_ruler import segments_of
from benchmarks.bench_scoring import machine_info, write_result
from benchmarks.score_store import StoredScoresCompressor
from specprefill_agents import CompressionConfig, DraftConfig, ScoringConfig, load_draft
from specprefill_agents.compressor import _plans
from specprefill_agents.draft import draft_cache_root

BANDS = 8


def band_of(position: int, total: int, window: int, bands: int = BANDS) -> tuple[str, int]:
    """("full" | "short", band) of a token at ``position`` of ``total`` context tokens read in
    windows of ``window``: which eighth of its window it falls in, and whether that window is
    the short last one."""
    start = position // window * window
    length = min(window, total - start)
    return ("short" if length < window else "full"), min(bands - 1, (position - start) * bands // length)


def percentiles(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among ``scores``, scaled into (0, 1)."""
    return (np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 0.5) / len(scores)


def probe(instance: Any, compressor: Any, tokenizer: Any, window: int) -> dict[str, Any]:
    segments = segments_of(instance)
    scores = compressor.score_segments(segments, instance.question)
    context = scores.segments[1]
    before = len(tokenizer(segments[0].text, add_special_tokens=False)["input_ids"])
    plan = _plans(segments, [1], [context], compressor.config)[0]
    starts = np.array([o[0] for o in context.offsets])
    chunks = [(i, c) for i, c in enumerate(plan.chunks) if not c.blank]
    ranks = percentiles(np.array([c.score for _, c in chunks]))
    total = before + len(starts)
    gold: set[int] = set()
    depths = []
    for sentence in instance.support:
        at = plan.text.find(sentence[:60])
        if at < 0:
            continue
        depths.append(at / max(len(plan.text), 1))
        gold |= {i for i, c in chunks if c.start < at + len(sentence) and c.end > at}
    rows = []
    for (i, c), rank in zip(chunks, ranks):
        kind, band = band_of(before + int(np.searchsorted(starts, c.start)), total, window)
        rows.append({"kind": kind, "band": band, "rank": float(rank), "gold": i in gold})
    return {"task": instance.task, "seed": instance.seed, "index": instance.index, "depths": depths, "chunks": rows}


def profile(probes: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, int]]]]:
    """Mean percentile and count per (which chunks, window kind, band)."""
    out: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for which in ("all", "gold"):
        for kind in ("full", "short"):
            cells: list[list[float]] = [[] for _ in range(BANDS)]
            for p in probes:
                for row in p["chunks"]:
                    if row["kind"] == kind and (which == "all" or row["gold"]):
                        cells[row["band"]].append(row["rank"])
            out.setdefault(which, {})[kind] = [(float(np.mean(c)) if c else float("nan"), len(c)) for c in cells]
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Draft rank by place in the scoring window ({result['draft']})", "",
             f"{m['cpu_model']}, torch {m['torch']}, transformers {m['transformers']}, {m['date']}. RULER 4k, "
             f"sets {', '.join(result['args']['sets'])}, n = {result['args']['n']} each; windows of "
             f"{result['window']} draft tokens. Mean percentile rank of a chunk's draft score within its "
             "instance (0.5 = the median), by eighth of its window, start to end (count in brackets).", "",
             "| chunks | window | " + " | ".join(f"{k + 1}/8" for k in range(BANDS)) + " |",
             "|---|---|" + "---|" * BANDS]
    for which, kinds in result["profile"].items():
        for kind, cells in kinds.items():
            lines.append(f"| {which} | {kind} | " + " | ".join(f"{v:.2f} ({n})" for v, n in cells) + " |")
    lines += ["", "Depth of the supporting sentences in the context (0 = start, 1 = end), per set:", ""]
    for name, depths in result["depths"].items():
        lines.append(f"- {name}: median {np.median(depths):.2f}, range {min(depths):.2f}-{max(depths):.2f}"
                     if depths else f"- {name}: none found")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", nargs="+", default=["qa_1:2", "qa_2:2", "qa_1:1", "qa_2:1"], help="TASK:SEED")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--store", default=str(draft_cache_root() / "bench-scores"))
    p.add_argument("--out", default="/tmp/window_position.json")
    args = p.parse_args(argv)
    quiet_offline(args.threads)
    draft = load_draft(DraftConfig())
    compressor = StoredScoresCompressor(draft, CompressionConfig(), on_failure="raise", store=Path(args.store))
    window = ScoringConfig().window_tokens
    probes, depths = [], {}
    for spec in args.sets:
        task, seed = spec.split(":")
        with tempfile.TemporaryDirectory() as tokenizer_dir:
            draft.tokenizer.save_pretrained(tokenizer_dir)
            instances = ruler.generate(task, args.length, args.n, int(seed), tokenizer_dir,
                                       draft_cache_root() / "ruler")
        done = [probe(inst, compressor, draft.tokenizer, window) for inst in instances]
        probes += done
        depths[spec] = [d for p in done for d in p["depths"]]
    result = {"machine": machine_info(), "args": vars(args), "draft": draft.name, "window": window,
              "profile": profile(probes), "depths": depths,
              "gold": [{**{k: p[k] for k in ("task", "seed", "index")},
                        "chunks": [row for row in p["chunks"] if row["gold"]]} for p in probes]}
    write_result(Path(args.out), result, markdown(result))


if __name__ == "__main__":
    main()
