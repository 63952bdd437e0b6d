"""Failure injection: a draft that raises lets everything through uncompressed, unless asked to raise."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.llms.specprefill import METADATA_KEY, SpecPrefillLLM
from llama_index.postprocessor.specprefill import SpecPrefillNodePostprocessor, SpecPrefillTransform
from specprefill_agents import SpecPrefillCompressor

from specprefill_agents.testing import failing_draft

from .conftest import FAST, recording_llm


@pytest.fixture(scope="module")
def broken() -> SpecPrefillCompressor:
    return SpecPrefillCompressor(failing_draft(), FAST, on_failure="raise")


def _messages(source: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="user", content="What does dedent do?"),
        ChatMessage(role="tool", content=source[:5000], additional_kwargs={"tool_call_id": "c1"}),
    ]


def test_llm_passes_the_chat_through_with_a_warning(broken, source_text, stats) -> None:
    inner, recorder = recording_llm()
    messages = _messages(source_text)
    with pytest.warns(RuntimeWarning, match="compression failed"):
        response = SpecPrefillLLM(inner, broken).chat(messages)
    assert recorder.calls[0][0] == messages
    report = response.additional_kwargs[METADATA_KEY]
    assert "out of memory" in report["failure"] and report["original_tokens"] == report["compressed_tokens"]
    assert stats.summary()["failures"] == 1


def test_llm_passthrough_is_silent_and_raise_raises(broken, source_text, recwarn) -> None:
    inner, recorder = recording_llm()
    asyncio.run(SpecPrefillLLM(inner, broken, on_failure="passthrough").achat(_messages(source_text)))
    assert recorder.calls[0][0] == _messages(source_text)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    with pytest.raises(RuntimeError, match="out of memory"):
        SpecPrefillLLM(inner, broken, on_failure="raise").chat(_messages(source_text))
    assert len(recorder.calls) == 1  # the inner model was not called after the failure


def test_postprocessor_and_transform_pass_nodes_through(broken, source_text) -> None:
    nodes = [NodeWithScore(node=TextNode(text=source_text[:4000], id_="a"), score=0.7)]
    with pytest.warns(RuntimeWarning, match="compression failed"):
        out = SpecPrefillNodePostprocessor(broken).postprocess_nodes(nodes, query_str="dedent")
    assert out[0].node.text == nodes[0].node.text and out[0].score == 0.7
    assert "out of memory" in out[0].node.metadata["specprefill"]["failure"]
    with pytest.raises(RuntimeError, match="out of memory"):
        SpecPrefillNodePostprocessor(broken, on_failure="raise").postprocess_nodes(nodes, query_str="dedent")
    with pytest.warns(RuntimeWarning, match="compression failed"):
        assert SpecPrefillTransform(broken)([nodes[0].node])[0].text == nodes[0].node.text
    with pytest.raises(RuntimeError, match="out of memory"):
        SpecPrefillTransform(broken, on_failure="raise")([nodes[0].node])
