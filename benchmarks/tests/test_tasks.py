"""Fast checks of the task suite and the baselines: no draft model, no embeddings model.

A whitespace word count stands in for the token counter and word spans for the tokenizer's
offsets; the embeddings baseline gets a bag-of-letters fake encoder.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from benchmarks import baselines as bl
from benchmarks.bench_retention import segments_of
from benchmarks.tasks import FAMILIES, make_suite, shared_words, word_counter
from specprefill_agents import Segment

LENGTHS = (2000, 4000)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_instance(family: str) -> None:
    a = FAMILIES[family](2000, 3, word_counter)
    b = FAMILIES[family](2000, 3, word_counter)
    c = FAMILIES[family](2000, 4, word_counter)
    assert a == b
    assert (a.segments, a.question) != (c.segments, c.question)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("length", LENGTHS)
def test_evidence_in_context_and_length(family: str, length: int) -> None:
    for seed in range(3):
        task = FAMILIES[family](length, seed, word_counter)
        assert task.evidence and task.answer and task.question
        for evidence in task.evidence:
            assert task.context.count(evidence) == 1, evidence
        assert any(task.answer.split(", ")[0] in e for e in task.evidence)
        assert 0.8 * length <= task.n_tokens <= 1.2 * length


def test_two_hop_second_fact_shares_no_word_with_question() -> None:
    for seed in range(20):
        task = FAMILIES["two_hop"](2000, seed, word_counter)
        first, second = task.evidence
        assert not shared_words(task.question, second)
        bridge = re.search(r"codename (\S+)\.", first).group(1)  # type: ignore[union-attr]
        assert bridge in second and task.answer in second


def test_variable_tracking_chain_resolves_to_answer() -> None:
    task = FAMILIES["variable_tracking"](2000, 1, word_counter)
    values = {}
    for line in task.evidence:
        name, value = re.fullmatch(r"VAR (\w+) = (.+)\.", line).groups()  # type: ignore[union-attr]
        values[name] = values.get(value.removeprefix("VAR "), value)
    asked = task.question.rsplit(" ", 1)[1].rstrip("?")
    assert values[asked] == task.answer
    positions = [task.context.index(line) for line in task.evidence]
    assert positions == sorted(positions)


def test_code_qa_evidence_is_a_def_line_with_the_answer() -> None:
    task = FAMILIES["code_qa"](2000, 2, word_counter)
    (def_line,) = task.evidence
    assert def_line.startswith(("def ", "async def ")) and task.answer in def_line
    assert [role for role, _ in task.segments][:3] == ["system", "assistant", "tool"]


def _fake_encode(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 26))
    for row, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                out[row, ord(ch) - 97] += 1
    return out + 1e-3


def _methods() -> list[bl.ScoredChunks]:
    args = (word_counter, bl.word_offsets)
    return [bl.RandomChunks(*args, seed=1), bl.HeadTail(*args), bl.BM25Chunks(*args),
            bl.EmbeddingChunks(*args, encode=_fake_encode)]


@pytest.mark.parametrize("ratio", [0.25, 0.10])
def test_baselines_respect_budget_and_keep_protected(ratio: float) -> None:
    for task in make_suite(FAMILIES, [2000], 1, word_counter, seed=5):
        segments = segments_of(task)
        for method in _methods():
            out = method.compress(segments, task.question, ratio)
            assert out.tokens <= out.budget, (method.name, task.family)
            compressible = sum(word_counter(s.text) for s in segments if s.may_compress and word_counter(s.text) >= 64)
            assert out.budget == pytest.approx(ratio * compressible, abs=1)
            for seg, text in zip(segments, out.texts):
                if not seg.may_compress:
                    assert text == seg.text


def test_bm25_keeps_a_lexical_needle() -> None:
    task = FAMILIES["needle_single"](2000, 0, word_counter)
    out = bl.BM25Chunks(word_counter, bl.word_offsets).compress(segments_of(task), task.question, 0.10)
    assert task.evidence[0] in out.text


def test_head_tail_keeps_the_ends() -> None:
    text = " ".join(f"w{i}" for i in range(400))
    out = bl.HeadTail(word_counter, bl.word_offsets).compress([Segment(text)], "q", 0.25)
    assert out.text.startswith("w0 w1 w2") and out.text.endswith("w398 w399")
    assert "w200" not in out.text.split()


def test_random_is_seeded() -> None:
    task = FAMILIES["needle_single"](2000, 0, word_counter)
    segments = segments_of(task)
    a = bl.RandomChunks(word_counter, bl.word_offsets, seed=1).compress(segments, task.question, 0.25)
    b = bl.RandomChunks(word_counter, bl.word_offsets, seed=1).compress(segments, task.question, 0.25)
    c = bl.RandomChunks(word_counter, bl.word_offsets, seed=2).compress(segments, task.question, 0.25)
    assert a.texts == b.texts != c.texts
