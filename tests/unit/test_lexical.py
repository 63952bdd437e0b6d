"""The lexical prior: BM25 of each chunk against the query, folded into the draft's chunk scores."""

from __future__ import annotations

import numpy as np
import pytest

from specprefill_agents import CompressionConfig, Segment, SpecPrefillCompressor
from specprefill_agents.budget import budget_tokens, make_counter
from specprefill_agents.lexical import bm25_scores, boost_plans, expand_query, query_terms
from specprefill_agents.selection import Chunk, SegmentPlan, choose, plan_segment, render, proportional_plans
from specprefill_agents.testing import tiny_draft


def test_query_terms_split_snake_case_and_lower_case() -> None:
    assert query_terms("Load_Draft(x)") == ["load_draft", "x", "load", "draft"]


def test_bm25_ranks_rare_query_words_over_common_ones() -> None:
    docs = ["the cat sat", "the dog sat", "the zebra sat", "the cat ran", "a bird"]
    scores = bm25_scores(docs, "the zebra or the cat?")
    assert scores[2] > scores[0] > scores[1] > 0  # "zebra" is in one document, "cat" in two, "the" in four
    assert scores[4] == 0  # no query word
    np.testing.assert_array_equal(bm25_scores(docs, "unrelated words"), np.zeros(5))
    assert bm25_scores([], "cat").shape == (0,)
    assert bm25_scores(["frobnicate the widget"], "what does frobnicate_widget take?")[0] > 0


def _plan(text_scores: list[tuple[str, float]]) -> SegmentPlan:
    text, chunks, start = "", [], 0
    for piece, score in text_scores:
        text += piece
        chunks.append(Chunk(start, len(text), score, len(piece.split()), False))
        start = len(text)
    return SegmentPlan(text, "prose", tuple(chunks))


def test_boost_multiplies_matching_chunks_and_leaves_the_rest() -> None:
    plans = [_plan([("alpha beta ", 1.0), ("gamma delta ", 2.0)]), _plan([("epsilon gamma ", 0.5)])]
    boosted = boost_plans(plans, "gamma?", 2.0)
    scores = [[c.score for c in p.chunks] for p in boosted]
    assert scores[0][0] == 1.0  # no query word: the draft's score
    # "gamma" once in two chunks of equal length: both are the best match, times 1 + 2
    assert scores[0][1] == pytest.approx(2.0 * 3.0) and scores[1][0] == pytest.approx(0.5 * 3.0)
    assert [p.text for p in boosted] == [p.text for p in plans]
    assert boost_plans(plans, "gamma", 0.0) == plans
    assert boost_plans(plans, "nothing shared", 2.0) == plans


_NOISE = "the grass is green and the sky is blue"
_CHAIN = ["VAR KDFWF = 67245 and the grass", _NOISE, "VAR VXAOA = VAR KDFWF here we go", _NOISE,
          "VAR HRSQB = VAR VXAOA and back", "VAR QQQQQ = VAR ZZZZZ a distractor", _NOISE,
          "VAR ZZZZZ = 11111 the sky", _NOISE, _NOISE]


def test_feedback_walks_a_chain_one_link_per_round() -> None:
    query = "Find all variables that are assigned the value 67245"
    assert expand_query(_CHAIN, query, 0) == query
    one, two = expand_query(_CHAIN, query, 1), expand_query(_CHAIN, query, 2)
    assert one.split()[-1:] == ["kdfwf"]  # the one word of the best match that leads elsewhere
    assert two.split()[-2:] == ["kdfwf", "vxaoa"]
    assert "zzzzz" not in expand_query(_CHAIN, query, 4)  # the distractor chain shares nothing
    scores = bm25_scores(_CHAIN, expand_query(_CHAIN, query, 3))
    assert (scores[[0, 2, 4]] > 0).all() and scores[5] == 0
    assert expand_query(_CHAIN, "no word in common", 3) == "no word in common"


def test_boost_with_feedback_raises_the_second_hop() -> None:
    plans = [_plan([(text + " ", 1.0) for text in _CHAIN])]
    query = "Find all variables that are assigned the value 67245"
    plain = [c.score for c in boost_plans(plans, query, 2.0)[0].chunks]
    fed = [c.score for c in boost_plans(plans, query, 2.0, feedback=2)[0].chunks]
    assert plain[2] == 1.0 and fed[2] > 1.0 and fed[4] > 1.0
    assert fed[5] == plain[5] == 1.0 and fed[7] <= plain[7]  # the distractor chain gains nothing


def _draft_only_selection(comp: SpecPrefillCompressor, segments: list[Segment], query: str, boost: float) -> str:
    """What the compressor should output: its draft scores, chunked, boosted by hand, chosen, rendered."""
    config, counter = comp.config, make_counter(comp.draft.tokenizer)[0]
    scores = comp.score_segments(segments, query).segments
    plans = [plan_segment(s.text, sc.offsets, sc.scores, config, kind=s.kind) for s, sc in zip(segments, scores)]
    plans = boost_plans(plans, query, boost)
    budget = budget_tokens(sum(counter(s.text) for s in segments), config.keep_ratio, None)
    kept = choose(plans, budget, counter, config)
    return render(plans[0], kept[0], config)[0]


@pytest.mark.parametrize("boost", [0.0, 2.0, 1000.0])
def test_the_compressor_applies_the_lexical_prior_to_the_draft_scores(boost: float) -> None:
    filler = " ".join(f"word{i % 37} spam{i % 11}." for i in range(150))
    text = filler + " The helper frobnicate_widget takes width and height. " + filler
    query = "What does frobnicate_widget take?"
    comp = SpecPrefillCompressor(tiny_draft("llama", seed=2),
                                 CompressionConfig(keep_ratio=0.1, lexical_boost=boost, semantic_boost=0.0))
    segments = [Segment(text)]
    out = comp.compress_segments(segments, query).texts[0]
    assert out == _draft_only_selection(comp, segments, query, boost)
    if boost >= 1000:  # the matching chunk outranks every random draft score
        assert "frobnicate_widget" in out


@pytest.mark.parametrize(("sampling", "query", "even"), [
    ("auto", "What are the 3 most common words in the list above?", True),
    ("auto", "Which word comes right after fig?", False),
    ("proportional", "Which word comes right after fig?", True),
    ("score", "What are the 3 most common words in the list above?", False),
])
def test_a_question_about_how_often_things_occur_gets_an_even_spread(sampling: str, query: str, even: bool) -> None:
    items = np.random.default_rng(5).choice(["apple", "pear", "fig", "plum", "kiwi", "lime"], 400)
    segments = [Segment(" ".join(f"{i}. {w}" for i, w in enumerate(items, 1)), role="tool")]
    config = CompressionConfig(keep_ratio=0.2, sampling=sampling, semantic_boost=0.0)  # the lexical ranking alone
    comp = SpecPrefillCompressor(tiny_draft("llama", seed=2), config)
    config, counter = comp.config, make_counter(comp.draft.tokenizer)[0]
    scores = comp.score_segments(segments, query).segments
    plans = [plan_segment(s.text, sc.offsets, sc.scores, config, kind=s.kind) for s, sc in zip(segments, scores)]
    budget = budget_tokens(counter(segments[0].text), config.keep_ratio, None)
    spread = render(plans[0], choose(proportional_plans(plans), budget, counter, config)[0], config)[0]
    ranked = render(plans[0], choose(boost_plans(plans, query, config.lexical_boost, config.lexical_feedback),
                                     budget, counter, config)[0], config)[0]
    assert spread != ranked
    assert comp.compress_segments(segments, query).texts[0] == (spread if even else ranked)


def test_without_a_query_the_latest_user_turn_is_the_lexical_query() -> None:
    filler = " ".join(f"word{i % 37} spam{i % 11}." for i in range(150))
    tool = Segment(filler + " The helper frobnicate_widget takes width and height. " + filler, role="tool")
    ask = Segment("What does frobnicate_widget take?", role="user")
    comp = SpecPrefillCompressor(tiny_draft("llama", seed=2), CompressionConfig(keep_ratio=0.1, lexical_boost=1000))
    assert "frobnicate_widget" in comp.compress_segments([tool, ask]).texts[0]
