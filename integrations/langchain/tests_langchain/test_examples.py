"""The examples run, offline, with the real embedded SmolLM2 draft, exactly as documented."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _run(name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", [name, *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_agent_loop(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = _run("agent_loop.py", capsys, monkeypatch)
    steps = re.findall(r"step (\d): context +(\d+) -> +(\d+) tokens .*groups (\d) \((\d) reused\)", out)
    assert [s[0] for s in steps] == ["1", "2", "3", "4"]
    assert all(int(after) < int(before) for _, before, after, *_ in steps[1:])  # tool outputs compressed
    assert [int(s[4]) for s in steps] == [0, 0, 1, 2]  # earlier steps' work is reused
    assert "state keeps the original tool outputs" in out
    assert re.search(r"Lines about max_lines in what I was shown:\n +\d+ ", out)


def test_rag_pipeline(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = _run("rag_pipeline.py", capsys, monkeypatch, "--keep", "0.3")
    docs = re.findall(r"^(\S+:\d+) +(\d+) -> +(\d+) tokens", out, flags=re.M)
    assert len(docs) == 4 and any(d[0].startswith("shlex.py") for d in docs)
    before, after = map(int, re.search(r"retrieved context: (\d+) -> (\d+) tokens", out).groups())
    assert after < 0.5 * before
    assert "From the context:" in out
