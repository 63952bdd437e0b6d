"""Two drafts side by side (bench_drafts.py): the timing loop and its summary, on tiny in-process drafts."""

from __future__ import annotations

import pytest

from benchmarks import bench_drafts, ruler
from benchmarks.bench_retention import draft_variants, token_counter
from specprefill_agents.testing import tiny_draft


def _instance(index: int, length: int) -> ruler.RulerInstance:
    context = " ".join(f"Sentence {i} says the code of item {i} is {1000 + i}." for i in range(60))
    return ruler.RulerInstance("qa_2", length, index, 1, (("user", "Read."), ("document", context), ("user", "Q?")),
                               "What is the code of item 7?", ("1007",), ("1007",), ())


def test_each_prompt_is_timed_once_per_draft_in_alternating_order() -> None:
    drafts = {"a": tiny_draft(seed=0), "b": tiny_draft(seed=1)}
    instances = [_instance(i, length) for length in (4096, 8192) for i in range(2)]
    rows = bench_drafts.run(drafts, instances, token_counter(drafts["a"].tokenizer), 0.25)
    assert len(rows) == 8 and all(r["seconds"] > 0 for r in rows)
    firsts = [r["draft"] for r in rows if r["first"]]
    assert firsts == ["a", "b", "a", "b"]  # the order flips every prompt
    summary = bench_drafts.summarise(rows, ["a", "b"])
    assert [s["length"] for s in summary] == [4096, 8192] and all(s["n"] == 2 for s in summary)
    for s in summary:
        assert s["ratio_median"]["b"] == pytest.approx(s["median_s"]["b"] / s["median_s"]["a"])


def test_summary_ratios_from_known_rows() -> None:
    rows = [{"task": "vt", "length": 4096, "index": i, "draft": d, "seconds": s, "first": True}
            for i, (a, b) in enumerate([(1.0, 1.5), (2.0, 2.0), (3.0, 3.3)]) for d, s in (("a", a), ("b", b))]
    (s,) = bench_drafts.summarise(rows, ["a", "b"])
    assert s["median_s"] == {"a": 2.0, "b": 2.0} and s["ratio_median"]["b"] == 1.0
    assert s["n"] == 3 and s["ratio_of_pairs_median"]["b"] == pytest.approx(1.1)  # of 1.5, 1.0, 1.1


def test_draft_variants_take_name_equals_spec() -> None:
    with pytest.raises(SystemExit, match="NAME=SPEC"):
        draft_variants(["gemma"], len)
