"""The cut limit of whole statements side by side: ``selection.LONG_STATEMENT`` (a statement of
more than that many chunks' worth of draft tokens is cut into sentences, then words, then at draft
tokens) set to each value in turn, ours once per value, in one run of ``bench_ruler.py`` or
``bench_retention.py`` (rows ``ours[long=N]``; with the score store every value selects from the same
draft scores).  The arguments after ``--`` go to that script::

    python -m benchmarks.ablate_long_statement ruler --values 2 3 4 6 -- --n 3 --seed 1 --methods ours \\
        --out benchmarks/results/long_statement_cpu_epyc/ruler_s1.json
    python -m benchmarks.ablate_long_statement retention --values 2 3 4 6 -- --seed 100 --methods ours \\
        --store ~/.cache/specprefill-agents/bench-scores \\
        --out benchmarks/results/long_statement_cpu_epyc/suite_s100.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks import bench_retention, bench_ruler
from specprefill_agents import selection


class AtLimit:
    """Ours with ``selection.LONG_STATEMENT`` set to ``value`` for the duration of each call."""

    def __init__(self, inner: Any, value: int) -> None:
        self.inner, self.value = inner, value
        self.name = f"ours[long={value}]"
        self.compressor = inner.compressor  # scored_seconds() reads it

    def compress(self, segments: Sequence[Any], query: str, budget: float | int) -> Any:
        saved = selection.LONG_STATEMENT
        selection.LONG_STATEMENT = self.value
        try:
            return self.inner.compress(segments, query, budget)
        finally:
            selection.LONG_STATEMENT = saved


def per_value(build: Callable[..., list[Any]], values: Sequence[int]) -> Callable[..., list[Any]]:
    """``build`` (a script's ``build_methods``) with ``ours`` replaced by one :class:`AtLimit` per value."""

    def build_methods(*args: Any, **kwargs: Any) -> list[Any]:
        methods = []
        for method in build(*args, **kwargs):
            methods += [AtLimit(method, v) for v in values] if method.name == "ours" else [method]
        return methods

    return build_methods


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", choices=["ruler", "retention"])
    p.add_argument("--values", type=int, nargs="+", default=[2, 3, 4, 6])
    args, rest = p.parse_known_args(argv)
    module = bench_ruler if args.bench == "ruler" else bench_retention
    module.build_methods = per_value(module.build_methods, args.values)  # type: ignore[attr-defined]
    module.main([a for a in rest if a != "--"])


if __name__ == "__main__":
    main()
