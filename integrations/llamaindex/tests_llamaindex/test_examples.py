"""The LlamaIndex examples run, offline, with the real embedded SmolLM2 draft, exactly as documented."""

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


def test_function_agent(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = _run("llamaindex_agent.py", capsys, monkeypatch)
    steps = re.findall(r"step (\d): context +(\d+) -> +(\d+) tokens .*groups (\d) \((\d) reused\)", out)
    assert [s[0] for s in steps] == ["1", "2", "3", "4"]
    assert all(int(after) < int(before) for _, before, after, *_ in steps[1:])  # tool outputs compressed
    assert [int(s[4]) for s in steps] == [0, 0, 1, 2]  # earlier steps' work is reused
    assert re.search(r"saved \d+ prompt tokens over 4 LLM calls", out)
    assert re.search(r"Lines about max_lines in what I was shown:\n +\d+ ", out)


def test_rag_query_engine(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = _run("llamaindex_rag.py", capsys, monkeypatch, "--keep", "0.3")
    nodes = re.findall(r"^(\S+\.py) \w+ score [\d.]+ +(\d+) -> +(\d+) tokens", out, flags=re.M)
    assert len(nodes) == 4 and any(n[0] == "shlex.py" for n in nodes)
    before, after = map(int, re.search(r"retrieved context: (\d+) -> (\d+) tokens", out).groups())
    assert after < 0.5 * before
    assert "From the context:" in out and "original_tokens" not in out


def test_readme_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    kept, total = map(int, re.search(r"(\d+) tokens kept of (\d+)", capsys.readouterr().out).groups())
    assert 0 < kept < 0.5 * total
    assert namespace["stats"].summary()["compressions"] == 1
    assert namespace["agent"].llm.metadata.is_function_calling_model
