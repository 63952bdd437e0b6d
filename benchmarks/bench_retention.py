"""Evidence retention per task family x method x keep ratio, and compression time, in one run.

Tasks: ``benchmarks/tasks`` (stdlib text, seeded).  Methods at the same budget, all counted
with the draft tokenizer: ours (embedded SmolLM2-135M draft, default CompressionConfig),
random, head+tail truncation, BM25, all-MiniLM-L6-v2 embeddings filter (see
``benchmarks/baselines.py``: the baselines reuse our chunks, budget enforcement and rendering).

An instance is *retained* when every evidence string is a substring of the compressed context.
Outputs ``<out>.json`` (every row, the machine named), ``<out>.md`` (tables) and ``<out>.png``
(retention vs keep ratio per method).  Usage::

    python benchmarks/bench_retention.py                                  # ~15 min on 2 CPU cores
    python benchmarks/bench_retention.py --lengths 2048 --n 1 --methods ours bm25   # smoke run
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch

from benchmarks import baselines as bl
from benchmarks.bench_scoring import machine_info
from benchmarks.score_store import StoredScoresCompressor
from benchmarks.tasks import FAMILIES, TaskInstance, make_suite
from specprefill_agents import (CacheConfig, CompressionConfig, DraftConfig, Segment, SpecPrefillCompressor,
                                load_draft)

METHODS = ("ours", "random", "head_tail", "bm25", "embeddings", "bm25_sentences", "longllmlingua")
DEFAULT_METHODS = METHODS[:5]
TARGETS = {0.25: 0.95, 0.10: 0.85}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def quiet_offline(threads: int) -> None:
    """What every benchmark process sets first: torch threads, no hub, no progress bars."""
    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def token_counter(tokenizer: Any) -> bl.Counter:
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def segments_of(task: TaskInstance) -> list[Segment]:
    """The system prompt is protected; every other segment may be compressed (short ones are
    left alone by ``min_tokens``, for every method alike)."""
    return [Segment(text, role=role, protected=role == "system") for role, text in task.segments]


def parse_variant(spec: str) -> tuple[str, CompressionConfig]:
    """``"name:key=value,scoring.key=value"`` -> (``"ours[name]"``, the default config with those changes)."""
    name, _, assignments = spec.partition(":")
    top: dict[str, Any] = {}
    scoring: dict[str, Any] = {}
    for item in filter(None, assignments.split(",")):
        key, _, raw = item.partition("=")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        (scoring if key.startswith("scoring.") else top)[key.removeprefix("scoring.")] = value
    base = CompressionConfig()
    return f"ours[{name}]", base.replace(**top, scoring=base.scoring.replace(**scoring))


def _ours(draft: Any, counter: bl.Counter, config: CompressionConfig | None = None, name: str = "ours",
          store: Path | None = None) -> bl.Ours:
    cache = CacheConfig(kv_cache_bytes=0)
    compressor = (SpecPrefillCompressor(draft, config, cache=cache, on_failure="raise") if store is None
                  else StoredScoresCompressor(draft, config, cache=cache, on_failure="raise", store=store))
    method = bl.Ours(compressor, counter)
    method.name = name
    return method


def dtype_variants(dtypes: list[str], draft_spec: str, counter: bl.Counter, store: Path | None = None) -> list[Any]:
    """One ``ours[DTYPE]`` per dtype: the same draft loaded in that dtype, side by side with ours."""
    return [_ours(load_draft(DraftConfig(model=draft_spec, dtype=dtype)), counter, name=f"ours[{dtype}]", store=store)
            for dtype in dtypes]


def named_drafts(items: list[str], flag: str = "--draft-variants") -> list[tuple[str, str]]:
    """``NAME=SPEC`` arguments as (name, spec) pairs, ``~`` expanded in the spec."""
    out = []
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise SystemExit(f"{flag} takes NAME=SPEC, got {item!r}")
        out.append((name, os.path.expanduser(spec)))
    return out


def draft_variants(specs: list[str], counter: bl.Counter, store: Path | None = None) -> list[Any]:
    """One ``ours[NAME]`` per ``NAME=SPEC``: another draft (a .gguf file, a model directory or a hub
    id), side by side with ours; budgets are still counted with ``counter`` (ours' draft tokenizer)."""
    return [_ours(load_draft(DraftConfig(model=spec)), counter, name=f"ours[{name}]", store=store)
            for name, spec in named_drafts(specs)]


def int8_draft(draft: Any) -> Any:
    """A copy of ``draft`` whose linear layers run as dynamic int8 (torch.ao.quantization, CPU)."""
    from specprefill_agents import DraftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is deprecated in torch 2.x
        model = torch.ao.quantization.quantize_dynamic(draft.model, {torch.nn.Linear}, dtype=torch.qint8)
    return DraftModel(model=model, tokenizer=draft.tokenizer, name=f"{draft.name}+int8", max_context=draft.max_context)


def build_methods(names: list[str], draft: Any, counter: bl.Counter, seed: int,
                  variants: list[str] = (), store: Path | None = None) -> list[Any]:  # type: ignore[assignment]
    """The methods by name, then one ``ours[NAME]`` per variant; with ``store``, ours' draft scores
    are read from (and written to) that folder (``benchmarks/score_store.py``)."""
    offsets = bl.tokenizer_offsets(draft.tokenizer)

    def longllmlingua() -> Any:  # llmlingua is an optional peer, imported only when asked for (benchmarks/README.md)
        from benchmarks.peer_llmlingua import LongLLMLingua

        # llmlingua's own dtype (float32 on CPU): its token filter compares small perplexity differences
        return LongLLMLingua(counter, draft.model.name_or_path, device_map=str(draft.device))

    makers = {
        "ours": lambda: _ours(draft, counter, store=store),
        "random": lambda: bl.RandomChunks(counter, offsets, seed=seed),
        "head_tail": lambda: bl.HeadTail(counter, offsets),
        "bm25": lambda: bl.BM25Chunks(counter, offsets),
        "embeddings": lambda: bl.EmbeddingChunks(counter, offsets, bl.minilm_encoder()),
        "bm25_sentences": lambda: bl.BM25Sentences(counter),
        "longllmlingua": longllmlingua,
    }
    return [makers[name]() for name in names] + [_ours(draft, counter, cfg, name, store)
                                                   for name, cfg in map(parse_variant, variants)]


def run_one(method: Any, task: TaskInstance, ratio: float) -> dict[str, Any]:
    out = method.compress(segments_of(task), task.question, ratio)
    text = out.text
    missing = [e for e in task.evidence if e not in text]
    return {"family": task.family, "length": task.meta["length"], "seed": task.seed, "method": method.name,
            "ratio": ratio, "retained": not missing, "evidence_kept": len(task.evidence) - len(missing),
            "evidence_total": len(task.evidence), "missing": missing, "tokens_in": task.n_tokens,
            "tokens_out": out.tokens, "budget": out.budget, "seconds": out.seconds,
            "scored_seconds": scored_seconds(method),
            "text_sha": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]}


def scored_seconds(method: Any) -> float | None:
    """How long ours' draft took on the latest instance when it was scored (with a score store)."""
    return getattr(getattr(method, "compressor", None), "scored_seconds", None)


def run(tasks: list[TaskInstance], methods: list[Any], ratios: list[float]) -> list[dict[str, Any]]:
    rows = []
    for k, task in enumerate(tasks):
        for method in methods:
            for ratio in ratios:  # ours: the first ratio scores, later ones hit the score cache
                rows.append(run_one(method, task, ratio))
        done = [r for r in rows[-len(methods) * len(ratios):]]
        log(f"[{k + 1}/{len(tasks)}] {task.family} {task.meta['length']} seed={task.seed}: "
            + " ".join(f"{r['method']}@{r['ratio']}={'Y' if r['retained'] else 'n'}({r['seconds']:.1f}s)"
                       for r in done))
    return rows


def summarise(rows: list[dict[str, Any]], ratios: list[float]) -> dict[str, Any]:
    cells: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        for fam in (r["family"], "all"):
            cells[(r["method"], fam, r["ratio"])].append(r)
    retention = {f"{m}|{f}|{q}": {"retention": sum(r["retained"] for r in v) / len(v), "n": len(v),
                                  "evidence_fraction": sum(r["evidence_kept"] for r in v)
                                  / sum(r["evidence_total"] for r in v)}
                 for (m, f, q), v in cells.items()}
    timing: dict[str, dict[str, float]] = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        first = [r["seconds"] for r in rows if r["method"] == m and r["ratio"] == ratios[0]]
        later = [r["seconds"] for r in rows if r["method"] == m and r["ratio"] != ratios[0]]
        timing[m] = {"median_s_first_ratio": statistics.median(first), "mean_s_first_ratio": statistics.fmean(first),
                     "median_s_later_ratios": statistics.median(later) if later else float("nan")}
    over = [r for r in rows if r["tokens_out"] > r["budget"]]
    return {"retention": retention, "timing": timing,
            "over_budget": [{k: r[k] for k in ("method", "family", "seed", "ratio", "tokens_out", "budget")}
                            for r in over]}


# --------------------------------------------------------------------------- report


def markdown(result: dict[str, Any]) -> str:
    m, a, s = result["machine"], result["args"], result["summary"]
    methods, ratios, families = result.get("method_names", a["methods"]), a["ratios"], [*a["families"], "all"]
    lines = [f"# Evidence retention on CPU ({result['draft']})", "",
             f"{m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} thread, "
             f"`torch.set_num_threads({a['threads']})`), transformers {m['transformers']}, Python {m['python']}, "
             f"{m['date']}; load avg at start {m['load_avg_start'][0]:.1f} (shared machine). "
             f"{a['n']} instances per family and length, lengths {a['lengths']} draft tokens "
             f"(n = {a['n'] * len(a['lengths'])} per cell, {result['instances']} instances in all); "
             f"budget = keep ratio x compressible tokens, counted with the draft tokenizer for every method.", ""]
    for ratio in ratios:
        target = TARGETS.get(ratio)
        lines += [f"## Retention at keep {ratio:.0%}" + (f" (target for ours >= {target})" if target else ""), "",
                  "| family | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for fam in families:
            vals = [s["retention"].get(f"{meth}|{fam}|{ratio}", {}).get("retention") for meth in methods]
            best = max(v for v in vals if v is not None)
            cells = [("—" if v is None else (f"**{v:.2f}**" if v == best and v > 0 else f"{v:.2f}")) for v in vals]
            lines.append(f"| {fam} | " + " | ".join(cells) + " |")
        fracs = [s["retention"].get(f"{meth}|all|{ratio}", {}).get("evidence_fraction") for meth in methods]
        lines += ["| *evidence strings kept, all* | " + " | ".join(f"*{v:.2f}*" for v in fracs) + " |", ""]
    lines += ["## Compression time per instance (s, median)", "",
              "| method | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|",
              f"| keep {ratios[0]:.0%} (cold) | "
              + " | ".join(f"{s['timing'][mm]['median_s_first_ratio']:.2f}" for mm in methods) + " |"]
    if len(ratios) > 1:
        lines.append("| later ratios | " + " | ".join(f"{s['timing'][mm]['median_s_later_ratios']:.2f}"
                                                   for mm in methods) + " |")
    lines += ["", "Ours at later ratios reuses the first call's draft scores (score cache, as in an agent that "
              "re-asks); the draft KV prefix cache is off so every instance is scored from scratch. Baseline "
              "times include the draft-tokenizer offsets and chunk planning; the embeddings model load is "
              "not counted.", "",
              f"Over budget: {len(s['over_budget'])} of {len(result['rows'])} compressions.", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, s = result["args"], result["summary"]
    families = [*a["families"], "all"]
    cols = 4
    rows_n = -(-len(families) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3.2 * rows_n), sharey=True, squeeze=False)
    ratios = sorted(a["ratios"])
    for ax, fam in zip(axes.flat, families):
        for meth in result.get("method_names", a["methods"]):
            ys = [s["retention"][f"{meth}|{fam}|{q}"]["retention"] for q in ratios]
            ax.plot(ratios, ys, marker="o", label=meth, linewidth=2.5 if meth == "ours" else 1.2)
        ax.set_title(fam)
        ax.set_xticks(ratios, [f"{q:.0%}" for q in ratios])
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(families):]:
        ax.axis("off")
    axes[0][0].set_ylabel("evidence retention")
    axes.flat[len(families) - 1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Evidence retention vs keep ratio ({result['draft']}, n={a['n'] * len(a['lengths'])} per point)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096], help="context size in draft tokens")
    p.add_argument("--n", type=int, default=4, help="instances per family and length")
    p.add_argument("--ours-variants", nargs="*", default=[], metavar="NAME:KEY=VALUE,...",
                   help="extra rows of ours with config changes, e.g. 'la8:scoring.lookahead=8' "
                        "or 'c32:chunk_tokens=32'")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.10])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draft", default="embedded")
    p.add_argument("--draft-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="draft weights/activations dtype (default: the library's choice for the device)")
    p.add_argument("--draft-variants", nargs="*", default=[], metavar="NAME=SPEC",
                   help="extra rows ours[NAME]: another draft (a .gguf file, a model directory or a hub id)")
    p.add_argument("--dtype-variants", nargs="*", default=[], choices=["float32", "bfloat16", "float16"],
                   help="extra rows ours[DTYPE]: the draft loaded in each dtype, side by side")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared machine)")
    p.add_argument("--int8", action="store_true",
                   help="add ours[int8]: the draft's nn.Linear layers dynamically quantized to int8 (CPU, fp32 draft)")
    p.add_argument("--store", default=None,
                   help="folder of ours' draft scores, reused across runs (benchmarks/score_store.py)")
    p.add_argument("--out", default="benchmarks/results/retention_cpu.json", help="JSON; .md and .png beside it")
    return p.parse_args(argv)


def build_tasks(args: argparse.Namespace, counter: bl.Counter) -> list[TaskInstance]:
    tasks = []
    for length in args.lengths:
        for task in make_suite(args.families, [length], args.n, counter, seed=args.seed):
            task.meta["length"] = length
            tasks.append(task)
    return tasks


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_offline(args.threads)
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    draft = load_draft(DraftConfig(model=args.draft, dtype=args.draft_dtype))
    counter = token_counter(draft.tokenizer)
    tasks = build_tasks(args, counter)
    store = Path(args.store) if args.store else None
    methods = build_methods(args.methods, draft, counter, args.seed, args.ours_variants, store)
    methods += dtype_variants(args.dtype_variants, args.draft, counter, store)
    methods += draft_variants(args.draft_variants, counter, store)
    if args.int8:  # the same draft with dynamic int8 linears, side by side with the methods above
        methods.append(_ours(int8_draft(draft), counter, name="ours[int8]"))
    log(f"{len(tasks)} instances x {len(methods)} methods x {len(args.ratios)} ratios")
    rows = run(tasks, methods, args.ratios)
    result.update(draft=draft.name, method_names=[m.name for m in methods], instances=len(tasks), rows=rows,
                  summary=summarise(rows, args.ratios),
                  tasks=[{"family": t.family, "seed": t.seed, "length": t.meta["length"], "tokens": t.n_tokens,
                          "question": t.question, "answer": t.answer, "evidence": list(t.evidence),
                          "meta": {k: v for k, v in t.meta.items() if k != "length"}} for t in tasks])
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["total_seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    table = markdown(result)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    plot(result, out.with_suffix(".png"))
    print(table)
    log(f"wrote {out}, .md and .png in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
