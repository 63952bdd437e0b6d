"""The ingestion transform: query-less, per node, and a transformation hash that ignores the compressor."""

from __future__ import annotations

import asyncio

from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.ingestion.pipeline import get_transformation_hash
from llama_index.core.schema import ImageNode, TextNode
from llama_index.postprocessor.specprefill import SpecPrefillTransform
from specprefill_agents import SpecPrefillCompressor

from .conftest import FAST


def test_pipeline_compresses_long_nodes_and_keeps_short_ones(compressor, source_text, stats) -> None:
    docs = [
        Document(text=source_text[:5000], id_="long", metadata={"file": "textwrap.py"}),
        Document(text="A short note.", id_="short"),
    ]
    nodes = IngestionPipeline(transformations=[SpecPrefillTransform(compressor)]).run(documents=docs)
    assert [n.node_id for n in nodes] == ["long", "short"]
    assert len(nodes[0].text) < 5000 and nodes[0].metadata["file"] == "textwrap.py"
    assert nodes[0].metadata["specprefill"]["query"] is None
    assert nodes[1].text == "A short note."
    assert [e["component"] for e in stats.events] == ["SpecPrefillTransform"] * 2  # one event per compression


def test_each_node_alone_and_async_equals_sync(compressor, source_text) -> None:
    transform = SpecPrefillTransform(compressor)
    a, b = TextNode(text=source_text[:3000], id_="a"), TextNode(text=source_text[3000:6000], id_="b")
    together = transform([a, b])
    assert together[0].text == transform([a])[0].text  # b does not change how a is compressed
    assert [n.text for n in asyncio.run(transform.acall([a, b]))] == [n.text for n in together]
    image = ImageNode(image="aGVsbG8=", id_="img")
    assert transform([image])[0] is image


def test_transformation_hash_depends_on_settings_not_on_the_compressor(draft, source_text) -> None:
    nodes = [TextNode(text=source_text[:1000])]
    one = SpecPrefillTransform(SpecPrefillCompressor(draft, FAST), keep_ratio=0.3)
    two = SpecPrefillTransform(SpecPrefillCompressor(draft, FAST), keep_ratio=0.3)
    other = SpecPrefillTransform(SpecPrefillCompressor(draft, FAST), keep_ratio=0.5)
    assert get_transformation_hash(nodes, one) == get_transformation_hash(nodes, two)
    assert get_transformation_hash(nodes, one) != get_transformation_hash(nodes, other)
    assert "compressor" not in one.to_dict()
