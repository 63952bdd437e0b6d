"""Retrieval: compress documents for a query (or without one), mapped back by index.

Each output document is a copy of its input (same class, id and metadata, in the same
order) whose ``page_content`` is the compressed text, with the compression's stats under
one metadata key (``"specprefill"`` by default).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, BaseDocumentTransformer, Document
from langchain_core.runnables.config import run_in_executor
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from specprefill_agents import ConfigError, OnFailure, Segment, TokenCounts, handle_failure

from ._callbacks import aemit_to_callbacks, emit_to_callbacks
from ._core import Counter, check_budget, resolve_compressor
from .engine import CompressionReport, Tally, check_result

__all__ = ["SpecPrefillDocumentCompressor", "SpecPrefillDocumentTransformer"]

_STATS_KEYS = frozenset({"original_tokens", "compressed_tokens", "counted_with", "kept_spans", "query", "failure"})


class _DocumentCompression(BaseModel):
    """Settings and the shared work of both document classes."""

    compressor: Any = Field(default=None, exclude=True)
    keep_ratio: float | None = None
    budget_tokens: int | None = None
    token_counter: Any = Field(default=None, exclude=True)
    on_failure: OnFailure = "warn"
    metadata_key: str = "specprefill"

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _counter: Counter = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        check_budget(self.keep_ratio, self.budget_tokens)
        self.compressor = resolve_compressor(self.compressor)
        self._counter = Counter(self.token_counter, self.compressor)

    def _compress(self, documents: Sequence[Document], query: str | None) -> tuple[list[Document], CompressionReport]:
        start = time.perf_counter()
        documents = list(documents)
        self._check_metadata(documents)
        segments = [Segment(d.page_content, role="document", id=str(i)) for i, d in enumerate(documents)]
        texts, failure, tally = [d.page_content for d in documents], None, Tally()
        spans: list[list[list[int]]] = [[[0, len(t)]] for t in texts]
        if documents:
            try:
                result = self.compressor.compress_segments(
                    segments, query, keep_ratio=self.keep_ratio, max_tokens=self.budget_tokens,
                    token_counter=self.token_counter)
                check_result(result, segments, set(range(len(segments))))
                texts = [s.text for s in result.segments]
                spans = [[[k.start, k.end] for k in kept] for kept in result.kept_spans]
                tally.add(result)
            except Exception as exc:
                failure = handle_failure(self.on_failure, exc, type(self).__name__)
        counts, name = self._counter.count_all([d.page_content for d in documents] + texts)
        out, before, after = [], counts[:len(documents)], counts[len(documents):]
        for doc, text, kept, n_before, n_after in zip(documents, texts, spans, before, after):
            info = {"original_tokens": n_before, "compressed_tokens": n_after, "counted_with": name,
                    "kept_spans": kept, "query": query, "failure": failure}
            out.append(doc.model_copy(update={"page_content": text,
                                              "metadata": {**doc.metadata, self.metadata_key: info}}))
        changed = sum(1 for d, t in zip(documents, texts) if t != d.page_content)
        report = tally.report(TokenCounts(sum(before), sum(after), name), len(documents), changed,
                              1 if documents else 0, failure, start)
        return out, report


    def _check_metadata(self, documents: list[Document]) -> None:
        """Never overwrite a user's own metadata: the key may only hold stats this class wrote."""
        for i, doc in enumerate(documents):
            value = doc.metadata.get(self.metadata_key)
            if value is not None and not (isinstance(value, dict) and set(value) == _STATS_KEYS):
                raise ConfigError(f"documents[{i}].metadata already has {self.metadata_key!r}, not written by "
                                  f"{type(self).__name__}; pass metadata_key=... to store the stats elsewhere")


class SpecPrefillDocumentCompressor(_DocumentCompression, BaseDocumentCompressor):
    """Compress retrieved documents for the query, under one budget across them.

    Use it in ``ContextualCompressionRetriever(base_compressor=..., base_retriever=...)``
    or in any pipeline.  Settings as :class:`~langchain_specprefill.engine.MessageCompressor`;
    ``metadata_key`` names the stats entry added to each document's metadata; a document whose
    metadata already holds that key with a value of its own raises :class:`ConfigError` (nothing
    of the user's is overwritten).
    """

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        out, report = self._compress(documents, query or None)
        emit_to_callbacks(callbacks, report, type(self).__name__)
        return out

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
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
