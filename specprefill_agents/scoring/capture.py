"""Query rows collected during the draft's forwards, and their attention folded onto a window.

The scoring attention (``_compat``) hands every layer's post-RoPE queries and keys to the
capture of the forward in flight (:class:`~specprefill_agents._compat.AttentionCapture`).
:class:`WindowCapture` keeps the query rows that read one window's context; :meth:`~WindowCapture.finish`
computes, per layer, the fp32 softmax of those rows over the context keys only and folds it by
the max over heads, layers and query rows (SpecPC's aggregation).  :class:`ParallelWindows`
runs one query block after several windows side by side: the windows' KV stays where it is (the
block's attention reads it as extra segments) and each window keeps its own capture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from .._compat import KVLayers
from ..kernels import ROW_CHUNK, attend_with_segments, attention_logits

__all__ = ["ParallelWindows", "WindowCapture"]


@dataclass(frozen=True)
class _Rows:
    """Query rows of one forward at one layer, and the context keys they could see."""

    rows: torch.Tensor  # (heads, r, d), post-RoPE, as the model computed them
    keys: torch.Tensor | None  # (kv_heads, m, d) context keys from position ``lo`` (None: none visible)
    lo: int
    first_pos: int  # position of rows[:, 0]
    row: int  # index of rows[:, 0] among all the rows this capture took


class WindowCapture:
    """Collects each layer's query rows during the forwards, then folds their attention onto one
    window's context keys in one pass per layer (:meth:`finish`): the lookahead's decode steps
    add one row each, and scoring them together costs one matmul per layer instead of one per step.

    The key tensors are views of the KV cache; the context part of a cache is never written
    again, so the views stay valid after later forwards.
    """

    def __init__(self, ctx_start: int, ctx_len: int, device: torch.device) -> None:
        self.ctx_start, self.ctx_len, self.device = ctx_start, ctx_len, device
        self._parts: dict[int, list[_Rows]] = {}
        self._settings: dict[int, tuple[float, int | None, float | None]] = {}
        self._rows = 0  # rows taken by the forwards that have run
        self._pending = 0  # query rows at the end of the forward about to run (earlier ones are context)
        self._total = 0  # sequence length once that forward has run

    @property
    def collected(self) -> bool:
        """Whether any attention layer reported to this capture."""
        return bool(self._parts)

    def begin(self, rows: int, total_positions: int) -> None:
        self._pending, self._total = rows, total_positions

    def advance(self) -> None:
        self._rows += self._pending

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float | None,
               sliding_window: int | None, softcap: float | None, key_start: int | None = None) -> None:
        """Keep the last query rows of ``query`` (1, heads, q, d) and the context part of ``key``
        (1, kv_heads, n, d), whose first key sits at ``key_start`` (default: the keys end with the
        forward's last position, as in the layer's own cache)."""
        layer = int(getattr(module, "layer_idx", 0))
        rows = query[0, :, query.shape[2] - self._pending:, :]
        self._settings[layer] = (scaling if scaling is not None else query.shape[-1] ** -0.5, sliding_window, softcap)
        start = self._total - key.shape[-2] if key_start is None else key_start
        lo, hi = max(self.ctx_start, start), self.ctx_start + self.ctx_len
        keys = key[0, :, lo - start:hi - start, :] if hi > lo else None
        self._parts.setdefault(layer, []).append(_Rows(rows, keys, lo, self._total - rows.shape[1], self._rows))

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None, sliding_window: int | None,
               softcap: float | None) -> None:
        """The window's context is in the layer's own cache: SDPA attends as usual."""
        return None

    def finish(self) -> np.ndarray:
        """Per context token: attention maxed over heads, layers and rows, scaled by the context length
        (1.0 = what a uniform spread would give)."""
        acc = torch.zeros(self.ctx_len, dtype=torch.float32, device=self.device)
        layers = 0
        for layer, parts in self._parts.items():
            groups = _same_keys(parts)
            for group in groups:
                self._fold(layer, group, acc)
            layers += bool(groups)
        if not self._rows or not layers:
            return np.zeros(self.ctx_len, dtype=np.float32)
        return (acc * self.ctx_len).cpu().numpy().astype(np.float32)

    def _fold(self, layer: int, group: list[_Rows], acc: torch.Tensor) -> None:
        scale, sliding_window, softcap = self._settings[layer]
        keys, lo = cast(torch.Tensor, group[0].keys).float(), group[0].lo
        rows = torch.cat([p.rows for p in group], dim=1)
        pos = torch.cat([torch.arange(p.first_pos, p.first_pos + p.rows.shape[1]) for p in group]).to(rows.device)
        target = acc[lo - self.ctx_start:]
        for r0 in range(0, rows.shape[1], ROW_CHUNK):
            q = rows[:, r0:r0 + ROW_CHUNK, :].float()  # (heads, r, d)
            logits = attention_logits(q, keys, scale, softcap, sliding_window, pos[r0:r0 + ROW_CHUNK], lo)
            weights = torch.softmax(logits, dim=-1).nan_to_num_(0.0)  # rows that see no context: 0
            torch.maximum(target, weights.amax(dim=(0, 1)), out=target)


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


class ParallelWindows:
    """One query block after several windows at once (parallel context windows): every window's
    tokens sit at their own positions from 0, and the block sits after all of them, at a
    position past the longest one, so each window is as close to the question as the others.

    The windows' KV snapshots (cached entries or fresh forwards) are never copied: the block's
    attention reads them as segments beside its own cache.  Each window has its own
    :class:`WindowCapture` (softmax over that window's context keys only), fed the block's query rows.
    """

    def __init__(self, windows: list[tuple[KVLayers, WindowCapture]]) -> None:
        self._windows = windows
        self._total = 0

    @property
    def collected(self) -> bool:
        return all(capture.collected for _, capture in self._windows)

    def begin(self, rows: int, total_positions: int) -> None:
        self._total = total_positions
        for _, capture in self._windows:
            capture.begin(rows, total_positions)

    def advance(self) -> None:
        for _, capture in self._windows:
            capture.advance()

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float | None,
               sliding_window: int | None, softcap: float | None) -> None:
        layer = int(getattr(module, "layer_idx", 0))
        for layers, capture in self._windows:
            keys, _, seen = layers[layer]
            capture.record(module, query, keys, scaling, sliding_window, softcap, key_start=seen - keys.shape[-2])

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None, sliding_window: int | None,
               softcap: float | None) -> torch.Tensor:
        """The block's attention at this layer: over every window's KV (a sliding layer holds only
        a window's tail) and the block's own cache (``key`` / ``value``)."""
        layer = int(getattr(module, "layer_idx", 0))
        segments = [(keys, values, seen - keys.shape[-2]) for keys, values, seen in
                    (layers[layer] for layers, _ in self._windows)]
        positions = torch.arange(self._total - query.shape[2], self._total, device=query.device)
        return attend_with_segments(query, key, value, attention_mask, segments, positions, scaling,
                                    sliding_window, softcap)

    def finish(self) -> list[np.ndarray]:
        """Each window's scores, in order."""
        return [capture.finish() for _, capture in self._windows]
