"""LongLLMLingua (``llmlingua`` 0.2.2) as a peer in the retention benchmark, offline, on our draft.

LongLLMLingua (Jiang et al., ICLR 2024) compresses in two stages with a small causal LM: a
coarse, question-aware ranking of *documents* (perplexity of the question given each one), then
an iterative token-level filter (contrastive perplexity, question-conditioned).  It runs here
with the settings its authors recommend for question-aware compression (``rank_method=
"longllmlingua"``, ``condition_in_question="after_condition"``, ``condition_compare=True``,
``dynamic_context_compression_ratio=0.3``, ``context_budget="+100"``) except
``reorder_context="original"``: every method here must keep the original order.  Its LM is the
same SmolLM2-135M our library uses (the converted safetensors directory of the embedded draft).

How it is fed and read back, with the same contract as :class:`benchmarks.baselines.Ours`:

* **Documents.** Every compressible segment (not protected, at least ``min_tokens`` by the
  shared counter) is cut at blank lines into paragraphs, and all paragraphs of all compressible
  segments go to one ``compress_prompt`` call as its document list, so the coarse ranking is
  global, like our budget.  Other segments pass through untouched.
* **Back to segments by index.** llmlingua returns one string.  Rather than re-parsing it,
  :class:`TracedPromptCompressor` records which documents the coarse stage kept and which
  token positions the token-level stage kept (it feeds the token *positions* through
  llmlingua's own ``get_compressed_input`` alongside the ids), so each kept token goes back to
  the segment it came from.  A segment's piece is the original characters of its kept tokens:
  llmlingua's output, split, short of joining ``"\\n\\n"`` between segments (the benchmark
  joins segments itself).
* **Budget.** llmlingua sizes its budget with its LM's tokenizer (``get_token_length``; tiktoken
  only feeds the ``origin_tokens``/``compressed_tokens`` display numbers).  ``target_token`` is
  our budget converted to that tokenizer; the output is then counted with the shared counter
  and, when it is over budget or uses less than ``1 - tolerance`` of it (LongLLMLingua tends to
  undershoot), compressed again with ``target_token`` rescaled by budget / tokens out, up to
  ``max_attempts`` runs (the last ones interpolate between the closest runs under and over
  budget); the fullest run within budget is returned, else the least over, and
  an overshoot is reported as is (``tokens > budget``).  The document ranking is reused between
  runs, so a retry costs only the token-level stage.  ``seconds`` covers all runs; loading the
  model does not count (as for the embeddings baseline).  The ranking of a (documents,
  question) pair is also kept for the next call, so later keep ratios on the same instance skip
  it, as ours skips scoring through its score cache.

Offline needs (see ``benchmarks/README.md``): ``TIKTOKEN_CACHE_DIR`` must hold tiktoken's
cl100k_base file (llmlingua builds a gpt-3.5 tiktoken encoder at construction, which would
otherwise be downloaded), and transformers 5 KV caches need the bridge in
:meth:`TracedPromptCompressor.get_ppl` (LLMLingua issue #210).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from llmlingua import PromptCompressor
from transformers import DynamicCache

from benchmarks.baselines import Budget, Compressed, Counter, budget_args
from specprefill_agents import CompressionConfig, Segment
from specprefill_agents.budget import budget_tokens
from specprefill_agents.draft import draft_cache_root

__all__ = ["CL100K_FILE", "LongLLMLingua", "TracedPromptCompressor", "ensure_tiktoken_cache", "split_documents"]

# tiktoken caches a download under sha1(url); this is cl100k_base's (what gpt-3.5-turbo maps to).
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"

RECOMMENDED: Mapping[str, Any] = MappingProxyType({
    "rank_method": "longllmlingua",
    "condition_in_question": "after_condition",
    "condition_compare": True,
    "reorder_context": "original",  # the authors use "sort"; order must be kept here
    "dynamic_context_compression_ratio": 0.3,
    "context_budget": "+100",
    "concate_question": False,  # the question stays where it is in the prompt
})

_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")


def ensure_tiktoken_cache() -> Path:
    """``$TIKTOKEN_CACHE_DIR`` (set to ``<specprefill cache>/tiktoken`` when unset) holding cl100k_base."""
    folder = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(draft_cache_root() / "tiktoken")))
    if not (folder / CL100K_FILE).is_file():
        raise FileNotFoundError(
            f"{folder / CL100K_FILE} is missing: llmlingua needs tiktoken's cl100k_base file and there is "
            "no network. Extract it from the llama-index-core wheel: pip download --no-deps llama-index-core; "
            f"unzip -j <wheel> 'llama_index/core/_static/tiktoken_cache/{CL100K_FILE}' -d {folder}")
    return folder


def split_documents(text: str) -> list[str]:
    """Paragraphs (cut at blank lines, whitespace-only pieces dropped): LongLLMLingua's documents."""
    return [part for part in _BLANK_LINES.split(text) if part.strip()]


class _LegacyCacheModel:
    """Calls the model with a ``DynamicCache`` built from llmlingua's list of ``[k, v]`` per layer,
    and hands the returned cache back as such a list."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if isinstance(past_key_values, (list, tuple)):
            past_key_values = DynamicCache(ddp_cache_data=[(k, v) for k, v in past_key_values])
        out = self.model(*args, past_key_values=past_key_values, **kwargs)
        if isinstance(out.past_key_values, DynamicCache):
            out.past_key_values = [[layer.keys, layer.values] for layer in out.past_key_values.layers]
        return out


@dataclass
class _Trace:
    """The token-level stage's input (ids, character offsets, the joined elements) and the
    original positions of the tokens it still keeps."""

    ids: torch.Tensor
    offsets: list[tuple[int, int]]
    elements: list[str]
    start: int
    positions: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.positions = torch.arange(self.ids.shape[1], device=self.ids.device).unsqueeze(0)


class TracedPromptCompressor(PromptCompressor):
    """llmlingua's ``PromptCompressor``, unchanged in what it computes, plus:

    * a transformers-5 KV-cache bridge in :meth:`get_ppl`;
    * a record of the documents kept by the coarse stage (``last_used``) and of the token
      positions kept by the token-level stage (``last_trace``), to map the output back by index;
    * a one-entry memo of the document ranking (it depends only on the documents and question).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.last_used: list[int] | None = None
        self.last_trace: _Trace | None = None
        self._rank_memo: tuple[Any, Any] | None = None
        super().__init__(*args, **kwargs)

    def get_ppl(self, *args: Any, **kwargs: Any) -> Any:
        """Adapts llmlingua's ``get_ppl`` to transformers >= 5 KV caches (LLMLingua issue #210).

        llmlingua keeps the draft's KV cache between its 200-token windows as a list of
        ``[key, value]`` tensors per layer: ``get_ppl`` reads the cached length as
        ``past_key_values[0][0].shape[2]``, and ``iterative_compress_prompt`` slices and trims it
        with ``for k, v in past_key_values``.  transformers 5 returns a ``DynamicCache``, which has
        no indexing and iterates as ``(keys, values, sliding_window)``, and no longer converts a
        legacy list passed back in.  So, for the duration of the original ``get_ppl`` only, the
        model is called through a bridge that turns the incoming list into a ``DynamicCache``
        (``ddp_cache_data``) and the returned cache back into ``[[keys, values], ...]`` per layer.
        The loss computation and all of llmlingua's cache slicing run unchanged.
        """
        model = self.model
        self.model = _LegacyCacheModel(model)
        try:
            return super().get_ppl(*args, **kwargs)
        finally:
            self.model = model

    def get_rank_results(self, context: list, question: str, rank_method: str, condition_in_question: str,
                         context_tokens_length: list) -> Any:
        key = (tuple(context), question, rank_method, condition_in_question)
        if self._rank_memo is None or self._rank_memo[0] != key:
            ranked = super().get_rank_results(context, question, rank_method, condition_in_question,
                                              context_tokens_length)
            self._rank_memo = (key, ranked)
        return self._rank_memo[1]

    def get_prefix_length(self, prefix: str, text: str) -> int:
        """llmlingua asserts that the question prefix + ``"\\n\\n"`` ends on a token boundary; byte-level
        BPE merges that ``"\\n\\n"`` with a document's leading indentation (code), which crashes it.
        Then: the number of leading tokens that lie wholly within the prefix."""
        try:
            return super().get_prefix_length(prefix, text)
        except AssertionError:
            ids = self.tokenizer(prefix + text[:100], add_special_tokens=False).input_ids
            return max(i for i in range(len(ids) + 1) if prefix.startswith(self.tokenizer.decode(ids[:i])))

    def control_context_budget(self, *args: Any, **kwargs: Any) -> Any:
        kept, dynamic_ratio, used = super().control_context_budget(*args, **kwargs)
        self.last_used = list(used)
        return kept, dynamic_ratio, used

    def iterative_compress_prompt(self, context: list[str], *args: Any, **kwargs: Any) -> Any:
        enc = self.tokenizer("\n\n".join(context), add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([enc["input_ids"]], device=self.device)
        self.last_trace = _Trace(ids, [tuple(o) for o in enc["offset_mapping"]], list(context), kwargs.get("start", 0))
        return super().iterative_compress_prompt(context, *args, **kwargs)

    def get_compressed_input(self, loss: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             *args: Any, **kwargs: Any) -> Any:
        """Runs llmlingua's selection on the token *positions* (it only indexes ``input_ids`` when
        ``keep_split`` is off), then returns the ids at the kept positions: the same result."""
        trace = self.last_trace
        if trace is None or kwargs.get("keep_flag") is not None:
            raise RuntimeError("TracedPromptCompressor supports compress_prompt with keep_split=False only")
        if trace.positions.shape != input_ids.shape or not torch.equal(trace.ids[0, trace.positions[0]], input_ids[0]):
            raise RuntimeError("token-level input exceeds the draft's context (llmlingua's KV-cache window "
                               "compression is not traced); use a lower keep ratio or a shorter context")
        out = super().get_compressed_input(loss, trace.positions, attention_mask, *args, **kwargs)
        trace.positions = out[0]
        return (trace.ids[0, out[0][0]].unsqueeze(0), *out[1:])


@dataclass(frozen=True)
class _Documents:
    texts: list[str]
    owner: list[int]  # segment index of each document


class LongLLMLingua:
    """LongLLMLingua at our budget; ``compress`` has :class:`benchmarks.baselines.Ours`' contract."""

    name = "longllmlingua"

    def __init__(self, counter: Counter, model_dir: str | os.PathLike[str], device_map: str = "cpu",
                 min_tokens: int | None = None, options: Mapping[str, Any] | None = None,
                 max_attempts: int = 5, tolerance: float = 0.1, dtype: torch.dtype | None = None) -> None:
        self.counter, self.model_dir, self.device_map = counter, str(model_dir), device_map
        self.dtype = dtype  # None: llmlingua's own default (float32 on CPU); pass ours to compare like for like
        self.min_tokens = CompressionConfig().min_tokens if min_tokens is None else min_tokens
        self.options = MappingProxyType({**RECOMMENDED, **(options or {})})
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.max_attempts, self.tolerance = max_attempts, tolerance
        self.last_attempts = 0
        self._compressor: TracedPromptCompressor | None = None

    @property
    def compressor(self) -> TracedPromptCompressor:
        """Loaded on first use (offline: trust_remote_code off, a local directory)."""
        if self._compressor is None:
            ensure_tiktoken_cache()
            config: dict[str, Any] = {"trust_remote_code": False}
            if self.dtype is not None:
                config["torch_dtype"] = self.dtype
            self._compressor = TracedPromptCompressor(model_name=self.model_dir, device_map=self.device_map,
                                                      model_config=config)
        return self._compressor

    def compress(self, segments: Sequence[Segment], query: str, budget: Budget) -> Compressed:
        if not query.strip():
            raise ValueError("LongLLMLingua is question-aware: pass the question as query")
        compressor = self.compressor
        t0 = time.perf_counter()
        counts = [self.counter(s.text) for s in segments]
        eligible = [i for i, s in enumerate(segments) if s.may_compress and counts[i] >= self.min_tokens]
        budget = budget_tokens(sum(counts[i] for i in eligible), *budget_args(budget))
        texts = [s.text for s in segments]
        if not eligible:
            return Compressed(tuple(texts), 0, budget, time.perf_counter() - t0)
        docs = self._documents(segments, eligible)
        own_total = sum(compressor.get_token_length(d, add_special_tokens=False) for d in docs.texts)
        target = budget * own_total / max(1, sum(counts[i] for i in eligible))
        pieces, tokens = self._calibrated(docs, query, target, budget)
        for i in eligible:
            texts[i] = pieces.get(i, "")
        return Compressed(tuple(texts), tokens, budget, time.perf_counter() - t0)

    def _calibrated(self, docs: _Documents, query: str, target: float, budget: int) -> tuple[dict[int, str], int]:
        """Up to ``max_attempts`` runs, searching ``target_token`` (rescaled by budget / tokens out,
        then interpolated between the closest runs under and over budget) until the output
        (shared counter) lands in [(1 - tolerance) x budget, budget].  Returns the fullest run
        within budget, else the least over."""
        best: tuple[dict[int, str], int] = ({}, budget + 1)
        under: tuple[float, int] | None = None  # (target, tokens) of the fullest run within budget
        over: tuple[float, int] | None = None  # (target, tokens) of the least-over run
        for attempt in range(1, self.max_attempts + 1):
            self.last_attempts = attempt
            pieces = self._compress_once(docs, query, target)
            tokens = sum(self.counter(text) for text in pieces.values())
            if attempt == 1 or _better(tokens, best[1], budget):
                best = (pieces, tokens)
            if (1 - self.tolerance) * budget <= tokens <= budget:
                break
            if tokens <= budget and (under is None or tokens > under[1]):
                under = (target, tokens)
            if tokens > budget and (over is None or tokens < over[1]):
                over = (target, tokens)
            target = _next_target(under, over, (1 - self.tolerance / 2) * budget)
        return best

    def _documents(self, segments: Sequence[Segment], eligible: list[int]) -> _Documents:
        texts, owner = [], []
        for i in eligible:
            for doc in split_documents(segments[i].text):
                texts.append(doc)
                owner.append(i)
        return _Documents(texts, owner)

    def _compress_once(self, docs: _Documents, query: str, target: float) -> dict[int, str]:
        compressor = self.compressor
        compressor.last_used, compressor.last_trace = None, None
        compressor.compress_prompt(docs.texts, question=query, target_token=max(1.0, target), **self.options)
        used = compressor.last_used if compressor.last_used is not None else list(range(len(docs.texts)))
        trace = compressor.last_trace
        if trace is None:
            raise RuntimeError("llmlingua did not run its token-level stage")
        return _pieces(trace, [docs.owner[u] for u in used])


def _next_target(under: tuple[float, int] | None, over: tuple[float, int] | None, aim: float) -> float:
    """The next ``target_token``: interpolated between the runs bracketing ``aim`` tokens, else
    the one run rescaled (tokens out grow with the target, in steps where a document joins)."""
    if under and over:
        return under[0] + (over[0] - under[0]) * (aim - under[1]) / max(over[1] - under[1], 1)
    (target, tokens), = [run for run in (under, over) if run]
    return target * aim / max(tokens, 1)


def _better(tokens: int, best: int, budget: int) -> bool:
    if tokens <= budget:
        return best > budget or tokens > best
    return best > budget and tokens < best


def _pieces(trace: _Trace, owners: list[int]) -> dict[int, str]:
    """The characters of the kept tokens, grouped by the segment they came from, in order.

    ``trace.elements`` is [question prefix (when ``trace.start``)] + the kept documents, joined by
    ``"\\n\\n"``.  Each character of that string has an owner: a document's characters its
    segment; a joining ``"\\n\\n"`` the segment of the documents on both sides when they are of the
    same segment (a paragraph break), else none; the prefix none.  A kept token contributes its
    characters to their owners (a character split over several byte tokens appears once), so
    every piece is a subsequence of its segment's text even where BPE merged a joining
    ``"\\n\\n"`` with a document's leading indentation.
    """
    has_prefix = 1 if trace.start else 0
    owner_of: list[int | None] = [None] * has_prefix + list(owners)
    if len(owner_of) != len(trace.elements):
        raise RuntimeError(f"{len(trace.elements)} elements in llmlingua's token-level input, expected {len(owner_of)}")
    owner_at: list[int | None] = []
    for k, element in enumerate(trace.elements):
        owner_at += [owner_of[k]] * len(element)
        if k + 1 < len(owner_of):
            owner_at += [owner_of[k] if owner_of[k] == owner_of[k + 1] else None] * 2
    joined = "\n\n".join(trace.elements)
    pieces: dict[int, list[str]] = {}
    done = 0
    for p in trace.positions[0][trace.start:].tolist():
        begin, end = trace.offsets[p]
        for c in range(max(begin, done), end):
            if owner_at[c] is not None:
                pieces.setdefault(owner_at[c], []).append(joined[c])
        done = max(done, end)
    return {seg: "".join(chars) for seg, chars in pieces.items()}
