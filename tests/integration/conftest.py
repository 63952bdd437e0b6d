"""Integration tests: the real embedded SmolLM2 draft (installed by scripts/install.sh), and tiny
in-process drafts on inputs too large for the unit suite (more than ~5 s on a 2-core CPU)."""

from __future__ import annotations

import pytest

from specprefill_agents import SpecPrefillCompressor


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def embedded_compressor() -> SpecPrefillCompressor:
    comp = SpecPrefillCompressor("embedded", on_failure="raise")
    _ = comp.draft  # fetch (scripts/install.sh runs `specprefill prepare`) and convert once, up front
    return comp
