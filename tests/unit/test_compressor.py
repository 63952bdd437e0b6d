"""SpecPrefillCompressor end to end on tiny in-process drafts: invariants, budgets, failures."""

from __future__ import annotations

import inspect
import json
import re
import textwrap
import warnings

import numpy as np
import pytest

from specprefill_agents import (
    CompressionConfig,
    ConfigError,
    InputError,
    Segment,
    SpecPrefillCompressor,
)
from specprefill_agents.alignment import detect_kind
from specprefill_agents.testing import (ANSWER_SENTENCE, ARCHS, PASSAGES_QUESTION, retrieved_passages, tiny_draft,
                                        tiny_tokenizer)

PROSE = inspect.getdoc(textwrap.TextWrapper) or ""
CODE = inspect.getsource(textwrap.dedent)
MARKERS = re.compile(r"( ?\[\.\.\.\] ?|\n?# \[\.\.\.\]\n?)")


def _compressor(arch: str = "llama", **config) -> SpecPrefillCompressor:
    return SpecPrefillCompressor(tiny_draft(arch), CompressionConfig(**config) if config else None)


def _is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(ch in it for ch in small)


@pytest.mark.parametrize("arch", ARCHS)
def test_compress_str_basic_invariants(arch: str) -> None:
    comp = _compressor(arch)
    res = comp.compress(PROSE, query="What does the width attribute control?", keep_ratio=0.25)
    assert len(res.segments) == 1 and res.text == res.segments[0].text
    assert res.compressed_tokens < res.original_tokens
    assert res.stats.compressed_tokens <= res.stats.budget_tokens
    assert res.stats.budget_tokens == int(np.ceil(0.25 * res.original_tokens))
    assert _is_subsequence(MARKERS.sub("", res.text), PROSE)
    # the kept spans, in order and apart, joined by the gap marker of the text's kind are the output
    # exactly (the docstring's indented attribute list makes it line-structured, "code", by detect_kind)
    separator = {"prose": " [...] ", "code": "\n# [...]\n"}[detect_kind(PROSE)]
    spans = res.kept_spans[0]
    assert len(spans) > 1 and all(a.end < b.start for a, b in zip(spans, spans[1:]))
    assert separator.join(PROSE[s.start:s.end] for s in spans) == res.text
    # anchors: the first and last unit of the segment survive
    assert res.text.split()[0] == PROSE.split()[0]
    assert res.text.split()[-1] == PROSE.split()[-1]
    assert res.stats.draft_tokens_forwarded > 0 and res.stats.timings["total"] > 0


def test_kept_spans_reassemble_the_output() -> None:
    res = _compressor().compress([PROSE, CODE], query="dedent margin", keep_ratio=0.3)
    for seg, spans, original in zip(res.segments, res.kept_spans, [PROSE, CODE]):
        pieces = [original[s.start:s.end] for s in spans]
        assert all(p in seg.text for p in pieces)
        assert MARKERS.sub("", seg.text).replace("\n", "").replace(" ", "") == "".join(pieces).replace(
            "\n", "").replace(" ", "")


def test_deterministic_output() -> None:
    comp = _compressor("qwen2")
    a = comp.compress([PROSE, CODE], query="how are lines indented?", keep_ratio=0.2)
    b = comp.compress([PROSE, CODE], query="how are lines indented?", keep_ratio=0.2)
    assert a.texts == b.texts and a.kept_spans == b.kept_spans


def test_budget_counted_with_a_target_counter() -> None:
    words = lambda text: len(text.split())  # noqa: E731 - a "target tokenizer" that counts words
    res = _compressor().compress(PROSE, query="placeholder", max_tokens=60, token_counter=words)
    assert res.stats.counted_with == "<lambda>"
    assert res.stats.original_tokens == len(PROSE.split())
    assert words(res.text) <= 60 + 3  # within one unit (+ the gap marker's word)
    assert res.stats.compressed_tokens == words(res.text)


def test_everything_kept_when_budget_allows() -> None:
    res = _compressor().compress([PROSE, CODE], query="anything", keep_ratio=1.0)
    assert res.texts == [PROSE, CODE]
    assert res.stats.compressed_tokens == res.stats.original_tokens


def test_min_tokens_leaves_short_inputs_alone() -> None:
    res = _compressor(min_tokens=10_000).compress(PROSE, query="x")
    assert res.text == PROSE and res.stats.draft_tokens_forwarded == 0


def test_no_query_uses_the_tail_and_keeps_it() -> None:
    question = "Question: which attribute sets the maximum line length?"
    segs = [Segment(PROSE, role="tool"), Segment(question, role="user", protected=True)]
    comp = SpecPrefillCompressor(tiny_draft("llama"))
    res = comp.compress_segments(segs, keep_ratio=0.25)
    assert res.segments[1].text == question
    assert len(res.segments[0].text) < len(PROSE)


def test_tail_of_a_compressible_segment_scores_as_keep() -> None:
    text = PROSE + "\n\nThe final instruction: answer briefly."
    scores = _compressor().score_segments([Segment(text)])
    seg = scores.segments[0]
    tail = seg.scores[-16:]
    assert np.all(tail >= seg.scores[:-64].max() - 1e-6)


@pytest.mark.parametrize("text", ["", "   \n\t ", "日本語のテキスト🙂" * 40, "\x00\x01 ctrl"])
def test_odd_inputs_never_crash(text: str) -> None:
    res = _compressor(min_tokens=1).compress(text, query="q", keep_ratio=0.5)
    assert len(res.segments) == 1
    assert _is_subsequence(MARKERS.sub("", res.text), text)


def test_invalid_utf8_surrogates_pass_through_untouched() -> None:
    bad = (PROSE.encode() + b"\xff\xfe broken bytes").decode("utf-8", errors="surrogateescape")
    res = _compressor().compress([bad, PROSE], query="width", keep_ratio=0.3)
    assert res.texts[0] == bad  # not compressible, but not lost either
    assert res.texts[1] != PROSE


def test_bad_arguments_raise_typed_errors() -> None:
    comp = _compressor()
    with pytest.raises(InputError):
        comp.compress(123)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        comp.compress([PROSE, None])  # type: ignore[list-item]
    with pytest.raises(InputError):
        comp.compress_segments(["plain str"])  # type: ignore[list-item]
    with pytest.raises(InputError):
        comp.compress(PROSE, query=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        comp.compress(PROSE, keep_ratio=1.5)
    with pytest.raises(ConfigError):
        comp.compress(PROSE, token_counter=object())
    with pytest.raises(ConfigError):
        SpecPrefillCompressor(tiny_draft("llama"), on_failure="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [dict(keep_ratio=0), dict(keep_ratio=None, max_tokens=None),
                                 dict(max_tokens=0), dict(unit="paragraph"), dict(top_p=2.0),
                                 dict(chunk_tokens=0), dict(min_tokens=-1), dict(lexical_boost=-1.0),
                                 dict(lexical_boost=float("nan")), dict(lexical_boost="2"),
                                 dict(sampling="random")])
def test_invalid_compression_config(bad: dict) -> None:
    with pytest.raises(ConfigError):
        CompressionConfig(**bad)


def test_config_is_frozen_and_serialisable() -> None:
    cfg = CompressionConfig()
    with pytest.raises(AttributeError):
        cfg.keep_ratio = 0.5  # type: ignore[misc]
    assert json.loads(cfg.to_json())["scoring"]["lookahead"] == 4
    assert cfg.replace(keep_ratio=0.5).keep_ratio == 0.5 and cfg.keep_ratio == 0.25


class _Boom(RuntimeError):
    pass


def _broken_compressor(on_failure: str) -> SpecPrefillCompressor:
    comp = SpecPrefillCompressor(tiny_draft("llama"), on_failure=on_failure)  # type: ignore[arg-type]
    scorer = comp._ensure_scorer()

    def explode(*args, **kwargs):
        raise _Boom("CUDA out of memory (simulated)")

    scorer.score = explode  # type: ignore[method-assign]
    return comp


def test_failure_passes_through_with_a_warning() -> None:
    with pytest.warns(RuntimeWarning, match="passed through"):
        res = _broken_compressor("warn").compress([PROSE, CODE], query="q")
    assert res.texts == [PROSE, CODE]
    assert res.stats.failure and "out of memory" in res.stats.failure


def test_failure_passthrough_is_silent_but_recorded() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = _broken_compressor("passthrough").compress(PROSE, query="q")
    assert res.text == PROSE and res.stats.failure


def test_failure_raise_raises() -> None:
    with pytest.raises(_Boom):
        _broken_compressor("raise").compress(PROSE, query="q")


def test_construction_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import specprefill_agents.compressor as mod

    calls = []
    monkeypatch.setattr(mod, "load_draft", lambda cfg: calls.append(cfg) or tiny_draft("llama"))
    comp = SpecPrefillCompressor("some/hub-id")
    assert calls == []
    comp.compress(PROSE, query="q")
    assert len(calls) == 1 and calls[0].model == "some/hub-id"
    comp.compress(PROSE, query="q")
    assert len(calls) == 1


def test_tokenizer_offsets_are_used_for_unicode() -> None:
    tok = tiny_tokenizer()
    text = "naïve café — 日本語 🙂 " * 30
    res = _compressor(min_tokens=1).compress(text, query="café", keep_ratio=0.3, token_counter=tok)
    assert _is_subsequence(MARKERS.sub("", res.text), text)
    res.text.encode("utf-8")  # never splits a character


def test_short_documents_are_measured_against_min_tokens_together() -> None:
    docs = retrieved_passages(24)
    comp = _compressor(min_tokens=300)
    counts = [comp.counter()[0](d) for d in docs]
    assert max(counts) < 300 < sum(counts)  # each passage alone would be left whole
    res = comp.compress_segments([Segment(d, role="document") for d in docs], "Which town sells salt?",
                                 keep_ratio=0.2)
    assert res.stats.compressed_tokens <= res.stats.budget_tokens < sum(counts)
    assert not any("min_tokens" in why for why in res.stats.passthrough_reasons.values())
    assert "" in res.texts  # a passage with nothing the budget could afford is dropped whole
    alone = comp.compress_segments([Segment(d, role="document") for d in docs[:2]], "salt?", keep_ratio=0.2)
    assert alone.texts == docs[:2]  # two short passages together are still under min_tokens
    assert "documents together are shorter than min_tokens" in alone.stats.passthrough_reasons[0]


def test_a_passage_that_answers_is_kept_from_the_middle_of_the_set() -> None:
    docs = retrieved_passages(16, answer_at=9)
    comp = _compressor(min_tokens=16)
    query = PASSAGES_QUESTION
    res = comp.compress_segments([Segment(d, role="document") for d in docs], query, keep_ratio=0.1)
    assert ANSWER_SENTENCE in res.texts[9]
    assert res.stats.compressed_tokens <= res.stats.budget_tokens
    # the same texts as chat messages keep the first and last unit of each, as before
    msgs = comp.compress_segments([Segment(d, role="tool") for d in docs], query, keep_ratio=0.1)
    assert "Quillbridge" not in msgs.texts[9]


def test_a_single_document_keeps_its_anchors() -> None:
    res = _compressor().compress_segments([Segment(PROSE, role="document")], "width?", keep_ratio=0.2)
    assert res.texts[0].split()[0] == PROSE.split()[0] and res.texts[0].split()[-1] == PROSE.split()[-1]
