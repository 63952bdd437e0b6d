"""Orchestration: segments -> draft tokens -> scores -> selection -> compressed segments."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .budget import APPROXIMATE, TokenCounter, budget_tokens, count_or_approximate, countable, make_counter
from .cache import KVPrefixCache
from .config import CacheConfig, CompressionConfig, DraftConfig
from .draft import DraftModel, load_draft
from .errors import ConfigError, InputError
from .limits import deadline
from .lexical import boost_plans
from .progress import requested_progress
from .protocols import OnFailure, check_on_failure, handle_failure
from .scoring import DraftScorer
from .segment_scoring import SegmentScorer, asked_query, segment_offsets
from .gaps import gap_seed
from .selection import (SegmentPlan, asks_how_often, choose, chunk_texts, plan_segment, proportional_plans,
                        render_gaps)
from .semantic import SemanticModel, load_semantic, semantic_plans
from .semantic_call import PendingSimilarities, SemanticPrior
from .types import (DOCUMENT_ROLE, SEGMENT_KINDS, CompressionResult, CompressionStats, Gap, KeptSpan, Segment,
                    SegmentScores, TokenScores)

__all__ = ["SpecPrefillCompressor"]

logger = logging.getLogger(__name__)


class SpecPrefillCompressor:
    """Compress prompt context with a small draft model's attention.

    Construction loads nothing: the draft is loaded on first use (or pass a loaded
    :class:`DraftModel`).  Thread-safe: many threads may share one compressor.

    Args:
        draft: ``"embedded"`` (default), a hub id, a local directory or ``.gguf`` file,
            a :class:`DraftConfig`, or a loaded :class:`DraftModel`.
        config: selection and scoring settings (:class:`CompressionConfig`).
        token_counter: default counter of the *target's* tokens (callable ``str -> int``,
            an HF tokenizer or a tiktoken encoding); the draft's tokenizer otherwise.
        on_failure: when compression fails (the draft cannot load, out of memory, a model or
            counter error): ``"warn"`` passes the input through unchanged with a warning,
            ``"passthrough"`` does so silently (logged), ``"raise"`` raises.  Bad arguments,
            checked before any work, always raise a typed error.
        on_part_failure: when an optional part fails (the semantic prior's encoder): the same
            policies, but the call compresses without that part and ``stats.degraded`` says so
            (``"raise"`` raises); None (default) follows ``on_failure``.
        cache: reuse across calls (:class:`CacheConfig`): draft KV prefix cache, score
            cache, exact or approximate mode.
        kv_cache: a :class:`KVPrefixCache` to share between compressors of the same draft.
        progress: a progress bar on stderr while a long context (4 windows or more) is scored:
            ``True`` always, ``False`` never, ``None`` when stderr is a terminal.
        semantic: a loaded :class:`~specprefill_agents.semantic.SemanticModel` for the semantic
            prior (``config.semantic_boost``), to share between compressors; otherwise
            ``config.semantic_model`` is loaded on the first call that uses it.
    """

    def __init__(
        self,
        draft: str | DraftConfig | DraftModel = "embedded",
        config: CompressionConfig | None = None,
        *,
        token_counter: Any = None,
        on_failure: OnFailure = "warn",
        on_part_failure: OnFailure | None = None,
        cache: CacheConfig | None = None,
        kv_cache: KVPrefixCache | None = None,
        progress: bool | None = None,
        semantic: SemanticModel | None = None,
    ) -> None:
        self.on_failure: OnFailure = check_on_failure(on_failure)
        self.on_part_failure: OnFailure = check_on_failure(on_failure if on_part_failure is None else on_part_failure)
        if progress is not None and not isinstance(progress, bool):
            raise ConfigError(f"progress must be True, False or None, got {progress!r}")
        self.progress = progress
        self.config = config or CompressionConfig()
        self._draft_spec = draft
        self._draft: DraftModel | None = draft if isinstance(draft, DraftModel) else None
        self.cache_config = cache or CacheConfig()
        self._shared_kv = kv_cache
        self._scorer: SegmentScorer | None = None
        self._lock = threading.Lock()
        self._default_counter = make_counter(token_counter) if token_counter is not None else None
        if semantic is not None and not isinstance(semantic, SemanticModel):
            raise ConfigError(f"semantic must be a SemanticModel or None, got {type(semantic).__name__}")
        self._semantic = SemanticPrior(self._load_semantic, self.on_part_failure, type(self).__name__, semantic)

    # ------------------------------------------------------------------ loading
    @property
    def draft(self) -> DraftModel:
        """The draft model, loaded on first access."""
        return self._ensure_scorer().scorer.draft

    def _ensure_scorer(self) -> SegmentScorer:
        if self._scorer is None:
            with self._lock:
                if self._scorer is None:
                    with requested_progress(self.progress):  # a first use may fetch the weights
                        self._draft = self._draft or load_draft(_draft_config(self._draft_spec))
                    kv, size = self._shared_kv, self.cache_config.kv_cache_bytes
                    kv = kv if kv is not None else (KVPrefixCache(size) if size > 0 else None)
                    self._scorer = SegmentScorer(DraftScorer(self._draft, self.config.scoring, kv), self.cache_config)
        return self._scorer

    def semantic_model(self, name: str | None = None) -> SemanticModel:
        """The sentence encoder of the semantic prior (``name``, else ``config.semantic_model``),
        loaded on first use, on the draft's device; a model passed to the constructor is used
        for every name."""
        return self._semantic.encoder(name or self.config.semantic_model)

    def _load_semantic(self, name: str) -> SemanticModel:
        spec = self._draft_spec if isinstance(self._draft_spec, DraftConfig) else None
        device = str(self.draft.device)
        with requested_progress(self.progress):  # a first use may fetch the encoder
            return load_semantic(name, device=device, local_files_only=spec is not None and spec.local_files_only,
                                 cache_dir=spec.cache_dir if spec is not None else None)

    def identity(self) -> dict[str, Any]:
        """What decides this compressor's output (draft, config, cache mode), without loading
        anything: a plain dict for callers' cache keys (LangChain's LLM cache, memo tables)."""
        spec = self._draft if self._draft is not None else self._draft_spec
        return {"draft": _draft_name(spec), "config": self.config.to_dict(), "cache_mode": self.cache_config.mode}

    # ------------------------------------------------------------------ public API
    def compress(
        self,
        context: str | Sequence[str],
        query: str | None = None,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
        token_counter: Any = None,
        deadline_s: float | None = None,
        gap_refs: bool | None = None,
    ) -> CompressionResult:
        """Compress one text or a list of texts (each its own segment) for ``query``.

        ``result.text`` joins the compressed texts with a blank line; ``result.segments``
        has one segment per input text, in order.
        """
        if isinstance(context, str):
            texts = [context]
        elif isinstance(context, Sequence) and all(isinstance(t, str) for t in context):
            texts = list(context)
        else:
            raise InputError("context must be a str or a list of str; use compress_segments for Segment objects")
        return self.compress_segments([Segment(t) for t in texts], query, keep_ratio=keep_ratio,
                                      max_tokens=max_tokens, token_counter=token_counter, deadline_s=deadline_s,
                                      gap_refs=gap_refs)

    def compress_segments(
        self,
        segments: Sequence[Segment],
        query: str | None = None,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
        token_counter: Any = None,
        deadline_s: float | None = None,
        gap_refs: bool | None = None,
    ) -> CompressionResult:
        """Compress the compressible segments; protected ones come back byte-identical.

        ``keep_ratio`` / ``max_tokens`` / ``deadline_s`` / ``gap_refs`` replace the same setting of
        the config for this call; with both budgets set the smaller wins.  Past the deadline, or for
        an input over ``config.max_input_tokens``, the input passes through (per ``on_failure``).
        ``stats.passthrough_reasons`` says why a compressible segment came back whole.  With
        ``gap_refs``, gap markers carry references that :meth:`CompressionResult.expand` resolves.

        With no ``query``, the latest segment whose role is ``"user"`` / ``"human"`` is the
        query; failing that, the last 64 draft tokens of the prompt act as the query (and are kept).
        """
        segments = _validate_segments(segments)
        if query is not None and not isinstance(query, str):
            raise InputError(f"query must be a str or None, got {type(query).__name__}")
        overrides = {k: v for k, v in (("keep_ratio", keep_ratio), ("max_tokens", max_tokens),
                                       ("deadline_s", deadline_s), ("gap_refs", gap_refs)) if v is not None}
        config = self.config.replace(**overrides) if overrides else self.config  # the smaller budget still wins
        explicit = make_counter(token_counter) if token_counter is not None else None
        counter: TokenCounter | None = None
        counter_name = APPROXIMATE
        try:  # everything from here fails open: the arguments were checked above
            counter, counter_name = explicit or self.counter()
            counter = _counting_once(counter)
            counts = [counter(countable(s.text)) for s in segments]
            with deadline(config.deadline_s):
                return self._compress(segments, counts, query, config, counter, counter_name)
        except Exception as exc:
            failure = handle_failure(self.on_failure, exc, type(self).__name__)
            counts, counter_name = count_or_approximate(counter, counter_name, [s.text for s in segments])
            result = _passthrough(segments, counts, counter_name, budget=0)
            return dataclasses.replace(result, stats=dataclasses.replace(result.stats, failure=failure))

    def counter(self, token_counter: Any = None) -> tuple[TokenCounter, str]:
        """The counter (and its name) a call with ``token_counter`` counts budgets and stats with:
        ``token_counter``, else the compressor's default, else the draft's tokenizer (loads it)."""
        if token_counter is not None:
            return make_counter(token_counter)
        if self._default_counter is not None:
            return self._default_counter
        draft = self.draft
        counter, _ = make_counter(draft.tokenizer)
        return counter, f"draft:{draft.name}"

    # ------------------------------------------------------------------ internals
    def _compress(self, segments: list[Segment], counts: list[int], query: str | None, config: CompressionConfig,
                  counter: TokenCounter, counter_name: str) -> CompressionResult:
        t_start = time.perf_counter()
        skipped = _skip_reasons(segments, counts, config)
        eligible = [i for i, s in enumerate(segments) if s.may_compress and i not in skipped]
        if not eligible:
            return _passthrough(segments, counts, counter_name, budget=0, reasons=skipped)
        scorer = self._ensure_scorer()
        asked = asked_query(segments, query)
        pending = self._start_semantic(segments, eligible, asked, config, scorer.scorer.draft.tokenizer)
        with requested_progress(self.progress):
            token_scores = scorer.score(segments, query, config.max_input_tokens)
        t_score = time.perf_counter()
        budget = budget_tokens(sum(counts[i] for i in eligible), config.keep_ratio, config.max_tokens)
        degraded: list[str] = []
        similarity = None if pending is None else functools.partial(pending.result, degraded=degraded)
        chosen = _select(segments, counts, eligible, token_scores, asked, budget, config, counter, similarity)
        out, spans, new_counts = chosen.segments, chosen.spans, chosen.counts
        t_end = time.perf_counter()
        used = sum(new_counts[i] for i in eligible)
        if used > budget:
            logger.info("budget of %d tokens exceeded (%d) by a single chunk", budget, used)
        stats = CompressionStats(
            original_tokens=sum(counts), compressed_tokens=sum(new_counts), counted_with=counter_name,
            budget_tokens=budget, budget_exceeded=used > budget, segments_total=len(segments),
            segments_compressed=sum(1 for i in eligible if out[i].text != segments[i].text),
            draft_tokens_forwarded=token_scores.draft_tokens_forwarded,
            draft_tokens_reused=token_scores.draft_tokens_reused, score_cache_hits=token_scores.score_cache_hits,
            windows=token_scores.windows, lookahead_tokens=token_scores.lookahead_tokens,
            timings={**token_scores.timings, "select": t_end - t_score, "total": t_end - t_start},
            passthrough_reasons={**skipped, **chosen.reasons}, degraded="; ".join(degraded) or None)
        return CompressionResult(tuple(out), tuple(spans), stats, tuple(chosen.gaps), tuple(s.text for s in segments),
                                 token_scores)

    def _start_semantic(self, segments: list[Segment], eligible: list[int], asked: str | None,
                        config: CompressionConfig, tokenizer: Any) -> PendingSimilarities | None:
        """The semantic prior's similarities for this call, started on a worker thread before the
        draft scores (the chunks follow from the draft's tokens alone), or None where the call
        uses no prior."""
        if config.semantic_boost <= 0 or not asked or _counts_occurrences(config, asked):
            return None
        flat = [SegmentScores(offsets, np.zeros(len(offsets), dtype=np.float32))
                for offsets in (segment_offsets(tokenizer, segments[i]) for i in eligible)]
        return self._semantic.start(config.semantic_model, asked,
                                    chunk_texts(_plans(segments, eligible, flat, config)))

    def score_segments(self, segments: Sequence[Segment], query: str | None = None) -> TokenScores:
        """Per-token importance of every segment (smoothed), without selecting anything.

        Offsets are character spans into each segment's text, so the scores can be mapped
        onto any tokenizer's tokens or onto words/lines.
        """
        with requested_progress(self.progress):
            return self._ensure_scorer().score(_validate_segments(segments), query)


def _counting_once(counter: TokenCounter) -> TokenCounter:
    """``counter`` for one call: each distinct text is counted once (selection counts chunks, the
    rendered output and the whole texts; a target tokenizer may be slow or remote)."""
    seen: dict[str, int] = {}

    def count(text: str) -> int:
        if text not in seen:
            seen[text] = counter(text)
        return seen[text]

    return count


def _draft_config(spec: str | DraftConfig | DraftModel) -> DraftConfig:
    return spec if isinstance(spec, DraftConfig) else DraftConfig(model=str(spec))


def _draft_name(spec: str | DraftConfig | DraftModel) -> Any:
    if isinstance(spec, DraftModel):
        return spec.name
    return spec.to_dict() if isinstance(spec, DraftConfig) else str(spec)


def _select(segments: list[Segment], counts: list[int], eligible: list[int], token_scores: TokenScores,
            asked: str | None, budget: int, config: CompressionConfig, counter: TokenCounter,
            similarity: Callable[[str, list[str]], np.ndarray | None] | None = None) -> _Selection:
    """The selection stage: chunk the eligible segments (``eligible``, ascending), raise the chunks
    that match the query in words and (with ``similarity``, the semantic prior) in meaning, or, for
    a question about how often things occur, spread the budget evenly; choose under one budget,
    render."""
    plans = _plans(segments, eligible, [token_scores.segments[i] for i in eligible], config)
    if _counts_occurrences(config, asked):
        plans = proportional_plans(plans)
    elif asked:
        if config.lexical_boost:
            plans = boost_plans(plans, asked, config.lexical_boost, config.lexical_feedback)
        if similarity is not None:
            sims = similarity(asked, chunk_texts(plans))
            if sims is not None:
                plans = semantic_plans(plans, sims, config.semantic_boost)
    whole = [counts[i] for i in eligible]
    kept = choose(plans, budget, counter, config, whole=whole)
    out, spans, new_counts = list(segments), [_full_span(s.text) for s in segments], list(counts)
    reasons: dict[int, str] = {}
    gaps: list[Gap] = []
    for i, plan, chosen in zip(eligible, plans, kept):
        text, spans[i], marks = render_gaps(plan, chosen, config, counter, taken={g.ref for g in gaps})
        gaps.extend(Gap(m.ref, i, m.start, m.end, m.tokens) for m in marks)
        out[i] = dataclasses.replace(segments[i], text=text)
        new_counts[i] = counter(text)
        if text == segments[i].text:
            reasons[i] = ("the compressible text fits the budget" if sum(whole) <= budget
                          else "one statement, nothing to cut" if sum(not c.blank for c in plan.chunks) <= 1
                          else "every chunk was chosen under the shared budget")
    return _Selection(out, spans, new_counts, gaps, reasons)


def _plans(segments: list[Segment], eligible: list[int], scores: Sequence[SegmentScores],
           config: CompressionConfig) -> list[SegmentPlan]:
    """The chunks of the eligible segments (``scores``: one per eligible segment), named for their gaps."""
    seeds = gap_seed([s.text for s in segments])
    anchors = document_anchors(segments, eligible)
    return [dataclasses.replace(plan_segment(segments[i].text, seg.offsets, seg.scores, config, kind=segments[i].kind,
                                             anchors=anchors[i]), ref_seed=seeds[i])
            for i, seg in zip(eligible, scores)]


def document_anchors(segments: Sequence[Segment], eligible: Sequence[int]) -> dict[int, tuple[bool, bool]]:
    """Whether the first and the last unit of each eligible segment are anchors (always kept).

    Every segment keeps both, except the documents (role ``"document"``) of a set of two or more:
    retrieved passages are independent pieces, none of whose edges frames the others, so they have
    no anchors and a passage that holds nothing for the query may be dropped whole.  Anchors per
    passage spend an aggressive budget on the edges of every passage (40 passages at keep 10% kept
    only anchors), and one pair for the set (the first unit of the first passage, the last of the
    last) kept less at keep 10%: ``benchmarks/results/document_anchors_cpu_epyc.md``.
    """
    anchors = {i: (True, True) for i in eligible}
    docs = [i for i in eligible if segments[i].role == DOCUMENT_ROLE]
    if len(docs) > 1:
        anchors.update({i: (False, False) for i in docs})
    return anchors


def _counts_occurrences(config: CompressionConfig, asked: str | None) -> bool:
    """Whether the budget is filled by a proportional sample (a question about how often things occur)."""
    return config.sampling == "proportional" or (config.sampling == "auto" and asks_how_often(asked))


@dataclasses.dataclass(frozen=True)
class _Selection:
    """What the selection stage gives back: every segment (compressed or as given), its kept spans
    and token count, the gaps left, and why an eligible segment came back whole."""

    segments: list[Segment]
    spans: list[tuple[KeptSpan, ...]]
    counts: list[int]
    gaps: list[Gap]
    reasons: dict[int, str]


def _validate_segments(segments: Sequence[Segment]) -> list[Segment]:
    if isinstance(segments, (str, bytes)) or not isinstance(segments, Sequence):
        raise InputError("segments must be a list of Segment")
    for i, seg in enumerate(segments):
        if not isinstance(seg, Segment):
            raise InputError(f"segments[{i}] is {type(seg).__name__}, expected Segment")
        for name, kinds in (("text", str), ("role", str), ("compressible", bool), ("protected", bool),
                            ("id", (str, type(None)))):
            if not isinstance(getattr(seg, name), kinds):
                raise InputError(f"segments[{i}].{name} is {type(getattr(seg, name)).__name__}; see Segment")
        if seg.kind not in SEGMENT_KINDS:
            raise InputError(f"segments[{i}].kind must be one of {SEGMENT_KINDS}, got {seg.kind!r}")
    return list(segments)


def _skip_reasons(segments: list[Segment], counts: list[int], config: CompressionConfig) -> dict[int, str]:
    """Compressible segments that are left whole before any scoring, with the reason.  The
    documents (role ``"document"``) are measured against ``min_tokens`` together: a set of short
    passages is as long as its sum."""
    reasons = {}
    docs = sum(counts[i] for i, seg in enumerate(segments) if seg.may_compress and seg.role == DOCUMENT_ROLE)
    for i, seg in enumerate(segments):
        if not seg.may_compress:
            continue
        if seg.role == DOCUMENT_ROLE and docs < config.min_tokens:
            reasons[i] = f"the documents together are shorter than min_tokens ({docs} < {config.min_tokens})"
        elif seg.role != DOCUMENT_ROLE and counts[i] < config.min_tokens:
            reasons[i] = f"shorter than min_tokens ({counts[i]} < {config.min_tokens})"
        elif not _is_clean(seg.text):
            reasons[i] = "not valid UTF-8 (lone surrogates)"
    return reasons


def _is_clean(text: str) -> bool:
    """False for text with lone surrogates (undecodable bytes): passed through untouched."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        logger.warning("a segment holds text that is not valid UTF-8; it is left uncompressed")
        return False
    return True


def _full_span(text: str) -> tuple[KeptSpan, ...]:
    return (KeptSpan(0, len(text)),) if text else ()


def _passthrough(segments: list[Segment], counts: list[int], counter_name: str,
                 budget: int, reasons: dict[int, str] | None = None) -> CompressionResult:
    total = sum(counts)
    stats = CompressionStats(original_tokens=total, compressed_tokens=total, counted_with=counter_name,
                             budget_tokens=budget, budget_exceeded=False, segments_total=len(segments),
                             segments_compressed=0, passthrough_reasons=reasons or {})
    return CompressionResult(tuple(segments), tuple(_full_span(s.text) for s in segments), stats,
                             originals=tuple(s.text for s in segments))
