"""The view of what was kept: the HTML page's structure and escaping, the terminal rendering."""

from __future__ import annotations

import html
import inspect
import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest

from specprefill_agents import CompressionConfig, CompressionResult, InputError, ScoringConfig, Segment
from specprefill_agents import SpecPrefillCompressor
from specprefill_agents.testing import tiny_draft
from specprefill_agents.view import render_terminal

PROSE = inspect.getdoc(textwrap.TextWrapper) or ""
HOSTILE = (
    '<script>document.title="pwned"</script> & "quotes" \'single\' <img src=x onerror="alert(1)">\n'
    "an escape \x1b[31mred\x1b[0m and a NUL \x00 here. "
)
FAST = CompressionConfig(keep_ratio=0.3, min_tokens=16, scoring=ScoringConfig(lookahead=2))


@pytest.fixture(scope="module")
def compressor() -> SpecPrefillCompressor:
    return SpecPrefillCompressor(tiny_draft("llama"), FAST, on_failure="raise")


@pytest.fixture(scope="module")
def result(compressor: SpecPrefillCompressor) -> CompressionResult:
    segments = [
        Segment("You are terse.", role="system", protected=True),
        Segment(HOSTILE * 3 + PROSE, role="tool", id="call-<1>"),
        Segment(PROSE.upper(), role="tool"),
    ]
    return compressor.compress_segments(segments, query="What does width do?")


class _Page(HTMLParser):
    """Collects, per segment section, the text of kept marks, dropped details and heat-map tokens."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[dict[str, list]] = []
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.header = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        cls = dict(attrs).get("class") or ""
        if tag == "section":
            self.sections.append({"pieces": [], "heat": [], "summaries": []})
        self.stack.append(f"{tag}.{cls}")

    def handle_endtag(self, tag: str) -> None:
        while self.stack and not self.stack.pop().startswith(tag + "."):
            pass

    def handle_data(self, data: str) -> None:
        where = self.stack
        if "header." in where:
            self.header += data
        if not self.sections:
            return
        sec = self.sections[-1]
        if "summary." in where:
            (sec["summaries"] if "details.dropped" in where else sec.setdefault("heat_title", [])).append(data)
        elif "pre.heatmap" in where:
            sec["heat"].append(("span." in where, data))
        elif "mark.kept" in where:
            sec["pieces"].append((True, data))
        elif "details.dropped" in where:
            sec["pieces"].append((False, data))


def _visible(text: str) -> str:
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", lambda m: "^" + chr(ord(m.group()) ^ 0x40), text)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def test_page_partitions_each_original_into_kept_and_dropped_pieces(result: CompressionResult) -> None:
    page = _parse(result.to_html())
    assert len(page.sections) == len(result.segments) == 3
    for section, original, spans in zip(page.sections, result.originals, result.kept_spans):
        pieces = section["pieces"]
        assert "".join(p for _, p in pieces) == _visible(original)  # nothing lost, nothing added
        assert [p for k, p in pieces if k] == [_visible(original[s.start : s.end]) for s in spans]
        assert len(section["summaries"]) == sum(1 for k, _ in pieces if not k)
    protected, compressed, _ = page.sections
    assert [k for k, _ in protected["pieces"]] == [True] and not protected["heat"]
    assert any(not k for k, _ in compressed["pieces"])  # something was dropped and shown greyed


def test_heat_map_has_one_span_per_draft_token_and_scores_in_order(result: CompressionResult) -> None:
    page = _parse(result.to_html())
    assert result.scores is not None
    for index in (1, 2):
        heat = page.sections[index]["heat"]
        assert "".join(p for _, p in heat) == _visible(result.originals[index])
        tokens = sum(1 for is_token, _ in heat if is_token)
        assert tokens == len(result.scores.segments[index].scores)
    alphas = [float(a) for a in re.findall(r"rgba\(255, 99, 32, ([0-9.]+)\)\" title", result.to_html())]
    assert min(alphas) == 0.0 and max(alphas) == 1.0  # min-max per segment: the full range shows


def test_header_carries_the_stats_and_the_page_is_self_contained(result: CompressionResult) -> None:
    page_text = result.to_html(title="run <7>")
    page = _parse(page_text)
    s = result.stats
    assert f"{s.original_tokens:,} \u2192 {s.compressed_tokens:,}" in page.header
    assert s.counted_with in page.header and "run <7>" in page.header
    assert f"{s.segments_compressed} of {s.segments_total}" in page.header
    assert page.tags.isdisjoint({"script", "img", "link", "iframe", "object"})
    assert page.attributes.isdisjoint({"src", "href", "srcset", "action"}) and not any(
        a.startswith("on") for a in page.attributes
    )
    style = re.search(r"<style>(.*?)</style>", page_text, flags=re.S).group(1)
    assert "url(" not in style and "@import" not in style


def test_hostile_text_is_escaped(result: CompressionResult) -> None:
    page = result.to_html()
    assert "<script>" not in page and "<img" not in page and "\x1b" not in page and "\x00" not in page
    assert html.escape('<script>document.title="pwned"</script>') in page
    assert "id call-&lt;1&gt;" in page


def test_to_html_writes_the_file(result: CompressionResult, tmp_path: Path) -> None:
    out = tmp_path / "view.html"
    page = result.to_html(out)
    assert out.read_text(encoding="utf-8") == page


def test_undecodable_bytes_show_as_replacement_characters(compressor: SpecPrefillCompressor) -> None:
    text = (PROSE + "\n").encode().decode() + b"bad \xff\xfe bytes".decode("utf-8", errors="surrogateescape")
    res = compressor.compress(text, query="width?")
    page = res.to_html()
    page.encode("utf-8")  # writable
    assert "bad \ufffd\ufffd bytes" in page


def test_a_pass_through_shows_the_failure_and_no_heat_map() -> None:
    class Broken(SpecPrefillCompressor):
        def _ensure_scorer(self):  # type: ignore[override]
            raise RuntimeError("draft exploded")

    comp = Broken(tiny_draft("llama"), FAST, on_failure="passthrough")
    res = comp.compress(PROSE, query="width?")
    assert res.scores is None and res.stats.failure
    page = res.to_html()
    assert "compression failed, input passed through" in page and "draft exploded" in page
    assert 'class="heat"' not in page and _parse(page).sections[0]["pieces"] == [(True, PROSE)]


def test_a_result_without_originals_says_so(result: CompressionResult) -> None:
    bare = CompressionResult(result.segments, result.kept_spans, result.stats)
    with pytest.raises(InputError, match="original texts"):
        bare.to_html()


def test_terminal_plain_marks_dropped_text(result: CompressionResult) -> None:
    out = render_terminal(result, color=False)
    assert "\x1b" not in out
    body = out.split("== segment 2/3 (tool):", 1)[1].split("== segment 3/3", 1)[0].split("==\n", 1)[1]
    dropped = re.findall(r"\[-(.*?)-\]", body, flags=re.S)
    assert dropped and re.sub(r"\[-(.*?)-\]", r"\1", body, flags=re.S).rstrip("\n") == _visible(
        result.originals[1]
    ).rstrip("\n")


def test_terminal_color_highlights_kept_text_and_neutralises_escapes(result: CompressionResult) -> None:
    out = render_terminal(result, color=True)
    kept = re.findall(r"\x1b\[1;30;42m(.*?)\x1b\[0m", out, flags=re.S)
    dropped = re.findall(r"\x1b\[90m(.*?)\x1b\[0m", out, flags=re.S)
    assert kept and dropped
    assert "\x1b[31m" not in out and "^[[31mred" in out  # the input's own escape is shown, not obeyed
    first_kept = result.originals[2][result.kept_spans[2][0].start : result.kept_spans[2][0].end]
    assert first_kept.split("\n")[0] in kept
