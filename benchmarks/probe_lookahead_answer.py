"""Does the draft's lookahead name the answer?  A probe of "the lookahead as a draft answer".

The query block is followed by a few greedy lookahead tokens (``ScoringConfig.lookahead``): on
RULER's qa prompts ("... Question: ... Answer:") they are the draft's guess at the answer.  Were
they words of the answer or of its supporting sentences, they could join the lexical prior's query
(SpecKV's draft answer as extra query text).  This records, per RULER qa_1 / qa_2 instance, the
lookahead tokens the library decoded while compressing it, and counts the instances whose lookahead
has words beyond the question's, and those where such a word is one of the gold answer's or of the
supporting sentences'.  Nothing is changed in the library.  Usage::

    python -m benchmarks.probe_lookahead_answer --seed 1 --n 10 --lookahead 4 \
        --out benchmarks/results/lookahead_answer_probe_cpu_epyc.json
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import ruler
from benchmarks.bench_retention import quiet_offline
from benchmarks.bench_ruler import segments_of
from benchmarks.bench_scoring import machine_info
from specprefill_agents import (CacheConfig, CompressionConfig, DraftConfig, ScoringConfig, SpecPrefillCompressor,
                                load_draft)
from specprefill_agents.draft import draft_cache_root
from specprefill_agents.scoring import batching, query_block

_STOP = frozenset({"the", "a", "an", "of", "in", "on", "at", "to", "and", "or", "is", "was", "were", "be", "by", "for",
                   "with", "as", "from", "that", "this", "it", "its", "which", "who", "what", "when", "where", "how",
                   "did", "does", "do"})


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 2}


def record_lookahead(into: list[list[int]]) -> None:
    """Every query block run (alone or batched) appends the tokens it decoded to ``into``."""
    for cls in (query_block.QueryBlock, batching.BlockBatcher):
        inner = cls.run

        def run(self: Any, *args: Any, _inner: Any = inner, **kwargs: Any) -> Any:
            out = _inner(self, *args, **kwargs)
            into.append(list(out.tokens))
            return out

        cls.run = run  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--lookahead", type=int, default=ScoringConfig().lookahead)
    p.add_argument("--out", default="benchmarks/results/lookahead_answer_probe_cpu.json")
    args = p.parse_args(argv)
    quiet_offline(1)
    draft = load_draft(DraftConfig())
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        draft.tokenizer.save_pretrained(tokenizer_dir)
        cache = draft_cache_root() / "ruler"
        instances = [i for task in ("qa_1", "qa_2")
                     for i in ruler.generate(task, 4096, args.n, args.seed, tokenizer_dir, cache)]
    comp = SpecPrefillCompressor(draft, CompressionConfig(scoring=ScoringConfig(lookahead=args.lookahead)),
                                 cache=CacheConfig(kv_cache_bytes=0, score_cache_entries=0), on_failure="raise")
    decoded: list[list[int]] = []
    record_lookahead(decoded)
    rows = []
    for inst in instances:
        decoded.clear()
        comp.compress_segments(segments_of(inst), inst.question, keep_ratio=0.1)
        text = draft.tokenizer.decode([t for run in decoded for t in run])
        extra = words(text) - words(inst.question)
        answer = set().union(*(words(o) for o in inst.outputs))
        support = set().union(*(words(s) for s in inst.support))
        rows.append({"task": inst.task, "index": inst.index, "lookahead": text, "extra_words": sorted(extra),
                     "names_answer": bool(extra & answer), "names_support": bool(extra & support)})
    result = {"machine": machine_info(), "args": vars(args), "draft": draft.name, "draft_dtype": str(draft.dtype),
              "rows": rows, "instances": len(rows),
              "with_extra_words": sum(bool(r["extra_words"]) for r in rows),
              "names_answer": sum(r["names_answer"] for r in rows),
              "names_support": sum(r["names_support"] for r in rows)}
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    m = result["machine"]
    lines = [f"# The draft's lookahead on RULER qa prompts ({result['draft']}, {result['draft_dtype']})", "",
             f"{m['cpu_model']}, torch {m['torch']}, {m['date']}. RULER qa_1 + qa_2 at 4k, seed {args.seed}, "
             f"n = {args.n} each, {args.lookahead} lookahead tokens.", "",
             f"Instances: {result['instances']}; lookahead with words beyond the question: "
             f"**{result['with_extra_words']}**; naming a word of the gold answer: **{result['names_answer']}**; "
             f"of a supporting sentence: **{result['names_support']}**.", "",
             "| task | # | lookahead (decoded) | words beyond the question |", "|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['index']} | {json.dumps(r['lookahead'])} | {', '.join(r['extra_words'])} |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:5]))


if __name__ == "__main__":
    main()
