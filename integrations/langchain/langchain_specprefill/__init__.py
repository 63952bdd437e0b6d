"""LangChain integration of specprefill-agents.

* :class:`SpecPrefillLLM` (alias :class:`ChatSpecPrefill`) wraps any chat model and compresses its
  long context first;
* :class:`SpecPrefillDocumentCompressor` / :class:`SpecPrefillDocumentTransformer` compress
  retrieved documents (``ContextualCompressionRetriever``, pipelines);
* :class:`SpecPrefillMiddleware` / :class:`SpecPrefillEdit` for ``create_agent`` (need
  ``langchain>=1``: ``pip install 'langchain-specprefill[agents]'``);
* :class:`SpecPrefillCallbackHandler` totals the stats every compression emits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from specprefill_agents import OnFailure

from .callbacks import RunStats, SpecPrefillCallbackHandler
from .chat_models import METADATA_KEY, ChatSpecPrefill, SpecPrefillLLM
from .document_compressors import SpecPrefillDocumentCompressor, SpecPrefillDocumentTransformer
from .engine import EVENT_NAME, CompressionReport, MessageCompressor
from .policy import MessagePolicy

if TYPE_CHECKING:
    from .middleware import SpecPrefillEdit, SpecPrefillMiddleware

__version__ = "0.1.0"

__all__ = [
    "SpecPrefillLLM",
    "ChatSpecPrefill",
    "SpecPrefillDocumentCompressor",
    "SpecPrefillDocumentTransformer",
    "SpecPrefillMiddleware",
    "SpecPrefillEdit",
    "SpecPrefillCallbackHandler",
    "RunStats",
    "MessageCompressor",
    "MessagePolicy",
    "CompressionReport",
    "OnFailure",
    "EVENT_NAME",
    "METADATA_KEY",
    "__version__",
]

_AGENTS = {"SpecPrefillMiddleware", "SpecPrefillEdit"}


def __getattr__(name: str) -> Any:  # the middleware imports langchain, an optional extra
    if name in _AGENTS:
        from . import middleware

        return getattr(middleware, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
