"""The HTML view in a real headless browser (Debian's chromium): kept and dropped spans render."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from specprefill_agents import CompressionConfig, CompressionResult, ScoringConfig, SpecPrefillCompressor
from specprefill_agents.testing import tiny_draft
from specprefill_agents.view import DROPPED_RGB, HEAT_RGB, KEPT_RGB

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium; scripts/install.sh does it when run as root)",
)

PROSE = inspect.getdoc(textwrap.TextWrapper) or ""
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'"> '

# Test-only probe appended to the page: measures what rendered, folds one dropped span, and
# writes the numbers into the DOM that --dump-dom prints.
PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
const kept = [...document.querySelectorAll("section mark.kept")].map(box);
const dropped = [...document.querySelectorAll("section details.dropped")];
const gone = dropped[0].querySelector(".gone");
const shownOpen = gone.getClientRects().length;
dropped[0].open = false;
const shownClosed = gone.getClientRects().length;
const grey = getComputedStyle(gone).color;
document.body.insertAdjacentHTML("beforeend", "<pre id=probe>" + JSON.stringify(
  {kept, dropped: dropped.length, shownOpen, shownClosed, grey, title: document.title}) + "</pre>");
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",
    ]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=180, check=True)


@pytest.fixture(scope="module")
def result() -> CompressionResult:
    comp = SpecPrefillCompressor(
        tiny_draft("llama"),
        CompressionConfig(keep_ratio=0.3, min_tokens=16, scoring=ScoringConfig(lookahead=2)),
        on_failure="raise",
    )
    return comp.compress(HOSTILE + PROSE, query="What does width do?")


def _pixels(png: Path) -> dict[tuple[int, int, int], int]:
    from PIL import Image

    with Image.open(png) as image:
        counts = image.convert("RGB").getcolors(maxcolors=1 << 24)
    return {rgb: n for n, rgb in counts}


def _near(counts: dict[tuple[int, int, int], int], rgb: tuple[int, int, int], tol: int = 3) -> int:
    return sum(n for c, n in counts.items() if all(abs(a - b) <= tol for a, b in zip(c, rgb)))


def test_screenshot_shows_kept_highlight_dropped_grey_and_heat(result: CompressionResult, tmp_path: Path) -> None:
    page = result.to_html().replace('<details class="heat">', '<details class="heat" open>')
    (tmp_path / "view.html").write_text(page, encoding="utf-8")
    png = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1000,2400", (tmp_path / "view.html").as_uri())
    counts = _pixels(png)
    total = sum(counts.values())
    kept, dropped = _near(counts, KEPT_RGB), _near(counts, DROPPED_RGB)
    assert kept > 0.002 * total and dropped > 0.002 * total, (kept, dropped, total)
    # the heat map: token backgrounds are the heat colour blended over white at many opacities
    assert len({round(a, 1) for a in map(_heat_alpha, counts) if a is not None and a > 0.05}) >= 5


def _heat_alpha(rgb: tuple[int, int, int]) -> float | None:
    """The opacity at which HEAT_RGB over white gives ``rgb``, or None if no opacity does."""
    alphas = [(255 - c) / (255 - h) for c, h in zip(rgb, HEAT_RGB) if h < 255]
    if any(abs(c - 255) > 2 for c, h in zip(rgb, HEAT_RGB) if h == 255) or max(alphas) - min(alphas) > 0.03:
        return None
    return sum(alphas) / len(alphas)


def test_dom_measures_kept_spans_folds_dropped_ones_and_runs_no_input_script(
    result: CompressionResult, tmp_path: Path
) -> None:
    page = result.to_html().replace("</body>", PROBE + "</body>")
    (tmp_path / "probe.html").write_text(page, encoding="utf-8")
    dom = _chromium(tmp_path, "--dump-dom", (tmp_path / "probe.html").as_uri()).stdout
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.S).group(1))
    assert probe["title"] == "specprefill: what was kept"  # the input's script and onerror did not run
    assert len(probe["kept"]) == len(result.kept_spans[0]) and all(w > 0 and h > 0 for w, h in probe["kept"])
    assert probe["dropped"] >= 1
    assert probe["shownOpen"] > 0 and probe["shownClosed"] == 0  # folding hides the dropped text
    assert probe["grey"] == "rgb(138, 138, 138)"
