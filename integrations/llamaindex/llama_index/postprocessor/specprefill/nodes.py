"""Nodes as texts to compress, and compressed texts back into copies of the nodes, by index.

A node's identity never changes: the copy keeps ``node_id``, metadata, relationships and
class; only its text is new, and the stats go under one metadata key that the LLM and the
embedding never see.  Nodes with other media (images, audio, video) pass untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, ImageNode, Node, TextNode
from pydantic import BaseModel, ConfigDict, PrivateAttr
from specprefill_agents import OnFailure, check_on_failure
from specprefill_agents.documents import check_stats_key, compress_texts
from specprefill_agents.integration import DOCUMENT_SETTINGS, Counter, check_budget, resolve_compressor
from specprefill_agents.message_compression import CompressionReport

from .events import emit

__all__ = ["NodeCompression", "node_text", "with_text"]


def node_text(node: BaseNode) -> str | None:
    """The text to compress, or None for a node that passes untouched."""
    if isinstance(node, ImageNode):
        return None
    if isinstance(node, TextNode):
        return node.text
    if isinstance(node, Node) and node.text_resource is not None:
        if node.image_resource or node.audio_resource or node.video_resource:
            return None
        return node.text_resource.text or ""
    return None


def _excluded(keys: Sequence[str], key: str) -> list[str]:
    return [*keys, key] if key not in keys else list(keys)


def with_text(node: BaseNode, text: str, key: str, stats: dict[str, Any]) -> BaseNode:
    """A copy of ``node`` with ``text`` and ``stats`` under ``metadata[key]`` (hidden from LLM and embeddings)."""
    update: dict[str, Any] = {
        "metadata": {**node.metadata, key: stats},
        "excluded_llm_metadata_keys": _excluded(node.excluded_llm_metadata_keys, key),
        "excluded_embed_metadata_keys": _excluded(node.excluded_embed_metadata_keys, key),
    }
    if isinstance(node, TextNode):
        update["text"] = text
    elif isinstance(node, Node) and node.text_resource is not None:
        update["text_resource"] = node.text_resource.model_copy(update={"text": text})
    return node.model_copy(update=update)


class NodeCompression(BaseModel):
    """Settings and the shared work of the postprocessor and the transform.

    The compressor and the token counter are private attributes: they are objects, not
    settings, and they stay out of ``to_dict()`` (so an ingestion pipeline's
    transformation hash does not depend on them).
    """

    keep_ratio: float | None = None
    budget_tokens: int | None = None
    on_failure: OnFailure = "warn"
    metadata_key: str = "specprefill"

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _compressor: Any = PrivateAttr(default=None)
    _token_counter: Any = PrivateAttr(default=None)
    _counter: Counter = PrivateAttr()

    def __init__(self, compressor: Any = None, *, token_counter: Any = None, **data: Any) -> None:
        super().__init__(**data)
        check_budget(self.keep_ratio, self.budget_tokens)
        check_on_failure(self.on_failure)
        self._compressor = resolve_compressor(compressor, DOCUMENT_SETTINGS)
        self._token_counter = token_counter
        self._counter = Counter(token_counter, self._compressor)

    @property
    def compressor(self) -> Any:
        """The compressor (in-process or a client of the resident service)."""
        return self._compressor

    def _compress_nodes(self, nodes: Sequence[BaseNode], query: str | None) -> tuple[list[BaseNode], CompressionReport]:
        """``nodes`` (same order) with their texts compressed together for ``query``; emits one event."""
        out = list(nodes)
        texts = [node_text(n) for n in out]
        index = [i for i, t in enumerate(texts) if t is not None]
        where = type(self).__name__
        check_stats_key([out[i].metadata for i in index], self.metadata_key, where)
        outcome = compress_texts(
            self._compressor,
            self._counter,
            [texts[i] or "" for i in index],
            query,
            keep_ratio=self.keep_ratio,
            budget_tokens=self.budget_tokens,
            token_counter=self._token_counter,
            on_failure=self.on_failure,
            where=where,
        )
        for j, i in enumerate(index):
            out[i] = with_text(out[i], outcome.texts[j], self.metadata_key, outcome.stats[j])
        emit(where, outcome.report)
        return out, outcome.report
