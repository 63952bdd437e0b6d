"""Unit tests for specprefill_agents.selection: planning, global choice under a budget, rendering."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprefill_agents.config import CompressionConfig
from specprefill_agents.errors import ConfigError, InputError
from specprefill_agents.selection import (
    Chunk,
    SegmentPlan,
    asks_how_often,
    choose,
    gap_separator,
    plan_segment,
    render,
    proportional_plans,
)
from specprefill_agents.types import KeptSpan

_TOKEN = re.compile(r"\s*\S+")


def draft_tokens(text: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace 'draft tokenizer' (leading space attached, like BPE) with seeded random scores."""
    offsets = np.array([m.span() for m in _TOKEN.finditer(text)], dtype=np.int64).reshape(-1, 2)
    scores = np.random.default_rng(seed).random(len(offsets)).astype(np.float32)
    return offsets, scores


def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:
    return len(text)


def prose(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "needle", "the", "of", "and", "value", "42."]
    return " ".join(vocab[i] for i in rng.integers(0, len(vocab), n))


def code(n: int) -> str:
    body = "".join(f"    x{i} = compute({i}, y)\n" + ("\n" if i % 5 == 4 else "") for i in range(n))
    return f"def f(y):\n{body}    return x0\n"


def make_plan(text: str, config: CompressionConfig, seed: int = 0, kind: str = "auto") -> SegmentPlan:
    offsets, scores = draft_tokens(text, seed)
    return plan_segment(text, offsets, scores, config, kind)


def assert_partition(plan: SegmentPlan) -> None:
    assert plan.chunks[0].start == 0
    assert plan.chunks[-1].end == len(plan.text)
    for a, b in zip(plan.chunks, plan.chunks[1:]):
        assert a.end == b.start and a.start < a.end
    inner = [c for c in plan.chunks if not c.blank]  # blank: only the whitespace around the text
    assert all(not plan.text[c.start : c.end].strip() for c in plan.chunks if c.blank)
    first, last = plan.chunks.index(inner[0]), plan.chunks.index(inner[-1])
    assert all(c.blank for c in plan.chunks[:first] + plan.chunks[last + 1 :])
    assert inner[0].anchor and inner[-1].anchor
    assert not any(c.anchor for c in inner[1:-1])


CFG = CompressionConfig(chunk_tokens=4, code_chunk_tokens=8)
WORDS = CFG.replace(unit="word")  # word units for prose and code: chunks close once they reach the target


# --- plan_segment -----------------------------------------------------------------


def test_plan_prose_chunks() -> None:
    text = prose(50)
    plan = make_plan(text, WORDS)
    assert plan.kind == "prose"
    assert_partition(plan)
    assert words(plan.chunk_text(0)) == 1 and words(plan.chunk_text(len(plan.chunks) - 1)) == 1
    middle = [c.draft_tokens for c in plan.chunks[1:-1]]
    assert all(t == 4 for t in middle[:-1]) and 1 <= middle[-1] <= 4
    assert sum(c.draft_tokens for c in plan.chunks) == 50


def test_plan_chunk_score_is_the_token_weighted_mean_of_unit_maxima() -> None:
    text = "aa bb cc dd ee"
    offsets = np.array([[0, 1], [1, 2], [2, 4], [4, 5], [5, 8], [8, 11], [11, 14]])
    scores = np.array([0.2, 0.4, 0.1, 0.9, 0.3, 0.5, 0.7], dtype=np.float32)
    plan = plan_segment(text, offsets, scores, CompressionConfig(unit="word", chunk_tokens=3), kind="prose")
    assert [plan.chunk_text(i) for i in range(len(plan.chunks))] == ["aa ", "bb cc ", "dd ", "ee"]
    assert plan.chunks[0].score == pytest.approx(0.4) and plan.chunks[0].draft_tokens == 2  # max(0.2, 0.4)
    # bb: tokens " b"(0.1) "b"(0.9) -> max 0.9, 2 tokens; cc: " cc"(0.3) -> 0.3, 1 token
    assert plan.chunks[1].score == pytest.approx((0.9 * 2 + 0.3) / 3) and plan.chunks[1].draft_tokens == 3


def test_plan_code_uses_lines_and_code_chunk_tokens() -> None:
    text = code(20)
    plan = make_plan(text, CFG)
    assert plan.kind == "code"
    assert_partition(plan)
    assert plan.chunk_text(0) == "def f(y):\n"
    assert plan.chunk_text(len(plan.chunks) - 1) == "    return x0\n"
    for i in range(1, len(plan.chunks)):
        assert plan.chunk_text(i).startswith("    ")  # chunks start at line starts
    assert all(c.draft_tokens >= 8 for c in plan.chunks[1:-2])


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_plan_empty(text: str) -> None:
    plan = make_plan(text, CFG)
    assert plan.chunks == (Chunk(0, len(text), 0.0, 0, True),)


def test_plan_single_and_two_units() -> None:
    one = make_plan("  lonely \n", CFG)  # the leading spaces are a blank chunk; the line break stays
    assert [(c.start, c.end, c.anchor, c.blank) for c in one.chunks] == [(0, 2, False, True), (2, 10, True, False)]
    two = make_plan("first second", WORDS)
    assert [c.anchor for c in two.chunks] == [True, True]
    assert (two.chunk_text(0), two.chunk_text(1)) == ("first ", "second")


def test_plan_bad_kind() -> None:
    with pytest.raises(ConfigError):
        make_plan("a b c", CFG, kind="poetry")


@settings(max_examples=80, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab {};:.\n\t é🙂日")), max_size=120),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["auto", "word", "line", "sentence"]),
    st.integers(1, 6),
)
def test_plan_partitions_any_text(text: str, seed: int, unit: str, chunk_tokens: int) -> None:
    config = CompressionConfig(unit=unit, chunk_tokens=chunk_tokens, code_chunk_tokens=chunk_tokens)  # type: ignore[arg-type]
    plan = make_plan(text, config, seed)
    assert "".join(plan.chunk_text(i) for i in range(len(plan.chunks))) == text
    if text.strip():
        assert_partition(plan)
    assert all(np.isfinite(c.score) for c in plan.chunks)


def test_statement_chunks_are_whole_statements_packed_up_to_the_target() -> None:
    facts = ["The grass is green.", "The sky is blue.", "One of the special magic numbers for low-leopard is: 4633934.",
             "Here we go.", "There and back again.", "VAR AB = VAR CD and so on.", "End."]
    text = " ".join(facts)
    config = CompressionConfig(chunk_tokens=8)
    plan = make_plan(text, config)
    pieces = [plan.chunk_text(i).strip() for i in range(len(plan.chunks))]
    # every chunk is one or more whole sentences; short ones share a chunk while they fit in 8 words
    assert pieces == ["The grass is green.", "The sky is blue.", facts[2], "Here we go. There and back again.",
                      facts[5], "End."]
    assert all(c.draft_tokens <= 8 or len(p.split()) == c.draft_tokens for c, p in zip(plan.chunks, pieces))


def test_a_statement_longer_than_four_chunks_is_cut_into_words() -> None:
    text = "Short one. " + " ".join(f"w{i}" for i in range(50)) + " end. Last one."
    plan = make_plan(text, CompressionConfig(chunk_tokens=8))
    pieces = [plan.chunk_text(i) for i in range(len(plan.chunks))]
    assert pieces[0] == "Short one. " and pieces[-1] == "Last one."
    assert all(len(p.split()) <= 8 for p in pieces)  # the 51-word statement came apart
    assert len(pieces) > 6
    short = make_plan("Short one. " + " ".join(f"w{i}" for i in range(20)) + " end. Last one.",
                      CompressionConfig(chunk_tokens=8))
    assert [short.chunk_text(i).split()[0] for i in range(len(short.chunks))] == ["Short", "w0", "Last"]


def test_a_chosen_piece_of_a_cut_statement_brings_the_rest_when_the_budget_allows() -> None:
    needle = "One of the special magic uuids for " + " ".join(f"k{i}" for i in range(20)) + " is: " \
        + " ".join(f"v{i}" for i in range(20)) + "."
    filler = " ".join(f"Filler sentence {i} is here." for i in range(30))
    text = "Start here. " + filler + " " + needle + " " + filler + " Last one."
    offsets = np.array([m.span() for m in _TOKEN.finditer(text)], dtype=np.int64).reshape(-1, 2)
    scores = np.full(len(offsets), 0.1, dtype=np.float32)
    key = text.index("k0")
    scores[(offsets[:, 0] >= key) & (offsets[:, 0] < text.index("k7"))] = 1.0  # the draft saw only the key
    config = CompressionConfig(chunk_tokens=8)
    plan = plan_segment(text, offsets, scores, config)
    start = text.index(needle)
    holders = [c for c in plan.chunks if c.cut_from]  # the 48-word statement was cut into pieces
    assert len(holders) > 1 and {c.cut_from for c in holders} == {holders[0].cut_from}
    assert holders[0].start <= start and holders[-1].end >= start + len(needle)
    # room for the whole statement: it is kept whole although only the key's piece scored high
    out = render(plan, choose([plan], 70, words, config)[0], config)[0]
    assert needle in out
    # no room for it: the best piece alone, as before
    out = render(plan, choose([plan], 20, words, config)[0], config)[0]
    assert needle not in out and re.search(r"\bk\d+ k\d+ k\d+", out) and words(out) <= 20


# --- even spread -------------------------------------------------------------------


@pytest.mark.parametrize("question", [
    "Question: What are the 10 most common words in the above list? Answer: The top 10 words are:",
    "What are the three most frequently appeared words in the above coded text?",
    "Which error appears most often in the log?",
    "How often does 'timeout' appear in these logs?",
    "Count the number of times user 42 logged in.",
    "What is the frequency of each status code?",
])
def test_a_question_about_how_often_things_occur_is_recognised(question: str) -> None:
    assert asks_how_often(question)


@pytest.mark.parametrize("question", [
    "How many people live in Paris?", "How often does the council meet?", "Where is the vault?",
    "Which sentence appears first?", "", None,
])
def test_other_questions_are_not(question: str | None) -> None:
    assert not asks_how_often(question)


def test_only_the_end_of_a_long_query_is_read_as_the_question() -> None:
    turn = "Notes: the most common words were listed. " + "More notes. " * 60 + "Where is the vault?"
    assert not asks_how_often(turn) and asks_how_often(turn[:200])


def test_a_proportional_sample_is_spread_over_all_segments_at_every_budget() -> None:
    plans = [make_plan(prose(300, seed), WORDS, seed) for seed in (1, 2)]
    ordered = proportional_plans(plans)
    assert [[(c.start, c.end, c.anchor) for c in p.chunks] for p in ordered] == \
        [[(c.start, c.end, c.anchor) for c in p.chunks] for p in plans]
    flat = [c for plan in ordered for c in plan.chunks if not (c.anchor or c.blank)]
    assert len({c.score for c in flat}) == len(flat)  # a strict order
    order = sorted(range(len(flat)), key=lambda k: -flat[k].score)
    for m in (12, 30, 90):  # the first m chunks: every quarter of the context holds a fair share
        quarters = np.bincount([4 * k // len(flat) for k in order[:m]], minlength=4)
        assert quarters.min() >= 0.1 * m and quarters.max() <= 0.4 * m, quarters


def _counts(text: str) -> dict[str, int]:
    return {w: len(re.findall(rf"\b{w}\b", text)) for w in ("apple", "pear", "fig")}


@pytest.mark.parametrize("seed", range(3))
def test_a_proportional_sample_keeps_the_counts_a_ranking_by_score_distorts(seed: int) -> None:
    items = np.random.default_rng(seed).permutation(["apple"] * 90 + ["pear"] * 60 + ["fig"] * 30)
    text = " ".join(f"{i}. {w}" for i, w in enumerate(items, 1))
    offsets, _ = draft_tokens(text)
    scores = np.array([1.0 if "fig" in text[a:b] else 0.1 for a, b in offsets], dtype=np.float32)
    plan = plan_segment(text, offsets, scores, CFG)  # the draft favours the rarest word
    ranked = _counts(render(plan, choose([plan], words(text) // 4, words, CFG)[0], CFG)[0])
    assert ranked["fig"] > ranked["apple"]
    for share in (4, 10):  # keep a quarter, a tenth: the counts stay in proportion 3 : 2 : 1
        sample = proportional_plans([plan])[0]
        kept = _counts(render(sample, choose([sample], words(text) // share, words, CFG)[0], CFG)[0])
        assert kept["apple"] > kept["pear"] > kept["fig"] > 0
        n = sum(kept.values())
        assert all(abs(kept[w] - n * part / 6) <= 1.5 for w, part in (("apple", 3), ("pear", 2), ("fig", 1))), kept


def test_a_word_whose_chunks_come_late_in_the_spread_still_keeps_its_share() -> None:
    # one chunk per entry; "late" only in chunks of the second half of the even spread, every other
    # entry a word found three times: were a passed-over candidate to hold its place in the window
    # until taken, "late" would stay out of the first 160 chunks (the window would still be in the
    # first half of the spread)
    n = 400
    golden = sorted(range(n), key=lambda k: (((k + 1) * (5**0.5 - 1) / 2) % 1.0, k))
    late = set(golden[n // 2:][::8])
    fillers = iter(w for w in (f"w{i}x" for i in range(n)) for _ in range(3))
    entries = [f"{k}. {'late' if k in late else next(fillers)} " for k in range(n)]
    text, chunks, at = "".join(entries), [], 0
    for k, entry in enumerate(entries):
        chunks.append(Chunk(at, at + len(entry), 0.0, 3, anchor=k in (0, n - 1)))
        at += len(entry)
    plan = proportional_plans([SegmentPlan(text, "prose", tuple(chunks))])[0]
    order = sorted((c for c in plan.chunks if not c.anchor), key=lambda c: -c.score)
    for m in (80, 120, 160):  # from a fifth on, "late" holds about its share (len(late) / n) of the sample
        got = sum(text[c.start:c.end].split()[1] == "late" for c in order[:m])
        assert abs(got - m * len(late) / n) <= 2, (m, got)


# --- render -----------------------------------------------------------------------


def test_render_all_kept_is_identical() -> None:
    for text in (prose(40), code(12), "  lead and trail  \n"):
        plan = make_plan(text, CFG)
        out, spans = render(plan, range(len(plan.chunks)), CFG)
        assert out == text and spans == (KeptSpan(0, len(text)),)


def test_render_nothing_kept() -> None:
    assert render(make_plan(prose(10), CFG), [], CFG) == ("", ())


def test_render_prose_marker_and_merge() -> None:
    text = "one two three four five six"
    plan = make_plan(text, CompressionConfig(chunk_tokens=1))
    out, spans = render(plan, [0, 1, 4, 5], CFG)
    assert out == "one two [...] five six"
    assert spans == (KeptSpan(0, 7), KeptSpan(19, 27))


def test_render_code_marker_on_own_line() -> None:
    text = "a = 1\nb = 2\n\nc = 3\nd = 4\n"
    plan = make_plan(text, CompressionConfig(code_chunk_tokens=1), kind="code")
    out, spans = render(plan, [0, 3], CFG)
    assert out == "a = 1\n# [...]\nd = 4\n"
    assert [text[s.start : s.end] for s in spans] == ["a = 1", "d = 4\n"]
    assert gap_separator("code", CFG) == "\n# [...]\n" and gap_separator("prose", CFG) == " [...] "


def test_render_custom_and_empty_markers() -> None:
    plan = make_plan("one two three", CompressionConfig(unit="word", chunk_tokens=1))
    assert render(plan, [0, 2], CompressionConfig(gap_marker="…"))[0] == "one … three"
    assert render(plan, [0, 2], CompressionConfig(gap_marker=""))[0] == "one three"


def test_render_rejects_bad_indices() -> None:
    plan = make_plan("one two three", CFG)
    with pytest.raises(InputError):
        render(plan, [0, 7], CFG)


@settings(max_examples=80, deadline=None)
@given(st.integers(5, 60), st.integers(0, 2**32 - 1), st.booleans(), st.data())
def test_render_is_subsequence_of_kept_spans(n: int, seed: int, as_code: bool, data: st.DataObject) -> None:
    text = code(n // 3) if as_code else prose(n, seed)
    plan = make_plan(text, CompressionConfig(chunk_tokens=2, code_chunk_tokens=3), seed)
    kept = data.draw(st.sets(st.integers(0, len(plan.chunks) - 1)))
    out, spans = render(plan, sorted(kept), CFG)
    pieces = [text[s.start : s.end] for s in spans]
    assert out == gap_separator(plan.kind, CFG).join(pieces)
    assert all(a.end < b.start for a, b in itertools.pairwise(spans))  # ordered, never adjacent
    it = iter(text)
    assert all(ch in it for ch in "".join(pieces))  # a subsequence of the input


# --- choose -----------------------------------------------------------------------


def total(plans: list[SegmentPlan], kept: tuple[tuple[int, ...], ...], counter) -> int:  # type: ignore[no-untyped-def]
    return sum(counter(render(p, k, CFG)[0]) for p, k in zip(plans, kept))


def anchors(plans: list[SegmentPlan]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(i for i, c in enumerate(p.chunks) if c.anchor) for p in plans)


def test_choose_keeps_everything_when_it_fits() -> None:
    plans = [make_plan(prose(30), CFG), make_plan(code(6), CFG)]
    full = sum(words(p.text) for p in plans)
    kept = choose(plans, full + 5, words, CFG)
    assert kept == tuple(tuple(range(len(p.chunks))) for p in plans)
    assert [render(p, k, CFG)[0] for p, k in zip(plans, kept)] == [p.text for p in plans]


def test_choose_drops_anchors_last_when_they_alone_do_not_fit() -> None:
    plans = [make_plan(prose(40), WORDS), make_plan(prose(40, 1), WORDS)]
    assert choose(plans, 6, words, WORDS) == anchors(plans)  # "w [...] w" twice: 6 words
    for budget in (3, 0):
        kept = choose(plans, budget, words, WORDS)
        assert all(set(k) <= set(a) for k, a in zip(kept, anchors(plans)))  # no middle chunk
        assert total(plans, kept, words) <= budget or sum(map(len, kept)) == 1
    (best,) = [(p, i) for p, k in enumerate(choose(plans, 0, words, WORDS)) for i in k]
    assert plans[best[0]].chunks[best[1]].score == max(c.score for p in plans for c in p.chunks if c.anchor)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 260), st.sampled_from(["words", "chars"]), st.integers(0, 3))
def test_choose_respects_budget(budget: int, counter_name: str, seed: int) -> None:
    counter = words if counter_name == "words" else chars
    if counter is chars:
        budget *= 6
    plans = [make_plan(prose(80, seed), CFG, seed), make_plan(code(10), CFG, seed), make_plan("solo", CFG)]
    kept = choose(plans, budget, counter, CFG)
    all_anchors = all(set(a) <= set(k) for k, a in zip(kept, anchors(plans)))
    for k, a in zip(kept, anchors(plans)):
        assert list(k) == sorted(set(k))
        assert all_anchors or set(k) <= set(a)  # anchors go only after every middle chunk
    used = total(plans, kept, counter)
    assert used <= budget or sum(map(len, kept)) == 1
    assert choose(plans, budget, counter, CFG) == kept  # deterministic


def test_choose_budget_is_used() -> None:
    plans = [make_plan(prose(200), CFG)]
    kept = choose(plans, 60, words, CFG)
    used = total(plans, kept, words)
    assert 50 <= used <= 60


def test_choose_prefers_high_scores_and_skips_what_does_not_fit() -> None:
    text = "a " + "b " * 10 + "c d " + "e"
    chunks = (
        Chunk(0, 2, 0.0, 1, True),
        Chunk(2, 22, 0.9, 10, False),  # best, but 10 words
        Chunk(22, 24, 0.5, 1, False),
        Chunk(24, 26, 0.1, 1, False),
        Chunk(26, 27, 0.0, 1, True),
    )
    plan = SegmentPlan(text, "prose", chunks)
    # anchors "a [...] e" cost 3 words; the best chunk never fits, smaller ones are tried
    kept = choose([plan], 4, words, CFG)
    assert kept == ((0, 3, 4),) and render(plan, kept[0], CFG)[0] == "a [...] d e"
    # c opens a new gap (+1 marker = 2 words); then d closes it again for free
    kept = choose([plan], 6, words, CFG)
    assert kept == ((0, 2, 3, 4),) and render(plan, kept[0], CFG)[0] == "a [...] c d e"


def test_choose_ties_are_deterministic_and_earliest_first() -> None:
    text = "w0 w1 w2 w3 w4"
    chunks = tuple(Chunk(3 * i, 3 * i + 3 if i < 4 else 14, 0.5, 1, i in (0, 4)) for i in range(5))
    plans = [SegmentPlan(text, "prose", chunks), SegmentPlan(text, "prose", chunks)]
    # anchors cost 2 x "w0 [...] w4" = 6 words; w1 and w2 of the first plan fit (ties: earlier
    # plan, earlier chunk), then w3 closes the gap and replaces the marker at no cost
    kept = choose(plans, 8, words, CFG)
    assert kept == ((0, 1, 2, 3, 4), (0, 4))
    assert total(plans, kept, words) == 8


def test_choose_global_allocation_favours_high_scoring_segment() -> None:
    config = CompressionConfig(unit="word", chunk_tokens=4)
    text_a, text_b = prose(120, 1), prose(120, 2)
    off_a, _ = draft_tokens(text_a)
    off_b, _ = draft_tokens(text_b)
    low = np.full(len(off_a), 0.1, np.float32)
    high = np.full(len(off_b), 0.1, np.float32)
    high[40:80] = 0.9  # the needle's region
    plans = [plan_segment(text_a, off_a, low, config), plan_segment(text_b, off_b, high, config)]
    kept = choose(plans, 60, words, config)
    kept_words = [words(render(p, k, config)[0]) for p, k in zip(plans, kept)]
    assert kept_words[1] > 40 > kept_words[0]
    out_b = render(plans[1], kept[1], config)[0]
    needle = " ".join(text_b.split()[44:76])
    assert needle in out_b


def test_choose_top_p_stops_early() -> None:
    config = CompressionConfig(unit="word", chunk_tokens=4)
    text = prose(200)
    offsets, _ = draft_tokens(text)
    scores = np.full(len(offsets), 0.01, np.float32)
    scores[100:120] = 1.0
    plans = [plan_segment(text, offsets, scores, config)]
    without = choose(plans, 120, words, config)[0]
    with_p = choose(plans, 120, words, config.replace(top_p=0.5))[0]
    assert set(with_p) < set(without)
    assert words(render(plans[0], with_p, config)[0]) < 40
    kept_text = render(plans[0], with_p, config)[0]
    assert " ".join(text.split()[101:113]) in kept_text  # the three best chunks hold > 50% mass
    everything = choose(plans, 10_000, words, config.replace(top_p=0.1))[0]
    assert everything == tuple(range(len(plans[0].chunks)))


def test_choose_verification_drops_when_counter_disagrees() -> None:
    """A counter that charges a lot for markers forces the verification pass to drop chunks."""
    plans = [make_plan(prose(100), CFG)]

    def marker_heavy(text: str) -> int:
        return words(text) + 20 * text.count("[...]")

    kept = choose(plans, 70, marker_heavy, CFG)
    assert total(plans, kept, marker_heavy) <= 70
    assert len(kept[0]) > 2


def bpe_like(text: str) -> int:
    """Leading whitespace joins the next word, so counting chunks apart costs more than the whole."""
    return len(re.findall(r"\s*\S+|\s+", text))


def test_choose_keeps_everything_when_whole_text_fits_but_chunk_sum_does_not() -> None:
    plans = [make_plan(prose(60), CFG), make_plan(code(8), CFG)]
    whole = sum(bpe_like(p.text) for p in plans)
    assert sum(bpe_like(p.chunk_text(i)) for p in plans for i in range(len(p.chunks))) > whole
    kept = choose(plans, whole, bpe_like, CFG)
    assert [render(p, k, CFG)[0] for p, k in zip(plans, kept)] == [p.text for p in plans]


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_choose_fills_most_of_the_budget_with_a_bpe_like_counter(ratio: float) -> None:
    config = CompressionConfig(chunk_tokens=8, code_chunk_tokens=16)
    plans = [make_plan(prose(1500), config), make_plan(code(200), config)]
    budget = int(ratio * sum(bpe_like(p.text) for p in plans))
    used = total(plans, choose(plans, budget, bpe_like, config), bpe_like)
    assert 0.85 * budget <= used <= budget


def test_plans_without_anchors_are_filled_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents of a set have no anchors: a plan with nothing kept has no gap to mark, and the fill
    must stay within the budget by itself (else verification drops the lowest-scored pieces)."""
    from specprefill_agents import selection

    plans = [plan_segment(prose(40, p), *draft_tokens(prose(40, p), p), CFG, anchors=(False, False))
             for p in range(12)]
    assert not any(c.anchor for plan in plans for c in plan.chunks)
    before: list[int] = []
    real = selection._enforce

    def spy(plans, kept, *args):  # type: ignore[no-untyped-def]
        before.append(sum(words(render(plan, sorted(k), CFG)[0]) for plan, k in zip(plans, kept)))
        real(plans, kept, *args)

    monkeypatch.setattr(selection, "_enforce", spy)
    kept = choose(plans, 60, words, CFG)
    assert before[0] <= 60  # words count exactly: what the fill chose fits as it is
    assert 50 <= total(plans, kept, words) <= 60 and any(not k for k in kept)
