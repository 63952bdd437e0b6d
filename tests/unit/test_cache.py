"""Agent loops pay only for what is new: KV prefix reuse is exact, caches are bounded and shareable."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

from specprefill_agents import CacheConfig, CompressionConfig, ConfigError, Segment, SpecPrefillCompressor
from specprefill_agents.cache import KVEntry, KVPrefixCache, ScoreCache, segment_chain, token_prefix_keys
from specprefill_agents.testing import ARCHS, tiny_draft

DOCS = [inspect.getdoc(obj) or "" for obj in (textwrap.TextWrapper, textwrap.dedent, textwrap.indent,
                                               textwrap.shorten, inspect.getsource, inspect.signature)]
NO_CACHE = CacheConfig(kv_cache_bytes=0, score_cache_entries=0)


def _segments(n: int) -> list[Segment]:
    return [Segment(DOCS[i % len(DOCS)], role="tool", id=f"t{i}") for i in range(n)]


def _scores(comp: SpecPrefillCompressor, segs: list[Segment], query: str | None) -> list[np.ndarray]:
    return [s.scores for s in comp.score_segments(segs, query).segments]


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_appended_segments_reuse_the_prefix_and_match_full_recompute(arch: str) -> None:
    draft = tiny_draft(arch, max_pos=2048)
    cached = SpecPrefillCompressor(draft, cache=CacheConfig(score_cache_entries=0))
    fresh = SpecPrefillCompressor(draft, cache=NO_CACHE)
    step1, step2 = _segments(2), _segments(4)
    first = cached.score_segments(step1, "how is text wrapped?")
    assert first.draft_tokens_reused == 0
    second = cached.score_segments(step2, "what does indent do?")
    _assert_same([s.scores for s in second.segments], _scores(fresh, step2, "what does indent do?"))
    # the two first segments' KV came from the cache: only the rest was forwarded
    again = fresh.score_segments(step2, "what does indent do?")
    assert second.draft_tokens_reused > 0
    assert second.draft_tokens_forwarded == again.draft_tokens_forwarded - second.draft_tokens_reused
    assert second.draft_tokens_reused == _context_tokens(draft, step1)


def _context_tokens(draft, segs: list[Segment]) -> int:
    """Draft tokens of the joined context: each segment tokenized alone, a blank line between."""
    enc = lambda text: len(draft.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return sum(enc(s.text) for s in segs) + enc("\n\n") * (len(segs) - 1)


def test_changed_middle_segment_falls_back_to_the_common_prefix() -> None:
    draft = tiny_draft("llama", max_pos=2048)
    cached = SpecPrefillCompressor(draft, cache=CacheConfig(score_cache_entries=0))
    fresh = SpecPrefillCompressor(draft, cache=NO_CACHE)
    segs = _segments(4)
    cached.score_segments(segs, "q")
    changed = [segs[0], Segment("A different tool output entirely. " * 20, role="tool"), segs[2], segs[3]]
    result = cached.score_segments(changed, "q")
    _assert_same([s.scores for s in result.segments], _scores(fresh, changed, "q"))
    assert 0 < result.draft_tokens_reused <= len(result.segments[0]) + 2  # only segment 0 (+ separator)


def test_identical_repeat_hits_the_score_cache_and_costs_nothing() -> None:
    comp = SpecPrefillCompressor(tiny_draft("qwen2", max_pos=2048))
    segs = _segments(3)
    a = comp.compress_segments(segs, "what is dedent?", keep_ratio=0.3)
    b = comp.compress_segments(segs, "what is dedent?", keep_ratio=0.3)
    assert a.texts == b.texts
    assert b.stats.score_cache_hits == 1 and b.stats.draft_tokens_forwarded == 0
    c = comp.compress_segments(segs, "another question", keep_ratio=0.3)  # new query: KV reused in full
    assert c.stats.score_cache_hits == 0
    assert c.stats.draft_tokens_reused == _context_tokens(comp.draft, segs)
    assert c.stats.draft_tokens_forwarded == a.stats.draft_tokens_forwarded - c.stats.draft_tokens_reused + (
        c.stats.draft_tokens_forwarded - (a.stats.draft_tokens_forwarded - _context_tokens(comp.draft, segs)))


def test_windows_reuse_their_kv_as_the_context_grows() -> None:
    draft = tiny_draft("llama", max_pos=256)
    cached = SpecPrefillCompressor(draft, cache=CacheConfig(score_cache_entries=0))
    fresh = SpecPrefillCompressor(draft, cache=NO_CACHE)
    cached.score_segments(_segments(5), "q")
    later = cached.score_segments(_segments(6), "q")
    assert later.windows > 1 and later.draft_tokens_reused > 0
    _assert_same([s.scores for s in later.segments], _scores(fresh, _segments(6), "q"))


def test_kv_cache_respects_its_byte_bound_and_stays_correct_after_eviction() -> None:
    draft = tiny_draft("llama", max_pos=2048)
    kv = KVPrefixCache(max_bytes=2_000_000)
    cached = SpecPrefillCompressor(draft, cache=CacheConfig(score_cache_entries=0), kv_cache=kv)
    fresh = SpecPrefillCompressor(draft, cache=NO_CACHE)
    for i in range(12):  # distinct prefixes
        segs = [Segment(f"Distinct prefix number {i}. " * 10)] + _segments(2)
        got = _scores(cached, segs, "q")
        assert kv.nbytes <= 2_000_000
        if i % 4 == 0:
            _assert_same(got, _scores(fresh, segs, "q"))
    assert 0 < len(kv) < 12
    segs = [Segment("Distinct prefix number 0. " * 10)] + _segments(2)  # long evicted
    _assert_same(_scores(cached, segs, "q"), _scores(fresh, segs, "q"))


def test_entries_larger_than_the_bound_are_not_kept() -> None:
    kv = KVPrefixCache(max_bytes=10)
    entry = KVEntry(layers=(), length=5, sliding=False, nbytes=100, prefix_keys=("a",))
    kv.put("a", entry, [5])
    assert len(kv) == 0 and kv.lookup(["a"], [5]) is None


def test_sliding_window_entries_resume_only_at_full_length() -> None:
    kv = KVPrefixCache(max_bytes=1000)
    entry = KVEntry(layers=(), length=10, sliding=True, nbytes=10, prefix_keys=("p4", "p10"))
    kv.put("p10", entry, [4, 10])
    assert kv.lookup(["p4"], [4]) is None
    found = kv.lookup(["p4", "p10"], [4, 10])
    assert found is not None and found[1] == 10


def _run_concurrently(comp: SpecPrefillCompressor, jobs: list[tuple[list[Segment], str]]) -> list[list[str]]:
    results: list[list[str] | None] = [None] * len(jobs)

    def work(i: int) -> None:
        results[i] = comp.compress_segments(jobs[i][0], jobs[i][1], keep_ratio=0.3).texts

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results  # type: ignore[return-value]


def test_threads_and_tasks_sharing_prefixes_match_serial_runs() -> None:
    draft = tiny_draft("llama", max_pos=2048)
    jobs = [(_segments(n), q) for n in (2, 3, 4, 3, 2) for q in ("wrap?", "indent?")]
    serial = [SpecPrefillCompressor(draft, cache=NO_CACHE).compress_segments(s, q, keep_ratio=0.3).texts
              for s, q in jobs]
    shared = SpecPrefillCompressor(draft)
    assert _run_concurrently(shared, jobs) == serial

    async def main() -> list[list[str]]:
        other = SpecPrefillCompressor(draft)
        tasks = [asyncio.to_thread(lambda s=s, q=q: other.compress_segments(s, q, keep_ratio=0.3).texts)
                 for s, q in jobs]
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == serial


def test_approximate_mode_keeps_old_scores_and_scores_only_new_segments() -> None:
    draft = tiny_draft("llama", max_pos=2048)
    approx = SpecPrefillCompressor(draft, cache=CacheConfig(mode="approximate", kv_cache_bytes=0))
    first = approx.score_segments(_segments(3), "how is text wrapped?")
    later = approx.score_segments(_segments(5), "a different question")
    for old, new in zip(first.segments, later.segments[:3]):
        np.testing.assert_array_equal(old.scores, new.scores)
    n_new = sum(len(s) for s in later.segments[3:])
    assert n_new <= later.draft_tokens_forwarded < n_new + 64  # new tokens + query + lookahead
    exact = SpecPrefillCompressor(draft, cache=NO_CACHE).score_segments(_segments(5), "a different question")
    assert not np.allclose(exact.segments[0].scores, later.segments[0].scores)  # it is an approximation


def test_chain_hash_is_stable_across_processes_and_sensitive() -> None:
    texts = ["alpha", "beta", "日本語"]
    here = segment_chain(texts, "draft-x", "{}")
    code = ("from specprefill_agents.cache import segment_chain;"
            "print(','.join(segment_chain(['alpha', 'beta', '日本語'], 'draft-x', '{}')))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert there.strip().split(",") == here
    assert segment_chain(["alpha", "BETA", "日本語"], "draft-x", "{}")[0] == here[0]
    assert segment_chain(["alpha", "BETA", "日本語"], "draft-x", "{}")[1:] != here[1:]
    assert segment_chain(texts, "draft-y", "{}") != here
    assert segment_chain(texts, "draft-x", '{"a":1}') != here
    assert segment_chain(["ab", "c"], "d", "{}")[-1] != segment_chain(["a", "bc"], "d", "{}")[-1]


def test_token_prefix_keys_are_incremental_hashes() -> None:
    ids = list(range(100))
    keys = token_prefix_keys("ns", ids, [10, 50, 100])
    assert keys[0] == token_prefix_keys("ns", ids[:10], [10])[0]
    assert keys[1] == token_prefix_keys("ns", ids[:50] + [999], [50])[0]
    assert len(set(keys)) == 3 and token_prefix_keys("other", ids, [10])[0] != keys[0]


def test_score_cache_lru_and_disabled() -> None:
    cache = ScoreCache(2)
    for k in "abc":
        cache.put(k, k.upper())
    assert cache.get("a") is None and cache.get("c") == "C" and len(cache) == 2
    off = ScoreCache(0)
    off.put("a", 1)
    assert off.get("a") is None and len(off) == 0


@pytest.mark.parametrize("bad", [dict(kv_cache_bytes=-1), dict(score_cache_entries=-2), dict(mode="fuzzy")])
def test_invalid_cache_config(bad: dict) -> None:
    with pytest.raises(ConfigError):
        CacheConfig(**bad)


def test_restored_cache_is_not_mutated_by_later_steps() -> None:
    draft = tiny_draft("llama", max_pos=2048)
    kv = KVPrefixCache(1 << 26)
    comp = SpecPrefillCompressor(draft, CompressionConfig(), cache=CacheConfig(score_cache_entries=0), kv_cache=kv)
    comp.score_segments(_segments(2), "q")
    snapshot = [(k.clone(), v.clone()) for entry in list(kv._entries.values()) for k, v, _ in entry.layers]
    for n in (3, 4, 3):
        comp.score_segments(_segments(n), f"q{n}")
    first_entry = list(kv._entries.values())[0]
    # the entry holds the context only: the query block ran in the same forward but is not kept
    assert all(k.shape[-2] == v.shape[-2] == seen == first_entry.length for k, v, seen in first_entry.layers)
    for (k0, v0), (k1, v1, _) in zip(snapshot, first_entry.layers):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_windowed_entries_are_not_mutated_by_later_steps() -> None:
    """Earlier windows' entries are read by later calls (as segments beside the query block's
    cache), never written; here the windows form groups past the draft's context."""
    draft = tiny_draft("llama", max_pos=256)
    config = CompressionConfig()
    kv = KVPrefixCache(1 << 28)
    comp = SpecPrefillCompressor(draft, config, cache=CacheConfig(score_cache_entries=0), kv_cache=kv)
    comp.score_segments(_segments(4), "q")
    before = {key: [(k.clone(), v.clone()) for k, v, _ in entry.layers] for key, entry in kv._entries.items()}
    for n in (5, 6, 5):
        assert comp.score_segments(_segments(n), f"q{n}").windows > 2
    assert len(before) > 2
    for key, layers in before.items():
        for (k0, v0), (k1, v1, _) in zip(layers, kv._entries[key].layers):
            assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_a_prefix_served_by_a_longer_entry_is_cut_to_the_prefix() -> None:
    """An entry stored for a longer context also answers for its shorter split points; the KV
    handed back for such a hit holds exactly the prefix, never the entry's later tokens."""
    from specprefill_agents.scoring.window_kv import WindowKV

    kv = KVPrefixCache(1 << 26)
    windows = WindowKV(tiny_draft("llama"), kv, prefill_chunk=None)
    ids = list(range(3, 83))
    full, _ = windows.snapshot(ids, [30, 80])  # forwarded and stored, split at 30
    part, reused = windows.snapshot(ids[:30], [30])
    assert reused == 30 and len(kv) == 1
    for (k, v, seen), (fk, fv, _) in zip(part, full):
        assert seen == 30 and k.shape[-2] == v.shape[-2] == 30
        assert torch.equal(k, fk[..., :30, :]) and torch.equal(v, fv[..., :30, :])
