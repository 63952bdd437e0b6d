"""Results survive JSON exactly: what the draft service sends is what the compressor returned."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest

from specprefill_agents import CompressionConfig, InputError, ScoringConfig, Segment, SpecPrefillCompressor
from specprefill_agents.serialization import result_from_dict, result_to_dict
from specprefill_agents.testing import tiny_draft


@pytest.fixture(scope="module")
def result():
    comp = SpecPrefillCompressor(
        tiny_draft("llama", max_pos=2048),
        CompressionConfig(keep_ratio=0.3, min_tokens=16, scoring=ScoringConfig(lookahead=1)),
        on_failure="raise",
    )
    segs = [
        Segment("system prompt", role="system", protected=True, id="s"),
        Segment(inspect.getsource(textwrap)[:2500], role="tool", id="t", kind="code"),
        Segment("raw \udcff bytes " * 30, role="tool"),
        Segment("What does dedent do?", role="user"),
    ]
    return comp.compress_segments(segs)


def test_round_trip_through_json_is_exact(result) -> None:
    assert result.segments[1].text != result.segments[1].text[:0] and result.stats.timings
    back = result_from_dict(json.loads(json.dumps(result_to_dict(result))))
    assert back == result
    assert back.segments[2].text == result.segments[2].text  # lone surrogates kept
    assert back.stats.timings == result.stats.timings  # floats exact


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("stats"),
        lambda d: d["segments"][0].update(colour="red"),
        lambda d: d["stats"].update(made_up=1),
        lambda d: d["kept_spans"].pop(),
        lambda d: d["kept_spans"][0].append(["a"]),
    ],
)
def test_malformed_dicts_raise_input_error(result, damage) -> None:
    data = json.loads(json.dumps(result_to_dict(result)))
    damage(data)
    with pytest.raises(InputError):
        result_from_dict(data)
