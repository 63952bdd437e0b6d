"""specprefill-agents: compress long agent / RAG context with a small draft model's attention.

Quickstart::

    from specprefill_agents import SpecPrefillCompressor
    comp = SpecPrefillCompressor()            # embedded SmolLM2-135M draft, loaded on first use
    res = comp.compress(long_text, query="Which port does the server use?", keep_ratio=0.25)
    res.text, res.stats.compressed_tokens
"""

from .compressor import SpecPrefillCompressor
from .config import CacheConfig, CompressionConfig, DraftConfig, ScoringConfig
from .cache import KVPrefixCache
from .draft import DraftModel, load_draft
from .errors import (
    BudgetError,
    ConfigError,
    DraftModelError,
    DraftNotInstalledError,
    InputError,
    ScoringError,
    ServiceUnavailableError,
    SpecPrefillError,
)
from .types import CompressionResult, CompressionStats, KeptSpan, Segment, SegmentScores, TokenScores

__version__ = "0.1.0"

__all__ = [
    "SpecPrefillCompressor",
    "CompressionConfig",
    "DraftConfig",
    "ScoringConfig",
    "CacheConfig",
    "KVPrefixCache",
    "DraftModel",
    "load_draft",
    "Segment",
    "KeptSpan",
    "SegmentScores",
    "TokenScores",
    "CompressionResult",
    "CompressionStats",
    "SpecPrefillError",
    "ConfigError",
    "InputError",
    "DraftModelError",
    "DraftNotInstalledError",
    "ScoringError",
    "BudgetError",
    "ServiceUnavailableError",
    "__version__",
]
