"""What a call may cost and what it says when it does not compress: input size limit, deadline,
protected text kept out of the draft, whitespace around a text, pass-through reasons, a hub id
with no network."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from specprefill_agents import (
    CompressionConfig,
    DeadlineExceededError,
    DraftModelError,
    InputError,
    InputTooLargeError,
    Segment,
    SpecPrefillCompressor,
    load_draft,
)
from specprefill_agents.limits import MAX_INPUT_LIMIT, default_input_limit
from specprefill_agents.segment_scoring import PROTECTED_EDGE_TOKENS
from specprefill_agents.testing import tiny_draft

TEXT = " ".join(f"The setting number {i} controls how wide each wrapped line may grow." for i in range(40))


def _comp(on_failure: str = "raise", **config: object) -> SpecPrefillCompressor:
    return SpecPrefillCompressor(tiny_draft("llama"), CompressionConfig(**config),  # type: ignore[arg-type]
                                 on_failure=on_failure, cache=None)  # type: ignore[arg-type]


def test_an_input_over_max_input_tokens_passes_through_or_raises_a_typed_error() -> None:
    with pytest.warns(RuntimeWarning, match="max_input_tokens=50"):
        res = _comp("warn", max_input_tokens=50).compress(TEXT, query="width")
    assert res.texts == [TEXT] and (res.stats.failure or "").startswith("InputTooLargeError")
    assert res.stats.draft_tokens_forwarded == 0
    with pytest.raises(InputTooLargeError) as info:
        _comp("raise", max_input_tokens=50).compress(TEXT, query="width")
    assert isinstance(info.value, InputError)
    assert _comp("raise", max_input_tokens=100_000).compress(TEXT, query="width").stats.failure is None


def test_the_default_input_limit_is_sized_to_the_draft_and_the_device() -> None:
    with torch.device("meta"):
        draft_135m = torch.nn.Linear(15_000, 9_000)  # 135M parameters, no memory
    cpu = default_input_limit(draft_135m, torch.device("cpu"))
    gpu = default_input_limit(draft_135m, torch.device("cuda"))
    assert 30_000 < cpu < 36_000 and gpu == 8 * cpu
    assert default_input_limit(torch.nn.Linear(4, 4), torch.device("cpu")) == MAX_INPUT_LIMIT


def test_a_deadline_passes_the_input_through_and_the_config_default_can_be_replaced_per_call() -> None:
    with pytest.warns(RuntimeWarning, match="deadline"):
        res = _comp("warn").compress(TEXT, query="width", deadline_s=1e-9)
    assert res.texts == [TEXT] and (res.stats.failure or "").startswith("DeadlineExceededError")
    with pytest.raises(DeadlineExceededError) as info:
        _comp("raise", deadline_s=1e-9).compress(TEXT, query="width")
    assert isinstance(info.value, TimeoutError)
    relaxed = _comp("raise", deadline_s=1e-9).compress(TEXT, query="width", deadline_s=600.0)
    assert relaxed.stats.failure is None and relaxed.compressed_tokens < relaxed.original_tokens


def test_protected_text_is_read_by_the_draft_only_at_its_edges() -> None:
    comp = SpecPrefillCompressor(tiny_draft("llama", max_pos=4096), on_failure="raise")  # windows side by side
    alone = comp.compress_segments([Segment(TEXT)], query="width")
    argument = " ".join(f'"key_{i}": "value {i}",' for i in range(2_000))  # a huge tool-call argument
    with_arg = comp.compress_segments([Segment(argument, protected=True), Segment(TEXT)], query="width")
    assert with_arg.segments[0].text == argument
    extra = with_arg.stats.draft_tokens_forwarded - alone.stats.draft_tokens_forwarded
    edge = PROTECTED_EDGE_TOKENS
    assert 2 * edge <= extra <= 2 * edge + 64  # its edges (and a separator, a BOS per window), not ~20k tokens
    short = " ".join(f'"key_{i}": "value {i}",' for i in range(40))  # instructions: read whole
    with_short = comp.compress_segments([Segment(short, protected=True), Segment(TEXT)], query="width")
    short_tokens = len(comp.draft.tokenizer(short, add_special_tokens=False)["input_ids"])
    assert short_tokens < 2 * edge
    assert with_short.stats.draft_tokens_forwarded - alone.stats.draft_tokens_forwarded >= short_tokens
    assert comp.compress_segments([Segment(argument, protected=True), Segment(TEXT)],
                                  query="width").texts == with_arg.texts  # deterministic


def test_whitespace_around_a_text_is_never_an_anchor_and_the_budget_holds() -> None:
    padded = "\n" * 10_000 + TEXT + "\n" * 10_000
    res = _comp(keep_ratio=0.25).compress(padded, query="width", token_counter=len)
    assert res.compressed_tokens <= res.stats.budget_tokens
    assert not res.text.startswith("\n") and not res.text.endswith("\n\n")  # the runs of newlines are cut
    assert res.text.startswith(TEXT[:10]) and TEXT.rstrip().endswith(res.text.rstrip()[-10:])


def test_a_compressible_segment_that_comes_back_whole_says_why() -> None:
    comp = _comp(min_tokens=64)
    res = comp.compress_segments([Segment("Short note."), Segment("\ud800 lone surrogate " * 30),
                                  Segment(TEXT), Segment(TEXT + " x", protected=True)], query="width")
    reasons = res.stats.passthrough_reasons
    assert reasons[0].startswith("shorter than min_tokens") and "UTF-8" in reasons[1]
    assert 2 not in reasons and 3 not in reasons  # compressed; protected segments are never listed
    whole = comp.compress(TEXT, query="width", keep_ratio=1.0)
    assert whole.texts == [TEXT] and whole.stats.passthrough_reasons == {0: "the compressible text fits the budget"}


def test_a_hub_id_fails_fast_and_says_why_when_the_hub_is_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DraftModelError, match=r"hub is offline \(HF_HUB_OFFLINE is set\)"):
        load_draft("some-org/model-that-is-not-cached")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DraftModelError, match=r"no route to 127\.0\.0\.1:9"):
            load_draft("some-org/model-that-is-not-cached")  # a refused connection, not retries


@pytest.mark.parametrize("text", [
    "2026-12-01T12:00:00Z " + TEXT + " x = 1",  # one line of prose with a timestamp and an assignment
    json.dumps({f"key{i}": {"v": i, "s": f"value {i} text"} for i in range(120)}, separators=(",", ":")),
    "🙂🚀 launch ok " * 200,
    "abcdefghij" * 3000,  # no space, no sentence: cut at draft-token boundaries
], ids=["timestamp line", "minified JSON", "emoji line", "no spaces"])
def test_long_single_lines_compress_under_the_budget(text: str) -> None:
    res = _comp(keep_ratio=0.25).compress(text, query="width")
    assert not res.stats.budget_exceeded and res.compressed_tokens <= res.stats.budget_tokens
    assert res.stats.passthrough_reasons == {}
