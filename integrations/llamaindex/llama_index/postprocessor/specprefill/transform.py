"""``SpecPrefillTransform``: query-less compression of long nodes in an ``IngestionPipeline``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, TransformComponent

from .nodes import NodeCompression

__all__ = ["SpecPrefillTransform"]


class SpecPrefillTransform(NodeCompression, TransformComponent):
    """Compress each node on its own, with no query (its own tail acts as one).

    Short nodes (under the compressor's ``min_tokens``) and nodes with images or other media
    pass unchanged.  The compressor and token counter are private attributes, so the
    pipeline's transformation hash depends only on the settings (``keep_ratio``,
    ``budget_tokens``, ``on_failure``, ``metadata_key``).

    Example:
        .. code-block:: python

            pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=2048),
                                                          SpecPrefillTransform(keep_ratio=0.5)])
    """

    @classmethod
    def class_name(cls) -> str:
        return "SpecPrefillTransform"

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        return [self._compress_nodes([node], None)[0][0] for node in nodes]

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        return await asyncio.to_thread(self.__call__, nodes, **kwargs)
