"""Query-row attention onto the context, collected during the draft's forwards and folded once.

The scoring attention (``_compat``) hands every layer's post-RoPE queries and keys to the
active capture.  :class:`Capture` keeps the query rows of one window; :meth:`Capture.finish`
computes, per layer, the fp32 softmax of those rows over the context keys only and folds it:
max or mean over heads and layers, then over rows.  :class:`BatchCapture` splits a batched
forward (several windows at once) into one capture per window.  :class:`ParallelCapture` runs
one query block after several windows side by side: the windows' KV stays where it is (the
attention reads it as extra segments, ``_compat.attend_with_segments``) and each window keeps
its own capture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from .config import ScoringConfig

__all__ = ["Capture", "BatchCapture", "ParallelCapture"]

_ROW_CHUNK = 64  # query rows scored at once: bounds the (heads x rows x context) temporary


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
        heads, rows, dim = q.shape
        kv_heads = keys.shape[0]
        grouped = q.reshape(kv_heads, (heads // kv_heads) * rows, dim)  # GQA without repeating keys
        logits = torch.matmul(grouped, keys.transpose(-1, -2)).mul_(scale)
        logits = logits.reshape(heads, rows, keys.shape[1])
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        if sliding_window:
            key_pos = torch.arange(lo, lo + keys.shape[1], device=q.device)
            hidden = key_pos[None, :] <= (pos[:, None] - sliding_window)
            logits = logits.masked_fill(hidden[None], float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num_(0.0)  # rows that see no context: 0
        return weights.amax(0) if self.config.head_agg == "max" else weights.mean(0)


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

    def positions(self, query: torch.Tensor) -> torch.Tensor:
        """Positions of the rows of ``query`` (the tokens of the forward that is running)."""
        return torch.arange(self.total - query.shape[2], self.total, device=query.device)

    def segments(self, layer: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """Each window's keys and values at ``layer`` and the position of their first key (a
        sliding layer holds only the window's tail)."""
        return [(keys, values, seen - keys.shape[-2]) for (keys, values, seen) in
                (layers[layer] for layers, _ in self.windows)]

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
               scaling: float | None, sliding_window: int | None, softcap: float | None) -> None:
        layer = int(getattr(module, "layer_idx", 0))
        for layers, capture in self.windows:
            if layer < capture.config.skip_layers:
                return
            keys, _, seen = layers[layer]
            rows = query[0, :, query.shape[2] - capture.pending_rows:, :]
            capture.settings[layer] = (scaling if scaling is not None else query.shape[-1] ** -0.5,
                                       sliding_window, softcap)
            capture.add(layer, rows, keys[0], seen - keys.shape[-2], self.total - rows.shape[1], capture.row)
