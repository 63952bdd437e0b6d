"""Tiny drafts built in-process: a BPE tokenizer trained on stdlib text + random small models."""

from __future__ import annotations

import functools
import inspect
import json
import textwrap

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from specprefill_agents.draft import DraftModel

ARCHS = ("llama", "qwen2", "gemma3")


def _corpus() -> list[str]:
    import argparse
    import collections
    import functools as ft

    docs = [inspect.getdoc(m) or "" for m in (json, inspect, argparse, collections, ft, textwrap)]
    docs.append(inspect.getsource(textwrap))
    docs.append("héllo wörld naïve café 日本語のテキスト 🙂 emoji ✓ — “quotes”")
    return docs


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<eos>", "<bos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", bos_token="<bos>", pad_token="<pad>")


def tiny_config(arch: str, vocab: int, max_pos: int = 512):
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_pos,
        eos_token_id=0,
        bos_token_id=1,
        pad_token_id=2,
    )
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common)
    if arch == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, head_dim=16, sliding_window=64,
                                layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    raise ValueError(arch)


@functools.cache
def tiny_draft(arch: str = "llama", max_pos: int = 512, seed: int = 0) -> DraftModel:
    """A random tiny draft of the given architecture (deterministic for a seed)."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = tiny_config(arch, len(tok), max_pos)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
    return DraftModel.from_loaded(model, tok, name=f"tiny-{arch}-{max_pos}-{seed}")
