"""Fail-open means every failure after the arguments were checked; bad arguments raise typed errors up front."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from specprefill_agents import (
    APPROXIMATE,
    CompressionConfig,
    ConfigError,
    DraftModelError,
    InputError,
    Segment,
    SpecPrefillCompressor,
)
from specprefill_agents.draft import converted_gguf_dir
from specprefill_agents.testing import tiny_draft

TEXT = " ".join(f"The setting number {i} controls how wide each wrapped line may grow." for i in range(40))


def _exploding(on_failure: str, error: BaseException) -> SpecPrefillCompressor:
    comp = SpecPrefillCompressor(tiny_draft("llama"), on_failure=on_failure)  # type: ignore[arg-type]
    scorer = comp._ensure_scorer()

    def explode(*args: object, **kwargs: object) -> None:
        raise error

    scorer.score = explode  # type: ignore[method-assign]
    return comp


@pytest.mark.parametrize("error", [ValueError("v"), IndexError("i"), KeyError("k"), TypeError("t"),
                                   AssertionError("a"), RecursionError("r"), ZeroDivisionError("z")])
def test_any_error_from_the_draft_passes_through_under_warn_and_passthrough(error: BaseException) -> None:
    with pytest.warns(RuntimeWarning, match="passed through"):
        res = _exploding("warn", error).compress(TEXT, query="width")
    assert res.texts == [TEXT] and res.stats.failure.startswith(type(error).__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = _exploding("passthrough", error).compress(TEXT, query="width")
    assert res.texts == [TEXT] and res.stats.failure
    with pytest.raises(type(error)):
        _exploding("raise", error).compress(TEXT, query="width")


@pytest.mark.parametrize("token_counter", [None, len])
def test_a_draft_that_cannot_load_passes_through_with_or_without_a_counter(
        monkeypatch: pytest.MonkeyPatch, token_counter: object) -> None:
    import specprefill_agents.compressor as mod

    def fail(config: object) -> None:
        raise DraftModelError("no such draft (simulated)")

    monkeypatch.setattr(mod, "load_draft", fail)
    comp = SpecPrefillCompressor("some/hub-id", on_failure="passthrough", token_counter=token_counter)
    res = comp.compress(TEXT, query="width")
    assert res.texts == [TEXT] and "no such draft" in (res.stats.failure or "")
    assert res.stats.counted_with == ("len" if token_counter else APPROXIMATE)
    with pytest.raises(DraftModelError):
        SpecPrefillCompressor("some/hub-id", on_failure="raise", token_counter=token_counter).compress(TEXT)


def test_a_token_counter_that_raises_passes_through_counted_approximately() -> None:
    def broken(text: str) -> int:
        return len(text) // 0

    comp = SpecPrefillCompressor(tiny_draft("llama"), on_failure="passthrough")
    res = comp.compress(TEXT, query="width", token_counter=broken)
    assert res.texts == [TEXT] and res.stats.failure.startswith("ZeroDivisionError")
    assert res.stats.counted_with == APPROXIMATE and res.stats.original_tokens == (len(TEXT) + 3) // 4


def test_a_cache_dir_that_is_a_file_is_a_draft_model_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file, not a directory")
    with pytest.raises(DraftModelError, match="writable directory"):
        converted_gguf_dir(tmp_path / "model.gguf", not_a_dir, sha="0" * 64)


@pytest.mark.parametrize("segment", [Segment(TEXT, role=None), Segment(TEXT, kind="bogus"),  # type: ignore[arg-type]
                                     Segment(TEXT, protected="yes"), Segment(TEXT, id=3)])  # type: ignore[arg-type]
def test_malformed_segments_are_rejected_before_any_scoring(segment: Segment) -> None:
    comp = _exploding("raise", AssertionError("the draft must not run"))
    with pytest.raises(InputError):
        comp.compress_segments([segment])
    with pytest.raises(InputError):
        comp.score_segments([segment])


@pytest.mark.parametrize("top_p", ["x", True, 0.0, 1.5])
def test_top_p_must_be_a_number_in_range(top_p: object) -> None:
    with pytest.raises(ConfigError):
        CompressionConfig(top_p=top_p)  # type: ignore[arg-type]


def test_a_per_call_budget_replaces_only_its_own_setting_and_the_smaller_wins() -> None:
    capped = SpecPrefillCompressor(tiny_draft("llama"), CompressionConfig(max_tokens=60), on_failure="raise")
    res = capped.compress(TEXT, query="width", keep_ratio=0.5)  # the configured cap stays
    assert res.stats.budget_tokens == 60 and res.compressed_tokens <= 60
    ratio = SpecPrefillCompressor(tiny_draft("llama"), CompressionConfig(keep_ratio=0.1), on_failure="raise")
    res = ratio.compress(TEXT, query="width", max_tokens=10_000)  # the configured ratio stays
    assert res.stats.budget_tokens == -(-res.original_tokens // 10)
    assert ratio.compress(TEXT, query="width", keep_ratio=1.0, max_tokens=40).stats.budget_tokens == 40
