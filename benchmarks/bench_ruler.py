"""RULER (NVIDIA's 13 synthetic tasks) evidence retention per task x method x budget, in one run.

Instances come from RULER's own generators (``benchmarks/ruler.py``; install them with
``bash scripts/install_benchmarks.sh``), lengths in draft tokens.  Each prompt is three
segments: RULER's instructions (protected), the context (compressed) and the question
(protected; also the query).  Methods are those of ``bench_retention.py`` at the same budget,
counted with the draft tokenizer: keep ratios (floats) and fixed budgets in tokens (ints:
SpecPC reports 1024 and 2048).  Metrics (``ruler.evidence_kept``): the evidence each task needs
survived; for qa_1/qa_2 also the supporting sentences, whole.  With ``--target``, a target model
(Qwen2.5-Coder, ``benchmarks/models.py``) also answers every prompt, full and compressed, greedily,
and RULER's own metric scores the answer (:func:`ruler_score`).

Outputs ``<out>.json`` (every row, the machine named), ``<out>.md`` and ``<out>.png``.  Usage::

    python benchmarks/bench_ruler.py --n 20 --seed 42 --ours-variants boost2:lexical_boost=2 \
        --methods ours bm25 random head_tail bm25_sentences --out /tmp/a.json   # the reported set,
    python benchmarks/bench_ruler.py --n 20 --seed 42 --methods embeddings --out /tmp/b.json  # with MiniLM,
    python benchmarks/bench_ruler.py --merge /tmp/a.json /tmp/b.json --out benchmarks/results/ruler_4k_cpu_epyc.json
    python benchmarks/bench_ruler.py --tasks niah_single_1 qa_2 --n 1 --methods ours bm25   # smoke run
    python benchmarks/bench_ruler.py --tasks qa_1 qa_2 --methods ours --target 0.5b          # answers too
    python benchmarks/bench_ruler.py --tasks qa_1 qa_2 --methods ours bm25_sentences --as-documents  # + ours/docs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks import ruler
from benchmarks.bench_retention import (DEFAULT_METHODS, METHODS, build_methods, draft_variants, dtype_variants, log,
                                       quiet_offline, scored_seconds, token_counter)
from benchmarks.bench_scoring import machine_info
from benchmarks.baselines import Compressed, budget_args
from benchmarks.bench_target import answer
from specprefill_agents import DraftConfig, Segment, load_draft
from specprefill_agents.types import DOCUMENT_ROLE
from specprefill_agents.draft import draft_cache_root


def segments_of(instance: ruler.RulerInstance) -> list[Segment]:
    return [Segment(text, role=role, protected=role == "user") for role, text in instance.segments]


_PASSAGE = re.compile(r"\n\n(?=Document \d+:\n)")  # where one of RULER's qa passages ends and the next begins


def passages(context: str) -> list[str]:
    """RULER's qa context cut into its passages (``Document N:`` blocks; joined by a blank line)."""
    return _PASSAGE.split(context)


class AsDocuments:
    """One of ours, handed RULER's qa context as the document entry points (LangChain's document
    compressor, LlamaIndex's node postprocessor) hand over retrieved passages: each passage a
    segment of role ``"document"`` and the question as the query, the same budget over the passages.
    The kept passages are joined by a blank line, as in the context, one that comes back empty left
    out; the tokens kept are the passages' own (the budget is over the passages, not the blank lines
    a prompt template puts between them)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, f"{inner.name}/docs"
        self.compressor = inner.compressor

    def compress(self, segments: list[Segment], query: str, budget: float | int) -> Compressed:
        t0 = time.perf_counter()
        keep_ratio, max_tokens = budget_args(budget)
        docs = [Segment(text, role=DOCUMENT_ROLE) for text in passages(segments[1].text)]
        result = self.compressor.compress_segments(docs, query, keep_ratio=keep_ratio or 1.0, max_tokens=max_tokens,
                                                   token_counter=self.inner.counter)
        kept = "\n\n".join(t for t in result.texts if t)
        return Compressed((segments[0].text, kept, segments[2].text), result.stats.compressed_tokens,
                          result.stats.budget_tokens, time.perf_counter() - t0)


def budget_name(budget: float | int) -> str:
    return f"{budget:.0%}" if isinstance(budget, float) else f"{budget} tok"


def ruler_score(task: str, outputs: tuple[str, ...], prediction: str) -> float:
    """RULER's metric for one answer: qa takes the best of its alternative answers
    (``string_match_part``), every other task the share of its outputs named (``string_match_all``);
    case-insensitive substring matches."""
    pred = prediction.lower()
    hits = [o.lower() in pred for o in outputs]
    if not hits:
        return 0.0
    return float(any(hits)) if task.startswith("qa") else sum(hits) / len(hits)


def run_one(method: Any, inst: ruler.RulerInstance, budget: float | int, target: Any = None,
            max_new_tokens: int = 32) -> dict[str, Any]:
    out = method.compress(segments_of(inst), inst.question, budget)
    kept = out.texts[1]
    retained, alive = ruler.evidence_kept(inst, kept)
    support = [ruler.support_kept(s, kept) for s in inst.support]
    strict = [ruler.verbatim(s, kept) for s in inst.support]
    return {"task": inst.task, "length": inst.length, "index": inst.index, "seed": inst.seed, "method": method.name,
            "budget": budget, "retained": retained, "evidence_kept": alive,
            "evidence_total": 1 if inst.task.startswith("qa") else len(inst.evidence),
            "support_kept": all(support) if support else None, "support_strict": all(strict) if strict else None,
            "tokens_out": out.tokens, "budget_tokens": out.budget, "seconds": out.seconds,
            "scored_seconds": scored_seconds(method),
            "text_sha": hashlib.sha256(kept.encode("utf-8", "surrogatepass")).hexdigest()[:16],
            **_answered(target, inst, kept, max_new_tokens)}


def _answered(target: Any, inst: ruler.RulerInstance, context: str, max_new_tokens: int) -> dict[str, Any]:
    """The target's greedy answer to RULER's prompt (instructions, ``context``, question: the base
    template, ending in its answer prefix) as one user turn of its chat template, and its score;
    nothing without a target."""
    if target is None:
        return {}
    prompt = inst.segments[0][1] + context + inst.segments[2][1]
    ids = target.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=True)
    text, _ = answer(target, list(ids["input_ids"] if hasattr(ids, "keys") else ids), max_new_tokens)
    return {"answer": text, "score": ruler_score(inst.task, inst.outputs, text)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        for task in (r["task"], "all"):
            cells[f"{r['method']}|{task}|{r['length']}|{r['budget']}"].append(r)
    out = {}
    for key, v in cells.items():
        sup = [r["support_kept"] for r in v if r["support_kept"] is not None]
        strict = [r["support_strict"] for r in v if r["support_strict"] is not None]
        out[key] = {"n": len(v), "retention": sum(r["retained"] for r in v) / len(v),
                    "support": sum(sup) / len(sup) if sup else None,
                    "support_strict": sum(strict) / len(strict) if strict else None,
                    "seconds": sum(r["seconds"] for r in v) / len(v)}
        scores = [r["score"] for r in v if "score" in r]
        if scores:
            out[key]["score"] = sum(scores) / len(scores)
    return out


def _which(args: dict[str, Any]) -> str:
    """Which of the generated instances a run used: ``n = 20``, or ``instances 21-40 of n = 40``."""
    first, skip, n = args.get("first"), args.get("skip") or 0, args["n"]
    end = n if first is None else min(first, n)
    return f"n = {n}" if skip == 0 and end == n else f"instances {skip + 1}-{end} of n = {n}"


def markdown(result: dict[str, Any]) -> str:
    m, a, s = result["machine"], result["args"], result["summary"]
    methods = result["method_names"]
    lines = [f"# RULER evidence retention ({result['draft']}, {result.get('draft_dtype', 'torch.float32')})", "",
             f"{m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} (`torch.set_num_threads({a['threads']})`), "
             f"transformers {m['transformers']}, {m['date']}. RULER generators from nvidia-long-context-eval "
             f"(nltk's sentence splitter replaced by a regex splitter), seed {a['seed']}, {_which(a)} per task and "
             f"length; lengths in draft tokens; budgets counted with the draft tokenizer over the context segment.",
             ""]
    for part in result.get("replaced_rows", []):
        lines += [f"Rows of {', '.join(part['tasks'])} replaced by a later run ({part['machine']['date']}): "
                  f"{part['from']}", ""]
    for length in a["lengths"]:
        for budget in result["budgets"]:
            lines += [f"## {length} tokens, keep {budget_name(budget)}", "",
                      "| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
            for task in [*a["tasks"], "all"]:
                vals = [s.get(f"{mm}|{task}|{length}|{budget}", {}).get("retention") for mm in methods]
                best = max((v for v in vals if v is not None), default=None)
                cells = ["—" if v is None else (f"**{v:.2f}**" if v == best and v > 0 else f"{v:.2f}") for v in vals]
                lines.append(f"| {task} | " + " | ".join(cells) + " |")
            for task in ("qa_1", "qa_2"):
                if task in a["tasks"]:
                    for metric, label in (("support", "≥70% trigrams"), ("support_strict", "verbatim")):
                        vals = [s.get(f"{mm}|{task}|{length}|{budget}", {}).get(metric) for mm in methods]
                        lines.append(f"| *{task} supporting sentences whole ({label})* | "
                                     + " | ".join("—" if v is None else f"*{v:.2f}*" for v in vals) + " |")
            secs = [s.get(f"{mm}|all|{length}|{budget}", {}).get("seconds") for mm in methods]
            lines += ["| *seconds per instance* | " + " | ".join("—" if v is None else f"*{v:.2f}*" for v in secs)
                      + " |", ""]
    lines += _score_tables(result)
    over = {mm: sum(1 for r in result["rows"] if r["method"] == mm and r["tokens_out"] > r["budget_tokens"])
            for mm in methods}
    lines += ["Compressions over budget: " + ", ".join(f"{mm} {n}" for mm, n in over.items())
              + f" (of {len(result['rows']) // max(len(methods), 1)} each).", ""]
    lines += ["Ours at later budgets reuses the first budget's draft scores; with `--store`, scores computed in "
              "an earlier run are read back and the seconds are selection only (`scored_seconds` in the JSON "
              "holds the scoring time when it ran).", ""]
    return "\n".join(lines)


def _score_tables(result: dict[str, Any]) -> list[str]:
    """RULER's score of the target's answers (x100, as RULER reports), full context vs each method."""
    if not result.get("target"):
        return []
    a, s, methods = result["args"], result["summary"], result["method_names"]
    full: dict[str, list[float]] = defaultdict(list)
    for i in result["instances"]:
        for task in (i["task"], "all"):
            full[f"{task}|{i['length']}"].append(i["full_score"])
    budgets = result["budgets"]
    lines = [f"## Target answers: {result['target']} (RULER's score x100; greedy, {a['max_new_tokens']} new tokens at "
             "most; the prompt as one user turn of its chat template)", ""]
    for length in a["lengths"]:
        lines += [f"### {length} tokens", "",
                  "| task | full | " + " | ".join(f"{mm}@{budget_name(b)}" for mm in methods for b in budgets) + " |",
                  "|---" * (2 + len(methods) * len(budgets)) + "|"]
        for task in [*a["tasks"], "all"]:
            f = full.get(f"{task}|{length}", [])
            cells = [f"{100 * sum(f) / len(f):.1f}" if f else "—"]
            for mm in methods:
                for b in budgets:
                    v = s.get(f"{mm}|{task}|{length}|{b}", {}).get("score")
                    cells.append("—" if v is None else f"{100 * v:.1f}")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    a, s, methods = result["args"], result["summary"], result["method_names"]
    ratios = [b for b in result["budgets"] if isinstance(b, float)][:2]
    length = a["lengths"][0]
    tasks = [*a["tasks"], "all"]
    fig, axes = plt.subplots(len(ratios), 1, figsize=(max(8, len(tasks) * 0.9), 3.2 * len(ratios)), squeeze=False)
    width = 0.8 / len(methods)
    for ax, budget in zip(axes[:, 0], ratios):
        for k, mm in enumerate(methods):
            ys = [s.get(f"{mm}|{t}|{length}|{budget}", {}).get("retention", 0.0) for t in tasks]
            ax.bar(np.arange(len(tasks)) + k * width, ys, width, label=mm)
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"RULER {length} tokens, keep {budget_name(budget)}")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=len(methods))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(ruler.TASKS), choices=list(ruler.TASKS))
    p.add_argument("--methods", nargs="+", default=[*DEFAULT_METHODS, "bm25_sentences"], choices=list(METHODS))
    p.add_argument("--ours-variants", nargs="*", default=[], metavar="NAME:KEY=VALUE,...")
    p.add_argument("--lengths", type=int, nargs="+", default=[4096])
    p.add_argument("--n", type=int, default=20, help="instances per task and length")
    p.add_argument("--first", type=int, default=None, metavar="K",
                   help="run only the first K of the n instances per task and length (a slow method on a subset "
                        "of the instances that other runs used)")
    p.add_argument("--skip", type=int, default=0, metavar="K",
                   help="leave out the first K of the n instances per task and length (those an earlier run with "
                        "--n K used: RULER's first K instances of a seed are the same for any n >= K)")
    p.add_argument("--seed", type=int, default=42, help="42 is RULER's own; tune on others")
    p.add_argument("--ratios", type=float, nargs="*", default=[0.25, 0.10])
    p.add_argument("--token-budgets", type=int, nargs="*", default=[1024, 2048])
    p.add_argument("--draft-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="the draft's dtype (default: the library's choice for the device)")
    p.add_argument("--draft-variants", nargs="*", default=[], metavar="NAME=SPEC",
                   help="extra rows ours[NAME]: another draft (a .gguf file, a model directory or a hub id); "
                        "instances and budgets stay counted with the embedded draft's tokenizer")
    p.add_argument("--dtype-variants", nargs="*", default=[], choices=["float32", "bfloat16", "float16"],
                   help="extra rows ours[DTYPE]: the draft loaded in each dtype, side by side")
    p.add_argument("--target", default=None, choices=["0.5b", "1.5b"],
                   help="also answer every prompt, full and compressed, with this Qwen2.5-Coder Instruct target "
                        "(benchmarks/models.py) and score the answers with RULER's metric")
    p.add_argument("--max-new-tokens", type=int, default=32, help="the target's answer length (RULER's qa: 32)")
    p.add_argument("--as-documents", action="store_true",
                   help="each of ours also as ours/docs: the qa context's passages handed over one segment of role "
                        "'document' each, as the document entry points do (qa tasks only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--store", default=str(draft_cache_root() / "bench-scores"),
                   help="folder of ours' draft scores, reused across runs ('' to score every time)")
    p.add_argument("--out", default="benchmarks/results/ruler_cpu.json")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="write --out from the rows of earlier runs (the same instances, other methods) instead")
    p.add_argument("--replace", nargs=2, default=None, metavar=("BASE", "NEW"),
                   help="write --out as BASE with the rows of NEW's tasks taken from NEW (a later run of every method "
                        "on the same instances); --note says why, in the markdown")
    p.add_argument("--note", default="", help="with --replace: what changed between the runs")
    return p.parse_args(argv)


def merged(paths: list[str]) -> dict[str, Any]:
    """One result from runs that split the methods between processes."""
    runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    result = dict(runs[0])
    result["method_names"] = [m for run in runs for m in run["method_names"]]
    result["rows"] = [r for run in runs for r in run["rows"]]
    result["args"] = {**runs[0]["args"], "methods": [m for run in runs for m in run["args"]["methods"]]}
    result["merged_from"] = [{"path": p, "machine": run["machine"], "total_seconds": run["total_seconds"]}
                             for p, run in zip(paths, runs)]
    result["summary"] = summarise(result["rows"])
    return result


def replaced(base: str, new: str, note: str) -> dict[str, Any]:
    """``base`` with its rows of ``new``'s tasks replaced by ``new``'s, which must cover the same
    instances, methods and budgets."""
    result, later = (json.loads(Path(p).read_text(encoding="utf-8")) for p in (base, new))
    tasks = set(later["args"]["tasks"])
    key = lambda r: (r["task"], r["length"], r["index"], r["method"], r["budget"])  # noqa: E731
    if {key(r) for r in result["rows"] if r["task"] in tasks} != {key(r) for r in later["rows"]}:
        raise ValueError(f"{new} does not cover the same instances, methods and budgets of {sorted(tasks)} as {base}")
    result["rows"] = [r for r in result["rows"] if r["task"] not in tasks] + later["rows"]
    result["summary"] = summarise(result["rows"])
    result.setdefault("replaced_rows", []).append({"tasks": sorted(tasks), "from": note, "machine": later["machine"],
                                                   "args": later["args"]})
    return result


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    plot(result, out.with_suffix(".png"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        write(merged(args.merge), Path(args.out))
        return
    if args.replace:
        write(replaced(*args.replace, args.note), Path(args.out))
        return
    if args.as_documents and not all(task.startswith("qa") for task in args.tasks):
        raise SystemExit("--as-documents cuts qa contexts into their passages: pass --tasks qa_1 qa_2")
    quiet_offline(args.threads)
    started = time.perf_counter()
    draft = load_draft(DraftConfig(dtype=args.draft_dtype))
    tok = draft.tokenizer
    counter = token_counter(tok)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tok.save_pretrained(tokenizer_dir)
        cache = draft_cache_root() / "ruler"
        instances = [inst for length in args.lengths for task in args.tasks
                     for inst in ruler.generate(task, length, args.n, args.seed, tokenizer_dir, cache)
                     [args.skip:args.first]]
    store = Path(args.store) if args.store else None
    methods = build_methods(args.methods, draft, counter, args.seed, args.ours_variants, store)
    methods += dtype_variants(args.dtype_variants, "embedded", counter, store)
    methods += draft_variants(args.draft_variants, counter, store)
    if args.as_documents:
        methods += [AsDocuments(m) for m in methods if m.name.startswith("ours")]
    budgets: list[float | int] = [*args.ratios, *args.token_budgets]
    target = None
    if args.target:
        from benchmarks.models import load_target

        target = load_target(args.target)
    log(f"{len(instances)} instances x {len(methods)} methods x {len(budgets)} budgets")
    rows, full = [], []
    for k, inst in enumerate(instances):
        full.append(_answered(target, inst, inst.context, args.max_new_tokens))
        done = [run_one(method, inst, budget, target, args.max_new_tokens) for method in methods for budget in budgets]
        rows += done
        log(f"[{k + 1}/{len(instances)}] {inst.task} {inst.length} #{inst.index}: "
            + " ".join(f"{r['method']}@{budget_name(r['budget'])}={'Y' if r['retained'] else 'n'}"
                       + (f"/{r['score']:.1f}" if "score" in r else "") for r in done)
            + (f" full={full[-1]['score']:.1f}" if full[-1] else ""))
    result = {"machine": machine_info(), "args": vars(args), "draft": draft.name, "draft_dtype": str(draft.dtype),
              "budgets": budgets, "method_names": [m.name for m in methods], "rows": rows, "summary": summarise(rows),
              "target": target.name if target is not None else None,
              "instances": [{"task": i.task, "length": i.length, "index": i.index, "outputs": list(i.outputs),
                             "evidence": list(i.evidence), "support": list(i.support),
                             "context_tokens": counter(i.context),
                             **{f"full_{k}": v for k, v in answered.items()}} for i, answered in zip(instances, full)]}
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["total_seconds"] = time.perf_counter() - started
    write(result, Path(args.out))
    log(f"wrote {args.out}, .md and .png in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
