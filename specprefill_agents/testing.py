"""Tiny in-process drafts for tests: this project's and its integrations'.

Everything here is built in memory, from nothing: no weights are downloaded or read,
nothing touches the network, and results are deterministic for a seed.

* :func:`tiny_tokenizer` trains a byte-level BPE tokenizer (512 tokens, with
  ``<eos>`` / ``<bos>`` / ``<pad>``) on standard-library docstrings and source, plus
  a line of accented, CJK and emoji text, so offsets and multi-byte characters are
  exercised.  It is a fast tokenizer, so offset mappings work.
* :func:`tiny_config` is a 3-layer, 64-wide model config for one of :data:`ARCHS`.
* :func:`tiny_draft` wraps a randomly initialised model of that config and the tiny
  tokenizer in a :class:`~specprefill_agents.draft.DraftModel`, ready to pass to
  :class:`~specprefill_agents.SpecPrefillCompressor`.
* :func:`tiny_semantic` is a random tiny sentence encoder for the semantic prior
  (:func:`save_tiny_semantic` saves one to a folder, as a model directory).
* :func:`failing_draft` is a tiny draft whose forward pass raises (failure injection).
* :func:`kept_in_order` checks that a compressed text is kept spans of the original, in order.
* :func:`retrieved_passages` is a set of short passages on one topic, one of which answers
  :data:`PASSAGES_QUESTION` (a retriever's output for the document entry points).

The models are random: their scores are not meaningful, only well-formed.  Tests that
need a draft that understands text use the real embedded draft instead.

Example::

    from specprefill_agents import SpecPrefillCompressor
    from specprefill_agents.testing import tiny_draft

    comp = SpecPrefillCompressor(tiny_draft("qwen2", max_pos=4096), on_failure="raise")
"""

from __future__ import annotations

import re

import functools
import inspect
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .draft import DraftModel
from .semantic import SemanticModel

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["ANSWER_SENTENCE", "ARCHS", "GAP_MARKERS", "KeywordSemantic", "PASSAGES_QUESTION", "failing_draft",
           "kept_in_order", "retrieved_passages", "save_tiny_semantic", "tiny_config", "tiny_draft", "tiny_semantic",
           "tiny_tokenizer"]

ARCHS = ("llama", "qwen2", "gemma3")
"""The architectures :func:`tiny_config` and :func:`tiny_draft` build."""


def _corpus() -> list[str]:
    import argparse
    import collections

    modules = (json, inspect, argparse, collections, functools, textwrap)
    docs = [inspect.getdoc(m) or "" for m in modules]
    docs.append(inspect.getsource(textwrap))
    docs.append("héllo wörld naïve café 日本語のテキスト 🙂 emoji ✓ — “quotes”")
    return docs


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (512 tokens) trained in-process; the same object on every call."""
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


def tiny_config(arch: str, vocab: int, max_pos: int = 512) -> PretrainedConfig:
    """A 3-layer, 64-wide config of ``arch`` (one of :data:`ARCHS`) with ``vocab`` tokens.

    Token ids 0 / 1 / 2 are EOS / BOS / PAD, as in :func:`tiny_tokenizer`.  The Gemma3
    config has two sliding-window layers (window 64) and one full-attention layer.
    """
    common: dict[str, Any] = dict(
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

        return Gemma3TextConfig(
            **common,
            head_dim=16,
            sliding_window=64,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHS}")


@functools.cache
def tiny_draft(arch: str = "llama", max_pos: int = 512, seed: int = 0) -> DraftModel:
    """A random tiny draft of ``arch`` with a ``max_pos``-token context, deterministic for ``seed``.

    Cached: the same arguments return the same :class:`DraftModel` (treat it as read-only).
    """
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = tiny_config(arch, len(tok), max_pos)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
    return DraftModel.from_loaded(model, tok, name=f"tiny-{arch}-{max_pos}-{seed}")


def tiny_semantic(seed: int = 0, batch_size: int = 32) -> SemanticModel:
    """A random tiny sentence encoder (a 2-layer, 32-wide BERT on :func:`tiny_tokenizer`) for the
    semantic prior, deterministic for ``seed``; a fresh one (empty vector cache) on every call."""
    from transformers import BertConfig, BertModel

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    return SemanticModel(BertModel(config), tok, f"tiny-bert-{seed}", batch_size=batch_size, max_length=64)


def save_tiny_semantic(folder: str | Path, seed: int = 0) -> Path:
    """:func:`tiny_semantic`'s model and tokenizer saved to ``folder``, as ``load_semantic`` reads one."""
    folder = Path(folder)
    encoder = tiny_semantic(seed)
    encoder.model.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    return folder


class KeywordSemantic(SemanticModel):
    """A stand-in encoder for the semantic prior: similarity 1 for texts holding ``word``, else 0;
    ``calls`` counts its calls."""

    def __init__(self, word: str) -> None:
        self.name, self.word, self.calls = f"keyword:{word}", word, 0

    def similarities(self, query: str, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.array([1.0 if self.word in t else 0.0 for t in texts])


def failing_draft(message: str = "CUDA out of memory (injected)") -> DraftModel:
    """A tiny Llama draft whose forward pass raises ``RuntimeError(message)``, like an out-of-memory error."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(tok), 4096), attn_implementation="sdpa")

    def boom(module: torch.nn.Module, args: object) -> None:
        raise RuntimeError(message)

    model.register_forward_pre_hook(boom)
    return DraftModel.from_loaded(model.eval(), tok, name="broken")


#: The default gap markers as they appear between kept spans (prose, code).
GAP_MARKERS = re.compile(r" \[\.\.\.\] |\n# \[\.\.\.\]\n")


def kept_in_order(new: str, old: str, markers: re.Pattern[str] = GAP_MARKERS) -> bool:
    """True when ``new`` is pieces of ``old``, in order, joined by gap ``markers`` (invariant 2)."""
    pos = 0
    for piece in markers.split(new):
        found = old.find(piece, pos)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


PASSAGES_QUESTION = "Which river flows past Quillbridge?"
ANSWER_SENTENCE = "The Zorvane river flows past Quillbridge on its way to the sea."


def retrieved_passages(n: int, answer_at: int | None = None) -> list[str]:
    """``n`` short passages on one topic, three sentences each; the middle sentence of passage
    ``answer_at`` is the one that answers :data:`PASSAGES_QUESTION`."""
    docs = []
    for k in range(n):
        middle = ANSWER_SENTENCE if k == answer_at else f"Its market opens on day {k} of every month and sells salt."
        docs.append(f"Town {k} lies in the northern valley and was founded long ago by farmers. {middle} "
                    f"The town hall of town {k} was rebuilt after a storm in a later century.")
    return docs
