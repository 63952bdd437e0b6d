"""The root conftest's hook: tests marked ``gpu`` are skipped without CUDA and run with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest_plugins = ["pytester"]

ROOT_CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"

_TESTS = """
import pytest

@pytest.mark.gpu
def test_needs_cuda():
    pass

def test_plain():
    pass
"""


def _run(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makeconftest(ROOT_CONFTEST.read_text())
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "markers =\n    gpu: needs a CUDA device\n")
    pytester.makepyfile(_TESTS)
    return pytester.runpytest_inprocess("-v", "-rs", "-p", "no:cacheprovider")


def test_gpu_tests_skip_without_cuda(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = _run(pytester)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*::test_needs_cuda SKIPPED*", "*::test_plain PASSED*",
                                 "SKIPPED*needs a CUDA device (marked gpu)*"])


def test_gpu_tests_run_with_cuda(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    result = _run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*::test_needs_cuda PASSED*"])
