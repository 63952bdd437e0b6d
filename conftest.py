"""Test-wide hooks for every suite under this repository (tests/, integrations, benchmarks/tests).

Tests that need a CUDA device carry ``@pytest.mark.gpu`` and nothing else: without a
device they are reported as skipped here, with the reason, instead of each test
checking for one itself.

The semantic prior's default encoder (all-MiniLM-L6-v2) is fetched through pip on first use.
Outside ``tests/integration`` (which runs the real models), a tiny random encoder saved in a
temporary folder stands in for it, loaded through the real loading code, so no test that turns
the prior on fetches anything; ``@pytest.mark.real_encoder`` opts a test out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_TINY_LOADED: dict[Any, Any] = {}  # what load_semantic loaded while the tiny encoder stood in
_REAL_MODELS = Path(__file__).resolve().parent / "tests" / "integration"


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random sentence encoder saved to disk (``specprefill_agents.testing.tiny_semantic``)."""
    from specprefill_agents.testing import save_tiny_semantic

    return save_tiny_semantic(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(autouse=True)
def _tiny_default_encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if "real_encoder" in request.keywords or Path(request.node.path).is_relative_to(_REAL_MODELS):
        yield
        return
    from specprefill_agents import semantic

    folder = request.getfixturevalue("tiny_encoder_dir")
    monkeypatch.setattr(semantic, "_pinned", lambda cache_dir, *, download: folder)
    monkeypatch.setattr(semantic, "_LOADED", _TINY_LOADED)
    yield


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu); torch.cuda.is_available() is False")
    for item in gpu_items:
        item.add_marker(skip)
