"""Shared fixtures: tiny in-process drafts (no weights, no network) and real stdlib texts."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest

from specprefill_agents import (
    CompressionConfig,
    DraftModel,
    ScoringConfig,
    SpecPrefillCompressor,
)
from specprefill_agents.testing import failing_draft, tiny_draft

FAST = CompressionConfig(keep_ratio=0.3, min_tokens=32, scoring=ScoringConfig(lookahead=2))


@pytest.fixture(scope="session")
def draft() -> DraftModel:
    """A random 3-layer Llama with a long enough context that nothing is windowed."""
    return tiny_draft("llama", max_pos=4096)


@pytest.fixture
def compressor(draft: DraftModel) -> SpecPrefillCompressor:
    """A fresh in-process compressor on the tiny draft (its caches start empty)."""
    return SpecPrefillCompressor(draft, FAST, on_failure="raise")


def broken_draft() -> DraftModel:
    """A draft whose forward pass raises, like an out-of-memory error would."""
    return failing_draft()


@pytest.fixture(scope="session")
def source_text() -> str:
    """About 2,500 draft tokens of real code and prose (textwrap's source)."""
    return inspect.getsource(textwrap)[:9000]


@pytest.fixture(scope="session")
def json_output(source_text: str) -> str:
    return json.dumps({"path": "textwrap.py", "lines": 120, "content": source_text[:4000],
                       "matches": [{"line": 3, "text": "short"}, {"line": 9, "text": source_text[4000:5500]}]},
                      indent=2)


def pytest_configure(config: pytest.Config) -> None:
    # The standard suite's `test_init_time` is a pytest-benchmark test: run it once as a
    # plain test (no timing rounds, no table in `pytest -q`); --benchmark-enable overrides.
    if hasattr(config.option, "benchmark_disable") and not getattr(config.option, "benchmark_enable", False):
        config.option.benchmark_disable = True
    if getattr(config.option, "benchmark_storage", None) == "file://./.benchmarks":  # the plugin's default
        config.option.benchmark_storage = f"file://{config.rootpath / '.pytest_cache' / 'benchmarks'}"
