"""LlamaIndex node postprocessor, ingestion transform and instrumentation of specprefill-agents.

* :class:`SpecPrefillNodePostprocessor` compresses retrieved nodes for the query;
* :class:`SpecPrefillTransform` compresses long nodes in an ``IngestionPipeline``;
* :class:`SpecPrefillCompressionEvent` is emitted once per compression; :class:`SpecPrefillStats`
  collects them.

The LLM wrapper for agents is :mod:`llama_index.llms.specprefill`.
"""

from __future__ import annotations

from .base import SpecPrefillNodePostprocessor
from .events import SpecPrefillCompressionEvent, SpecPrefillStats
from .transform import SpecPrefillTransform

__all__ = [
    "SpecPrefillNodePostprocessor",
    "SpecPrefillTransform",
    "SpecPrefillCompressionEvent",
    "SpecPrefillStats",
]
