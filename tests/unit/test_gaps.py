"""Gap handles: typed gaps, content-derived references, exact expansion, the bounded store, search."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import textwrap

import pytest

from specprefill_agents import (
    CompressionConfig,
    ConfigError,
    GapNotFoundError,
    GapStore,
    InputError,
    OmittedText,
    SpecPrefillCompressor,
    approximate_tokens,
    expand_ref,
    omitted_texts,
    search_omitted,
)
from specprefill_agents.gaps import REF_CHARS, assign_refs, gap_seed
from specprefill_agents.testing import tiny_draft

PROSE = inspect.getdoc(textwrap.TextWrapper) or ""
CODE = inspect.getsource(textwrap.dedent)
REF_MARK = re.compile(r"\[\.\.\. (\d+) tokens, ref ([0-9a-f]+)\]")


@pytest.fixture(scope="module")
def comp() -> SpecPrefillCompressor:
    return SpecPrefillCompressor(tiny_draft("llama"), CompressionConfig(gap_refs=True))


@pytest.fixture(scope="module")
def result(comp: SpecPrefillCompressor):
    return comp.compress([PROSE, CODE], query="dedent margin", keep_ratio=0.2)


def test_gaps_and_kept_spans_partition_each_original(result) -> None:
    for s, original in enumerate(result.originals):
        pieces = sorted(
            [(k.start, k.end) for k in result.kept_spans[s]] + [(g.start, g.end) for g in result.gaps if g.segment == s]
        )
        assert pieces[0][0] == 0 and pieces[-1][1] == len(original)
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert len(result.gaps) >= 3 and len({g.ref for g in result.gaps}) == len(result.gaps)


def test_expand_returns_exactly_the_original_substring(result) -> None:
    for gap in result.gaps:
        original = result.originals[gap.segment]
        assert result.expand(gap.ref) == original[gap.start : gap.end]
        assert result.expand(f"ref {gap.ref.upper()}") == original[gap.start : gap.end]
        widened = result.expand(gap.ref, context=10)
        assert widened == original[max(gap.start - 10, 0) : gap.end + 10]
    kept = result.kept_spans[1][1]
    assert result.around(1, 1, context=5) == CODE[kept.start - 5 : kept.end + 5]


def test_markers_carry_each_gap_reference_and_token_count(result) -> None:
    prose, code = result.texts
    for text, segment in ((prose, 0), (code, 1)):
        marked = {ref: int(tokens) for tokens, ref in REF_MARK.findall(text)}
        inner = [
            g for g in result.gaps if g.segment == segment and g.start > 0 and g.end < len(result.originals[segment])
        ]
        assert marked == {g.ref: g.omitted_tokens for g in inner}
    # code: each marker is a comment line of its own
    marker_lines = [line for line in code.splitlines() if "tokens, ref" in line]
    assert marker_lines and all(re.fullmatch(r"# \[\.\.\. \d+ tokens, ref [0-9a-f]+\]", ln) for ln in marker_lines)


def test_reference_markers_count_in_the_budget(comp: SpecPrefillCompressor) -> None:
    for ratio in (0.1, 0.3):
        res = comp.compress([PROSE, CODE], query="dedent margin", keep_ratio=ratio)
        assert res.stats.compressed_tokens <= res.stats.budget_tokens
        assert res.compressed_tokens == sum(comp.counter()[0](t) for t in res.texts)


def test_unknown_forged_or_foreign_reference_is_a_typed_error(comp: SpecPrefillCompressor, result) -> None:
    other = comp.compress(["Another conversation. " * 60 + CODE], query="indent", keep_ratio=0.2)
    foreign = next(g.ref for g in other.gaps if g.ref not in {x.ref for x in result.gaps})
    for ref in ("00000", "zzzz", foreign, ""):
        with pytest.raises(GapNotFoundError, match="no gap has the reference"):
            result.expand(ref)
    with pytest.raises(InputError):
        result.expand(3)  # type: ignore[arg-type]


def test_references_depend_on_the_prefix_and_range_only() -> None:
    texts = ["a first tool output", "the second one", "a third"]
    assert gap_seed(texts)[:2] == gap_seed(texts[:2])  # later segments change nothing before them
    assert gap_seed(["changed", *texts[1:]])[1] != gap_seed(texts)[1]  # another prefix, other refs
    digests = ["abcde1234", "abcde9999", "abcde1277", "ffff00000"]
    refs = assign_refs(digests)
    assert refs == ["abcde", "abcde9", "abcde1", "ffff0"] and all(len(r) >= REF_CHARS for r in refs)
    assert assign_refs(digests[:1], taken={"abcde"}) == ["abcde1"]


def test_the_same_call_gives_the_same_references_in_a_new_process(result) -> None:
    script = textwrap.dedent(f"""
        import inspect, json, textwrap
        from specprefill_agents import CompressionConfig, SpecPrefillCompressor
        from specprefill_agents.testing import tiny_draft
        comp = SpecPrefillCompressor(tiny_draft("llama"), CompressionConfig(gap_refs=True))
        res = comp.compress([{PROSE!r}, {CODE!r}], query="dedent margin", keep_ratio=0.2)
        print(json.dumps([[g.ref, g.segment, g.start, g.end] for g in res.gaps]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[g.ref, g.segment, g.start, g.end] for g in result.gaps]


def test_plain_markers_by_default_and_gaps_listed_anyway() -> None:
    res = SpecPrefillCompressor(tiny_draft("llama")).compress(PROSE, query="width", keep_ratio=0.2)
    assert "ref " not in res.text and res.gaps
    assert all(res.expand(g.ref) == PROSE[g.start : g.end] for g in res.gaps)


def test_gap_refs_needs_a_ref_placeholder() -> None:
    with pytest.raises(ConfigError, match="ref_marker"):
        CompressionConfig(gap_refs=True, ref_marker="[...]")
    assert CompressionConfig(ref_marker="[...]").ref_marker == "[...]"  # unused while gap_refs is off


def test_passthrough_has_no_gaps_and_keeps_originals() -> None:
    res = SpecPrefillCompressor(tiny_draft("llama")).compress("short text", gap_refs=True)
    assert res.gaps == () and res.originals == ("short text",) and res.text == "short text"


def test_gap_store_is_bounded_and_namespaced(result) -> None:
    store = GapStore(max_chars=10_000_000)
    assert store.add(result, namespace="conv-a") == len(result.gaps)
    gap = result.gaps[0]
    assert store.expand(gap.ref, namespace="conv-a") == result.expand(gap.ref)
    with pytest.raises(GapNotFoundError):
        store.expand(gap.ref, namespace="conv-b")  # another conversation sees nothing
    with pytest.raises(GapNotFoundError):
        store.expand("00000", namespace="conv-a")
    total = sum(g.end - g.start for g in result.gaps)
    small = GapStore(max_chars=total + 10)  # room for one conversation's gaps
    small.add(result, namespace="first")
    small.add(result, namespace="second")  # the least recently used namespace goes
    assert small.chars == total and len(small) == len(result.gaps)
    assert small.expand(gap.ref, namespace="second") == result.expand(gap.ref)
    with pytest.raises(GapNotFoundError, match="not held"):
        small.expand(gap.ref, namespace="first")
    assert [o.ref for o in small.omitted("second")] == [g.ref for g in result.gaps]
    with pytest.raises(ConfigError):
        GapStore(max_chars=0)


def test_expand_ref_with_a_search_string_keeps_the_matching_lines(result) -> None:
    omitted = omitted_texts([result])
    gap = next(g for g in result.gaps if g.segment == 1 and "lines" in result.expand(g.ref))
    whole = expand_ref(omitted, gap.ref)
    assert whole.parts == ((gap.ref, result.expand(gap.ref)),) and whole.tokens > 0
    found = expand_ref(omitted, gap.ref, search="LINES")
    lines = found.parts[0][1].splitlines()
    assert lines and all("lines" in ln.lower() for ln in lines)
    assert all(ln in result.expand(gap.ref) for ln in lines)
    assert expand_ref(omitted, gap.ref, search="no-such-word-anywhere").parts == ()
    with pytest.raises(GapNotFoundError):
        expand_ref(omitted, "00000")


def test_search_omitted_finds_cut_evidence_under_a_budget() -> None:
    filler = [f"Paragraph {i} talks about the weather in town number {i} and nothing else." for i in range(80)]
    omitted = [
        OmittedText("aaaaa", " ".join(filler[:40])),
        OmittedText("bbbbb", " ".join(filler[40:60] + ["The vault access code is 7391."] + filler[60:])),
    ]
    hit = search_omitted(omitted, "What is the vault access code?", max_tokens=60)
    assert hit.parts == (("bbbbb", "The vault access code is 7391."),)  # stop-word matches left out
    assert hit.tokens == approximate_tokens(hit.to_text())
    assert hit.to_text() == "[ref bbbbb]\nThe vault access code is 7391."
    tight = search_omitted(omitted, "weather town", max_tokens=40)
    assert tight.parts and tight.tokens == approximate_tokens(tight.to_text()) <= 40
    assert search_omitted(omitted, "zebra", max_tokens=60).parts == ()
    with pytest.raises(InputError):
        search_omitted(omitted, " ", max_tokens=60)


def test_what_was_kept_steers_the_search_to_a_second_hop() -> None:
    filler = [f"Paragraph {i} talks about the weather in town number {i} and nothing else." for i in range(30)]
    second = "Codename Dounddin-33 runs on hardware housed in Valparaiso."
    omitted = [OmittedText("ccccc", " ".join(filler[:15] + [second] + filler[15:]))]
    kept = ["Intro. Querkmex Klialkoun's team works on codename Dounddin-33. More filler here."]
    question = "Which city hosts the machine used by Querkmex Klialkoun's team?"
    assert second not in search_omitted(omitted, question, max_tokens=60).to_text()  # no shared word
    assert search_omitted(omitted, question, max_tokens=60, seen=kept).parts == (("ccccc", second),)
