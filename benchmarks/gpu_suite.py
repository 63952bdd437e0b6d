"""GPU benchmark suite: scoring cost, the agent loop with the KV prefix cache on and off, and TTFT.

One process, one device, three measurements side by side (``bash benchmarks/gpu_suite.sh OUTDIR``):

1. **scoring**: ``DraftScorer.score`` (the library's scorer, fixed lookahead) vs one plain SDPA
   forward of the same tokens through the same draft, at each context length;
2. **agent loop**: ``SpecPrefillCompressor.compress_segments`` over a loop whose context grows by a
   tool output per step (``bench_agent_loop``'s steps), KV prefix cache off vs on: draft tokens
   forwarded and wall time;
3. **TTFT**: compression (``SpecPrefillCompressor.compress``, cold) + target prefill of the kept
   tokens vs target prefill of the full context, for a 1.5B and a 7B target; the compression also
   with the opt-in semantic prior (its encoder on a worker thread), side by side.

Models are built from the published configs with random weights (``NOTES`` says why and what is set
instead).  ``--dry-run`` runs the same code on the CPU with tiny configs and lengths (a test runs it);
``--prepare DIR`` (where pip, the embedded draft and the semantic prior's encoder are) saves what the
GPU machine lacks into DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_agent_loop import build_steps, messages_at
from benchmarks.bench_block_batching import measure as measure_shared
from benchmarks.gpu_suite_report import device_info, write
from specprefill_agents import (
    CacheConfig,
    CompressionConfig,
    DraftModel,
    KVPrefixCache,
    ScoringConfig,
    SemanticModel,
    SpecPrefillCompressor,
)
from specprefill_agents._compat import install_scoring_attention
from specprefill_agents.scoring import DraftScorer

TEXT_MODULES = ("argparse", "inspect", "textwrap", "dataclasses", "functools", "typing")
QUESTION = "Which function parses the command line and reports errors?"
CARRIED_WHEELS = ("cachetools", "platformdirs")  # imported by the core, missing on the GPU machine

# The embedded draft's converted config.json (SmolLM2-135M-Instruct).
DRAFT_CONFIG: dict[str, Any] = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    head_dim=64, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, bos_token_id=1, eos_token_id=2,
    pad_token_id=2)
SEMANTIC_BOOST = 8.0  # the opt-in semantic prior's measured weight
# The semantic prior's encoder: all-MiniLM-L6-v2's config.json (a BERT).
ENCODER_CONFIG: dict[str, Any] = dict(
    hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12, vocab_size=30522,
    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
# The published config.json of Qwen2.5-1.5B-Instruct and Qwen2.5-7B-Instruct.
_QWEN: dict[str, Any] = dict(
    num_hidden_layers=28, max_position_embeddings=32768, rms_norm_eps=1e-6, use_sliding_window=False,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, bos_token_id=151643, eos_token_id=151645)
TARGET_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b": {**_QWEN, "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12,
                     "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
                     "sliding_window": 32768, "max_window_layers": 21},
    "qwen2.5-7b": {**_QWEN, "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
                   "sliding_window": 131072, "max_window_layers": 28},
}
# --dry-run: every model shrinks to this (the rest of its config stays).
TINY: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, vocab_size=1024, bos_token_id=1, eos_token_id=0,
                            pad_token_id=2)


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the GPU suite (``FULL``) or its CPU dry run (``DRY``)."""

    dry_run: bool
    lengths: tuple[int, ...]  # context tokens (scoring and TTFT)
    repeats: int  # timed repeats per point (median), after one warm-up
    loop_steps: int
    step_tokens: int  # draft tokens per tool output in the loop
    window_tokens: int  # ScoringConfig.window_tokens
    draft_context: int  # the draft's max_position_embeddings
    lookahead: int = 4
    ratios: tuple[float, ...] = (0.25, 0.10)
    seed: int = 0
    shared_calls: tuple[int, ...] = (1, 4, 8, 16)  # agents scoring a cached step at once (shared forwards)
    shared_context: int = 1000


FULL = Plan(False, (8192, 16384, 32768), 3, 16, 1000, 1024, 8192)
DRY = Plan(True, (256, 512), 1, 4, 100, 128, 512, shared_calls=(1, 2), shared_context=100)

NOTES = [
    "Weights are random (torch.manual_seed), on models built from the published configs (SmolLM2-135M-Instruct "
    "draft; Qwen2.5-1.5B-Instruct and Qwen2.5-7B-Instruct targets): the GPU machine has no network and takes at "
    "most 64 MiB of files, so real weights cannot be there.",
    "A forward's time does not depend on the weights' values. What does depend on them is set instead: compressed "
    "target prompts are the given keep ratios of the context, and the draft's greedy lookahead always decodes the "
    "fixed number of tokens (EOS ignored).",
    "The semantic prior's encoder is all-MiniLM-L6-v2's BERT config with random weights and its real tokenizer "
    "(carried), in the dtype the library picks for the device; every compressor gets it (nothing is fetched).",
    "Plain forwards past the draft's 8k context are a cost reference only: the scorer reads such a context as "
    "windows of 1024 tokens, in groups of up to 7 under one query block.",
]


class FixedLookaheadDraft(DraftModel):
    """A draft whose greedy lookahead never stops early: a random model may emit EOS at any step."""

    @property
    def stop_token_ids(self) -> set[int]:
        return set()


# --------------------------------------------------------------------------- building


def model_values(values: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """A model's config values in this run: the published ones, shrunk to ``TINY`` in a dry run."""
    return {**values, **TINY} if plan.dry_run else dict(values)


def build_model(kind: str, values: dict[str, Any], plan: Plan, device: torch.device, dtype: torch.dtype) -> Any:
    """A causal LM of ``kind`` ("llama" / "qwen2") with random weights, made on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config = (LlamaConfig if kind == "llama" else Qwen2Config)(**model_values(values, plan))
    torch.manual_seed(plan.seed)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def load_tokenizer(directory: Path | None) -> tuple[Any, str]:
    """The carried draft tokenizer (``--prepare``), else the library's tiny in-process one."""
    from transformers import PreTrainedTokenizerFast

    if directory is None or not (directory / "tokenizer.json").is_file():
        from specprefill_agents.testing import tiny_tokenizer

        if directory is not None:
            print(f"gpu_suite: no tokenizer under {directory} (--prepare): using the tiny one", file=sys.stderr)
        return tiny_tokenizer(), "tiny in-process BPE (specprefill_agents.testing, 512 tokens)"
    settings = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    special = {k: v for k, v in settings.items() if k.endswith("_token") and isinstance(v, str)}
    return PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **special), str(directory)


def draft_values(plan: Plan) -> dict[str, Any]:
    return {**DRAFT_CONFIG, "max_position_embeddings": plan.draft_context}


def build_draft(plan: Plan, device: torch.device, dtype: torch.dtype, tokenizer: Any) -> DraftModel:
    model = build_model("llama", draft_values(plan), plan, device, dtype)
    return FixedLookaheadDraft.from_loaded(model, tokenizer, name=f"smollm2-135m-random-{plan.seed}")


def build_encoder(plan: Plan, device: torch.device, tokenizer: Any) -> SemanticModel:
    """The semantic prior's encoder: MiniLM's config (shrunk in a dry run), random weights, the library's dtype."""
    from transformers import BertConfig, BertModel

    from specprefill_agents.semantic import _dtype

    values = {**model_values(ENCODER_CONFIG, plan), "pad_token_id": tokenizer.pad_token_id or 0}
    values["vocab_size"] = max(values["vocab_size"], len(tokenizer))
    torch.manual_seed(plan.seed)
    model = BertModel(BertConfig(**values)).to(device=device, dtype=_dtype(str(device))).eval()
    return SemanticModel(model, tokenizer, f"minilm-l6-random-{plan.seed}")


def context_ids(tokenizer: Any, n: int) -> tuple[list[int], list[int]]:
    """``n`` token ids of standard-library source, and the question's ids."""
    ids: list[int] = []
    for name in TEXT_MODULES:
        ids += tokenizer(inspect.getsource(__import__(name)), add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            return ids[:n], tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    raise SystemExit(f"only {len(ids)} tokens of standard-library text for {n} asked")


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any, int | None]:
    """Seconds (GPU work included), result and peak GPU bytes above what was allocated before (None on the CPU)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    before = torch.cuda.memory_allocated() if cuda else 0
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return seconds, out, (torch.cuda.max_memory_allocated() - before) if cuda else None


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@torch.inference_mode()
def plain_forward(model: Any, ids: list[int]) -> None:
    """One plain SDPA forward of ``ids``, last logits only (no KV cache kept)."""
    model.set_attn_implementation("sdpa")
    model(input_ids=torch.tensor([ids], device=model.device), use_cache=False, logits_to_keep=1)


@torch.inference_mode()
def prefill(model: Any, ids: list[int]) -> None:
    """A target's prefill: one forward of the prompt into a fresh KV cache (the model's own), last logits only."""
    model(input_ids=torch.tensor([ids], device=model.device), use_cache=True, logits_to_keep=1)


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[tuple[float, Any, int | None]]]:
    """Each run ``repeats`` times, the order flipped every repeat (fair to drift)."""
    out: dict[str, list[tuple[float, Any, int | None]]] = {name: [] for name in runs}
    for rep in range(repeats):
        for name in (list(runs) if rep % 2 == 0 else list(reversed(runs))):
            out[name].append(timed(runs[name]))
    return out


# --------------------------------------------------------------------------- the three sections


def scoring_config(plan: Plan) -> ScoringConfig:
    return ScoringConfig(lookahead=plan.lookahead, window_tokens=plan.window_tokens)


def bench_scoring(draft: DraftModel, ids: list[int], query: list[int], plan: Plan) -> list[dict[str, Any]]:
    """Scorer vs one plain forward of context + question, per length; medians of interleaved repeats."""
    scorer = DraftScorer(draft, scoring_config(plan))

    def score(n: int) -> Callable[[], Any]:
        return lambda: (install_scoring_attention(draft.model), scorer.score(ids[:n], query))[1]

    def plain(n: int) -> Callable[[], Any]:
        return lambda: plain_forward(draft.model, ids[:n] + query)

    interleaved({"plain": plain(plan.lengths[0]), "scoring": score(plan.lengths[0])}, 1)  # warm-up
    rows = []
    for n in plan.lengths:
        runs = interleaved({"plain": plain(n), "scoring": score(n)}, plan.repeats)
        raw = runs["scoring"][-1][1]
        plain_s, score_s = (median([r[0] for r in runs[k]]) for k in ("plain", "scoring"))
        rows.append({"context_tokens": n, "query_tokens": len(query), "plain_forward_s": plain_s,
                     "scoring_s": score_s, "scoring_over_plain": score_s / plain_s,
                     "phases_s": {k: median([r[1].timings[k] for r in runs["scoring"]]) for k in raw.timings},
                     "windows": raw.windows, "draft_tokens_forwarded": raw.forwarded,
                     "lookahead_tokens": raw.lookahead_tokens,
                     "peak_gpu_bytes": {k: max(r[2] or 0 for r in runs[k]) or None for k in runs}})
        print(f"scoring n={n}: plain {plain_s:.3f} s, scoring {score_s:.3f} s", file=sys.stderr)
    install_scoring_attention(draft.model)
    return rows


def bench_shared(draft: DraftModel, ids: list[int], query: list[int], plan: Plan) -> list[dict[str, Any]]:
    """Agents whose context KV is cached score a new question at once: one after another, on threads
    with their own forwards, and seated at one block batcher (``bench_block_batching.measure``)."""
    scorer = DraftScorer(draft, scoring_config(plan), KVPrefixCache(8 << 30))
    n = plan.shared_context
    rows = []
    for size in plan.shared_calls:
        calls = [(ids[i * n:(i + 1) * n], query) for i in range(size)]
        rows.append(measure_shared(scorer, calls, max(plan.repeats, 2)))
        print(f"shared forwards x{size}: {rows[-1]}", file=sys.stderr)
    return rows


def bench_loop(draft: DraftModel, encoder: SemanticModel, plan: Plan) -> dict[str, Any]:
    """The agent loop, one compressor per mode, both seeing the same messages at every step (the
    cache-off compressor's encoder keeps no vectors)."""
    config = CompressionConfig(keep_ratio=plan.ratios[0], scoring=scoring_config(plan))
    modes = {"cache_off": CacheConfig(kv_cache_bytes=0, score_cache_entries=0), "cache_on": CacheConfig()}
    encoders = {"cache_off": uncached(encoder), "cache_on": encoder}
    comps = {m: SpecPrefillCompressor(draft, config, cache=c, on_failure="raise", semantic=encoders[m])
             for m, c in modes.items()}
    steps = build_steps(draft.tokenizer, plan.loop_steps, plan.step_tokens)
    warm = SpecPrefillCompressor(draft, config, cache=modes["cache_off"], on_failure="raise",
                                 semantic=uncached(encoder))
    warm.compress_segments(messages_at(steps, len(steps) - 1))  # kernels warm, neither cache touched
    rows = []
    for t in range(len(steps)):
        order = list(comps) if t % 2 == 0 else list(reversed(comps))  # alternate: fair to drift
        runs = interleaved({m: (lambda c=comps[m], t=t: c.compress_segments(messages_at(steps, t))) for m in order}, 1)
        row: dict[str, Any] = {"step": t + 1}
        for mode, [(seconds, res, _)] in runs.items():
            row[mode] = {"seconds": seconds, "draft_tokens_forwarded": res.stats.draft_tokens_forwarded,
                         "draft_tokens_reused": res.stats.draft_tokens_reused, "context_tokens": res.original_tokens}
        rows.append(row)
    totals = {m: {"draft_tokens_forwarded": sum(r[m]["draft_tokens_forwarded"] for r in rows),
                  "seconds": sum(r[m]["seconds"] for r in rows)} for m in modes}
    return {"steps": len(rows), "final_context_tokens": rows[-1]["cache_off"]["context_tokens"],
            "keep_ratio": plan.ratios[0], "totals": totals,
            "forwarded_ratio_off_over_on": totals["cache_off"]["draft_tokens_forwarded"]
            / max(totals["cache_on"]["draft_tokens_forwarded"], 1),
            "time_ratio_off_over_on": totals["cache_off"]["seconds"] / totals["cache_on"]["seconds"],
            "per_step": rows}


def uncached(encoder: SemanticModel) -> SemanticModel:
    """``encoder``'s model with no vector cache: every call encodes its chunks."""
    return SemanticModel(encoder.model, encoder.tokenizer, encoder.name, cache_size=0)


def bench_compress(draft: DraftModel, encoder: SemanticModel, tokenizer: Any, ids: list[int],
                   plan: Plan) -> dict[tuple[int, float], Any]:
    """Cold compression (no cache, no vector cache) of ``n`` context tokens' text at each keep ratio,
    TTFT's first part, without the semantic prior (the default) and with it, interleaved: median
    seconds of both, and the draft tokens before and after (the text re-tokenizes to about ``n``)."""
    config = CompressionConfig(scoring=scoring_config(plan))  # the default: no semantic prior
    nocache = CacheConfig(kv_cache_bytes=0, score_cache_entries=0)
    comps = {"prior": SpecPrefillCompressor(draft, config.replace(semantic_boost=SEMANTIC_BOOST), cache=nocache,
                                            on_failure="raise", semantic=uncached(encoder)),
             "no_prior": SpecPrefillCompressor(draft, config, cache=nocache, on_failure="raise")}
    texts = {n: tokenizer.decode(ids[:n]) for n in plan.lengths}
    for comp in comps.values():
        comp.compress(texts[plan.lengths[0]], QUESTION, keep_ratio=plan.ratios[0])  # warm-up
    out = {}
    for n in plan.lengths:
        runs = interleaved({f"{m}:{r}": (lambda c=c, r=r, n=n: c.compress(texts[n], QUESTION, keep_ratio=r))
                            for m, c in comps.items() for r in plan.ratios}, plan.repeats)
        for r in plan.ratios:
            stats = runs[f"no_prior:{r}"][-1][1].stats
            out[(n, r)] = (median([s for s, _, _ in runs[f"no_prior:{r}"]]),
                           [stats.original_tokens, stats.compressed_tokens],
                           median([s for s, _, _ in runs[f"prior:{r}"]]))
    return out


def bench_target(name: str, plan: Plan, device: torch.device, dtype: torch.dtype, ids: list[int],
                 query: list[int], compress: dict[tuple[int, float], Any]) -> dict[str, Any]:
    """One target built, measured (:func:`target_rows`) and freed."""
    model = build_model("qwen2", TARGET_CONFIGS[name], plan, device, dtype)
    rows = target_rows(model, name, plan, ids, query, compress)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"target": name, "config": model_values(TARGET_CONFIGS[name], plan), "rows": rows}


def target_rows(model: Any, name: str, plan: Plan, ids: list[int], query: list[int],
                compress: dict[tuple[int, float], Any]) -> list[dict[str, Any]]:
    """Full prefill vs compression + prefill of the kept fraction of the context, per length."""
    kept = {(n, r): round(r * n) for n in plan.lengths for r in plan.ratios}
    prefill(model, ids[:plan.lengths[0]] + query)  # warm-up
    rows = []
    for n in plan.lengths:
        runs = {"full": (lambda n=n: prefill(model, ids[:n] + query))}
        runs |= {str(r): (lambda k=kept[(n, r)]: prefill(model, ids[:k] + query)) for r in plan.ratios}
        times = {k: median([s for s, _, _ in v]) for k, v in interleaved(runs, plan.repeats).items()}
        row: dict[str, Any] = {"context_tokens": n, "query_tokens": len(query), "full_prefill_s": times["full"]}
        row["compressed"] = [{"keep_ratio": r, "context_tokens": kept[(n, r)], "compress_s": compress[(n, r)][0],
                              "compressor_draft_tokens": compress[(n, r)][1],
                              "compress_with_prior_s": compress[(n, r)][2],
                              "prior_over_no_prior": compress[(n, r)][2] / compress[(n, r)][0],
                              "prefill_s": times[str(r)],
                              "ttft_s": compress[(n, r)][0] + times[str(r)],
                              "ttft_over_full": (compress[(n, r)][0] + times[str(r)]) / times["full"]}
                             for r in plan.ratios]
        rows.append(row)
        print(f"ttft {name} n={n}: full {times['full']:.3f} s", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- run and prepare


def run(plan: Plan, out_dir: Path, tokenizer_dir: Path | None) -> Path:
    """All three sections; writes ``gpu_suite_<device>.json`` and ``.md`` into ``out_dir``."""
    if not plan.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run")
    device = torch.device("cpu" if plan.dry_run else "cuda")
    dtype = torch.float32 if plan.dry_run else torch.bfloat16
    if plan.dry_run:
        torch.set_num_threads(1)
    started, seconds = time.perf_counter(), {}
    tokenizer, tokenizer_name = load_tokenizer(None if plan.dry_run else tokenizer_dir)
    draft = build_draft(plan, device, dtype, tokenizer)
    encoder_tokenizer, encoder_tokenizer_name = load_tokenizer(
        None if plan.dry_run or tokenizer_dir is None else tokenizer_dir.parent / "encoder_tokenizer")
    encoder = build_encoder(plan, device, encoder_tokenizer)
    ids, query = context_ids(tokenizer, max(plan.lengths))
    result: dict[str, Any] = {"suite": "gpu_suite", "device": device_info(plan.dry_run), "notes": NOTES,
                              "plan": dataclasses.asdict(plan), "dtype": str(dtype), "tokenizer": tokenizer_name,
                              "draft": {"name": draft.name, "config": model_values(draft_values(plan), plan)},
                              "encoder": {"name": encoder.name, "config": model_values(ENCODER_CONFIG, plan),
                                          "dtype": str(next(encoder.model.parameters()).dtype),
                                          "tokenizer": encoder_tokenizer_name}}
    for section, fn in (("scoring", lambda: bench_scoring(draft, ids, query, plan)),
                        ("agent_loop", lambda: bench_loop(draft, encoder, plan)),
                        ("shared_forwards", lambda: bench_shared(draft, ids, query, plan)),
                        ("ttft", lambda: _ttft(draft, encoder, tokenizer, ids, query, plan, device, dtype))):
        t0 = time.perf_counter()
        try:  # a failed section is recorded, the others still run: one GPU run must not lose them all
            result[section] = fn()
        except Exception as exc:
            traceback.print_exc()
            result[section] = {"error": f"{type(exc).__name__}: {exc}"}
        seconds[section] = time.perf_counter() - t0
        print(f"{section}: {seconds[section]:.1f} s", file=sys.stderr, flush=True)
    result["seconds"] = {**seconds, "total": time.perf_counter() - started}
    path = write(result, out_dir)
    failed = [k for k in seconds if isinstance(result[k], dict) and "error" in result[k]]
    if failed:
        raise SystemExit(f"gpu_suite: failed sections {failed} (recorded in {path})")
    return path


def _ttft(draft: DraftModel, encoder: SemanticModel, tokenizer: Any, ids: list[int], query: list[int], plan: Plan,
          device: torch.device, dtype: torch.dtype) -> list[dict[str, Any]]:
    compress = bench_compress(draft, encoder, tokenizer, ids, plan)
    return [bench_target(name, plan, device, dtype, ids, query, compress) for name in TARGET_CONFIGS]


def prepare(carry: Path) -> None:
    """Save the embedded draft's and the semantic encoder's tokenizers and download the wheels the GPU
    machine lacks into ``carry``."""
    from importlib.metadata import version

    from specprefill_agents import load_draft, load_semantic

    load_draft().tokenizer.save_pretrained(str(carry / "tokenizer"))
    load_semantic(device="cpu").tokenizer.save_pretrained(str(carry / "encoder_tokenizer"))
    pins = [f"{name}=={version(name)}" for name in CARRIED_WHEELS]  # the versions tested here
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "-d", str(carry / "wheels"), *pins], check=True)
    print(f"prepared {carry}: tokenizer/, encoder_tokenizer/ and wheels/ ({', '.join(pins)})", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--dry-run", action="store_true", help="the same code on the CPU, tiny models and lengths")
    p.add_argument("--tokenizer", type=Path, default=None, help="the carried draft tokenizer (from --prepare)")
    p.add_argument("--prepare", type=Path, default=None, metavar="DIR", help="fill DIR with what the GPU run needs")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        return
    run(DRY if args.dry_run else FULL, args.out_dir, args.tokenizer)


if __name__ == "__main__":
    main()
