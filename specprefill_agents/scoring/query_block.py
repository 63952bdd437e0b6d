"""The query block and its greedy lookahead tokens, forwarded under a capture.

The block (an explicit query, or the prompt's tail) runs on top of the context's KV; then the
draft greedily decodes ``lookahead`` tokens, each forwarded for its query rows (SpecPrefill's
lookahead: the rows of what the model is about to say join the question's rows).
"""

from __future__ import annotations

import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .._compat import AttentionCapture, capture_attention, forward
from ..limits import check_deadline

__all__ = ["BlockCapture", "BlockRun", "QueryBlock"]


class BlockCapture(AttentionCapture, Protocol):
    """A capture told, around each forward, how many query rows end it and where it ends."""

    def begin(self, rows: int, total_positions: int) -> None: ...

    def advance(self) -> None: ...


@dataclass(frozen=True)
class BlockRun:
    """What running a block produced: the lookahead tokens and the seconds each phase took."""

    tokens: list[int]
    query_seconds: float
    lookahead_seconds: float


class QueryBlock:
    """Forwards a query block (and decodes the lookahead) on one draft model. Stateless per call."""

    def __init__(self, model: Any, lookahead: int, stop_ids: AbstractSet[int]) -> None:
        self.model, self.lookahead, self.stop_ids = model, lookahead, stop_ids
        self.device = model.device

    def run(self, ids: list[int], cache: Any, capture: BlockCapture, *, done: int, rows: int | None = None,
            position: int | None = None, decode: bool = True) -> BlockRun:
        """Forward ``ids`` after ``done`` tokens already in ``cache``; their last ``rows`` (default all)
        are query rows.  With ``decode``, then greedily decode up to ``lookahead`` tokens.
        ``position``: where the cache's first token sits (default: slot 0, no explicit positions)."""
        limit = self.lookahead if decode else 0
        t0 = time.perf_counter()
        with capture_attention(capture):
            logits = self._step(ids, done, capture, cache, rows, limit > 0, position)
            t1 = time.perf_counter()
            generated: list[int] = []
            while logits is not None and len(generated) < limit:
                token = int(torch.argmax(logits).item())
                if token in self.stop_ids:
                    break
                generated.append(token)
                logits = self._step([token], done + len(ids) + len(generated) - 1, capture, cache, None,
                                    len(generated) < limit, position)
        return BlockRun(generated, t1 - t0, time.perf_counter() - t1)

    def _step(self, ids: list[int], done: int, capture: BlockCapture, cache: Any, rows: int | None, logits: bool,
              position: int | None) -> torch.Tensor | None:
        check_deadline()
        start = done + (position or 0)
        capture.begin(len(ids) if rows is None else rows, start + len(ids))
        positions = None if position is None else torch.arange(start, start + len(ids), device=self.device)[None]
        out = forward(self.model, ids, cache, position_ids=positions, logits=logits)
        capture.advance()
        return out

