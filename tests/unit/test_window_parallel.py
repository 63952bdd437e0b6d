"""Parallel context windows: one query block after several windows side by side.

Each window keeps its own positions (0..), the block sits past a full window and attends to
every window at once; each window's scores are its own softmax.  The reference builds that
layout as one flat sequence with a block mask and runs it with eager attention.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from specprefill_agents import CacheConfig, CompressionConfig, KVPrefixCache, SpecPrefillCompressor
from specprefill_agents.config import ScoringConfig
from specprefill_agents.kernels import attend_with_segments, fused_attention_available, fused_attention_pays
from specprefill_agents.scoring import DraftScorer, plan_windows
from specprefill_agents.testing import ARCHS, tiny_draft
from tests.unit.test_cache import _segments
from tests.unit.test_scoring import _eager_model, _ids


def _layout(prefix: list[int], windows: list[list[int]], block: list[int], base: int,
            sliding: int | None) -> tuple[list[int], torch.Tensor, dict[str, torch.Tensor], list[tuple[int, int]]]:
    """The flat sequence, its position ids, additive masks (full / sliding) and each window's context slots."""
    ids, pos, owner, slots = [], [], [], []
    for w, context in enumerate(windows):
        start = len(ids)
        ids += prefix + context
        pos += list(range(len(prefix) + len(context)))
        owner += [w] * (len(prefix) + len(context))
        slots.append((start + len(prefix), len(ids)))
    ids += block
    pos += list(range(base, base + len(block)))
    owner += [-1] * len(block)
    n = len(ids)
    p, o = torch.tensor(pos), torch.tensor(owner)
    slot = torch.arange(n)
    same_window = (o[:, None] == o[None, :]) & (o[:, None] >= 0) & (slot[None, :] <= slot[:, None])
    block_row = (o[:, None] < 0) & ((o[None, :] >= 0) | (slot[None, :] <= slot[:, None]))
    allowed = same_window | block_row
    masks = {"full_attention": allowed}
    if sliding:
        masks["sliding_attention"] = allowed & (p[None, :] > p[:, None] - sliding)
    additive = {k: torch.zeros(n, n).masked_fill(~m, torch.finfo(torch.float32).min)[None, None]
                for k, m in masks.items()}
    return ids, p[None], additive, slots


def _reference(draft, prefix: list[int], windows: list[list[int]], query: list[int], base: int, lookahead: int,
               forced: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """Scores of each window (concatenated) and the greedy lookahead tokens, the slow obvious way."""
    model = _eager_model(draft)
    sliding = getattr(model.config, "sliding_window", None) if "sliding_attention" in str(
        getattr(model.config, "layer_types", "")) else None
    block = list(query) + list(forced or [])

    def run(block_ids: list[int]):
        ids, pos, masks, slots = _layout(prefix, windows, block_ids, base, sliding)
        mask = masks if sliding else masks["full_attention"]
        with torch.no_grad():
            out = model(torch.tensor([ids]), position_ids=pos, attention_mask=mask, output_attentions=True)
        return out, slots, len(ids)

    if forced is None:
        for _ in range(lookahead):
            out, _, _ = run(block)
            token = int(out.logits[0, -1].argmax())
            if token == 0:
                break
            block.append(token)
    out, slots, n = run(block)
    rows = slice(n - len(block), n)
    scores = []
    for a, b in slots:
        per_layer = []
        for att in out.attentions:
            w = att[0][:, rows, a:b].double()
            w = torch.nan_to_num(w / w.sum(-1, keepdim=True), nan=0.0)  # a sliding layer may see none of it
            per_layer.append(w.amax(0))
        scores.append((torch.stack(per_layer).amax(0).amax(0) * (b - a)).numpy())
    return np.concatenate(scores), block[len(query):]


@pytest.mark.parametrize("arch", ARCHS)
def test_parallel_windows_match_an_eager_reference(arch: str) -> None:
    """Four windows under one block (gemma3: its sliding layers see only each window's tail)."""
    draft = tiny_draft(arch)
    context, query = _ids(300, 21), _ids(10, 22)
    cfg = ScoringConfig(lookahead=3, window_tokens=96)
    scorer = DraftScorer(draft, cfg)
    raw = scorer.score(context, query)
    windows = plan_windows(300, 96)
    assert raw.windows == len(windows) == 4
    prefix = scorer._prefix
    ref, tokens = _reference(draft, prefix, [context[a:b] for a, b in windows], query, len(prefix) + 96, 3)
    np.testing.assert_allclose(raw.scores, ref, atol=1e-5, rtol=1e-4)
    assert raw.lookahead_tokens == len(tokens)
    assert raw.forwarded == 300 + 4 * len(prefix) + 10 + len(tokens)  # one query block for all windows


def test_groups_of_windows_past_the_draft_context_share_the_latest_groups_lookahead() -> None:
    draft = tiny_draft("qwen2", max_pos=128)
    context, query = _ids(200, 23), _ids(10, 24)
    cfg = ScoringConfig(lookahead=3, window_tokens=40)
    scorer = DraftScorer(draft, cfg)
    raw = scorer.score(context, query)
    prefix = scorer._prefix
    per_group = (128 - 10 - 3) // (len(prefix) + 40)
    assert per_group == 2
    windows = [context[a:b] for a, b in plan_windows(200, 40)]
    groups = [windows[3:5], windows[1:3], windows[0:1]]  # counted from the latest window back
    base = len(prefix) + 40
    latest, tokens = _reference(draft, prefix, groups[0], query, base, 3)
    parts = [latest] + [_reference(draft, prefix, g, query, base, 3, forced=tokens)[0] for g in groups[1:]]
    np.testing.assert_allclose(raw.scores, np.concatenate(parts[::-1]), atol=1e-5, rtol=1e-4)
    assert raw.forwarded == 200 + 5 * len(prefix) + 3 * (10 + len(tokens))


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("sliding", [None, 20])
def test_attention_over_segments_equals_sdpa_over_the_concatenated_keys(softcap, sliding, fused) -> None:
    g = torch.Generator().manual_seed(3)
    heads, kv_heads, dim, q = 4, 2, 8, 70  # 70 rows: more than one block of rows
    segs = [(torch.randn(1, kv_heads, n, dim, generator=g), torch.randn(1, kv_heads, n, dim, generator=g), start)
            for n, start in ((30, 0), (25, 5), (10, 0))]  # sliding 20: the last one is hidden from every row
    query = torch.randn(1, heads, q, dim, generator=g)
    own_k, own_v = torch.randn(1, kv_heads, q + 3, dim, generator=g), torch.randn(1, kv_heads, q + 3, dim, generator=g)
    positions = torch.arange(40, 40 + q)
    slots = torch.arange(q + 3)
    causal = slots[None, :] <= slots[3:, None]
    out = attend_with_segments(query, own_k, own_v, causal[None, None], segs, positions, 0.3, sliding, softcap,
                               fused=fused)
    # reference: one softmax over the concatenated keys, the same masks, computed plainly
    keys = torch.cat([s[0] for s in segs] + [own_k], dim=2).repeat_interleave(heads // kv_heads, 1)
    values = torch.cat([s[1] for s in segs] + [own_v], dim=2).repeat_interleave(heads // kv_heads, 1)
    logits = (query @ keys.transpose(-1, -2)) * 0.3
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    seg_pos = torch.cat([torch.arange(s, s + k.shape[2]) for k, _, s in segs])
    visible = torch.ones(q, len(seg_pos), dtype=torch.bool)
    if sliding:
        visible = seg_pos[None, :] > positions[:, None] - sliding
    mask = torch.cat([visible, causal], dim=1)
    expected = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1) @ values
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)
    none_mask = attend_with_segments(query, own_k, own_v, None, segs, positions, 0.3, sliding, softcap, fused=fused)
    torch.testing.assert_close(none_mask, out)  # None = causal, as SDPA reads it


def test_fused_attention_over_segments_in_bf16_matches_the_fp32_softmax() -> None:
    g = torch.Generator().manual_seed(5)
    heads, kv_heads, dim, q = 6, 2, 16, 3
    segs = [(torch.randn(1, kv_heads, n, dim, generator=g), torch.randn(1, kv_heads, n, dim, generator=g), 0)
            for n in (64, 64, 40)]
    query = torch.randn(1, heads, q, dim, generator=g)
    own_k, own_v = torch.randn(1, kv_heads, q + 2, dim, generator=g), torch.randn(1, kv_heads, q + 2, dim, generator=g)
    positions = torch.arange(70, 70 + q)
    exact = attend_with_segments(query, own_k, own_v, None, segs, positions, 0.25, None, None, fused=False)
    half = [(k.bfloat16(), v.bfloat16(), s) for k, v, s in segs]
    fused = attend_with_segments(query.bfloat16(), own_k.bfloat16(), own_v.bfloat16(), None, half, positions, 0.25,
                                 None, None, fused=True)
    assert fused.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), exact, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(("dtype", "amx", "pays"), [
    (torch.float32, False, True), (torch.float32, True, True), (torch.bfloat16, True, True),
    (torch.bfloat16, False, False)])
def test_the_fused_kernel_is_taken_where_it_is_the_faster_one(dtype: torch.dtype, amx: bool, pays: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 anywhere, bf16 only with AMX tiles (with AVX512-BF16 alone the plain softmax is faster);
    the default then gives exactly what the chosen path gives."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    g = torch.Generator().manual_seed(7)
    segs = [(torch.randn(1, 2, 20, 8, generator=g).to(dtype), torch.randn(1, 2, 20, 8, generator=g).to(dtype), 0)]
    query = torch.randn(1, 4, 3, 8, generator=g).to(dtype)
    own_k, own_v = torch.randn(1, 2, 5, 8, generator=g).to(dtype), torch.randn(1, 2, 5, 8, generator=g).to(dtype)
    assert fused_attention_pays(query) == (pays and fused_attention_available(query))
    args = (query, own_k, own_v, None, segs, torch.arange(30, 33), 0.3, None, None)
    chosen = attend_with_segments(*args, fused=fused_attention_pays(query))
    torch.testing.assert_close(attend_with_segments(*args), chosen, atol=0, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_windows_give_the_same_scores_and_are_never_written(arch: str) -> None:
    draft = tiny_draft(arch)
    config = CompressionConfig(scoring=ScoringConfig(window_tokens=48))
    kv = KVPrefixCache(1 << 28)
    cached = SpecPrefillCompressor(draft, config, cache=CacheConfig(score_cache_entries=0), kv_cache=kv)
    fresh = SpecPrefillCompressor(draft, config, cache=CacheConfig(kv_cache_bytes=0, score_cache_entries=0))
    cached.score_segments(_segments(3), "q3")
    before = {key: [(k.clone(), v.clone()) for k, v, _ in entry.layers] for key, entry in kv._entries.items()}
    for n in (4, 5, 4):
        got = cached.score_segments(_segments(n), f"q{n}")
        want = fresh.score_segments(_segments(n), f"q{n}")
        assert got.windows > 3 and got.draft_tokens_reused > 0
        for a, b in zip(got.segments, want.segments):
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=1e-4)
    assert len(before) > 2
    for key, layers in before.items():
        for (k0, v0), (k1, v1, _) in zip(layers, kv._entries[key].layers):
            assert torch.equal(k0, k1) and torch.equal(v0, v1)
