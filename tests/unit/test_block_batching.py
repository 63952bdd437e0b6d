"""Concurrent calls share their query-block forwards: same scores as alone, no call lost or stuck."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from specprefill_agents import CacheConfig, KVPrefixCache, Segment, SpecPrefillCompressor
from specprefill_agents.config import ScoringConfig
from specprefill_agents.scoring import DraftScorer
from specprefill_agents.scoring import batching as batching_module
from specprefill_agents.scoring.batching import BlockBatcher
from specprefill_agents.testing import ARCHS, tiny_draft
from tests.unit.test_scoring import _ids

# (context tokens, query tokens): one window; one window with a long block; four windows, each its own group
CALLS = [(300, 9), (120, 40), (1500, 12)]


def _in_threads(batcher: BlockBatcher, jobs: list[Any], timeout: float = 120.0) -> list[Any]:
    """Run each job (a callable) on its own thread in a seat of ``batcher``: results or exceptions."""
    out: list[Any] = [None] * len(jobs)
    seats = batcher.seats(len(jobs))

    def work(i: int) -> None:
        with seats[i]:
            try:
                out[i] = jobs[i]()
            except Exception as exc:
                out[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a batched call never returned"
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lookahead", [0, 4])
def test_batched_blocks_score_as_each_call_alone(arch: str, lookahead: int) -> None:
    draft = tiny_draft(arch)
    scorer = DraftScorer(draft, ScoringConfig(lookahead=lookahead))
    inputs = [(_ids(n, seed=i), _ids(q, seed=100 + i)) for i, (n, q) in enumerate(CALLS)]
    alone = [scorer.score(ctx, query) for ctx, query in inputs]
    sizes: list[int] = []
    batcher = BlockBatcher(draft.model, draft.stop_token_ids, on_batch=sizes.append, patience=60.0, lanes=1)
    together = _in_threads(batcher, [lambda c=c, q=q: scorer.score(c, q) for c, q in inputs])
    assert sizes[0] == len(CALLS)  # the first batch forwarded every call's block at once
    assert all(n == 1 for n in sizes[1:])  # the long call's other groups: with the others gone, alone
    assert len(sizes) <= sum(r.windows for r in alone) - len(CALLS) + 1  # no block ran twice
    for one, both in zip(alone, together):
        np.testing.assert_allclose(both.scores, one.scores, rtol=2e-3, atol=2e-4)
        assert both.lookahead_tokens == one.lookahead_tokens
        assert both.windows == one.windows


def test_two_lanes_share_the_waiting_blocks_out() -> None:
    """With two lanes, four waiting blocks run as two batches of two (at once), scores as alone."""
    draft = tiny_draft("llama")
    scorer = DraftScorer(draft, ScoringConfig(lookahead=2))
    inputs = [(_ids(100 + 40 * i, seed=i), _ids(8 + i, seed=50 + i)) for i in range(4)]
    alone = [scorer.score(ctx, query) for ctx, query in inputs]
    sizes: list[int] = []
    batcher = BlockBatcher(draft.model, draft.stop_token_ids, on_batch=sizes.append, patience=60.0, lanes=2)
    together = _in_threads(batcher, [lambda c=c, q=q: scorer.score(c, q) for c, q in inputs])
    assert sorted(sizes) == [2, 2]
    for one, both in zip(alone, together):
        np.testing.assert_allclose(both.scores, one.scores, rtol=2e-3, atol=2e-4)


def test_a_call_that_leaves_without_a_block_does_not_hold_the_others() -> None:
    draft = tiny_draft("llama")
    scorer = DraftScorer(draft, ScoringConfig(lookahead=2))
    batcher = BlockBatcher(draft.model, draft.stop_token_ids, patience=60.0)

    def fails() -> None:
        raise ValueError("bad request, before any draft work")

    out = _in_threads(batcher, [fails, lambda: scorer.score(_ids(200, 1), _ids(8, 2)),
                                lambda: scorer.score(_ids(90, 3), _ids(8, 4))])
    assert isinstance(out[0], ValueError)
    assert [r.lookahead_tokens for r in out[1:]] == [2, 2]


def test_a_failed_batch_fails_every_call_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    draft = tiny_draft("llama")
    scorer = DraftScorer(draft, ScoringConfig(lookahead=2))
    batcher = BlockBatcher(draft.model, draft.stop_token_ids, patience=60.0)

    def oom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("CUDA out of memory (injected)")

    monkeypatch.setattr(batching_module, "forward_rows", oom)
    out = _in_threads(batcher, [lambda i=i: scorer.score(_ids(150, i), _ids(8, 9)) for i in range(3)])
    assert all(isinstance(r, RuntimeError) and "out of memory" in str(r) for r in out)


def test_batched_calls_store_and_reuse_the_prefix_kv() -> None:
    """A row of a batch stores its windows' KV like a call alone; the next step forwards only what is new."""
    draft = tiny_draft("llama")
    kv = KVPrefixCache(64 << 20)
    comp = SpecPrefillCompressor(draft, kv_cache=kv, cache=CacheConfig(score_cache_entries=0))
    batcher = BlockBatcher(draft.model, draft.stop_token_ids, patience=60.0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    agents = [[Segment(" ".join(f"{words[(a * 5 + i * 3 + j) % 8]}{j}" for j in range(60)), role="tool")
               for i in range(2)] for a in range(2)]
    first = _in_threads(batcher, [lambda s=s: comp.score_segments(s, "what was read?") for s in agents])
    grown = [s + [Segment("A new tool output arrived with more text. " * 5, role="tool")] for s in agents]
    second = _in_threads(batcher, [lambda s=s: comp.score_segments(s, "what was read?") for s in grown])
    for a, b in zip(first, second):
        assert a.draft_tokens_reused == 0
        assert b.draft_tokens_reused > 0
        assert b.draft_tokens_forwarded < a.draft_tokens_forwarded


@pytest.mark.parametrize("batched", [False, True])
def test_concurrent_calls_compute_a_shared_prefix_once(batched: bool) -> None:
    """Three agents with one long tool output start at once: one computes its KV, two wait and reuse it."""
    draft = tiny_draft("llama")
    comp = SpecPrefillCompressor(draft, kv_cache=KVPrefixCache(64 << 20), cache=CacheConfig(score_cache_entries=0))
    shared = Segment(" ".join(f"word{j} item{j * 7 % 13}" for j in range(30)), role="tool")
    requests = [[shared, Segment(f"agent {i} asks about item{i}", role="user")] for i in range(3)]
    batcher = BlockBatcher(draft.model, draft.stop_token_ids, patience=60.0 if batched else 0.0)
    jobs = [lambda r=r: comp.score_segments(r, None) for r in requests]
    out = _in_threads(batcher, jobs) if batched else _plain_threads(jobs)
    assert sorted(r.draft_tokens_reused > 0 for r in out) == [False, True, True]


def _plain_threads(jobs: list[Any]) -> list[Any]:
    out: list[Any] = [None] * len(jobs)
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, jobs[i]())) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out
