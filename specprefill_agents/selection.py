"""Chunks, budget-driven selection and rendering: pure functions, no torch.

Pipeline for the compressible segments of one request:

1. :func:`plan_segment` cuts each segment into chunks that partition its text:
   consecutive units (words / lines / sentences / statements) of about ``chunk_tokens``
   draft tokens plus the whitespace after them.  The first and the last unit are each an
   *anchor* chunk, kept unless they alone exceed the budget; whitespace before the first unit
   and after the last is a *blank* chunk, never chosen.
2. :func:`choose` selects chunks across all segments at once under one budget
   (counted with the caller's counter, e.g. the target tokenizer), then verifies
   the rendered output against the budget and drops chunks until it fits.  A statement too
   long for one chunk is cut into pieces; a chosen piece completes its statement when the
   budget allows.  For a question about how often things occur (:func:`asks_how_often`), the
   scores are first replaced by a proportional sample's order (:func:`proportional_plans`).
3. :func:`render` writes the kept chunks in their original order, merges adjacent
   ones and joins the gaps with a marker (``[...]`` for prose, a comment line for code).
"""

from __future__ import annotations

import logging
import re
from collections import Counter as Bag
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from .alignment import Unit, detect_kind, resolve_unit, split_units, unit_scores
from .budget import approximate_tokens
from .config import CompressionConfig
from .errors import ConfigError, InputError
from .gaps import GapMark, gap_marker, mark_gaps
from .types import KeptSpan

__all__ = ["Chunk", "SegmentPlan", "asks_how_often", "choose", "chunk_texts", "gap_separator", "plan_segment",
           "proportional_plans", "render", "render_gaps", "scaled_plans"]

logger = logging.getLogger(__name__)

Counter = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    """Characters ``[start, end)`` of a segment: some units plus the whitespace after them."""

    start: int
    end: int
    score: float
    draft_tokens: int
    anchor: bool
    blank: bool = False  # whitespace before the first unit or after the last: never chosen
    #: The over-long statements this chunk holds part of (ids shared by the chunks of one cut
    #: statement): choosing one piece completes the statement when the budget allows.
    cut_from: tuple[int, ...] = ()


@dataclass(frozen=True)
class SegmentPlan:
    """A segment's text, its kind and chunks that partition ``[0, len(text))`` in order;
    ``ref_seed`` (the segment's :func:`~specprefill_agents.gaps.gap_seed`) names its gaps."""

    text: str
    kind: Literal["prose", "code"]
    chunks: tuple[Chunk, ...]
    ref_seed: str = ""

    def chunk_text(self, index: int) -> str:
        chunk = self.chunks[index]
        return self.text[chunk.start : chunk.end]


def scaled_plans(plans: Sequence[SegmentPlan], factors: Sequence[float] | np.ndarray) -> list[SegmentPlan]:
    """``plans`` with each chunk's score multiplied by its factor (``factors``: one per chunk of all
    plans, in order): how the lexical and semantic priors fold into the draft's scores."""
    it = iter(factors)
    return [replace(plan, chunks=tuple(replace(c, score=c.score * float(next(it))) for c in plan.chunks))
            for plan in plans]


def gap_separator(kind: str, config: CompressionConfig) -> str:
    """What replaces a removed gap: ``" [...] "`` for prose, ``"\\n# [...]\\n"`` for code (with
    ``config.gap_refs``, a reference marker filled with typical values: what the selection's cost
    estimates use)."""
    return gap_marker(kind, config)


# --- planning ---------------------------------------------------------------------


def _groups(counts: np.ndarray, target: int, fit: bool = False) -> list[tuple[int, int]]:
    """Inclusive unit ranges: first unit, then middle units greedily filled up to
    ``target`` draft tokens, then the last.  A chunk closes once it reaches the target, or with
    ``fit`` before it would pass it (a unit longer than the target is a chunk of its own)."""
    u = len(counts)
    groups = [(0, 0)]
    if u > 2:
        cum = np.cumsum(counts[1 : u - 1])
        i, last = 0, u - 3
        while i <= last:
            base = int(cum[i - 1]) if i else 0
            if fit:
                j = max(int(np.searchsorted(cum, base + target, side="right")) - 1, i)
            else:
                j = int(np.searchsorted(cum, base + target, side="left"))
            j = min(j, last)
            groups.append((i + 1, j + 1))
            i = j + 1
    if u > 1:
        groups.append((u - 1, u - 1))
    return groups


def _chunks(text: str, units: np.ndarray, scores: np.ndarray, counts: np.ndarray, target: int,
            fit: bool = False, parents: np.ndarray | None = None,
            anchors: tuple[bool, bool] = (True, True)) -> tuple[Chunk, ...]:
    """Chunks of the unit ``_groups``; whitespace before the first unit and after the last (past
    its line break) is a ``blank`` chunk of its own, so the anchors are the first and last units
    with text (each only where ``anchors`` says so).  ``parents``: per unit, the id of the
    over-long statement it was cut from (-1: none)."""
    groups = _groups(counts, target, fit)
    firsts = np.array([g[0] for g in groups], dtype=np.int64)
    tokens = np.add.reduceat(counts, firsts)
    weighted = np.add.reduceat(scores * counts, firsts) / np.maximum(tokens, 1)
    head, tail = int(units[0, 0]), _line_end(text, int(units[-1, 1]))
    bounds = [head, *(int(units[f, 0]) for f in firsts[1:]), tail]
    last = len(groups) - 1
    cut = [() if parents is None else tuple(sorted({int(x) for x in parents[a : b + 1] if x >= 0}))
           for a, b in groups]
    chunks = [Chunk(bounds[j], bounds[j + 1], float(weighted[j]), int(tokens[j]),
                    (j == 0 and anchors[0]) or (j == last and anchors[1]), cut_from=cut[j])
              for j in range(len(groups))]
    lead = [Chunk(0, head, 0.0, 0, False, blank=True)] if head > 0 else []
    trail = [Chunk(tail, len(text), 0.0, 0, False, blank=True)] if tail < len(text) else []
    return (*lead, *chunks, *trail)


def _line_end(text: str, end: int) -> int:
    """``end``, moved past the spaces and the line break that directly follow it, if any."""
    match = _REST_OF_LINE.match(text, end)
    return match.end() if match else end


_REST_OF_LINE = re.compile(r"[ \t]*\r?\n")


def chunk_texts(plans: Sequence[SegmentPlan]) -> list[str]:
    """The text of every chunk of ``plans``, in order."""
    return [plan.chunk_text(k) for plan in plans for k in range(len(plan.chunks))]


def plan_segment(
    text: str,
    token_offsets: np.ndarray,
    token_scores: np.ndarray,
    config: CompressionConfig,
    kind: str = "auto",
    anchors: tuple[bool, bool] = (True, True),
) -> SegmentPlan:
    """Cut ``text`` into scored chunks from its draft-token offsets and scores.

    ``kind`` is ``"auto"`` (detected), ``"prose"`` or ``"code"``.  Line units use
    ``config.code_chunk_tokens``, other units ``config.chunk_tokens``.  A chunk's
    score is the draft-token-weighted mean of its unit scores, a unit's the max of its draft
    tokens'.  ``anchors``: whether the first and the last unit are anchors (a document of a set
    of documents has neither, :func:`~specprefill_agents.compressor.document_anchors`).
    Empty or whitespace-only text gives one anchor chunk covering the whole text.
    """
    if kind == "auto":
        kind = detect_kind(text)
    if kind not in ("prose", "code"):
        raise ConfigError(f"kind must be 'auto', 'prose' or 'code', got {kind!r}")
    unit = resolve_unit(config.unit, kind)
    units = split_units(text, unit)
    if len(units) == 0:
        return SegmentPlan(text, kind, (Chunk(0, len(text), 0.0, 0, True),))  # type: ignore[arg-type]
    scores, counts = unit_scores(units, token_offsets, token_scores, "max")
    target = config.code_chunk_tokens if unit == "line" else config.chunk_tokens
    statements = config.unit == "auto"  # whole statements: packed up to the target, long ones cut
    whole = units
    for finer in ("statement", "word") if statements else ():
        if counts.max() <= LONG_STATEMENT * target:
            break
        units = _split_long(text, units, counts, LONG_STATEMENT * target, finer)
        scores, counts = unit_scores(units, token_offsets, token_scores, "max")
    if statements and counts.max() > LONG_STATEMENT * target:  # a word of thousands of tokens: cut it too
        units = _split_at_tokens(units, counts, token_offsets, LONG_STATEMENT * target, target)
        scores, counts = unit_scores(units, token_offsets, token_scores, "max")
    parents = _parents(whole, units) if len(units) > len(whole) else None
    return SegmentPlan(text, kind, _chunks(text, units, scores, counts, target, fit=statements,  # type: ignore[arg-type]
                                           parents=parents, anchors=anchors))


def _parents(whole: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Per unit of ``units`` (``whole``'s units, some cut finer), the index of the ``whole`` unit it
    was cut from, or -1 where it is a ``whole`` unit itself."""
    owner = np.searchsorted(whole[:, 0], units[:, 0], side="right") - 1
    pieces = np.bincount(owner, minlength=len(whole))
    return np.where(pieces[owner] > 1, owner, -1)


#: A statement of more than this many chunks' worth of draft tokens is cut into sentences (a
#: paragraph on one line), and what is still that long into words (a minified JSON line).
LONG_STATEMENT = 4


def _split_long(text: str, units: np.ndarray, counts: np.ndarray, limit: int, finer: Unit) -> np.ndarray:
    """``units`` with every unit of more than ``limit`` draft tokens replaced by its ``finer`` units."""
    parts = []
    for (start, end), count in zip(units, counts):
        if count > limit:
            inner = split_units(text[start:end], finer) + start
            parts.append(inner if len(inner) else np.array([[start, end]], dtype=np.int64))
        else:
            parts.append(np.array([[start, end]], dtype=np.int64))
    return np.concatenate(parts)


def _split_at_tokens(units: np.ndarray, counts: np.ndarray, token_offsets: np.ndarray, limit: int,
                     target: int) -> np.ndarray:
    """``units`` with every unit of more than ``limit`` draft tokens cut every ``target`` tokens (a
    string with no space or sentence in it: a hash, base64, a minified blob)."""
    starts = np.asarray(token_offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
    parts = []
    for (start, end), count in zip(units, counts):
        cuts = starts[(starts > start) & (starts < end)][target - 1 :: target] if count > limit else []
        bounds = [int(start), *(int(c) for c in cuts), int(end)]
        parts.append(np.array(list(zip(bounds[:-1], bounds[1:])), dtype=np.int64))
    return np.concatenate(parts)


# --- rendering --------------------------------------------------------------------


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive indices, as inclusive ``(first, last)`` pairs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _kept_indices(kept: Sequence[int], n: int) -> list[int]:
    indices = sorted({int(i) for i in kept})
    if indices and (indices[0] < 0 or indices[-1] >= n):
        raise InputError(f"kept chunk indices must be in [0, {n}), got {indices}")
    return indices


def render(
    plan: SegmentPlan, kept: Sequence[int], config: CompressionConfig, counter: Counter | None = None
) -> tuple[str, tuple[KeptSpan, ...]]:
    """Write the kept chunks of ``plan`` in original order, gaps joined by a marker.

    Adjacent kept chunks merge into one :class:`KeptSpan`.  A run followed by a gap
    loses its trailing whitespace; the gap becomes :func:`gap_separator` (``" [...] "``
    for prose, ``"\\n# [...]\\n"`` for code), so ``output == separator.join(span texts)``;
    with ``config.gap_refs`` each marker carries its gap's reference and omitted tokens (counted
    with ``counter``).  All chunks kept → the input text unchanged; nothing kept → ``""``.
    """
    text, spans, _ = render_gaps(plan, kept, config, counter, marks=config.gap_refs)
    return text, spans


def _kept_spans(plan: SegmentPlan, indices: list[int]) -> tuple[KeptSpan, ...]:
    runs = _runs(indices)
    spans = []
    for r, (first, last) in enumerate(runs):
        start, end = plan.chunks[first].start, plan.chunks[last].end
        if r < len(runs) - 1:
            end = start + len(plan.text[start:end].rstrip())
        spans.append(KeptSpan(start, end))
    return tuple(spans)


def render_gaps(
    plan: SegmentPlan, kept: Sequence[int], config: CompressionConfig, counter: Counter | None = None,
    taken: Collection[str] = (), marks: bool = True,
) -> tuple[str, tuple[KeptSpan, ...], tuple[GapMark, ...]]:
    """:func:`render`, plus every gap left (references unique against ``taken``, omitted text
    counted with ``counter``, characters / 4 without one); ``marks=False`` skips the gaps."""
    indices = _kept_indices(kept, len(plan.chunks))
    spans = _kept_spans(plan, indices) if len(indices) < len(plan.chunks) else (KeptSpan(0, len(plan.text)),)
    spans = spans if indices else ()
    gaps = tuple(mark_gaps(plan.text, plan.ref_seed, spans, counter or approximate_tokens, taken)) if marks else ()
    if len(spans) <= 1:
        return (plan.text[spans[0].start : spans[0].end] if spans else ""), spans, gaps
    inner = iter(g for g in gaps if spans[0].start < g.end and g.start < spans[-1].end) if marks else None
    out = [plan.text[spans[0].start : spans[0].end]]
    for span in spans[1:]:
        out.append(gap_marker(plan.kind, config, next(inner) if inner is not None else None))
        out.append(plan.text[span.start : span.end])
    return "".join(out), spans, gaps


# --- selection --------------------------------------------------------------------


def _gap_delta(kept: set[int], index: int) -> int:
    """Change in the number of gap markers when non-anchor chunk ``index`` joins ``kept``.

    Only gaps between kept chunks are marked (one marker fewer than runs of kept chunks): a new
    chunk splits a gap (+1), shortens one (0) or closes one (-1), and the first chunk kept of a
    plan with no anchors (a document of a set) adds none.
    """
    if not kept:
        return 0
    return 1 - (index - 1 in kept) - (index + 1 in kept)


#: A question about how often things occur in the context: "the 10 most common words", "which
#: error appears most often", "the number of times ...", "the frequency of each ...".  Its answer is
#: a count, so the kept text must keep the context's proportions.  A ranking by relevance does not:
#: attention on a repeated word is shared among its copies, so each copy of a frequent word scores
#: low.  A fact lookup phrased alike ("What is the most common cause of ...?") matches too; on the
#: 13,328 SQuAD and HotpotQA questions, 11 match.
_HOW_OFTEN = re.compile(
    r"\b(?:most|least)\s+(?:common|frequent(?:ly)?|often)\b"
    r"|\b(?:appear|occur|recur)\w*\s+(?:the\s+)?(?:most|least)\s+(?:often|frequently)\b"
    r"|\bnumber\s+of\s+(?:times|occurrences)\b"
    r"|\bfrequenc(?:y|ies)\s+of\s+(?:each|every|all)\b"
    r"|\bhow\s+often\s+(?:does|do|did|is|are)\b[^?.]{0,80}?\b(?:appear|occur|show\s+up)",
    re.IGNORECASE,
)
#: Only the end of the query is read as the question: a query that is a whole user turn may hold
#: the context itself.
QUESTION_CHARS = 512
#: A proportional sample picks each chunk among the next this many of an even spread.
PROPORTION_WINDOW = 32
#: ... and a candidate passed over this many times goes to the back of the spread.
PROPORTION_PASSES = 8
#: ... and, between chunks as close to proportion, prefers the one with more counted words (not
#: filler) by this much per word.
_DENSITY = 0.01
_GOLDEN = (5**0.5 - 1) / 2
_COUNTED = re.compile(r"\w+")


def asks_how_often(query: str | None) -> bool:
    """Whether the question (the end of ``query``) asks how often things occur in the context."""
    return bool(query) and _HOW_OFTEN.search(query[-QUESTION_CHARS:]) is not None  # type: ignore[index]


def proportional_plans(plans: Sequence[SegmentPlan]) -> list[SegmentPlan]:
    """``plans`` with every chunk's score replaced by its place in a proportional sample.

    Every word found more than once in the non-blank chunks of all plans is counted (lower-cased
    ``\\w+``; a word found once has no proportion to keep).  Chunks are visited in an even spread
    (golden-ratio order of their place in the context).  Each next chunk is the one, among the next
    :data:`PROPORTION_WINDOW` of the spread, that brings the kept counts closest (least squares) to
    the context's counts scaled to the kept size; anchors count as kept from the start.  A candidate
    passed over :data:`PROPORTION_PASSES` times goes to the back of the spread, so that the chunks of
    a word falling behind can enter the window (``benchmarks/results/proportional_passes_cpu_epyc.md``).
    Scores fall in that order, so filling by descending score keeps, at every budget, a sample whose
    word counts keep the context's proportions: what a question about frequencies is answered from.
    """
    flat = [(p, i) for p, plan in enumerate(plans) for i, c in enumerate(plan.chunks) if not c.blank]
    if not flat:
        return list(plans)
    bags = [Bag(_COUNTED.findall(plans[p].chunk_text(i).lower())) for p, i in flat]
    total: Bag[str] = Bag()
    for bag in bags:
        total.update(bag)
    bags = [Bag({w: c for w, c in bag.items() if total[w] > 1}) for bag in bags]
    sizes = np.array([sum(bag.values()) for bag in bags], dtype=np.float64)
    counted = float(sizes.sum()) or 1.0
    # gain of chunk k at kept size `size`: sum over its words of c * (total * scale - kept - c / 2),
    # scale = (size + sizes[k]) / counted; split into terms that do not change (toward, own) and
    # one that grows as its words are kept (overlap = sum of c * kept)
    toward = np.array([sum(c * total[w] for w, c in bag.items()) for bag in bags], dtype=np.float64) / counted
    own = np.array([sum(c * c for c in bag.values()) / 2 for bag in bags], dtype=np.float64)
    overlap = np.zeros(len(flat))
    postings: dict[str, tuple[list[int], list[int]]] = {}
    for k, bag in enumerate(bags):
        for w, c in bag.items():
            ks, cs = postings.setdefault(w, ([], []))
            ks.append(k)
            cs.append(c)
    where = {w: (np.array(ks), np.array(cs, dtype=np.float64)) for w, (ks, cs) in postings.items()}
    size = 0.0

    def gain_of(ks: np.ndarray) -> np.ndarray:
        return (size + sizes[ks]) * toward[ks] - overlap[ks] - own[ks] + _DENSITY * sizes[ks]

    def keep(k: int) -> float:
        for w, c in bags[k].items():
            ks, cs = where[w]
            overlap[ks] += c * cs
        return float(sizes[k])

    queue: deque[int] = deque()
    for k in sorted(range(len(flat)), key=lambda k: (((k + 1) * _GOLDEN) % 1.0, k)):
        if plans[flat[k][0]].chunks[flat[k][1]].anchor:
            size += keep(k)
        else:
            queue.append(k)
    rank: dict[tuple[int, int], int] = {}
    passed = np.zeros(len(flat), dtype=np.int64)
    while queue:
        window = np.array([queue.popleft() for _ in range(min(PROPORTION_WINDOW, len(queue)))])
        k = int(window[np.argmax(gain_of(window))])
        rank[flat[k]] = len(rank)
        size += keep(k)
        # a candidate passed over PROPORTION_PASSES times goes to the back of the spread instead of
        # holding its place (where it would keep out the chunks of words falling behind)
        rest = window[window != k]
        passed[rest] += 1
        stale = passed[rest] >= PROPORTION_PASSES
        passed[rest[stale]] = 0
        queue.extendleft(reversed(rest[~stale].tolist()))
        queue.extend(rest[stale].tolist())
    n = max(len(rank), 1)
    return [replace(plan, chunks=tuple(replace(c, score=1.0 - rank[(p, i)] / n) if (p, i) in rank else c
                                       for i, c in enumerate(plan.chunks)))
            for p, plan in enumerate(plans)]


def _mass(plans: Sequence[SegmentPlan]) -> dict[tuple[int, int], float]:
    """Normalised score mass (score × draft tokens) of every non-anchor chunk, or {} if none."""
    raw = {
        (p, i): max(c.score, 0.0) * c.draft_tokens
        for p, plan in enumerate(plans)
        for i, c in enumerate(plan.chunks)
        if not c.anchor
    }
    total = sum(raw.values())
    return {key: value / total for key, value in raw.items()} if total > 0 else {}


def _fill(
    plans: Sequence[SegmentPlan],
    costs: list[list[float]],
    kept: list[set[int]],
    remaining: float,
    marker_costs: list[int],
    top_p: float | None,
) -> None:
    """Greedy: non-anchor chunks by descending score while their estimated cost fits.  A chunk
    that holds a piece of an over-long statement brings the rest of that statement with it when
    the whole fits, and comes alone otherwise."""
    order = sorted(
        (-c.score, p, i) for p, plan in enumerate(plans) for i, c in enumerate(plan.chunks)
        if not (c.anchor or c.blank)
    )
    mass = _mass(plans) if top_p is not None else {}
    pieces = [_pieces(plan) for plan in plans]
    taken = 0.0
    for _, p, i in order:
        if i in kept[p]:
            continue
        whole = _completion(plans[p], pieces[p], i, kept[p])
        for group in (whole, [i]) if len(whole) > 1 else ([i],):  # the whole statement, else the piece
            cost, trial = 0.0, set(kept[p])
            for j in group:
                cost += costs[p][j] + _gap_delta(trial, j) * marker_costs[p]
                trial.add(j)
            if cost <= remaining:
                break
        else:
            continue
        kept[p].update(group)
        remaining -= cost
        taken += sum(mass.get((p, j), 0.0) for j in group)
        if mass and top_p is not None and taken >= top_p:
            break


def _pieces(plan: SegmentPlan) -> dict[int, list[int]]:
    """Cut statement id -> the chunks holding a piece of it."""
    out: dict[int, list[int]] = {}
    for i, chunk in enumerate(plan.chunks):
        for statement in chunk.cut_from:
            out.setdefault(statement, []).append(i)
    return out


def _completion(plan: SegmentPlan, pieces: dict[int, list[int]], index: int, kept: set[int]) -> list[int]:
    """``index`` and the chunks not yet kept that hold the rest of every statement it was cut from."""
    group = {j for statement in plan.chunks[index].cut_from for j in pieces[statement]} | {index}
    return sorted(group - kept)


def _calibrated(costs: list[list[int]], whole: list[int]) -> list[list[float]]:
    """Chunk costs scaled so each plan's chunks add up to its whole-text count.

    Counting chunks apart overestimates with BPE counters (a chunk's trailing space or
    newline becomes a token of its own); without this the greedy fill would stop well
    short of the budget.  The verification pass still enforces the real count.
    """
    scaled = []
    for plan_costs, plan_whole in zip(costs, whole):
        parts = sum(plan_costs)
        factor = min(1.0, plan_whole / parts) if parts > 0 else 1.0
        scaled.append([cost * factor for cost in plan_costs])
    return scaled


def _rendered_cost(plan: SegmentPlan, kept: set[int], counter: Counter, config: CompressionConfig) -> int:
    return counter(render(plan, sorted(kept), config, counter)[0])


def _enforce(
    plans: Sequence[SegmentPlan],
    kept: list[set[int]],
    costs: list[list[int]],
    budget: int,
    counter: Counter,
    config: CompressionConfig,
    marker_costs: list[int],
) -> None:
    """Render, count, and drop the lowest-scored kept non-anchor chunks until the total fits.

    Drops come in batches sized by an optimistic estimate of what each frees (its
    cost plus one marker), so each batch is a prefix of what one-at-a-time dropping
    would remove; only the segments that changed are rendered and counted again.
    """
    counts = [_rendered_cost(plan, kept[p], counter, config) for p, plan in enumerate(plans)]
    droppable = sorted(
        (
            (plans[p].chunks[i].score, -p, -i)
            for p in range(len(plans))
            for i in kept[p]
            if not plans[p].chunks[i].anchor
        ),
        reverse=True,
    )
    while sum(counts) > budget and droppable:
        excess, freed = sum(counts) - budget, 0
        changed: set[int] = set()
        while droppable and (freed < excess or not changed):
            _, neg_p, neg_i = droppable.pop()
            kept[-neg_p].discard(-neg_i)
            freed += costs[-neg_p][-neg_i] + marker_costs[-neg_p]
            changed.add(-neg_p)
        for p in changed:
            counts[p] = _rendered_cost(plans[p], kept[p], counter, config)
    if sum(counts) > budget:
        _drop_anchors(plans, kept, counts, budget, counter, config)


def _drop_anchors(plans: Sequence[SegmentPlan], kept: list[set[int]], counts: list[int], budget: int,
                  counter: Counter, config: CompressionConfig) -> None:
    """Anchors alone exceed the budget (whole statements can be long): drop them, lowest score
    first, until the output fits or one chunk is left (the budget holds within one unit)."""
    logger.debug("anchors alone (%d tokens) exceed the budget of %d", sum(counts), budget)
    anchors = sorted((plans[p].chunks[i].score, -p, -i) for p in range(len(plans)) for i in kept[p])
    for _, neg_p, neg_i in anchors:
        if sum(counts) <= budget or sum(len(k) for k in kept) <= 1:
            break
        kept[-neg_p].discard(-neg_i)
        counts[-neg_p] = _rendered_cost(plans[-neg_p], kept[-neg_p], counter, config)


def choose(
    plans: Sequence[SegmentPlan],
    budget: int,
    counter: Counter,
    config: CompressionConfig,
    whole: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], ...]:
    """Indices of the chunks to keep in each plan (ascending), chosen globally.

    Anchors are always kept.  If the whole texts fit (``sum(counter(plan.text))`` is
    within ``budget``) everything is kept.  Otherwise non-anchor chunks are added
    by descending score (ties: earlier plan, then earlier chunk) while their cost,
    including the gap marker they add or remove, fits (a piece of a cut statement with the
    rest of its statement when all of it fits); ``config.top_p`` stops early
    once the added chunks hold that share of the normalised score mass.  Finally the
    rendered output is counted: ``sum(counter(render(plan)))`` ends ≤ ``budget``
    unless one chunk alone exceeds it: when the anchors alone do not fit, they are dropped too,
    lowest score first, down to the last chunk.  ``whole``: each
    plan's text already counted with ``counter`` (counted here when not given).
    """
    whole = [counter(plan.text) for plan in plans] if whole is None else list(whole)
    if sum(whole) <= budget:
        return tuple(tuple(range(len(plan.chunks))) for plan in plans)
    costs = [[counter(plan.chunk_text(i)) for i in range(len(plan.chunks))] for plan in plans]
    marker_costs = [counter(gap_separator(plan.kind, config)) for plan in plans]
    estimates = _calibrated(costs, whole)
    kept = [{i for i, c in enumerate(plan.chunks) if c.anchor} for plan in plans]
    anchor_cost = sum(estimates[p][i] for p in range(len(plans)) for i in kept[p]) + sum(
        max(len(_runs(sorted(kept[p]))) - 1, 0) * marker_costs[p] for p in range(len(plans)))  # no anchors: no runs
    if anchor_cost <= budget:
        _fill(plans, estimates, kept, budget - anchor_cost, marker_costs, config.top_p)
    _enforce(plans, kept, costs, budget, counter, config, marker_costs)
    return tuple(tuple(sorted(k)) for k in kept)
