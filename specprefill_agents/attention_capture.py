"""Query-row attention onto the context, collected during the draft's forwards and folded once.

The scoring attention (``_compat``) hands every layer's post-RoPE queries and keys to the
active capture.  :class:`Capture` keeps the query rows of one window; :meth:`Capture.finish`
computes, per layer, the fp32 softmax of those rows over the context keys only and folds it:
max or mean over heads and layers, then over rows.  :class:`BatchCapture` splits a batched
forward (several windows at once) into one capture per window.  :class:`ParallelCapture` runs
one query block after several windows side by side: the windows' KV stays where it is (the
block's attention reads it as extra segments, :func:`attend_with_segments`) and each window
keeps its own capture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from ._compat import attention_with_lse, fused_attention_available
from .config import ScoringConfig

__all__ = ["Capture", "BatchCapture", "ParallelCapture", "attention_logits", "attend_with_segments"]

_ROW_CHUNK = 64  # query rows scored / attended at once: bounds the (heads x rows x keys) temporaries


@dataclass(frozen=True)
class _Rows:
    """Query rows of one forward at one layer, and the context keys they could see."""

    rows: torch.Tensor  # (heads, r, d), post-RoPE, as the model computed them
    keys: torch.Tensor | None  # (kv_heads, m, d) context keys from position ``lo`` (None: none visible)
    lo: int
    first_pos: int  # position of rows[:, 0]
    row: int  # first buffer row


class Capture:
    """Collects each layer's query rows during the forwards, then folds their attention onto the
    context keys in one pass per layer (:meth:`finish`): the lookahead's decode steps add one
    row each, and scoring them together costs one matmul per layer instead of one per step.

    The key tensors are views of the KV cache; the context part of a cache is never written
    again, so the views stay valid after later forwards.
    """

    def __init__(self, ctx_start: int, ctx_len: int, config: ScoringConfig, device: torch.device) -> None:
        self.ctx_start, self.ctx_len, self.config, self.device = ctx_start, ctx_len, config, device
        self.collected: dict[int, list[_Rows]] = {}
        self.settings: dict[int, tuple[float, int | None, float | None]] = {}
        self.row = 0  # first buffer row of the forward about to run
        self.pending_rows = 0  # query rows at the end of that forward (earlier ones are context)
        self.total = 0  # sequence length once that forward has run

    def begin(self, rows: int, total_positions: int) -> None:
        self.pending_rows, self.total = rows, total_positions

    def advance(self) -> None:
        self.row += self.pending_rows

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
               scaling: float | None, sliding_window: int | None, softcap: float | None) -> None:
        layer = int(getattr(module, "layer_idx", 0))
        if layer < self.config.skip_layers:
            return
        rows = query[0, :, query.shape[2] - self.pending_rows:, :]  # earlier rows: context in the same forward
        self.settings[layer] = (scaling if scaling is not None else query.shape[-1] ** -0.5, sliding_window, softcap)
        self.add(layer, rows, key[0], self.total - key.shape[-2], self.total - rows.shape[1], self.row)

    def add(self, layer: int, rows: torch.Tensor, key: torch.Tensor, key_start: int, first_pos: int,
            row: int) -> None:
        """Rows (heads, r, d) at positions ``first_pos``.. that see ``key`` (kv_heads, n, d), whose
        first key sits at position ``key_start``."""
        lo, hi = max(self.ctx_start, key_start), self.ctx_start + self.ctx_len
        keys = key[:, lo - key_start:hi - key_start, :] if hi > lo else None
        self.collected.setdefault(layer, []).append(_Rows(rows, keys, lo, first_pos, row))

    def queries(self) -> dict[int, torch.Tensor]:
        """Each layer's query rows, in order (heads, rows, d), fp32."""
        return {layer: torch.cat([p.rows.float() for p in parts], dim=1) for layer, parts in self.collected.items()}

    def finish(self) -> np.ndarray:
        """Per context token: attention folded over heads, layers and rows, scaled by the context length."""
        acc = torch.zeros(self.row, self.ctx_len, dtype=torch.float32, device=self.device)
        layers = 0
        for layer, parts in self.collected.items():
            seen = False
            for group in _same_keys(parts):
                seen = True
                self._score_group(layer, group, acc)
            layers += seen
        if acc.shape[0] == 0 or not layers:
            return np.zeros(self.ctx_len, dtype=np.float32)
        if self.config.layer_agg == "mean":
            acc = acc / layers
        agg = acc.mean(0) if self.config.query_agg == "mean" else acc.amax(0)
        return (agg * self.ctx_len).cpu().numpy().astype(np.float32)

    def _score_group(self, layer: int, group: list[_Rows], acc: torch.Tensor) -> None:
        scale, sliding_window, softcap = self.settings[layer]
        keys, lo = cast(torch.Tensor, group[0].keys).float(), group[0].lo
        rows = torch.cat([p.rows for p in group], dim=1)
        pos = torch.cat([torch.arange(p.first_pos, p.first_pos + p.rows.shape[1]) for p in group]).to(rows.device)
        for r0 in range(0, rows.shape[1], _ROW_CHUNK):
            q = rows[:, r0:r0 + _ROW_CHUNK, :].float()  # (heads, r, d)
            weights = self._layer_weights(q, keys, scale, softcap, sliding_window, pos[r0:r0 + _ROW_CHUNK], lo)
            target = acc[group[0].row + r0:group[0].row + r0 + q.shape[1], lo - self.ctx_start:]
            if self.config.layer_agg == "max":
                torch.maximum(target, weights, out=target)
            else:
                target.add_(weights)

    def _layer_weights(self, q: torch.Tensor, keys: torch.Tensor, scale: float, softcap: float | None,
                       sliding_window: int | None, pos: torch.Tensor, lo: int) -> torch.Tensor:
        logits = attention_logits(q, keys, scale, softcap, sliding_window, pos, lo)
        weights = torch.softmax(logits, dim=-1).nan_to_num_(0.0)  # rows that see no context: 0
        return weights.amax(0) if self.config.head_agg == "max" else weights.mean(0)


def attention_logits(rows: torch.Tensor, keys: torch.Tensor, scale: float, softcap: float | None,
                     sliding_window: int | None, row_pos: torch.Tensor, key_start: int) -> torch.Tensor:
    """fp32 logits (heads, r, n) of query ``rows`` (heads, r, d) onto ``keys`` (kv_heads, n, d),
    multiplied in the inputs' dtype, GQA without repeating keys; softcapped, and for a sliding
    layer -inf where a key (first at position ``key_start``) is ``sliding_window`` or more
    positions behind its row (at ``row_pos``)."""
    heads, r, dim = rows.shape
    kv_heads = keys.shape[0]
    grouped = rows.reshape(kv_heads, (heads // kv_heads) * r, dim)
    logits = torch.matmul(grouped, keys.transpose(-1, -2)).float().mul_(scale).reshape(heads, r, keys.shape[1])
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if sliding_window:
        key_pos = torch.arange(key_start, key_start + keys.shape[1], device=rows.device)
        hidden = key_pos[None, :] <= (row_pos[:, None] - sliding_window)
        logits = logits.masked_fill(hidden[None], float("-inf"))
    return logits


def attend_with_segments(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, segments: list[tuple[torch.Tensor, torch.Tensor, int]],
                         positions: torch.Tensor, scaling: float | None, sliding_window: int | None,
                         softcap: float | None, fused: bool | None = None) -> torch.Tensor:
    """Attention of ``query`` (1, heads, q, d) over key/value ``segments`` that live outside the
    layer's cache, as (keys, values, position of their first key) with keys (1, kv_heads, n, d),
    plus the layer's own ``key`` / ``value`` under ``attention_mask`` (the model's causal mask
    for them: bool, additive, or None for plain causal).  ``positions`` (q,) are the rows' RoPE
    positions; a sliding layer hides segment keys ``sliding_window`` or more positions back.
    Returns (1, q, heads, d) like the SDPA integration.

    ``fused`` (default: where :func:`~._compat.fused_attention_available`; never with a softcap): each
    segment runs through torch's fused flash kernel, which also gives its rows' log-sum-exp,
    and the per-segment outputs are merged with those (split-K / flash-decoding: the same
    softmax over all keys, no logits materialised).  Otherwise one fp32 softmax over every
    segment's logits, the products in the KV's dtype.
    """
    _, heads, q, dim = query.shape
    scale = scaling if scaling is not None else dim ** -0.5
    own = key.shape[-2]
    if attention_mask is None:  # causal: row i sees own keys up to its own position
        slots = torch.arange(own, device=query.device)
        allowed = slots[None, :] <= slots[own - q:, None]
    elif attention_mask.dtype == torch.bool:
        allowed = attention_mask[0, 0, :, -own:]
    else:
        allowed = attention_mask[0, 0, :, -own:] > torch.finfo(attention_mask.dtype).min / 2
    parts = [(k[0], v[0], start) for k, v, start in segments]
    if softcap is None and (fused_attention_available(key) if fused is None else fused):
        return _attend_fused(query, key[0], value[0], allowed, parts, positions, scale, sliding_window)
    return _attend_softmax(query, key[0], value[0], allowed, parts, positions, scale, sliding_window, softcap)


def _attend_fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor,
                  parts: list[tuple[torch.Tensor, torch.Tensor, int]], positions: torch.Tensor, scale: float,
                  sliding_window: int | None) -> torch.Tensor:
    """:func:`attend_with_segments` with one fused kernel call per segment.  GQA without repeating
    keys: each KV head's query heads are stacked as rows of one head (no mask differs by head)."""
    _, heads, q, dim = query.shape
    kv_heads, dtype = key.shape[0], key.dtype
    group = heads // kv_heads
    rows = query.to(dtype).reshape(1, kv_heads, group * q, dim)
    row_pos = positions.repeat(group)
    outs, lses = [], []
    for keys, values, start in [*parts, (key, value, -1)]:
        mask, seen = None, None
        if start < 0:  # the block's own cache: the model's mask for it
            mask = _additive(allowed.repeat(group, 1), dtype)
        elif sliding_window:
            key_pos = torch.arange(start, start + keys.shape[-2], device=keys.device)
            visible = key_pos[None, :] > (row_pos[:, None] - sliding_window)
            seen = visible.any(-1)
            if not bool(seen.any()):
                continue
            mask = None if bool(visible.all()) else _additive(visible, dtype)
        out, lse = attention_with_lse(rows, keys[None], values[None], mask, scale)
        outs.append(out[0].float())
        lses.append(lse[0] if seen is None else lse[0].masked_fill(~seen, float("-inf")))
    weights = torch.softmax(torch.stack(lses), dim=0)  # (segments, kv_heads, rows): each segment's share
    merged = (torch.stack(outs) * weights[..., None]).sum(0)  # (kv_heads, group * q, d)
    return merged.reshape(heads, q, dim).transpose(0, 1).to(query.dtype)[None]


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, float("-inf"))


def _attend_softmax(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor,
                    parts: list[tuple[torch.Tensor, torch.Tensor, int]], positions: torch.Tensor, scale: float,
                    sliding_window: int | None, softcap: float | None) -> torch.Tensor:
    """:func:`attend_with_segments` as one fp32 softmax over every segment's logits (any device,
    softcap), ``_ROW_CHUNK`` rows at a time."""
    _, heads, q, dim = query.shape
    kv_heads = key.shape[0]
    dtype = key.dtype  # products in the KV's dtype (as SDPA's math), softmax in fp32: no KV copy per step
    out = torch.empty(q, heads, dim, dtype=torch.float32, device=query.device)
    for r0 in range(0, q, _ROW_CHUNK):
        r1 = min(r0 + _ROW_CHUNK, q)
        rows = query[0, :, r0:r1, :].to(dtype)
        logits = [attention_logits(rows, keys, scale, softcap, sliding_window, positions[r0:r1], start)
                  for keys, _, start in parts]
        own_logits = attention_logits(rows, key, scale, softcap, None, positions[r0:r1], 0)
        logits.append(own_logits.masked_fill(~allowed[r0:r1][None], float("-inf")))
        weights = torch.softmax(torch.cat(logits, dim=-1), dim=-1).nan_to_num_(0.0)
        acc = torch.zeros(kv_heads, (heads // kv_heads) * (r1 - r0), dim, dtype=torch.float32, device=query.device)
        for values, w in zip([v for _, v, _ in parts] + [value],
                             weights.split([part.shape[-1] for part in logits], dim=-1)):
            acc.add_(torch.matmul(w.reshape(kv_heads, -1, w.shape[-1]).to(dtype), values).float())
        out[r0:r1] = acc.reshape(heads, r1 - r0, dim).transpose(0, 1)
    return out.to(query.dtype)[None]


def _same_keys(parts: list[_Rows]) -> list[list[_Rows]]:
    """Consecutive parts that see the same context keys (all of a full-attention layer's parts;
    a sliding layer's only until old keys drop out), rows contiguous: scored in one matmul."""
    groups: list[list[_Rows]] = []
    for part in parts:
        if part.keys is None:
            continue
        last = groups[-1][-1] if groups else None
        if (last is not None and last.lo == part.lo and cast(torch.Tensor, last.keys).shape == part.keys.shape
                and last.row + last.rows.shape[1] == part.row):
            groups[-1].append(part)
        else:
            groups.append([part])
    return groups


class BatchCapture:
    """Routes each batch element of a forward to its own :class:`Capture` (one window each)."""

    def __init__(self, captures: list[Capture]) -> None:
        self.captures = captures

    def begin(self, rows: int, total_positions: int) -> None:
        for capture in self.captures:
            capture.begin(rows, total_positions)

    def advance(self) -> None:
        for capture in self.captures:
            capture.advance()

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
               scaling: float | None, sliding_window: int | None, softcap: float | None) -> None:
        for b, capture in enumerate(self.captures):
            capture.record(module, query[b:b + 1], key[b:b + 1], scaling, sliding_window, softcap)


class ParallelCapture:
    """One query block after several windows at once ("parallel context windows"): every window's
    tokens sit at their own positions from 0, and the block sits after all of them, at a
    position past the longest one, so each window is as close to the question as the others.

    The windows' KV snapshots (per layer: keys, values, tokens seen; cached entries or fresh
    forwards) are never copied: the scoring attention reads them as segments beside the
    block's own cache.  Each window has its own :class:`Capture` (softmax over that window's
    context keys only), fed with the block's query rows.
    """

    def __init__(self, windows: list[tuple[tuple[tuple[Any, Any, int], ...], Capture]]) -> None:
        self.windows = windows
        self.total = 0

    def begin(self, rows: int, total_positions: int) -> None:
        self.total = total_positions
        for _, capture in self.windows:
            capture.begin(rows, total_positions)

    def advance(self) -> None:
        for _, capture in self.windows:
            capture.advance()

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None, sliding_window: int | None,
               softcap: float | None) -> torch.Tensor:
        """The block's attention at this layer: over every window's KV (a sliding layer holds only
        a window's tail) and the block's own cache (``key`` / ``value``)."""
        layer = int(getattr(module, "layer_idx", 0))
        segments = [(keys, values, seen - keys.shape[-2]) for keys, values, seen in
                    (layers[layer] for layers, _ in self.windows)]
        positions = torch.arange(self.total - query.shape[2], self.total, device=query.device)
        return attend_with_segments(query, key, value, attention_mask, segments, positions, scaling,
                                    sliding_window, softcap)

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
               scaling: float | None, sliding_window: int | None, softcap: float | None) -> None:
        layer = int(getattr(module, "layer_idx", 0))
        if not self.windows or layer < self.windows[0][1].config.skip_layers:
            return
        for layers, capture in self.windows:
            keys, _, seen = layers[layer]
            rows = query[0, :, query.shape[2] - capture.pending_rows:, :]
            capture.settings[layer] = (scaling if scaling is not None else query.shape[-1] ** -0.5,
                                       sliding_window, softcap)
            capture.add(layer, rows, keys[0], seen - keys.shape[-2], self.total - rows.shape[1], capture.row)
