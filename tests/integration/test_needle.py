"""The real embedded draft keeps a planted fact under a tight budget, on real text."""

from __future__ import annotations

import inspect
import random

import pytest

from specprefill_agents import SpecPrefillCompressor
from specprefill_agents.testing import tiny_tokenizer

NEEDLE = "The access code for the Heliotrope archive is 4719-KESTREL."
QUESTION = "What is the access code for the Heliotrope archive?"
ANSWER = "4719-KESTREL"


def _haystack_paragraphs() -> list[str]:
    import argparse
    import collections
    import http.server
    import json
    import logging
    import subprocess
    import textwrap

    paragraphs: list[str] = []
    for module in (argparse, collections, http.server, json, logging, subprocess, textwrap):
        for obj in [module, *vars(module).values()]:
            doc = inspect.getdoc(obj) if inspect.isclass(obj) or inspect.isfunction(obj) or obj is module else None
            if doc:
                paragraphs.extend(p.strip() for p in doc.split("\n\n") if len(p.split()) > 12)
    return list(dict.fromkeys(paragraphs))  # de-duplicated, order kept


def _haystack(comp: SpecPrefillCompressor, seed: int, tokens: int = 1500) -> str:
    rng = random.Random(seed)
    pool = _haystack_paragraphs()
    rng.shuffle(pool)
    tok = comp.draft.tokenizer
    chosen, total = [], 0
    for p in pool:
        n = len(tok(p, add_special_tokens=False)["input_ids"])
        if total + n > tokens:
            break
        chosen.append(p)
        total += n
    chosen.insert(rng.randrange(1, len(chosen)), NEEDLE)
    return "\n\n".join(chosen)


@pytest.mark.parametrize("seed", range(5))
def test_needle_survives_keep_02(embedded_compressor: SpecPrefillCompressor, seed: int) -> None:
    text = _haystack(embedded_compressor, seed)
    res = embedded_compressor.compress(text, query=QUESTION, keep_ratio=0.2)
    assert ANSWER in res.text, f"seed {seed}: the fact was dropped"
    assert 1300 <= res.original_tokens <= 1600
    assert res.compressed_tokens <= res.stats.budget_tokens
    assert res.compressed_tokens / res.original_tokens <= 0.2 + 1 / res.original_tokens
    assert not res.stats.budget_exceeded


def test_budget_counted_with_another_tokenizer(embedded_compressor: SpecPrefillCompressor) -> None:
    target = tiny_tokenizer()  # a different BPE vocabulary from SmolLM2's
    text = _haystack(embedded_compressor, 11)
    res = embedded_compressor.compress(text, query=QUESTION, keep_ratio=0.25, token_counter=target)
    n_target = len(target(text, add_special_tokens=False)["input_ids"])
    n_draft = len(embedded_compressor.draft.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert n_target != n_draft  # the two tokenizers really differ
    assert res.original_tokens == n_target
    kept = len(target(res.text, add_special_tokens=False)["input_ids"])
    assert kept == res.compressed_tokens <= res.stats.budget_tokens == -(-n_target // 4)
    assert ANSWER in res.text


def test_no_query_keeps_the_question_in_the_tail(embedded_compressor: SpecPrefillCompressor) -> None:
    from specprefill_agents import Segment

    text = _haystack(embedded_compressor, 3)
    segs = [Segment(text, role="tool"), Segment(QUESTION, role="user", protected=True)]
    res = embedded_compressor.compress_segments(segs, keep_ratio=0.2)
    assert res.segments[1].text == QUESTION
    assert ANSWER in res.segments[0].text
