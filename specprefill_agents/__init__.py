"""specprefill-agents: compress long agent / RAG context with a small draft model's attention.

Quickstart::

    from specprefill_agents import SpecPrefillCompressor
    comp = SpecPrefillCompressor()            # embedded SmolLM2-135M draft, loaded on first use
    res = comp.compress(long_text, query="Which port does the server use?", keep_ratio=0.25)
    res.text, res.stats.compressed_tokens
"""

from .budget import APPROXIMATE, TokenCounter, approximate_tokens, count_or_approximate, countable, make_counter
from .cache import KVPrefixCache, cache_namespace
from .compressor import SpecPrefillCompressor
from .config import CacheConfig, CompressionConfig, DraftConfig, ScoringConfig
from .draft import DraftModel, load_draft
from .errors import (
    ConfigError,
    DeadlineExceededError,
    DraftDownloadError,
    DraftModelError,
    DraftNotInstalledError,
    GapNotFoundError,
    InputError,
    InputTooLargeError,
    ScoringError,
    ServiceRequestError,
    ServiceUnavailableError,
    SpecPrefillError,
)
from .expansion import Expansion, OmittedText, expand_ref, omitted_texts, search_omitted
from .gap_store import GapStore, content_namespace
from .protocols import Compressor, OnFailure, check_on_failure, handle_failure
from .segment_scoring import asked_query
from .semantic import SemanticModel, load_semantic
from .types import CompressionResult, CompressionStats, Gap, KeptSpan, Segment, SegmentScores, TokenCounts, TokenScores

__version__ = "0.1.0"

__all__ = [
    "SpecPrefillCompressor",
    "Compressor",
    "OnFailure",
    "check_on_failure",
    "handle_failure",
    "CompressionConfig",
    "DraftConfig",
    "ScoringConfig",
    "CacheConfig",
    "KVPrefixCache",
    "cache_namespace",
    "DraftModel",
    "load_draft",
    "SemanticModel",
    "load_semantic",
    "Segment",
    "KeptSpan",
    "Gap",
    "GapStore",
    "content_namespace",
    "OmittedText",
    "Expansion",
    "omitted_texts",
    "expand_ref",
    "search_omitted",
    "SegmentScores",
    "TokenScores",
    "TokenCounts",
    "CompressionResult",
    "CompressionStats",
    "TokenCounter",
    "APPROXIMATE",
    "approximate_tokens",
    "count_or_approximate",
    "make_counter",
    "countable",
    "asked_query",
    "SpecPrefillError",
    "ConfigError",
    "InputError",
    "InputTooLargeError",
    "DeadlineExceededError",
    "DraftModelError",
    "DraftNotInstalledError",
    "DraftDownloadError",
    "ScoringError",
    "ServiceUnavailableError",
    "ServiceRequestError",
    "GapNotFoundError",
    "__version__",
]
