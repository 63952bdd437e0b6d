"""Test-wide hooks for every suite under this repository (tests/, integrations, benchmarks/tests).

Tests that need a CUDA device carry ``@pytest.mark.gpu`` and nothing else: without a
device they are reported as skipped here, with the reason, instead of each test
checking for one itself.
"""

from __future__ import annotations

import pytest


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
