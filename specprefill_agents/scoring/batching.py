"""The query blocks of concurrent scoring calls, forwarded as the rows of one batch.

What a KV prefix cache cannot remove from an agent's step is its query block and the lookahead
decode: a few dozen tokens, and every forward of them reads every weight of the draft, so a
step of eight rows costs about what a step of one does (memory-bound on a CPU, launch-bound on
a GPU at these sizes).  Calls that score inside :meth:`BlockBatcher.joined` (the service's worker
runs every request that way) hand their blocks to one batcher; when every joined call is
waiting or running, or the first has waited as long as the last batch took to run, one of them
forwards the waiting blocks (its lane's share) together:

* the blocks are left-padded to one length, each row at its own RoPE positions;
* each row attends to its own call's windows (:class:`~.capture.ParallelWindows`, the KV stays
  where it is) and to its own block tokens, never to another row's;
* the greedy lookahead then decodes every row in the same forwards until each has its tokens
  (a row that stops early rides along, masked out).

Scores equal the ones a call gets alone through the same windows up to float rounding (batched
products round differently).  A call that joined no batcher scores alone, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

from .._compat import capture_attention, forward_rows, new_kv_cache
from ..limits import check_deadline
from ..threads import usable_cpus
from .capture import ParallelWindows
from .query_block import BlockRun

__all__ = ["BlockBatcher", "joined_batcher"]

_JOINED: ContextVar[BlockBatcher | None] = ContextVar("specprefill_block_batcher", default=None)
FIRST_WAIT_S = 0.01  # how long a first block waits for others before any batch has been timed


def default_lanes(model: Any) -> int:
    """Batches worth running at once on ``model``'s device: one on an accelerator; on a CPU, the
    cores this process may use over torch's intra-op threads (each batch's forward takes those)."""
    device = getattr(model, "device", torch.device("cpu"))
    if device.type != "cpu":
        return 1
    return max(1, usable_cpus() // max(1, torch.get_num_threads()))


def joined_batcher(model: Any) -> BlockBatcher | None:
    """The batcher the running call joined, if it serves ``model`` and another call is seated at it
    (None: score alone, the faster way for a single call)."""
    batcher = _JOINED.get()
    return batcher if batcher is not None and batcher.model is model and batcher.crowded() else None


@dataclass(eq=False)
class _Block:
    """One call's query block waiting for a batch, and what the batch gave it."""

    ids: list[int]
    capture: ParallelWindows
    position: int  # RoPE position of ids[0]
    limit: int  # lookahead tokens to decode (0: the block only)
    arrived: float = field(default_factory=time.monotonic)
    done: bool = False
    run: BlockRun | None = None
    error: BaseException | None = None


class BlockBatcher:
    """Gathers the query blocks of concurrent calls on one draft model and forwards them together.

    ``on_batch(rows)`` sees the size of every batched forward.  ``patience``: the longest a
    first block waits for the joined calls still on their way (default: as long as the last batch
    took to run, so a straggler can at most double a call's block time).  ``lanes``: batches that
    may run at once, the waiting blocks shared out between them (default :func:`default_lanes`:
    one on an accelerator; on a CPU, one per core that torch's threads leave free, since a batch's
    forward runs on one thread's cores).  Thread-safe; the next batch gathers while one runs.
    """

    def __init__(self, model: Any, stop_ids: AbstractSet[int], on_batch: Any = None,
                 patience: float | None = None, lanes: int | None = None) -> None:
        self.model, self.stop_ids, self.patience = model, stop_ids, patience
        self.lanes = lanes if lanes is not None else default_lanes(model)
        self.on_batch = on_batch or (lambda rows: None)
        self._cond = threading.Condition()
        self._joined = 0
        self._waiting: list[_Block] = []
        self._running = 0  # batches in flight
        self._in_flight = 0  # their blocks
        self._last_seconds = FIRST_WAIT_S

    def joined(self) -> _Seat:
        """Scoring calls made inside this ``with`` block (in this thread or task) batch their query blocks."""
        return self.seats(1)[0]

    def seats(self, n: int) -> list[_Seat]:
        """``n`` seats taken now, for calls about to start on other threads (each enters one):
        the first block to arrive then waits for the others instead of running alone."""
        with self._cond:
            self._joined += n
        return [_Seat(self) for _ in range(n)]

    def crowded(self) -> bool:
        """Whether more than one call is seated (a lone call has no one to share forwards with)."""
        with self._cond:
            return self._joined > 1

    def _leave(self) -> None:
        with self._cond:
            self._joined -= 1
            self._cond.notify_all()  # the others may all be waiting now

    def run(self, ids: list[int], capture: ParallelWindows, *, position: int, lookahead: int,
            decode: bool = True) -> BlockRun:
        """Forward ``ids`` (query rows, at ``position`` on) under ``capture`` in the next batch, then
        (with ``decode``) greedily decode up to ``lookahead`` tokens; as :meth:`QueryBlock.run`."""
        check_deadline()
        block = _Block(list(ids), capture, position, lookahead if decode else 0)
        batch: list[_Block] | None = None
        with self._cond:
            self._waiting.append(block)
            self._cond.notify_all()
            while not block.done and (batch := self._ready(block)) is None:
                self._cond.wait(self._patience())
        if batch is not None and not block.done:  # this call leads the batch (its own block is in it)
            self._lead(batch)
        if block.error is not None:
            raise block.error
        assert block.run is not None
        return block.run

    def _ready(self, own: _Block) -> list[_Block] | None:
        """The blocks ``own``'s call should run now, taken out of the queue (lock held): when every
        joined call is waiting or running, or the first block has waited long enough, its lane's
        share of the waiting blocks, its own first."""
        if self._running >= self.lanes or own not in self._waiting:
            return None
        everyone = len(self._waiting) + self._in_flight >= self._joined
        if not everyone and time.monotonic() - self._waiting[0].arrived < self._wait_s():
            return None
        share = -(-len(self._waiting) // (self.lanes - self._running))
        batch = [own, *[b for b in self._waiting if b is not own][:share - 1]]
        self._waiting = [b for b in self._waiting if b not in batch]
        self._running += 1
        self._in_flight += len(batch)
        return batch

    def _patience(self) -> float | None:
        if self._running >= self.lanes or not self._waiting:
            return None  # woken when a batch in flight ends or a block arrives
        return max(1e-3, self._waiting[0].arrived + self._wait_s() - time.monotonic())

    def _wait_s(self) -> float:
        return self._last_seconds if self.patience is None else self.patience

    def _lead(self, batch: list[_Block]) -> None:
        t0 = time.perf_counter()
        try:
            runs = forward_blocks(self.model, self.stop_ids, batch)
        except BaseException as exc:  # every call of the batch gets the error, none hangs
            for block in batch:
                block.error = exc
        else:
            for block, run in zip(batch, runs):
                block.run = run
        finally:
            with self._cond:
                self._last_seconds = time.perf_counter() - t0
                for block in batch:
                    block.done = True
                self._running -= 1
                self._in_flight -= len(batch)
                self._cond.notify_all()
        self.on_batch(len(batch))


class _Seat:
    """One call's place in a :class:`BlockBatcher` (a context manager, left once)."""

    def __init__(self, batcher: BlockBatcher) -> None:
        self._batcher, self._left = batcher, False
        self._token: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> _Seat:
        self._token = _JOINED.set(self._batcher)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _JOINED.reset(self._token)
            self._token = None
        self.leave()

    def leave(self) -> None:
        """Give the seat up (idempotent): also for a call that never ran."""
        with self._lock:
            if self._left:
                return
            self._left = True
        self._batcher._leave()


@torch.inference_mode()
def forward_blocks(model: Any, stop_ids: AbstractSet[int], blocks: list[_Block]) -> list[BlockRun]:
    """Forward the ``blocks`` as rows of one batch, then decode their lookahead tokens together."""
    lengths = [len(b.ids) for b in blocks]
    width = max(lengths)
    pads = [width - n for n in lengths]
    limits = [b.limit for b in blocks]
    generated: list[list[int]] = [[] for _ in blocks]
    rows = _Rows(blocks, pads)
    cache = new_kv_cache(model, width + max(limits))
    device = model.device
    t0 = time.perf_counter()
    with capture_attention(rows):
        ids = [[b.ids[0]] * pad + b.ids for b, pad in zip(blocks, pads)]
        positions = [range(b.position - pad, b.position - pad + width) for b, pad in zip(blocks, pads)]
        live = [True] * len(blocks)
        rows.begin(live, [b.position + n for b, n in zip(blocks, lengths)], lengths)
        logits = forward_rows(model, ids, cache, torch.tensor(positions, device=device), logits=max(limits) > 0)
        rows.advance(width)
        t1 = time.perf_counter()
        live = [limit > 0 for limit in limits]
        while logits is not None:
            tokens = logits.argmax(-1).tolist()
            for i, token in enumerate(tokens):
                if live[i] and token in stop_ids:
                    live[i] = False
                elif live[i]:
                    generated[i].append(token)
            if not any(live):
                break
            ends = [b.position + n + len(g) for b, n, g in zip(blocks, lengths, generated)]  # past each row's token
            rows.begin(live, ends, [1] * len(blocks))
            step = [[g[-1] if g else b.ids[-1]] for b, g in zip(blocks, generated)]
            wants = any(on and len(g) < limit for on, g, limit in zip(live, generated, limits))
            logits = forward_rows(model, step, cache, torch.tensor([[e - 1] for e in ends], device=device),
                                  logits=wants)
            rows.advance(1)
            live = [on and len(g) < limit for on, g, limit in zip(live, generated, limits)]
    t2 = time.perf_counter()
    return [BlockRun(tokens, t1 - t0, t2 - t1) for tokens in generated]


class _Rows:
    """The capture of a batched forward: row ``i``'s query rows go to ``blocks[i].capture``, and
    its attention output is that capture's, over its windows and row ``i``'s own cache slots from
    its first real token (its padding and every other row are invisible to it)."""

    def __init__(self, blocks: list[_Block], pads: list[int]) -> None:
        self.blocks, self.pads = blocks, pads
        self.live: list[bool] = []
        self.written = 0  # cache slots filled by the forwards before this one

    def begin(self, live: list[bool], totals: list[int], rows: list[int]) -> None:
        self.live = live
        for on, block, total, n in zip(live, self.blocks, totals, rows):
            if on:
                block.capture.begin(n, total)

    def advance(self, width: int) -> None:
        for on, block in zip(self.live, self.blocks):
            if on:
                block.capture.advance()
        self.written += width

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float | None,
               sliding_window: int | None, softcap: float | None) -> None:
        for i, (on, block) in enumerate(zip(self.live, self.blocks)):
            if on:
                block.capture.record(module, query[i:i + 1], key[i:i + 1], scaling, sliding_window, softcap)

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None, sliding_window: int | None,
               softcap: float | None) -> torch.Tensor:
        batch, _, q, _ = query.shape
        out = query.new_zeros(batch, q, query.shape[1], query.shape[3])
        dropped = self.written + q - key.shape[-2]  # slots a sliding layer no longer holds
        for i, (on, block) in enumerate(zip(self.live, self.blocks)):
            if not on:
                continue
            skip = max(self.pads[i] - self.written, 0)  # padding rows of this forward
            first = max(self.pads[i] - dropped, 0)  # the row's first real key among those held
            out[i, skip:] = block.capture.attend(
                module, query[i:i + 1, :, skip:], key[i:i + 1, :, first:], value[i:i + 1, :, first:], None,
                scaling, sliding_window, softcap,
            )[0]
        return out
