"""Retrieval: compress documents for a query (or without one), mapped back by index.

Each output document is a copy of its input (same class, id and metadata, in the same
order) whose ``page_content`` is the compressed text, with the compression's stats under
one metadata key (``"specprefill"`` by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, BaseDocumentTransformer, Document
from langchain_core.runnables.config import run_in_executor
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from specprefill_agents import OnFailure
from specprefill_agents.documents import check_stats_key, compress_texts
from specprefill_agents.integration import DOCUMENT_SETTINGS, Counter, check_budget, resolve_compressor
from specprefill_agents.message_compression import CompressionReport

from ._callbacks import aemit_to_callbacks, emit_to_callbacks

__all__ = ["SpecPrefillDocumentCompressor", "SpecPrefillDocumentTransformer"]


class _DocumentCompression(BaseModel):
    """Settings and the shared work of both document classes."""

    compressor: Any = Field(default=None, exclude=True)
    keep_ratio: float | None = None
    budget_tokens: int | None = None
    token_counter: Any = Field(default=None, exclude=True)
    on_failure: OnFailure = "warn"
    metadata_key: str = "specprefill"
    drop_empty: bool = False

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _counter: Counter = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        check_budget(self.keep_ratio, self.budget_tokens)
        self.compressor = resolve_compressor(self.compressor, DOCUMENT_SETTINGS)
        self._counter = Counter(self.token_counter, self.compressor)

    def _compress(self, documents: Sequence[Document], query: str | None) -> tuple[list[Document], CompressionReport]:
        documents = list(documents)
        check_stats_key([d.metadata for d in documents], self.metadata_key, type(self).__name__)
        outcome = compress_texts(
            self.compressor,
            self._counter,
            [d.page_content for d in documents],
            query,
            keep_ratio=self.keep_ratio,
            budget_tokens=self.budget_tokens,
            token_counter=self.token_counter,
            on_failure=self.on_failure,
            where=type(self).__name__,
        )
        out = [
            doc.model_copy(update={"page_content": text, "metadata": {**doc.metadata, self.metadata_key: info}})
            for doc, text, info in zip(documents, outcome.texts, outcome.stats)
            if not (self.drop_empty and doc.page_content and not text)  # left out: emptied by the compression
        ]
        return out, outcome.report


class SpecPrefillDocumentCompressor(_DocumentCompression, BaseDocumentCompressor):
    """Compress retrieved documents for the query, under one budget across them.

    Use it in ``ContextualCompressionRetriever(base_compressor=..., base_retriever=...)``
    or in any pipeline.  Settings as :class:`~langchain_specprefill.engine.MessageCompressor`,
    but a compressor built here (from None or a draft spec) has the semantic prior on
    (``specprefill_agents.integration.DOCUMENT_SETTINGS``: ``semantic_boost=8``; a compressor given
    is used as it is);
    ``metadata_key`` names the stats entry added to each document's metadata; a document whose
    metadata already holds that key with a value of its own raises :class:`ConfigError` (nothing
    of the user's is overwritten).  The documents compress as one set, so one with nothing for the
    query comes back empty; ``drop_empty=True`` leaves those out, as LangChain's filters do (the
    default keeps every document, in order).
    """

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        out, report = self._compress(documents, query or None)
        emit_to_callbacks(callbacks, report, type(self).__name__)
        return out

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        out, report = await run_in_executor(None, self._compress, documents, query or None)
        await aemit_to_callbacks(callbacks, report, type(self).__name__)
        return out


class SpecPrefillDocumentTransformer(_DocumentCompression, BaseDocumentTransformer):
    """Compress documents with no query: each on its own, its own tail acting as the query.

    ``transform_documents(docs, query="...")`` uses a query when one is given (and then
    compresses the documents together, like the compressor).
    """

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        query = kwargs.get("query")
        if query:
            return self._compress(documents, query)[0]
        return [self._compress([doc], None)[0][0] for doc in documents]

    async def atransform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        return await run_in_executor(None, self.transform_documents, documents, **kwargs)
