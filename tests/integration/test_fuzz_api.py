"""Fuzzing the public API: any input gets a typed error (bad arguments) or a result that keeps
the invariants; any fault inside compression passes the input through under ``on_failure="warn"``."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from specprefill_agents import (
    CompressionConfig,
    ConfigError,
    InputError,
    ScoringConfig,
    Segment,
    SpecPrefillCompressor,
)
from specprefill_agents.testing import tiny_draft

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_DRAFT = tiny_draft("qwen2", max_pos=512)  # windows and groups of windows at a few hundred tokens
_FAST = CompressionConfig(min_tokens=8, scoring=ScoringConfig(lookahead=2, window_tokens=96))
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_prose = st.lists(st.sampled_from(["the", "window", "query", "draft", "kept", "line,", "value.", "42", "\n"]),
                  min_size=50, max_size=400).map(" ".join)
_text = st.one_of(
    _prose,
    st.text(max_size=600),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=1500),
    st.builds(lambda n: "[" * n + "]" * n, st.integers(0, 3000)),  # deep JSON
    st.builds(lambda s, n: s * n, st.sampled_from(["\n", " ", "🙂", "a", "{\"k\": 1}, ", "\x00\x1b"]),
              st.integers(0, 800)),
    st.builds(lambda s: s.encode("utf-8", "surrogatepass").decode("utf-8", "replace") + "\udcff", st.text()),
)
_any = st.one_of(st.none(), st.integers(-2, 3), st.text(max_size=5), st.booleans(), st.floats(allow_nan=True))
_valid_segment = st.builds(Segment, text=_text, role=st.sampled_from(["tool", "user", "system", "human"]),
                           compressible=st.sampled_from([True, True, True, False]),
                           protected=st.sampled_from([False, False, False, True]),
                           id=st.one_of(st.none(), st.text(max_size=4)),
                           kind=st.sampled_from(["auto", "prose", "code"]))
_wild_segment = st.builds(Segment, text=st.one_of(_text, _any), role=st.one_of(st.text(max_size=5), _any),
                          compressible=_any, protected=_any, id=_any, kind=_any)
_segment = st.one_of(_valid_segment, _valid_segment, _valid_segment, _wild_segment)
_wild_budget = st.one_of(st.floats(-1, 2), st.just(float("nan")), st.integers(-5, 5000), st.booleans(),
                         st.text(max_size=3))
_ratio = st.one_of(st.none(), st.none(), st.none(), st.floats(0.05, 0.6), _wild_budget)
_cap = st.one_of(st.none(), st.none(), st.none(), st.integers(1, 400), _wild_budget)


def _is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(ch in it for ch in small)


@_SETTINGS
@given(segments=st.one_of(*[st.lists(_valid_segment, min_size=1, max_size=4)] * 3, st.lists(_segment, max_size=5)),
       query=st.one_of(st.none(), st.text(max_size=40), st.just("what does it do?"), st.just("the draft"), _any),
       keep_ratio=_ratio, max_tokens=_cap)
def test_any_input_gets_a_typed_error_or_keeps_the_invariants(segments, query, keep_ratio, max_tokens) -> None:
    comp = SpecPrefillCompressor(_DRAFT, _FAST, on_failure="raise")
    try:
        res = comp.compress_segments(segments, query, keep_ratio=keep_ratio, max_tokens=max_tokens)
    except (InputError, ConfigError) as exc:
        event(f"typed error: {type(exc).__name__}")
        return
    event("compressed" if res.stats.segments_compressed else "passed through whole")
    assert len(res.segments) == len(segments) and res.stats.failure is None
    for before, after, spans in zip(segments, res.segments, res.kept_spans):
        assert (after.role, after.id, after.kind, after.protected) == (before.role, before.id, before.kind,
                                                                       before.protected)
        if not before.may_compress:
            assert after.text == before.text
        kept = "".join(before.text[s.start:s.end] for s in spans)
        assert _is_subsequence(kept, before.text)  # kept text is the original's, in order
        assert all(0 <= s.start < s.end <= len(before.text) for s in spans)
    again = comp.compress_segments(segments, query, keep_ratio=keep_ratio, max_tokens=max_tokens)
    assert again.texts == res.texts  # deterministic


@pytest.mark.parametrize("fault", [RuntimeError("CUDA out of memory"), MemoryError(), ValueError("v"),
                                   IndexError("i"), KeyError("k"), TypeError("t"), AssertionError("a"),
                                   RecursionError("r"), ZeroDivisionError("z")])
@_SETTINGS
@given(texts=st.lists(_text, min_size=1, max_size=3))
def test_any_fault_passes_the_input_through_with_a_warning(fault: BaseException, texts: list[str]) -> None:
    comp = SpecPrefillCompressor(_DRAFT, _FAST, on_failure="warn")
    scorer = comp._ensure_scorer()

    def explode(*args: object, **kwargs: object) -> None:
        raise fault

    scorer.score = explode  # type: ignore[method-assign]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = comp.compress(texts, query="what?")
    assert res.texts == texts and res.stats.segments_compressed == 0
    if res.stats.failure is not None:  # nothing eligible never reaches the draft: no fault, no warning
        assert res.stats.failure.startswith(type(fault).__name__)
        assert any("passed through" in str(w.message) for w in caught)
