"""Retrieval: documents keep metadata, order and ids; stats under one key; by index."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda

from langchain_specprefill import (
    EVENT_NAME,
    SpecPrefillCallbackHandler,
    SpecPrefillDocumentCompressor,
    SpecPrefillDocumentTransformer,
)
from specprefill_agents import CompressionConfig, DraftModel, DraftModelError, SemanticModel, SpecPrefillCompressor
from specprefill_agents.testing import ANSWER_SENTENCE, PASSAGES_QUESTION, KeywordSemantic, retrieved_passages
from specprefill_agents.integration import DOCUMENT_SETTINGS

QUERY = "How are long lines wrapped?"


@pytest.fixture
def documents(source_text: str) -> list[Document]:
    chunks = [source_text[i : i + 1200] for i in range(0, 6000, 1200)]
    return [Document(c, metadata={"source": "textwrap.py", "chunk": i}, id=f"doc-{i}") for i, c in enumerate(chunks)]


class ListRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return list(self.docs)


def _check(out: list[Document], docs: list[Document], key: str = "specprefill") -> None:
    assert [d.id for d in out] == [d.id for d in docs]
    for new, old in zip(out, docs):
        assert {k: v for k, v in new.metadata.items() if k != key} == old.metadata
        info = new.metadata[key]
        assert set(info) >= {"original_tokens", "compressed_tokens", "counted_with", "kept_spans", "failure"}
        bounds = [x for span in info["kept_spans"] for x in span]
        assert bounds == sorted(bounds) and all(0 <= x <= len(old.page_content) for x in bounds)
        assert info["failure"] is None
    assert sum(len(d.page_content) for d in out) < sum(len(d.page_content) for d in docs)


def test_compress_documents_maps_back_by_index(compressor, documents) -> None:
    comp = SpecPrefillDocumentCompressor(compressor=compressor, keep_ratio=0.3)
    out = comp.compress_documents(documents, QUERY)
    _check(out, documents)
    for new, old in zip(out, documents):
        spans = new.metadata["specprefill"]["kept_spans"]
        pieces = [old.page_content[a:b] for a, b in spans]
        assert all(p in new.page_content for p in pieces)  # the kept spans are what the text holds
    assert documents[0].metadata == {"source": "textwrap.py", "chunk": 0}  # inputs untouched


def test_async_matches_sync(compressor, documents) -> None:
    comp = SpecPrefillDocumentCompressor(compressor=compressor, metadata_key="sp")
    sync = comp.compress_documents(documents, QUERY)
    asynchronous = asyncio.run(comp.acompress_documents(documents, QUERY))
    assert [d.page_content for d in sync] == [d.page_content for d in asynchronous]
    _check(asynchronous, documents, key="sp")


def test_contextual_compression_retriever(compressor, documents) -> None:
    classic = pytest.importorskip("langchain_classic.retrievers")
    retriever = classic.ContextualCompressionRetriever(
        base_compressor=SpecPrefillDocumentCompressor(compressor=compressor),
        base_retriever=ListRetriever(docs=documents))
    handler = SpecPrefillCallbackHandler()
    out = retriever.invoke(QUERY, config={"callbacks": [handler]})
    _check(out, documents)
    [event] = handler.events
    assert event["items"] == len(documents) and event["source"] == "SpecPrefillDocumentCompressor"
    assert len(handler.runs) == 1  # attached to the retriever's run
    aout = asyncio.run(retriever.ainvoke(QUERY, config={"callbacks": [handler]}))
    assert [d.page_content for d in aout] == [d.page_content for d in out]


def test_in_a_pipeline(compressor, documents) -> None:
    comp = SpecPrefillDocumentCompressor(compressor=compressor)
    retriever = ListRetriever(docs=documents)
    chain = RunnableLambda(lambda q: comp.compress_documents(retriever.invoke(q), q))
    _check(chain.invoke(QUERY), documents)


def test_transformer_without_a_query_compresses_each_document(compressor, documents) -> None:
    transformer = SpecPrefillDocumentTransformer(compressor=compressor, keep_ratio=0.3)
    out = transformer.transform_documents(documents[:2])
    _check(out, documents[:2])
    alone = transformer.transform_documents(documents[1:2])
    assert alone[0].page_content == out[1].page_content  # each on its own
    with_query = asyncio.run(transformer.atransform_documents(documents[:2], query=QUERY))
    _check(with_query, documents[:2])


def test_empty_and_event_names(compressor) -> None:
    comp = SpecPrefillDocumentCompressor(compressor=compressor)
    assert comp.compress_documents([], QUERY) == []
    assert EVENT_NAME == "specprefill_compression"


def test_a_users_own_metadata_key_is_never_overwritten(compressor, documents) -> None:
    from specprefill_agents import ConfigError

    mine = [Document(page_content=d.page_content, metadata={"specprefill": "the user's own"}) for d in documents]
    with pytest.raises(ConfigError, match="metadata_key"):
        SpecPrefillDocumentCompressor(compressor=compressor).compress_documents(mine, "dedent")
    out = SpecPrefillDocumentCompressor(compressor=compressor, metadata_key="compression").compress_documents(
        mine, "dedent")
    assert all(d.metadata["specprefill"] == "the user's own" and "kept_spans" in d.metadata["compression"]
               for d in out)
    ours = SpecPrefillDocumentCompressor(compressor=compressor)
    again = ours.compress_documents(ours.compress_documents(documents, "dedent"), "dedent")  # its own stats: fine
    assert len(again) == len(documents) and all("kept_spans" in d.metadata["specprefill"] for d in again)
    earlier = [d.model_copy(update={"metadata": {"specprefill": {k: v for k, v in d.metadata["specprefill"].items()
                                                                 if k != "degraded"}}}) for d in again]
    assert len(ours.compress_documents(earlier, "dedent")) == len(documents)  # stats written before "degraded": ours



def _harbour_documents() -> list[Document]:
    filler = [" ".join(f"Line {j} of part {i} says nothing in particular." for j in range(30)) for i in range(3)]
    filler[1] = filler[1][:700] + " The harbour opened in 1871. " + filler[1][700:]
    return [Document(text, id=f"part-{i}") for i, text in enumerate(filler)]


def test_a_compressor_built_for_documents_ranks_by_meaning_too(
        draft: DraftModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import specprefill_agents.compressor as compressor_mod

    monkeypatch.delenv("SPECPREFILL_URL", raising=False)
    monkeypatch.setattr(compressor_mod, "load_semantic", lambda name, **kw: KeywordSemantic("harbour"))
    docs, query = _harbour_documents(), "When did it open?"
    built = SpecPrefillDocumentCompressor(compressor=draft, budget_tokens=250)
    assert built.compressor.config.semantic_boost == DOCUMENT_SETTINGS["semantic_boost"] > 0
    given = SpecPrefillDocumentCompressor(compressor=SpecPrefillCompressor(draft), budget_tokens=250)
    assert given.compressor.config.semantic_boost == 0  # a compressor given is used as it is
    ours = "".join(d.page_content for d in built.compress_documents(docs, query))
    plain = "".join(d.page_content for d in given.compress_documents(docs, query))
    assert "harbour opened in 1871" in ours and "harbour opened in 1871" not in plain  # the random draft drops it
    assert SpecPrefillDocumentTransformer(compressor=draft).compressor.config.semantic_boost > 0


def test_documents_still_compress_when_the_encoder_cannot_be_had(
        draft: DraftModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import specprefill_agents.compressor as compressor_mod

    def unavailable(name: str, **kwargs: Any) -> SemanticModel:
        raise DraftModelError(f"semantic model {name!r} is not available offline (injected)")

    monkeypatch.setattr(compressor_mod, "load_semantic", unavailable)
    docs = _harbour_documents()
    with pytest.warns(RuntimeWarning, match="semantic prior"):
        out = SpecPrefillDocumentCompressor(compressor=draft, budget_tokens=250).compress_documents(docs, "When?")
    plain = SpecPrefillDocumentCompressor(compressor=SpecPrefillCompressor(draft), budget_tokens=250)
    assert [d.page_content for d in out] == [d.page_content for d in plain.compress_documents(docs, "When?")]
    assert sum(len(d.page_content) for d in out) < sum(len(d.page_content) for d in docs)  # not passed through
    assert all(d.metadata["specprefill"]["failure"] is None for d in out)
    assert "injected" in (out[0].metadata["specprefill"].get("degraded") or "")


def test_many_short_passages_compress_as_one_set(draft) -> None:
    texts = retrieved_passages(20, answer_at=12)
    docs = [Document(t, metadata={"rank": i}, id=f"p{i}") for i, t in enumerate(texts)]
    compressor = SpecPrefillCompressor(draft, CompressionConfig(min_tokens=200), on_failure="raise")
    retrieval = SpecPrefillDocumentCompressor(compressor=compressor, keep_ratio=0.1)
    out = retrieval.compress_documents(docs, PASSAGES_QUESTION)
    assert [d.id for d in out] == [d.id for d in docs]
    stats = [d.metadata["specprefill"] for d in out]
    assert all(s["original_tokens"] < 200 for s in stats)  # each passage alone is under min_tokens
    assert ANSWER_SENTENCE in out[12].page_content
    empty = [d for d in out if not d.page_content]
    assert empty and all(d.metadata["specprefill"]["compressed_tokens"] == 0 for d in empty)
    assert sum(s["compressed_tokens"] for s in stats) < 0.2 * sum(s["original_tokens"] for s in stats)
    kept = SpecPrefillDocumentCompressor(compressor=compressor, keep_ratio=0.1, drop_empty=True).compress_documents(
        docs, PASSAGES_QUESTION)
    assert [d.id for d in kept] == [d.id for d in out if d.page_content]  # the same, less the empty ones
