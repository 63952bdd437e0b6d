"""``specprefill compress --show`` and ``--html``, run in-process with a tiny draft saved to disk."""

from __future__ import annotations

import inspect
import io
import re
import sys
import textwrap
from pathlib import Path

import pytest

from specprefill_agents import cli

PROSE = inspect.getdoc(textwrap.TextWrapper) or ""


class _Out(io.TextIOWrapper):
    def __init__(self, tty: bool) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors="surrogateescape", newline="")
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def value(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode()  # type: ignore[attr-defined]


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch, tty: bool = False) -> tuple[int, str, str]:
    out, err = _Out(tty), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = cli.main(args)
    return code, out.value(), err.getvalue()


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "doc.txt"
    path.write_text(PROSE)
    return str(path)


def test_html_writes_the_page_and_stdout_keeps_the_compressed_text(
    source: str, tmp_path: Path, draft_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "out.html"
    code, out, err = _run(
        ["compress", source, "--query", "width?", "--keep", "0.3", "--draft", draft_dir, "--html", str(page)],
        monkeypatch,
    )
    assert code == 0 and "tokens" in err
    assert "[...]" in out and len(out) < len(PROSE)
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count('<section class="segment"') == 1
    assert 'class="dropped"' in text and 'class="kept"' in text


def test_show_is_plain_when_not_a_terminal(source: str, draft_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = _run(
        ["compress", source, "--query", "width?", "--keep", "0.3", "--draft", draft_dir, "--show"],
        monkeypatch,
        tty=False,
    )
    assert code == 0 and "\x1b" not in out and "[-" in out
    body = out.split("==\n", 1)[1].rsplit("\n== ", 1)[0]
    assert re.sub(r"\[-(.*?)-\]", r"\1", body, flags=re.S).rstrip("\n") == PROSE.rstrip("\n")


def test_show_colours_kept_text_on_a_terminal_unless_no_color(
    source: str, draft_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    args = ["compress", source, "--query", "width?", "--keep", "0.3", "--draft", draft_dir, "--show"]
    code, out, _ = _run(args, monkeypatch, tty=True)
    assert code == 0 and "\x1b[1;30;42m" in out and "\x1b[90m" in out and "[-" not in out
    monkeypatch.setenv("NO_COLOR", "1")
    _, out, _ = _run(args, monkeypatch, tty=True)
    assert "\x1b" not in out and "[-" in out


def test_show_and_json_exclude_each_other(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as exc:
        _run(["compress", source, "--show", "--json"], monkeypatch)
    assert exc.value.code == 2


def test_an_unwritable_html_path_is_a_one_line_error(
    source: str, tmp_path: Path, draft_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = _run(
        ["compress", source, "--draft", draft_dir, "--html", str(tmp_path / "no" / "x.html")], monkeypatch
    )
    assert code == 1 and err.count("\n") == 1 and "error" in err
