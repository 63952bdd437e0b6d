"""What was kept, for people: a self-contained HTML page and a terminal rendering.

The page shows each segment's original text with the kept spans highlighted and the dropped
ones greyed inside collapsible ``<details>``, the draft's token scores as a heat map (when the
result carries them) and the stats in a header.  Everything is inline (CSS, no script, no
external asset) and every piece of input text is HTML-escaped.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import InputError
from .types import CompressionResult, CompressionStats, KeptSpan, SegmentScores

__all__ = ["KEPT_RGB", "DROPPED_RGB", "HEAT_RGB", "render_html", "write_html", "render_terminal", "pieces"]

KEPT_RGB = (183, 240, 177)
"""Background of kept text."""
DROPPED_RGB = (228, 228, 228)
"""Background of dropped text (its letters are grey too)."""
HEAT_RGB = (255, 99, 32)
"""Heat-map colour: a token's background has this colour at an opacity equal to its score."""

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _rgb(rgb: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*rgb)


_CSS = f"""
body{{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1d;background:#fff}}
header{{position:sticky;top:0;background:#f7f7f7;border-bottom:1px solid #ccc;padding:8px 16px}}
header h1{{font-size:16px;margin:0 0 4px}} header dl{{display:flex;flex-wrap:wrap;gap:4px 18px;margin:0}}
header dt{{color:#666}} header dd{{margin:0 0 0 4px;font-weight:600}} header div{{display:flex}}
.failure{{color:#b00020;font-weight:600}}
.legend span{{padding:0 6px;margin-right:8px}}
main{{padding:0 16px 24px}} section{{border-bottom:1px solid #ddd;padding:8px 0}}
section h2{{font-size:14px;margin:4px 0}} .note{{color:#666;font-weight:400}}
pre{{white-space:pre-wrap;word-break:break-word;font:13px/1.5 ui-monospace,monospace;margin:4px 0}}
mark.kept{{background:{_rgb(KEPT_RGB)};color:inherit}}
details.dropped{{display:inline}} details.dropped::details-content{{display:inline}}
details.dropped:not([open])::details-content{{display:none}}
details.dropped summary,.gone{{background:{_rgb(DROPPED_RGB)};color:#8a8a8a}}
details.dropped summary{{display:inline;cursor:pointer;font-style:italic;list-style:none}}
details.dropped[open] summary{{font-size:10px;vertical-align:super}}
details.heat summary{{cursor:pointer;color:#444}}
"""


def pieces(text: str, spans: tuple[KeptSpan, ...]) -> Iterator[tuple[bool, str]]:
    """``(kept, piece)`` for consecutive pieces of ``text`` that partition it, in order."""
    cursor = 0
    for span in sorted(spans, key=lambda s: s.start):
        start, end = max(span.start, cursor), min(span.end, len(text))
        if start > cursor:
            yield False, text[cursor:start]
        if end > start:
            yield True, text[start:end]
            cursor = end
    if cursor < len(text):
        yield False, text[cursor:]


def _visible(text: str) -> str:
    """``text`` safe to show: controls in caret notation (``^[`` for ESC), lone surrogates
    (undecodable input bytes) as U+FFFD."""
    text = _CONTROL.sub(lambda m: "^" + chr(ord(m.group()) ^ 0x40), text)
    return _SURROGATE.sub("\ufffd", text)


def _esc(text: str) -> str:
    return html.escape(_visible(text), quote=True)


def _originals(result: CompressionResult) -> tuple[str, ...]:
    if len(result.originals) != len(result.segments):
        raise InputError(
            "this CompressionResult does not hold its original texts (it was not made by "
            "SpecPrefillCompressor); compress again to view it"
        )
    return result.originals


def _stats_items(stats: CompressionStats) -> list[tuple[str, str]]:
    total = stats.timings.get("total")
    items = [
        ("tokens", f"{stats.original_tokens:,} \u2192 {stats.compressed_tokens:,} ({stats.ratio:.1%})"),
        ("counted with", stats.counted_with),
        ("budget", f"{stats.budget_tokens:,}"),
        ("segments compressed", f"{stats.segments_compressed} of {stats.segments_total}"),
        ("draft tokens", f"{stats.draft_tokens_forwarded:,} forwarded, {stats.draft_tokens_reused:,} reused"),
        ("windows", str(stats.windows)),
        ("lookahead", str(stats.lookahead_tokens)),
    ]
    if total is not None:
        items.append(("time", f"{total:.2f} s"))
    if stats.budget_exceeded:
        items.append(("budget exceeded", "by a single chunk"))
    return items


def _header(result: CompressionResult, title: str) -> str:
    dl = "".join(f"<div><dt>{_esc(k)}</dt><dd>{_esc(v)}</dd></div>" for k, v in _stats_items(result.stats))
    failure = result.stats.failure
    banner = f'<p class="failure">compression failed, input passed through: {_esc(failure)}</p>' if failure else ""
    legend = (
        f'<p class="legend"><mark class="kept">kept</mark><span style="background:{_rgb(DROPPED_RGB)};'
        f'color:#8a8a8a">dropped (click to fold)</span><span style="background:rgba{(*HEAT_RGB, 0.9)}">'
        "high draft score</span></p>"
    )
    return f"<header><h1>{_esc(title)}</h1><dl>{dl}</dl>{banner}{legend}</header>"


def _text_view(text: str, spans: tuple[KeptSpan, ...]) -> str:
    out = []
    for kept, piece in pieces(text, spans):
        if kept:
            out.append(f'<mark class="kept">{_esc(piece)}</mark>')
        else:
            out.append(
                f'<details class="dropped" open><summary title="fold or unfold">[\u2026 {len(piece):,} '
                f'chars]</summary><span class="gone">{_esc(piece)}</span></details>'
            )
    return '<pre class="text">' + "".join(out) + "</pre>"


def _heat_view(text: str, scores: SegmentScores) -> str:
    """Each draft token's text on a background as opaque as its score (min-max over the segment)."""
    if len(scores) == 0:
        return ""
    values = scores.scores.astype(np.float64)
    low, span = float(values.min()), float(values.max() - values.min())
    out, cursor = [], 0
    for (start, end), value in zip(scores.offsets.tolist(), values.tolist()):
        start, end = max(int(start), cursor), min(int(end), len(text))
        if end <= start:
            continue
        if start > cursor:
            out.append(_esc(text[cursor:start]))
        alpha = (value - low) / span if span > 0 else 1.0
        out.append(
            f'<span style="background:rgba{(*HEAT_RGB, round(alpha, 3))}" title="{value:.4g}">'
            f"{_esc(text[start:end])}</span>"
        )
        cursor = end
    out.append(_esc(text[cursor:]))
    return (
        f'<details class="heat"><summary>draft token scores (heat map, {len(scores):,} tokens)</summary>'
        f'<pre class="heatmap">{"".join(out)}</pre></details>'
    )


def _section(index: int, result: CompressionResult, original: str) -> str:
    segment, spans = result.segments[index], result.kept_spans[index]
    if segment.protected:
        note = "protected, unchanged"
    elif segment.text == original:
        note = "unchanged"
    else:
        note = f"{len(original):,} \u2192 {len(segment.text):,} chars"
    label = f"segment {index + 1} \u00b7 {segment.role}" + (f" \u00b7 id {segment.id}" if segment.id else "")
    heat = ""
    if result.scores is not None and index < len(result.scores.segments) and segment.text != original:
        heat = _heat_view(original, result.scores.segments[index])
    return (
        f'<section class="segment" data-index="{index}"><h2>{_esc(label)} <span class="note">'
        f"{_esc(note)}</span></h2>{_text_view(original, spans)}{heat}</section>"
    )


def render_html(result: CompressionResult, *, title: str | None = None) -> str:
    """The page for ``result``: one section per segment, in order."""
    originals = _originals(result)
    title = title or "specprefill: what was kept"
    sections = "".join(_section(i, result, text) for i, text in enumerate(originals))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>'
        f"<body>{_header(result, title)}<main>{sections}</main></body></html>\n"
    )


def write_html(
    result: CompressionResult, path: str | os.PathLike[str] | None = None, *, title: str | None = None
) -> str:
    """:func:`render_html`, written to ``path`` (UTF-8) when given; returns the page."""
    page = render_html(result, title=title)
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page


_KEPT_ANSI, _DROPPED_ANSI, _RESET = "\x1b[1;30;42m", "\x1b[90m", "\x1b[0m"


def render_terminal(result: CompressionResult, *, color: bool) -> str:
    """Each segment's original text under a one-line header: kept text highlighted and dropped
    text dim (``color``), or plain with dropped text between ``[-`` and ``-]``."""
    out = []
    for i, original in enumerate(_originals(result)):
        segment = result.segments[i]
        out.append(
            f"== segment {i + 1}/{len(result.segments)} ({_visible(segment.role)}): "
            f"{len(original):,} -> {len(segment.text):,} chars ==\n"
        )
        for kept, piece in pieces(original, result.kept_spans[i]):
            shown = _visible(piece)
            if color:
                # colour each line on its own so a pager or a scrolled terminal keeps it
                code = _KEPT_ANSI if kept else _DROPPED_ANSI
                shown = "\n".join(f"{code}{line}{_RESET}" if line else line for line in shown.split("\n"))
            elif not kept:
                shown = f"[-{shown}-]"
            out.append(shown)
        out.append("\n" if original and not original.endswith("\n") else "")
    s = result.stats
    out.append(f"== {s.original_tokens:,} -> {s.compressed_tokens:,} tokens ({s.ratio:.1%}, {s.counted_with}) ==\n")
    return "".join(out)
