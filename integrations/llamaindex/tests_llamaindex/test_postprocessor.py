"""The node postprocessor: identity, order, scores, one budget, stats hidden from the LLM, query engines."""

from __future__ import annotations

import asyncio
import logging
import pytest
from llama_index.core import Document, SummaryIndex
from llama_index.core.llms.mock import MockLLM
from llama_index.core.schema import (
    ImageNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.postprocessor.specprefill import SpecPrefillNodePostprocessor, SpecPrefillTransform
from specprefill_agents import CompressionConfig, ConfigError, SpecPrefillCompressor
from specprefill_agents.integration import DOCUMENT_SETTINGS
from specprefill_agents.testing import (ANSWER_SENTENCE, PASSAGES_QUESTION, KeywordSemantic, kept_in_order,
                                        retrieved_passages)


def _nodes(source: str) -> list[NodeWithScore]:
    a = TextNode(
        text=source[:3000],
        id_="node-a",
        metadata={"file": "textwrap.py", "part": 1},
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc-1")},
    )
    image = ImageNode(image="aGVsbG8=", text="a chart", id_="node-img", metadata={"file": "plot.png"})
    b = TextNode(
        text=source[3000:6500],
        id_="node-b",
        metadata={"file": "textwrap.py", "part": 2},
        excluded_llm_metadata_keys=["part"],
        relationships={NodeRelationship.PREVIOUS: RelatedNodeInfo(node_id="node-a")},
    )
    return [NodeWithScore(node=a, score=0.91), NodeWithScore(node=image, score=0.5), NodeWithScore(node=b, score=0.2)]


def test_nodes_keep_identity_order_scores_and_metadata(compressor, source_text) -> None:
    nodes = _nodes(source_text)
    out = SpecPrefillNodePostprocessor(compressor).postprocess_nodes(nodes, query_str="What does dedent do?")
    assert [(n.node.node_id, n.score, type(n.node)) for n in out] == [
        (n.node.node_id, n.score, type(n.node)) for n in nodes
    ]
    for new, old in zip(out, nodes):
        assert new.node.relationships == old.node.relationships
        assert {k: v for k, v in new.node.metadata.items() if k != "specprefill"} == old.node.metadata
    assert out[1].node is nodes[1].node  # the image node passes untouched
    for i in (0, 2):
        new, old = out[i].node, nodes[i].node
        assert len(new.text) < len(old.text) and kept_in_order(new.text, old.text)
        info = new.metadata["specprefill"]
        assert info["compressed_tokens"] < info["original_tokens"] and info["query"] == "What does dedent do?"
        assert "specprefill" not in new.get_content(MetadataMode.LLM)
        assert "specprefill" not in new.get_content(MetadataMode.EMBED)
        assert "textwrap.py" in new.get_content(MetadataMode.LLM)  # the user's metadata is still shown
    assert out[2].node.excluded_llm_metadata_keys == ["part", "specprefill"]
    assert nodes[0].node.text == source_text[:3000] and "specprefill" not in nodes[0].node.metadata  # not mutated


def test_one_budget_across_nodes_in_the_targets_tokens(compressor, source_text) -> None:
    def words(text: str) -> int:
        return len(text.split())

    nodes = _nodes(source_text)
    out = SpecPrefillNodePostprocessor(compressor, budget_tokens=150, token_counter=words).postprocess_nodes(
        nodes, query_str="wrap"
    )
    infos = [n.node.metadata["specprefill"] for n in out if "specprefill" in n.node.metadata]
    assert len(infos) == 2 and {i["counted_with"] for i in infos} == {"words"}
    assert sum(i["original_tokens"] for i in infos) > 600
    assert sum(words(out[i].node.text) for i in (0, 2)) <= 150 + 20  # within a unit or so of the budget
    assert [i["compressed_tokens"] for i in infos] == [words(out[i].node.text) for i in (0, 2)]


def test_async_equals_sync(compressor, source_text) -> None:
    post = SpecPrefillNodePostprocessor(compressor)
    sync = post.postprocess_nodes(_nodes(source_text), QueryBundle("How are long words broken?"))
    asynchronous = asyncio.run(post.apostprocess_nodes(_nodes(source_text), QueryBundle("How are long words broken?")))
    assert [(n.node.node_id, n.node.get_content(), n.score) for n in sync] == [
        (n.node.node_id, n.node.get_content(), n.score) for n in asynchronous
    ]


def test_no_query_uses_the_tail_and_says_so(compressor, source_text, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llama_index.postprocessor.specprefill"):
        out = SpecPrefillNodePostprocessor(compressor).postprocess_nodes(_nodes(source_text))
    assert "no query given" in caplog.text
    assert len(out[0].node.text) < 3000 and out[0].node.metadata["specprefill"]["query"] is None


def test_empty_short_and_huge_nodes(compressor, source_text) -> None:
    post = SpecPrefillNodePostprocessor(compressor)
    assert post.postprocess_nodes([], query_str="q") == []
    nodes = [
        NodeWithScore(node=TextNode(text="", id_="empty"), score=None),
        NodeWithScore(node=TextNode(text="A short note.", id_="short"), score=1.0),
        NodeWithScore(node=TextNode(text=(source_text * 3)[:24000], id_="huge"), score=0.1),
    ]
    out = post.postprocess_nodes(nodes, query_str="dedent")
    assert [n.node.node_id for n in out] == ["empty", "short", "huge"]
    assert out[0].node.text == "" and out[1].node.text == "A short note."
    assert len(out[2].node.text) < 24000 and out[2].node.metadata["specprefill"]["failure"] is None


def test_a_users_own_metadata_key_is_never_overwritten(compressor) -> None:
    nodes = [NodeWithScore(node=TextNode(text="text", metadata={"specprefill": "mine"}), score=1.0)]
    with pytest.raises(ConfigError, match="metadata_key"):
        SpecPrefillNodePostprocessor(compressor).postprocess_nodes(nodes, query_str="q")
    out = SpecPrefillNodePostprocessor(compressor, metadata_key="compression").postprocess_nodes(nodes, query_str="q")
    assert out[0].node.metadata["specprefill"] == "mine" and "compression" in out[0].node.metadata


def test_a_query_engine_sends_the_compressed_nodes_to_the_llm(compressor, source_text, stats) -> None:
    prompts: list[str] = []

    class RecordingLLM(MockLLM):
        def complete(self, prompt: str, formatted: bool = False, **kwargs):  # type: ignore[override]
            prompts.append(prompt)
            return super().complete(prompt, formatted=formatted, **kwargs)

    docs = [Document(text=source_text[:4000], id_="d1"), Document(text=source_text[4000:8000], id_="d2")]
    index = SummaryIndex.from_documents(docs)
    post = SpecPrefillNodePostprocessor(compressor, keep_ratio=0.25)
    engine = index.as_query_engine(llm=RecordingLLM(max_tokens=8), node_postprocessors=[post], response_mode="compact")
    response = engine.query("What does dedent do?")
    assert len(response.source_nodes) >= 2 and all("specprefill" in n.node.metadata for n in response.source_nodes)
    sent = "".join(prompts)
    for n in response.source_nodes:  # compact mode strips each text; a node's kept text may start mid-file
        assert n.node.get_content().strip() in sent
    assert "original_tokens" not in sent  # the stats never reach the LLM
    assert len(sent) < 8000
    assert [e["component"] for e in stats.events] == ["SpecPrefillNodePostprocessor"]



def test_a_compressor_built_for_nodes_ranks_by_meaning_too(draft, monkeypatch: pytest.MonkeyPatch) -> None:
    import specprefill_agents.compressor as compressor_mod

    monkeypatch.delenv("SPECPREFILL_URL", raising=False)
    monkeypatch.setattr(compressor_mod, "load_semantic", lambda name, **kw: KeywordSemantic("harbour"))
    parts = [" ".join(f"Line {j} of part {i} says nothing in particular." for j in range(30)) for i in range(3)]
    parts[1] = parts[1][:700] + " The harbour opened in 1871. " + parts[1][700:]
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"part-{i}"), score=1.0) for i, t in enumerate(parts)]
    built = SpecPrefillNodePostprocessor(draft, budget_tokens=250)
    given = SpecPrefillNodePostprocessor(SpecPrefillCompressor(draft), budget_tokens=250)
    assert built.compressor.config.semantic_boost == DOCUMENT_SETTINGS["semantic_boost"] > 0
    assert given.compressor.config.semantic_boost == 0  # a compressor given is used as it is
    ours = "".join(n.node.get_content() for n in built.postprocess_nodes(nodes, query_str="When did it open?"))
    plain = "".join(n.node.get_content() for n in given.postprocess_nodes(nodes, query_str="When did it open?"))
    assert "harbour opened in 1871" in ours and "harbour opened in 1871" not in plain  # the random draft drops it
    assert SpecPrefillTransform(draft).compressor.config.semantic_boost > 0


def test_many_short_nodes_compress_as_one_set(draft) -> None:
    texts = retrieved_passages(20, answer_at=12)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"p{i}"), score=1.0 - i / 40) for i, t in enumerate(texts)]
    compressor = SpecPrefillCompressor(draft, CompressionConfig(min_tokens=200), on_failure="raise")
    out = SpecPrefillNodePostprocessor(compressor, keep_ratio=0.1).postprocess_nodes(nodes, query_str=PASSAGES_QUESTION)
    assert [n.node.node_id for n in out] == [n.node.node_id for n in nodes]
    stats = [n.node.metadata["specprefill"] for n in out]
    assert all(s["original_tokens"] < 200 for s in stats)  # each node alone is under min_tokens
    assert ANSWER_SENTENCE in out[12].node.get_content()
    assert any(not n.node.get_content() for n in out)  # a node with nothing for the query comes back empty
    assert sum(s["compressed_tokens"] for s in stats) < 0.2 * sum(s["original_tokens"] for s in stats)
    post = SpecPrefillNodePostprocessor(compressor, keep_ratio=0.1, drop_empty=True)
    kept = post.postprocess_nodes(nodes, query_str=PASSAGES_QUESTION)
    assert [(n.node.node_id, n.score) for n in kept] == [(n.node.node_id, n.score) for n in out if n.node.get_content()]
