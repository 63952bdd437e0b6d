"""Scoring: exact against an eager-attention reference, windows, the forward keyword, kernels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from specprefill_agents import CompressionConfig, SpecPrefillCompressor
from specprefill_agents.config import ScoringConfig
from specprefill_agents.errors import ConfigError, ScoringError
from specprefill_agents.kernels import install_cpu_gemv
from specprefill_agents.scoring import DraftScorer, plan_windows
from specprefill_agents.segment_scoring import smooth_scores
from specprefill_agents.testing import ARCHS, tiny_draft


def _ids(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 500, (n,), generator=g).tolist()


def _eager_model(draft):
    model = AutoModelForCausalLM.from_config(draft.model.config, attn_implementation="eager").eval()
    model.load_state_dict(draft.model.state_dict())
    return model


def _greedy(model, ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([ids + out])).logits[0, -1].argmax()))
    return out


def _eager_reference(draft, context, query, lookahead_tokens) -> np.ndarray:
    """Materialise full attention with the eager kernel and aggregate it the slow, obvious way:
    softmax restricted to the context keys, max over heads, layers and query rows."""
    model = _eager_model(draft)
    ids = context + query
    ids = ids + _greedy(model, ids, lookahead_tokens)
    with torch.no_grad():
        attentions = model(torch.tensor([ids]), output_attentions=True).attentions
    n = len(context)
    per_layer = []
    for att in attentions:
        w = att[0][:, n:, :n].double()
        per_layer.append((w / w.sum(-1, keepdim=True)).amax(0))
    return (torch.stack(per_layer).amax(0).amax(0) * n).numpy()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lookahead", [0, 4])
def test_scores_match_eager_attention(arch: str, lookahead: int) -> None:
    draft = tiny_draft(arch)
    context, query = _ids(150, 1), _ids(12, 2)  # 150 > gemma3's sliding window of 64
    cfg = ScoringConfig(lookahead=lookahead, prefill_chunk=40)
    raw = DraftScorer(draft, cfg).score(context, query)
    ref = _eager_reference(draft, context, query, raw.lookahead_tokens)
    assert raw.scores.shape == (150,)
    assert raw.lookahead_tokens <= lookahead
    np.testing.assert_allclose(raw.scores, ref, atol=1e-5, rtol=1e-4)
    assert raw.forwarded == 150 + 12 + raw.lookahead_tokens
    assert raw.windows == 1


def test_prefill_chunk_does_not_change_scores() -> None:
    draft = tiny_draft("qwen2")
    context, query = _ids(200, 5), _ids(10, 6)
    a = DraftScorer(draft, ScoringConfig(prefill_chunk=16)).score(context, query).scores
    b = DraftScorer(draft, ScoringConfig(prefill_chunk=4096)).score(context, query).scores
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_deterministic() -> None:
    draft = tiny_draft("gemma3")
    context, query = _ids(120, 7), _ids(8, 8)
    scorer = DraftScorer(draft)
    np.testing.assert_array_equal(scorer.score(context, query).scores, scorer.score(context, query).scores)


def test_long_input_is_scored_in_windows_without_truncation() -> None:
    draft = tiny_draft("llama", max_pos=128)
    context, query = _ids(700, 9), _ids(10, 10)
    cfg = ScoringConfig(lookahead=3)
    raw = DraftScorer(draft, cfg).score(context, query)
    room = 128 - 10 - 3
    assert raw.windows == -(-700 // room)
    assert raw.scores.shape == (700,)
    assert np.all(np.isfinite(raw.scores)) and np.all(raw.scores >= 0)
    # every window's scores are normalised to its length: uniform attention scores 1.0 on average
    for a, b in plan_windows(700, room):
        assert abs(float(raw.scores[a:b].mean()) - 1.0) < 0.6
    # one window per query block here (the draft's context holds one): the latest decodes the
    # lookahead tokens, the earlier blocks append them
    assert raw.forwarded == 700 + raw.windows * (10 + raw.lookahead_tokens)


def test_default_windows_hold_1024_context_tokens_whatever_the_query_length() -> None:
    draft = tiny_draft("llama", max_pos=2048)
    scorer = DraftScorer(draft, ScoringConfig(lookahead=0))
    assert scorer.window_room(300) == 1024 and scorer.window_room(10) == 1024
    assert DraftScorer(draft, ScoringConfig(window_tokens=None, lookahead=0)).window_room(300) == 2048 - 300
    raw = scorer.score(_ids(2100, 15), _ids(300, 16))
    assert raw.windows == 3 and raw.scores.shape == (2100,)


def test_explicit_window_tokens_override() -> None:
    draft = tiny_draft("llama")
    raw = DraftScorer(draft, ScoringConfig(window_tokens=64, lookahead=0)).score(_ids(100, 11), _ids(8, 12))
    assert raw.windows == 2 and raw.scores.shape == (100,)


def test_query_longer_than_limit_is_cut_to_its_tail() -> None:
    draft = tiny_draft("llama", max_pos=128)
    scorer = DraftScorer(draft, ScoringConfig(lookahead=0))
    long_query = _ids(200, 13)
    raw = scorer.score(_ids(50, 14), long_query)
    assert raw.forwarded == 50 + scorer.query_limit()
    same = scorer.score(_ids(50, 14), long_query[-scorer.query_limit():])
    np.testing.assert_array_equal(raw.scores, same.scores)


def test_empty_context_and_empty_query() -> None:
    scorer = DraftScorer(tiny_draft("llama"))
    raw = scorer.score([], _ids(5, 15))
    assert raw.scores.shape == (0,) and raw.windows == 0 and raw.forwarded == 0
    with pytest.raises(ScoringError):
        scorer.score(_ids(5, 16), [])


def test_plain_forward_unchanged_by_capturing_attention() -> None:
    draft = tiny_draft("qwen2", seed=3)
    ids = torch.tensor([_ids(40, 17)])
    with torch.no_grad():
        before = draft.model(ids).logits.clone()
        DraftScorer(draft)  # installs the capturing attention
        after = draft.model(ids).logits
    torch.testing.assert_close(before, after)


def test_smooth_scores_respects_boundaries_and_edges() -> None:
    s = np.array([0, 0, 9, 0, 0, 5, 5, 5], dtype=np.float32)
    out = smooth_scores(s, 3, boundaries=[5])
    np.testing.assert_allclose(out[:5], [0, 3, 3, 3, 0])
    np.testing.assert_allclose(out[5:], [5, 5, 5])  # the spike never leaks past the boundary
    np.testing.assert_array_equal(smooth_scores(s, 1), s)
    assert smooth_scores(np.zeros(0, dtype=np.float32), 13).shape == (0,)


def test_plan_windows_cover_everything_in_order() -> None:
    for n, room in [(1, 5), (10, 5), (11, 5), (1000, 97)]:
        windows = plan_windows(n, room)
        assert windows[0][0] == 0 and windows[-1][1] == n
        assert all(a < b <= a + room for a, b in windows)
        assert all(w[1] == v[0] for w, v in zip(windows, windows[1:]))
    assert plan_windows(0, 5) == []


@pytest.mark.parametrize("bad", [dict(lookahead=-1), dict(lookahead=True), dict(lookahead="4"), dict(window_tokens=8),
                                 dict(prefill_chunk=1), dict(window_tokens=2.5)])
def test_invalid_scoring_config(bad: dict) -> None:
    with pytest.raises(ConfigError):
        ScoringConfig(**bad)


def test_scoring_config_holds_only_user_settings() -> None:
    assert set(ScoringConfig().to_dict()) == {"lookahead", "window_tokens", "prefill_chunk"}
    with pytest.raises(TypeError):
        ScoringConfig(window_query="forward")  # type: ignore[call-arg]


def test_a_model_switched_away_from_the_scoring_attention_is_a_clear_scoring_error() -> None:
    """The attention is installed once, by the scorer; a library that switches the shared model
    back gets a ScoringError saying so, and the compressor passes the input through."""
    draft = tiny_draft("llama", seed=5)
    one, parallel = DraftScorer(draft), DraftScorer(draft, ScoringConfig(window_tokens=64))
    text = " ".join(f"word{i}" for i in range(300))
    comp = SpecPrefillCompressor(draft, on_failure="passthrough")
    assert comp.compress(text).stats.failure is None
    query = _ids(6, 19)
    assert one.score(_ids(60, 18), query).scores.sum() > 0
    draft.model.set_attn_implementation("sdpa")  # e.g. another library sharing the model
    for scorer, n in ((one, 60), (parallel, 300)):  # one window; parallel windows
        with pytest.raises(ScoringError, match="keep the scoring attention"):
            scorer.score(_ids(n, 18), query)
    res = comp.compress(text, query="word7")
    assert res.texts == [text] and (res.stats.failure or "").startswith("ScoringError")


def test_scoring_passes_the_kv_cache_under_the_keyword_transformers_takes() -> None:
    """transformers 5.24 deprecates ``past_key_values=`` for ``cache=``: no FutureWarning on a run."""
    draft = tiny_draft("llama", seed=4)
    comp = SpecPrefillCompressor(draft, CompressionConfig(scoring=ScoringConfig(window_tokens=64)),
                                 on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for n in (50, 300):  # one window (fused query), parallel windows (snapshots + block)
            comp.compress(" ".join(f"token{i}" for i in range(n)), query="token7")


def test_bf16_cpu_decode_linears_run_as_gemv_with_the_same_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import DynamicCache

    from specprefill_agents._compat import _cache_keyword

    draft = tiny_draft("llama", seed=6)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert install_cpu_gemv(draft.model) == 0  # fp32: F.linear is already at GEMV speed
    draft.model.to(torch.bfloat16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert install_cpu_gemv(draft.model) == 0  # bf16 without AMX: oneDNN's GEMM is the faster one
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    prompt, step = torch.tensor([_ids(30, 20)]), torch.tensor([_ids(1, 21)])

    def decode() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            cache = {_cache_keyword(type(draft.model)): DynamicCache(config=draft.model.config)}
            first = draft.model(prompt, use_cache=True, **cache).logits.float()
            return first, draft.model(step, use_cache=True, **cache).logits.float()

    before = decode()
    DraftScorer(draft)  # switches the one-row linears (layers and the vocab projection)
    linears = [m for m in draft.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all("forward" in vars(m) for m in linears)
    assert install_cpu_gemv(draft.model) == 0  # idempotent
    after = decode()
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)  # many rows: F.linear as before
    torch.testing.assert_close(after[1], before[1], atol=1e-2, rtol=1e-2)
    assert DraftScorer(draft).score(_ids(50, 22), _ids(5, 23)).scores.sum() > 0
