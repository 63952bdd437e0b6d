"""window_query="shift": earlier windows scored with the latest window's query rows moved by RoPE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from specprefill_agents import CacheConfig, CompressionConfig, Segment, SpecPrefillCompressor
from specprefill_agents._compat import install_scoring_attention, rope_frequencies, rope_shift
from specprefill_agents.cache import KVPrefixCache
from specprefill_agents.config import ScoringConfig
from specprefill_agents.scoring import DraftScorer, plan_windows
from tests._tiny import ARCHS, tiny_draft
from tests.unit.test_cache import DOCS


def _ids(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 500, (n,), generator=g).tolist()


def _queries(model, ids: list[int], first_position: int) -> list[torch.Tensor]:
    """Each layer's post-RoPE queries of ``ids`` placed from ``first_position`` on."""
    found: list[torch.Tensor] = []

    class Probe:
        def record(self, module, query, key, *args) -> None:
            found.append(query[0].float())

    from specprefill_agents._compat import capture_attention

    positions = torch.arange(first_position, first_position + len(ids))[None]
    with torch.no_grad(), capture_attention(Probe()):
        model(input_ids=torch.tensor([ids]), position_ids=positions, use_cache=False)
    return found


@pytest.mark.parametrize("arch", ARCHS)
def test_rope_shift_moves_every_layers_queries_like_the_model_does(arch: str) -> None:
    """Hidden states depend only on relative positions, so a sequence placed ``d`` later has
    every query rotated by ``d``: rope_shift must reproduce that, layer by layer."""
    draft = tiny_draft(arch)
    install_scoring_attention(draft.model)
    freqs = rope_frequencies(draft.model, 5)
    assert freqs is not None and sorted(freqs) == list(range(draft.model.config.num_hidden_layers))
    ids = _ids(20, 1)
    base, moved = _queries(draft.model, ids, 0), _queries(draft.model, ids, 173)
    for layer, (q0, q1) in enumerate(zip(base, moved)):
        torch.testing.assert_close(rope_shift(q0, 173, freqs[layer]), q1, atol=2e-5, rtol=1e-4)


def test_a_draft_whose_queries_do_not_rotate_is_not_shifted() -> None:
    """A draft with no usable RoPE (here: positions ignored) keeps one query forward per window."""
    draft = tiny_draft("llama", max_pos=128, seed=7)
    rotary = draft.model.model.rotary_emb
    original = rotary.forward
    rotary.forward = lambda x, position_ids: original(x, torch.zeros_like(position_ids))
    try:
        install_scoring_attention(draft.model)
        assert rope_frequencies(draft.model, 5) is None
        context, query = _ids(300, 2), _ids(10, 3)
        shift = DraftScorer(draft, ScoringConfig(lookahead=2, window_query="shift")).score(context, query)
        forward = DraftScorer(draft, ScoringConfig(lookahead=2, window_query="forward")).score(context, query)
    finally:
        rotary.forward = original
    np.testing.assert_array_equal(shift.scores, forward.scores)
    assert shift.forwarded == forward.forwarded


def _reference_shifted(draft, window: list[int], latest: list[int], block: list[int]) -> np.ndarray:
    """Scores of ``window`` under the shift rule, computed with the model's own modules: the block
    runs after ``latest``; each layer's block queries are re-projected from the layer's input at
    the positions right after ``window`` and attend to ``window``'s keys (max over heads, layers,
    rows, as the default config)."""
    model = draft.model.model
    with torch.no_grad():
        hidden = draft.model(torch.tensor([latest + block]), output_hidden_states=True).hidden_states
        keys = draft.model(torch.tensor([window]), use_cache=True).past_key_values
        m, r = len(window), len(block)
        positions = torch.arange(m, m + r)[None]
        per_layer = []
        for i, layer in enumerate(model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(hidden[i][:, len(latest):])
            q = attn.q_proj(h).view(1, r, -1, attn.head_dim).transpose(1, 2)
            cos, sin = model.rotary_emb(h, positions)
            q, _ = apply_rotary_pos_emb(q, q, cos, sin)
            k = keys.layers[i].keys.repeat_interleave(q.shape[1] // keys.layers[i].keys.shape[1], dim=1)
            w = torch.softmax((q @ k.transpose(-1, -2)).double() * attn.scaling, dim=-1)[0]
            per_layer.append(w.amax(0))
        return (torch.stack(per_layer).amax(0).amax(0) * m).numpy()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shifted_windows_match_a_reference_built_from_the_models_modules(arch: str) -> None:
    draft = tiny_draft(arch, max_pos=128)
    context, query = _ids(250, 4), _ids(10, 5)
    cfg = ScoringConfig(lookahead=3, pool_kernel=1, window_query="shift")
    raw = DraftScorer(draft, cfg).score(context, query)
    windows = plan_windows(250, 128 - 10 - 3)
    assert raw.windows == len(windows) == 3
    a_last, b_last = windows[-1]
    forward = DraftScorer(draft, cfg.replace(window_query="forward")).score(context, query)
    np.testing.assert_allclose(raw.scores[a_last:], forward.scores[a_last:], atol=1e-6)  # the latest: unchanged
    lookahead = _lookahead(draft, context[a_last:] + query, raw.lookahead_tokens)
    for a, b in windows[:-1]:
        ref = _reference_shifted(draft, context[a:b], context[a_last:], query + lookahead)
        np.testing.assert_allclose(raw.scores[a:b], ref, atol=1e-5, rtol=1e-4)
    # earlier windows forward their context only: the query block and lookahead run once
    assert raw.forwarded == 250 + 10 + raw.lookahead_tokens
    assert raw.lookahead_tokens == 3


def _lookahead(draft, ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            out.append(int(draft.model(torch.tensor([ids + out])).logits[0, -1].argmax()))
    return out


def test_unchanged_windows_cost_no_forward_and_match_a_full_recompute() -> None:
    draft = tiny_draft("llama", max_pos=128)
    cfg = ScoringConfig(lookahead=3, window_query="shift")
    scorer = DraftScorer(draft, cfg)
    context, query = _ids(400, 6), _ids(10, 7)
    kv = KVPrefixCache(10**9)
    scorer.score(context[:300], _ids(10, 8), split_points=[100, 200], kv_cache=kv)
    raw = scorer.score(context, query, split_points=[100, 200, 300], kv_cache=kv)
    fresh = scorer.score(context, query)
    np.testing.assert_allclose(raw.scores, fresh.scores, atol=2e-5, rtol=1e-4)
    room = 128 - 10 - 3
    # windows 0 and 1 (230 tokens) are full and cached: no forward; window 2 was cached up to 300
    assert raw.reused == 300 and raw.forwarded == 100 + 10 + raw.lookahead_tokens
    assert len(plan_windows(400, room)) == 4


def test_agent_loop_with_shifted_windows_equals_no_cache() -> None:
    draft = tiny_draft("qwen2", max_pos=256)
    config = CompressionConfig(keep_ratio=0.3, scoring=ScoringConfig(window_query="shift"))
    cached = SpecPrefillCompressor(draft, config, cache=CacheConfig(score_cache_entries=0))
    fresh = SpecPrefillCompressor(draft, config, cache=CacheConfig(kv_cache_bytes=0, score_cache_entries=0))
    segments: list[Segment] = []
    for step, doc in enumerate(DOCS):
        segments = [*segments, Segment(doc, role="tool", id=f"t{step}")]
        question = f"step {step}: what does the function do?"
        a, b = cached.compress_segments(segments, question), fresh.compress_segments(segments, question)
        assert a.texts == b.texts
    assert a.stats.windows > 2 and a.stats.draft_tokens_reused > 0
    assert a.stats.draft_tokens_forwarded < b.stats.draft_tokens_forwarded / 3
