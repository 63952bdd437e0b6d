"""LongLLMLingua peer (``benchmarks/peer_llmlingua.py``) on a tiny random Llama, offline.

Skipped without ``llmlingua`` or without tiktoken's cl100k_base file (see benchmarks/README.md).
The tiny model (2 layers, hidden 64, the tests' stdlib-trained BPE tokenizer) compresses
arbitrarily; what is checked is the contract: same segments out, pass-through of protected and
short ones, kept text taken from its own segment, the budget by the shared counter, and the
transformers-5 KV-cache bridge giving the same losses as one full pass.
"""

from __future__ import annotations

import inspect
import textwrap

import pytest

pytest.importorskip("llmlingua")

import torch

from benchmarks import peer_llmlingua as pl
from specprefill_agents import Segment
from specprefill_agents.budget import budget_tokens
from specprefill_agents.testing import tiny_tokenizer

QUESTION = "Which function removes common leading whitespace from every line?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    try:
        pl.ensure_tiktoken_cache()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         eos_token_id=0, bos_token_id=1, pad_token_id=2)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def method(model_dir: str) -> pl.LongLLMLingua:
    tok = tiny_tokenizer()
    return pl.LongLLMLingua(lambda text: len(tok.encode(text, add_special_tokens=False)), model_dir)


def _segments() -> list[Segment]:
    prose = "\n\n".join(inspect.getdoc(m) or "" for m in (textwrap.TextWrapper, textwrap.fill))
    code = inspect.getsource(textwrap.TextWrapper._split)
    return [Segment("You answer questions about Python's textwrap module. " * 8, role="system", protected=True),
            Segment("Here are the docs.", role="user"),
            Segment(prose, role="user"),
            Segment(code, role="tool")]


def _is_subsequence(small: str, big: str) -> bool:
    chars = iter(big)
    return all(c in chars for c in small)


def test_compress_contract(method: pl.LongLLMLingua) -> None:
    segments = _segments()
    counts = [method.counter(s.text) for s in segments]
    assert counts[0] >= 64 and counts[1] < 64 and min(counts[2:]) >= 64
    out = method.compress(segments, QUESTION, 0.25)
    assert len(out.texts) == len(segments)
    assert out.texts[:2] == (segments[0].text, segments[1].text)  # protected, short: untouched
    assert out.budget == budget_tokens(sum(counts[2:]), 0.25, None)
    assert out.tokens == sum(method.counter(t) for t in out.texts[2:])
    assert out.tokens <= out.budget
    for seg, text in zip(segments[2:], out.texts[2:]):
        assert _is_subsequence(text, seg.text)
        assert len(text) < len(seg.text)
    assert out.seconds > 0 and 1 <= method.last_attempts <= method.max_attempts


def test_everything_short_or_protected_passes_through(method: pl.LongLLMLingua) -> None:
    segments = _segments()[:2]
    out = method.compress(segments, QUESTION, 0.1)
    assert out.texts == tuple(s.text for s in segments) and out.tokens == 0 and out.budget == 0


def test_question_is_required(method: pl.LongLLMLingua) -> None:
    with pytest.raises(ValueError, match="question"):
        method.compress(_segments(), " ", 0.25)


def test_kv_cache_bridge_matches_one_full_pass(method: pl.LongLLMLingua) -> None:
    compressor = method.compressor
    ids = compressor.tokenizer(_segments()[2].text, return_tensors="pt", add_special_tokens=False)
    input_ids, mask = ids["input_ids"][:, :300], ids["attention_mask"][:, :300]
    full = compressor.get_ppl("", "token", input_ids, mask)
    first, kv = compressor.get_ppl("", "token", input_ids, mask, return_kv=True, end=200)
    second, kv = compressor.get_ppl("", "token", input_ids, mask, past_key_values=kv, return_kv=True)
    assert isinstance(kv, list) and len(kv) == 2 and kv[0][0].shape[2] == 300
    # each call drops its last logit (no label), so token 200's loss is in neither chunk
    torch.testing.assert_close(first, full[:199], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(second, full[200:], atol=1e-4, rtol=1e-4)


def test_prefix_length_survives_newlines_merged_with_indentation(method: pl.LongLLMLingua) -> None:
    compressor = method.compressor
    prefix, text = QUESTION + "\n\n", "        def f(x):\n            return x"
    n = compressor.get_prefix_length(prefix, text)
    ids = compressor.tokenizer(prefix + text, add_special_tokens=False).input_ids
    assert prefix.startswith(compressor.tokenizer.decode(ids[:n]))


def test_split_documents() -> None:
    assert pl.split_documents("a b\n\n    c\n  \n\nd\n\n\n") == ["a b", "    c", "d"]
