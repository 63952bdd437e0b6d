"""SpecPrefillCompressor on tiny in-process drafts, with inputs or example counts that take
more than a few seconds on a 2-core CPU: windowing, long runs, mixed segments, properties.

The fast invariants on the same drafts are in tests/unit/test_compressor.py.
"""

from __future__ import annotations

import inspect
import re
import textwrap

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from specprefill_agents import CompressionConfig, Segment, SpecPrefillCompressor
from specprefill_agents.budget import budget_tokens
from specprefill_agents.selection import plan_segment, render
from specprefill_agents.testing import tiny_draft, tiny_tokenizer

pytestmark = pytest.mark.integration

PROSE = inspect.getdoc(textwrap.TextWrapper) or ""
CODE = inspect.getsource(textwrap.dedent)
MARKERS = re.compile(r"( ?\[\.\.\.\] ?|\n?# \[\.\.\.\]\n?)")


def _compressor(**config) -> SpecPrefillCompressor:
    return SpecPrefillCompressor(tiny_draft("llama"), CompressionConfig(**config) if config else None)


def _is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(ch in it for ch in small)


def _draft_tokens(text: str) -> int:
    return len(tiny_tokenizer()(text, add_special_tokens=False)["input_ids"])


def test_protected_and_short_segments_are_byte_identical() -> None:
    segs = [
        Segment("You are a careful assistant.", role="system", protected=True),
        Segment(PROSE, role="tool", id="call_1"),
        Segment(CODE, role="user", protected=True, id="u1"),
        Segment("tiny note", role="tool"),
    ]
    res = _compressor().compress_segments(segs, keep_ratio=0.2)
    assert [s.role for s in res.segments] == [s.role for s in segs]
    assert [s.id for s in res.segments] == [s.id for s in segs]
    assert res.segments[0] == segs[0] and res.segments[2] == segs[2] and res.segments[3] == segs[3]
    assert res.segments[1].text != PROSE
    assert res.stats.segments_compressed == 1


def test_a_long_run_of_one_character_never_crashes() -> None:
    text = "a" * 5000
    res = _compressor(min_tokens=1).compress(text, query="q", keep_ratio=0.5)
    assert len(res.segments) == 1
    assert _is_subsequence(MARKERS.sub("", res.text), text)


@pytest.mark.slow
def test_huge_input_is_windowed_not_truncated() -> None:
    big = "\n\n".join([PROSE] * 8)
    res = _compressor().compress(big, query="width", keep_ratio=0.1)
    assert res.stats.windows > 1
    assert res.text.split()[-1] == big.split()[-1]  # the end was seen and kept (anchor)


def _anchor_texts(comp: SpecPrefillCompressor, texts: list[str], query: str | None,
                  indices: list[int]) -> set[str]:
    """The text of every anchor chunk of ``texts[indices]``, rendered alone."""
    scores = comp.score_segments([Segment(t) for t in texts], query)
    rendered = set()
    for i in indices:
        plan = plan_segment(texts[i], scores.segments[i].offsets, scores.segments[i].scores, comp.config)
        rendered.update(render(plan, [k], comp.config)[0] for k, c in enumerate(plan.chunks) if c.anchor)
    return rendered


_TEXT = st.text(alphabet=st.sampled_from(list("abc xyz\n\t.,{}();=é日🙂")), min_size=0, max_size=400)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(texts=[PROSE, CODE], ratio=0.2, query="how are lines indented?")  # compressed within the budget
@example(texts=["short note", PROSE[:300]], ratio=0.05, query=None)  # an anchor alone exceeds the budget
@given(texts=st.lists(_TEXT, min_size=1, max_size=3), ratio=st.floats(0.05, 1.0),
       query=st.one_of(st.none(), _TEXT))
def test_property_subsequence_budget_and_shape(texts: list[str], ratio: float, query: str | None) -> None:
    comp = SpecPrefillCompressor(tiny_draft("llama"), CompressionConfig(min_tokens=1))
    res = comp.compress(texts, query=query, keep_ratio=ratio)
    assert len(res.segments) == len(texts)
    for out, original in zip(res.texts, texts):
        assert _is_subsequence(MARKERS.sub("", out), original)
    # the budget covers the compressible texts (here: every text of at least one token)
    compressible = [i for i, t in enumerate(texts) if _draft_tokens(t) >= 1]
    assert res.stats.budget_tokens == budget_tokens(sum(_draft_tokens(texts[i]) for i in compressible), ratio, None)
    used = sum(_draft_tokens(res.texts[i]) for i in compressible)
    assert res.stats.compressed_tokens == used  # the other texts are empty of tokens
    assert res.stats.budget_exceeded == (used > res.stats.budget_tokens)
    if res.stats.budget_exceeded:  # allowed only when one anchor chunk alone exceeds it, and only it is kept
        kept = [res.texts[i] for i in compressible if res.texts[i]]
        assert len(kept) == 1 and kept[0] in _anchor_texts(comp, texts, query, compressible)
        assert _draft_tokens(kept[0]) > res.stats.budget_tokens
    again = comp.compress(texts, query=query, keep_ratio=ratio)
    assert again.texts == res.texts
