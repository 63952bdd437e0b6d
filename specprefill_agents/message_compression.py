"""Compress a message list, step-stable: what every framework's chat wrapper shares.

Compressible messages form *groups*: maximal runs of consecutive compressible messages of
one kind (the parallel tool results of one step, a block of pasted context).  Each group
is compressed with the conversation up to its end as context (earlier text protected, in
the original) and the query; what comes after it never matters.  So the compressed form
of a message depends only on the conversation up to it: an agent loop that appends
messages sends the provider the same compressed prefix at every step (provider prefix
caches keep working), and the draft sees the same segment prefix (its KV prefix cache
can reuse it).  A bounded memo of finished groups makes repeated steps cost nothing; it
changes no output.

An integration subclasses :class:`BaseMessageCompressor` with two translations: its
messages to a :class:`~specprefill_agents.messages.MessagePlan`, and new texts back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

from .budget import APPROXIMATE, approximate_tokens
from .errors import ScoringError
from .gap_store import GapStore, content_namespace
from .integration import Counter, check_budget, compressor_identity, resolve_compressor
from .messages import MessagePlan, MessagePolicy
from .protocols import OnFailure, check_on_failure, handle_failure
from .types import CompressionResult, Segment, TokenCounts

__all__ = ["BaseMessageCompressor", "CompressionReport", "CompressorFailure", "Tally", "check_result"]

M = TypeVar("M")


class CompressorFailure(ScoringError):
    """A compressor reported a failure in its result instead of raising (it fell back itself)."""


@dataclass(frozen=True)
class CompressionReport(TokenCounts):
    """What one compression of a message list (or document batch) did and cost.

    Token counts cover every text part (protected ones included) and name their counter.
    ``groups_reused`` groups came from the memo; the draft counters come from the core
    (``draft_tokens_reused`` / ``score_cache_hits``: its KV prefix and score caches).
    """

    items: int  # messages or documents
    items_compressed: int
    groups: int = 0
    groups_reused: int = 0
    calls: int = 0
    draft_tokens_forwarded: int = 0
    draft_tokens_reused: int = 0
    score_cache_hits: int = 0
    scoring_seconds: float = 0.0
    seconds: float = 0.0
    failure: str | None = None
    expanded_tokens: int = 0  # tokens of earlier expansion-tool outputs in these messages (kept as they are)
    degraded: str | None = None  # an optional part skipped in some call (the semantic prior's encoder failed)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "saved_tokens": self.saved_tokens, "ratio": round(self.ratio, 4)}


@dataclass(frozen=True)
class _Done:
    """A finished group: its members' texts and its gaps (segment index, reference, start, end)."""

    texts: tuple[str, ...]
    gaps: tuple[tuple[int, str, int, int], ...] = ()


@dataclass(frozen=True)
class _Group:
    end: int  # number of plan segments forming the context (all messages up to the group's last)
    members: tuple[int, ...]  # compressible segment indices


@dataclass
class Tally:
    """The core's stats of the calls one compression made, added up."""

    calls: int = 0
    reused: int = 0
    forwarded: int = 0
    draft_reused: int = 0
    score_hits: int = 0
    scoring: float = 0.0
    degraded: list[str] = field(default_factory=list)

    def add(self, result: CompressionResult) -> None:
        stats = result.stats
        if stats.degraded and stats.degraded not in self.degraded:
            self.degraded.append(stats.degraded)
        self.calls += 1
        self.forwarded += stats.draft_tokens_forwarded
        self.draft_reused += stats.draft_tokens_reused
        self.score_hits += stats.score_cache_hits
        self.scoring += float(stats.timings.get("total", 0.0))

    def report(
        self, counts: TokenCounts, items: int, items_compressed: int, groups: int, failure: str | None, start: float
    ) -> CompressionReport:
        return CompressionReport(
            original_tokens=counts.original_tokens,
            compressed_tokens=counts.compressed_tokens,
            counted_with=counts.counted_with,
            items=items,
            items_compressed=items_compressed,
            groups=groups,
            groups_reused=self.reused,
            calls=self.calls,
            draft_tokens_forwarded=self.forwarded,
            draft_tokens_reused=self.draft_reused,
            score_cache_hits=self.score_hits,
            scoring_seconds=round(self.scoring, 6),
            seconds=round(time.perf_counter() - start, 6),
            failure=failure,
            degraded="; ".join(self.degraded) or None,
        )


def check_result(result: CompressionResult, segments: Sequence[Segment], members: set[int]) -> None:
    """Raise :class:`CompressorFailure` unless ``result`` answers ``segments``: no failure, one
    segment per input, and every segment outside ``members`` unchanged."""
    failure = result.stats.failure
    if failure:
        raise CompressorFailure(failure)
    if len(result.segments) != len(segments):
        raise CompressorFailure(f"the compressor returned {len(result.segments)} segments for {len(segments)}")
    for i, (before, after) in enumerate(zip(segments, result.segments)):
        if i not in members and after.text != before.text:
            raise CompressorFailure(f"the compressor changed protected segment {i}")


def _groups(plan: MessagePlan) -> list[_Group]:
    by_message: dict[int, list[int]] = {}
    for i, seg in enumerate(plan.segments):
        if seg.may_compress:
            by_message.setdefault(plan.segment_message[i], []).append(i)
    runs: list[list[int]] = []
    for m in sorted(by_message):
        if runs and runs[-1][-1] == m - 1 and plan.kinds[runs[-1][-1]] == plan.kinds[m]:
            runs[-1].append(m)
        else:
            runs.append([m])
    out = []
    for run in runs:
        end = next((i for i, m in enumerate(plan.segment_message) if m > run[-1]), len(plan.segments))
        out.append(_Group(end, tuple(i for m in run for i in by_message[m])))
    return out


class BaseMessageCompressor(ABC, Generic[M]):
    """Compress the compressible parts of message lists with any compressor.

    Subclasses translate their framework's messages: :meth:`_plan` (messages to a plan,
    usually ``plan_messages(views, self.policy)``), :meth:`_apply` (new segment texts back
    into copies of the messages) and :meth:`_fallback_text` (a message's text, to count it
    when planning failed).

    Args:
        compressor: a :class:`~specprefill_agents.SpecPrefillCompressor` (or anything with its
            ``compress_segments``), a draft spec (``"embedded"``, hub id, dir, ``.gguf``), or
            None for the embedded draft, loaded on first use.
        policy: what may be compressed (:class:`~specprefill_agents.messages.MessagePolicy`).
        keep_ratio, budget_tokens: per-group budget overrides (None: the compressor's config).
        token_counter: the target's tokenizer or a ``str -> int`` callable: budgets and
            stats in its tokens.
        on_failure: ``"warn"`` / ``"passthrough"`` / ``"raise"`` when compression fails.
        memo_size: finished groups remembered (0 disables the memo).
        gap_store: with a :class:`~specprefill_agents.GapStore`, gap markers carry references and
            every gap's original text is filed under its segment's original text
            (:func:`~specprefill_agents.content_namespace`), for an expansion tool to find.
    """

    def __init__(
        self,
        compressor: Any = None,
        *,
        policy: MessagePolicy | None = None,
        keep_ratio: float | None = None,
        budget_tokens: int | None = None,
        token_counter: Any = None,
        on_failure: OnFailure = "warn",
        memo_size: int = 256,
        name: str = "specprefill",
        gap_store: GapStore | None = None,
    ) -> None:
        check_budget(keep_ratio, budget_tokens)
        self.on_failure = check_on_failure(on_failure)
        self.compressor = resolve_compressor(compressor)
        self.policy = policy if policy is not None else MessagePolicy()
        self.keep_ratio, self.budget_tokens, self.name = keep_ratio, budget_tokens, name
        self._token_counter = token_counter
        self.counter = Counter(token_counter, self.compressor)
        self.gap_store = gap_store
        self._memo: LRUCache[str, _Done] | None = LRUCache(maxsize=memo_size) if memo_size > 0 else None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- translation (subclasses)
    @abstractmethod
    def _plan(self, messages: list[M]) -> MessagePlan:
        """The plan of ``messages``: segments, their messages and parts, the query."""

    @abstractmethod
    def _apply(self, messages: list[M], plan: MessagePlan, texts: list[str]) -> list[M]:
        """Copies of ``messages`` holding ``texts`` (one per plan segment), mapped back by index."""

    def _fallback_text(self, message: M) -> str:
        return str(message)

    # ----------------------------------------------------------------- public
    def compress(self, messages: Sequence[M]) -> tuple[list[M], CompressionReport]:
        """``messages`` with compressible text compressed, and what it did.  Never raises
        for a compression failure unless ``on_failure="raise"``."""
        start = time.perf_counter()
        messages = list(messages)
        plan, tally = None, Tally()
        try:  # planning too: a hostile tool output (JSON nested 10,000 deep...) must not end the step
            plan = self._plan(messages)
            texts = [s.text for s in plan.segments]
            groups = _groups(plan)
            for group in groups:
                for i, text in zip(group.members, self._group(plan, group, tally)):
                    texts[i] = text
            out = self._apply(messages, plan, texts)
        except Exception as exc:
            failure = handle_failure(self.on_failure, exc, self.name)
            if plan is None:
                total = sum(approximate_tokens(self._fallback_text(m)) for m in messages)
                return messages, tally.report(
                    TokenCounts(total, total, APPROXIMATE), len(messages), 0, 0, failure, start
                )
            return messages, self._report(
                plan, [s.text for s in plan.segments], messages, messages, len(_groups(plan)), tally, failure, start
            )
        return out, self._report(plan, texts, messages, out, len(groups), tally, None, start)

    async def acompress(self, messages: Sequence[M]) -> tuple[list[M], CompressionReport]:
        """:meth:`compress` in a worker thread (the draft is compute-bound)."""
        return await asyncio.to_thread(self.compress, messages)

    def identity(self) -> dict[str, Any]:
        """Everything that decides the output: part of cache keys and identifying params."""
        return {
            "compressor": compressor_identity(self.compressor),
            "policy": self.policy.to_dict(),
            "keep_ratio": self.keep_ratio,
            "budget_tokens": self.budget_tokens,
            "token_counter": self.counter.name if self._token_counter is not None else None,
        }

    # ----------------------------------------------------------------- internals
    def _call_segments(self, plan: MessagePlan, group: _Group) -> list[Segment]:
        members = set(group.members)
        return [
            seg if i in members or not seg.may_compress else dataclasses.replace(seg, protected=True)
            for i, seg in enumerate(plan.segments[: group.end])
        ]

    def _key(self, segments: list[Segment], query: str | None) -> str:
        payload = json.dumps(
            [[s.text, s.role, s.may_compress, s.kind] for s in segments]
            + [query, self.keep_ratio, self.budget_tokens, self.gap_store is not None],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()

    def _group(self, plan: MessagePlan, group: _Group, tally: Tally) -> tuple[str, ...]:
        segments = self._call_segments(plan, group)
        key = self._key(segments, plan.query) if self._memo is not None else ""
        done = None
        if self._memo is not None:
            with self._lock:
                done = self._memo.get(key)
            tally.reused += done is not None
        if done is None:
            done = self._run(segments, plan.query, group, tally)
            if self._memo is not None:
                with self._lock:
                    self._memo[key] = done
        self._file_gaps(segments, done.gaps)
        return done.texts

    def _run(self, segments: list[Segment], query: str | None, group: _Group, tally: Tally) -> _Done:
        refs = {"gap_refs": True} if self.gap_store is not None else {}  # other compressors need not know it
        result = self.compressor.compress_segments(
            segments, query, keep_ratio=self.keep_ratio, max_tokens=self.budget_tokens,
            token_counter=self._token_counter, **refs)
        check_result(result, segments, set(group.members))
        tally.add(result)
        gaps = tuple((g.segment, g.ref, g.start, g.end) for g in getattr(result, "gaps", ()))
        return _Done(tuple(result.segments[i].text for i in group.members), gaps)

    def _file_gaps(self, segments: list[Segment], gaps: tuple[tuple[int, str, int, int], ...]) -> None:
        """File each gap's original text under its segment's text (refreshes what a memo hit reuses)."""
        if self.gap_store is None:
            return
        for index, ref, start, end in gaps:
            text = segments[index].text
            self.gap_store.put(content_namespace(text), ref, text[start:end])

    def _report(
        self,
        plan: MessagePlan,
        texts: list[str],
        before: list[M],
        after: list[M],
        groups: int,
        tally: Tally,
        failure: str | None,
        start: float,
    ) -> CompressionReport:
        counted = sorted({p.segment for part in plan.parts for p in part.pieces})
        counts, name = self.counter.count_all([plan.segments[i].text for i in counted] + [texts[i] for i in counted])
        original, compressed = sum(counts[: len(counted)]), sum(counts[len(counted) :])
        return tally.report(
            TokenCounts(original, compressed, name),
            len(before),
            sum(1 for a, b in zip(before, after) if a is not b),
            groups,
            failure,
            start,
        )
