"""The proportional-sample ablation: its settings, and one run on a tiny draft with zeroed scores."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import ablate_proportional as ab
from benchmarks import ruler
from specprefill_agents import SpecPrefillCompressor, selection
from specprefill_agents.testing import tiny_draft


def test_settings_and_seed_ranges() -> None:
    assert ab.parse_setting("8") == (selection.PROPORTION_WINDOW, 8)
    assert ab.parse_setting("never") == (selection.PROPORTION_WINDOW, ab.NEVER)
    assert ab.parse_setting("w128:never") == (128, ab.NEVER)
    with pytest.raises(ValueError):
        ab.parse_setting("x1:2")
    assert ab.seeds_of("2-5") == [2, 3, 4, 5] and ab.seeds_of("7") == [7]


def test_a_run_counts_each_setting_and_restores_the_library() -> None:
    words = np.random.default_rng(0).permutation(["apple"] * 40 + ["pear"] * 40 + [f"w{i}x" for i in range(60)])
    context = " ".join(f"{i}. {w}" for i, w in enumerate(words, 1))
    question = "What are the 2 most common words in the above list?"
    inst = ruler.RulerInstance("cwe", 4096, 0, 3, (("user", "Read."), ("document", context), ("user", question)),
                               question, ("apple", "pear"), ("apple", "pear"), ())
    draft = tiny_draft()
    compressor = SpecPrefillCompressor(draft, on_failure="raise")
    compressor._ensure_scorer().score = ab.ZeroScores(draft.tokenizer).score
    before = selection.PROPORTION_WINDOW, selection.PROPORTION_PASSES
    rows = ab.run(compressor, [inst], ["never", "w8:2"], [0.25, 200])
    assert before == (selection.PROPORTION_WINDOW, selection.PROPORTION_PASSES)
    assert [(r["setting"], r["budget"]) for r in rows] == [("never", 0.25), ("never", 200),
                                                          ("w8:2", 0.25), ("w8:2", 200)]
    assert all(r["kept"] and r["alive"] == 2 for r in rows)  # two words of 40 among words found once


def test_timings_give_one_median_per_setting_and_restore_the_library() -> None:
    context = " ".join(f"{i}. {'apple' if i % 3 else 'pear'}" for i in range(1, 200))
    inst = ruler.RulerInstance("cwe", 4096, 0, 3, (("user", "Read."), ("document", context), ("user", "Q?")), "Q?",
                               ("apple",), ("apple",), ())
    draft = tiny_draft()
    compressor = SpecPrefillCompressor(draft, on_failure="raise")
    before = selection.PROPORTION_WINDOW, selection.PROPORTION_PASSES
    out = ab.timings(compressor, [inst], ["never", "w4:1"], 2)
    assert before == (selection.PROPORTION_WINDOW, selection.PROPORTION_PASSES)
    assert set(out["median_seconds"]) == {"never", "w4:1"} and all(v > 0 for v in out["median_seconds"].values())
    assert out["chunks_median"] > 10 and out["repeats"] == 2 and out["instances"] == 1
