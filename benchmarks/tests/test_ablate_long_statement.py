"""benchmarks/ablate_long_statement.py: one ours per value, each selecting under its own cut limit."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.ablate_long_statement import AtLimit, per_value
from specprefill_agents import CompressionConfig, selection


class _Recording:
    """A method that records the cut limit in force when it is called, and what plan_segment makes."""

    def __init__(self, name: str) -> None:
        self.name, self.compressor = name, object()
        self.seen: list[tuple[int, int]] = []

    def compress(self, segments: Any, query: str, budget: float | int) -> Any:
        text = " ".join(f"w{i}" for i in range(80))  # one statement of 80 words, no sentence end
        offsets = np.array([[3 * i, 3 * i + 2] for i in range(80)], dtype=np.int64)
        plan = selection.plan_segment(text, offsets, np.ones(80, dtype=np.float32), CompressionConfig())
        self.seen.append((selection.LONG_STATEMENT, len(plan.chunks)))
        return plan


def test_ours_becomes_one_method_per_value_and_the_limit_is_restored() -> None:
    ours, other = _Recording("ours"), _Recording("bm25")
    methods = per_value(lambda: [ours, other], [2, 6])()
    assert [m.name for m in methods] == ["ours[long=2]", "ours[long=6]", "bm25"]
    before = selection.LONG_STATEMENT
    for method in methods[:2]:
        method.compress([], "q", 0.25)
    assert before == selection.LONG_STATEMENT
    (limit_2, chunks_2), (limit_6, chunks_6) = ours.seen
    assert (limit_2, limit_6) == (2, 6)
    assert chunks_2 > chunks_6  # 80 tokens: cut into words past 2 x 16, one statement under 6 x 16
    assert isinstance(methods[0], AtLimit) and methods[0].compressor is ours.compressor
