"""``SpecPrefillNodePostprocessor``: compress retrieved nodes for the query, one budget across them."""

from __future__ import annotations

import logging

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from .nodes import NodeCompression, node_text

__all__ = ["SpecPrefillNodePostprocessor"]

logger = logging.getLogger(__name__)


class SpecPrefillNodePostprocessor(NodeCompression, BaseNodePostprocessor):
    """Query-aware compression of retrieved nodes by a small draft model's attention.

    All text nodes are compressed as one request (each node one segment, one budget across
    them) and written back by index: every node keeps its ``node_id``, metadata,
    relationships, score and position; nodes with images or other media pass untouched.
    Each compressed node's stats are under ``metadata[metadata_key]``, excluded from the
    LLM and embedding metadata.  Without a query bundle the tail of the nodes' text acts
    as the query.

    Example:
        .. code-block:: python

            query_engine = index.as_query_engine(
                node_postprocessors=[SpecPrefillNodePostprocessor(keep_ratio=0.3)])

    Args:
        compressor: a ``SpecPrefillCompressor`` (or a client of the resident service), a draft
            spec (``"embedded"``, hub id, directory, ``.gguf``); None = the embedded SmolLM2
            draft, loaded on first use.  A compressor built from None or a draft spec has the
            semantic prior on (``DOCUMENT_SETTINGS``: ``semantic_boost=8``); one given is used as it is.
        keep_ratio, budget_tokens: the budget (None: the compressor's config).
        token_counter: the target's tokenizer or a ``str -> int`` callable: the budget and the
            stats count in its tokens.
        on_failure: ``"warn"`` (default) / ``"passthrough"``: nodes pass through uncompressed;
            ``"raise"``.
        metadata_key: where each node's stats go.
        drop_empty: leave out the nodes that came back empty (the nodes compress as one set, so
            one with nothing for the query keeps no text), so that a ``refine`` synthesizer makes no
            call for them; the default keeps every node, in order.
    """

    drop_empty: bool = False

    @classmethod
    def class_name(cls) -> str:
        return "SpecPrefillNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = query_bundle.query_str if query_bundle is not None and query_bundle.query_str else None
        if query is None and nodes:
            logger.info("%s: no query given, the tail of the nodes' text acts as the query", self.class_name())
        compressed, _ = self._compress_nodes([n.node for n in nodes], query)
        return [NodeWithScore(node=node, score=n.score) for n, node in zip(nodes, compressed)
                if not (self.drop_empty and node_text(node) == "" and node_text(n.node))]
