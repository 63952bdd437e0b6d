"""Quiet by default: no third-party bars or FutureWarnings on a load and a compression; a
progress bar on long compressions only when asked or on a terminal; CLI --quiet / --verbose /
--threads / --version; the thread default."""

from __future__ import annotations

import inspect
import io
import logging
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from specprefill_agents import CompressionConfig, ConfigError, DraftConfig, ScoringConfig, SpecPrefillCompressor, cli
from specprefill_agents import threads as threads_mod
from specprefill_agents.draft import clear_draft_cache
from specprefill_agents.progress import MIN_WINDOWS

PROSE = inspect.getdoc(textwrap.TextWrapper) or ""
LONG = PROSE  # about 970 tiny-draft tokens: 8 windows of 128
MANY_WINDOWS = CompressionConfig(scoring=ScoringConfig(window_tokens=128, lookahead=0))
BAR = "specprefill: scoring"


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_load_and_compression_print_no_bars_or_future_warnings(
    draft_dir: str, capfd: pytest.CaptureFixture[str]
) -> None:
    clear_draft_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comp = SpecPrefillCompressor(DraftConfig(model=draft_dir, device="cpu"), MANY_WINDOWS, on_failure="raise")
        result = comp.compress(LONG, query="What does width do?")
    out, err = capfd.readouterr()
    assert result.stats.windows >= 4 and result.stats.compressed_tokens < result.stats.original_tokens
    assert err == "" and out == ""  # not a terminal, nothing asked: silent
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []


def test_bar_when_asked_on_a_long_compression_only(draft_dir: str, capfd: pytest.CaptureFixture[str]) -> None:
    draft = DraftConfig(model=draft_dir, device="cpu")
    comp = SpecPrefillCompressor(draft, MANY_WINDOWS, on_failure="raise", progress=True)
    windows = comp.compress(LONG, query="What does width do?").stats.windows
    assert windows >= 4
    err = capfd.readouterr().err
    assert BAR in err and f" 0/{windows} " in err  # the bar over all windows (it clears itself when done)
    short = SpecPrefillCompressor(draft, on_failure="raise", progress=True)  # windows of the draft's 512 tokens
    assert short.compress(PROSE, query="What does width do?").stats.windows < MIN_WINDOWS
    assert BAR not in capfd.readouterr().err
    never = SpecPrefillCompressor(draft, MANY_WINDOWS, on_failure="raise", progress=False)
    never.compress(LONG, query="What does width do?")
    assert BAR not in capfd.readouterr().err


def test_bar_on_a_terminal_by_default(draft_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = SpecPrefillCompressor(DraftConfig(model=draft_dir, device="cpu"), MANY_WINDOWS, on_failure="raise")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    comp.compress(LONG, query="What does width do?")
    assert BAR in terminal.getvalue()
    quiet = _Terminal()  # the CLI's --quiet: the library's logger lets errors only through
    monkeypatch.setattr(sys, "stderr", quiet)
    logger = logging.getLogger("specprefill_agents")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        comp.compress(LONG + " again", query="What does width do?")
    finally:
        logger.setLevel(before)
    assert BAR not in quiet.getvalue()


def test_progress_must_be_a_bool_or_none() -> None:
    with pytest.raises(ConfigError, match="progress"):
        SpecPrefillCompressor(progress="yes")  # type: ignore[arg-type]


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # let basicConfig configure this run
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse: --version, usage errors
        code = int(exc.code or 0)
    finally:
        root.handlers = handlers
        root.setLevel(level)
    return code, out.getvalue(), err.getvalue()


def test_cli_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import version

    code, out, _ = _cli(["--version"], monkeypatch)
    assert code == 0 and out.strip() == f"specprefill {version('specprefill-agents')}"


def test_cli_threads_quiet_and_verbose(draft_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "in.txt"
    source.write_text(LONG)
    clear_draft_cache()
    code, _, err = _cli(
        ["compress", str(source), "--draft", draft_dir, "--device", "cpu", "--threads", "1", "--verbose"], monkeypatch
    )
    assert code == 0 and torch.get_num_threads() == 1
    assert "specprefill: loaded draft" in err  # --verbose logs each step
    code, _, err = _cli(["compress", str(source), "--draft", draft_dir, "--quiet", "--verbose"], monkeypatch)
    assert code == 2 and "not allowed with" in err
    code, _, err = _cli(["compress", str(source), "--draft", draft_dir, "--threads", "0"], monkeypatch)
    assert code == 1 and "num_threads must be >= 1" in err


def test_thread_default_leaves_one_core_free(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(8)
    monkeypatch.setattr(threads_mod, "usable_cpus", lambda: 8)
    assert threads_mod.default_num_threads() == 7
    monkeypatch.setattr(threads_mod, "usable_cpus", lambda: 1)
    assert threads_mod.default_num_threads() == 1
    torch.set_num_threads(3)  # set lower before (torch.set_num_threads, OMP_NUM_THREADS): kept
    monkeypatch.setattr(threads_mod, "usable_cpus", lambda: 8)
    assert threads_mod.default_num_threads() == 3
    assert threads_mod.apply_num_threads(2) == 2 and torch.get_num_threads() == 2
    assert threads_mod.apply_num_threads(None) == 2
    with pytest.raises(ConfigError, match="num_threads"):
        DraftConfig(num_threads=0)
