"""A RAG pipeline whose retrieved documents are compressed for the question before the LLM.

Offline: documents are chunks of real files of the installed Python standard library, the
retriever is a small lexical one, and the LLM is a stand-in that quotes the context lines
matching the question (swap in any chat model).  ``SpecPrefillDocumentCompressor``
compresses the retrieved chunks with the embedded SmolLM2-135M draft under one budget;
each document keeps its id and metadata, with its stats under ``metadata["specprefill"]``.

    python examples/rag_pipeline.py [--question Q] [--keep 0.3] [--draft embedded|HUB_ID|DIR|FILE.gguf]
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from specprefill_agents import SpecPrefillCompressor

from langchain_specprefill import SpecPrefillCallbackHandler, SpecPrefillDocumentCompressor

FILES = [Path(textwrap.__file__), Path(shlex.__file__)]
WORD = re.compile(r"[A-Za-z_]{3,}")
STOP = {"does", "how", "what", "the", "with", "and", "for", "this", "that", "from", "into", "are", "its"}


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text) if w.lower() not in STOP]


def load_chunks(paths: list[Path], lines_per_chunk: int = 40) -> list[Document]:
    docs = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        for start in range(0, len(lines), lines_per_chunk):
            text = "\n".join(lines[start : start + lines_per_chunk])
            docs.append(Document(text, id=f"{path.name}:{start + 1}",
                                 metadata={"source": path.name, "start_line": start + 1}))
    return docs


class LexicalRetriever(BaseRetriever):
    """Ranks chunks by TF-IDF overlap with the question (a stand-in for a vector store)."""

    docs: list[Document]
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        counts = [Counter(words(d.page_content)) for d in self.docs]
        terms = set(words(query))
        idf = {t: math.log(len(self.docs) / (1 + sum(t in c for c in counts))) for t in terms}
        scores = [sum(math.log1p(c[t]) * idf[t] for t in terms) for c in counts]
        ranked = sorted(range(len(self.docs)), key=lambda i: -scores[i])
        return [self.docs[i] for i in ranked[: self.k]]


class QuotingModel(BaseChatModel):
    """Stands in for the LLM: answers with the context lines that share words with the question."""

    @property
    def _llm_type(self) -> str:
        return "quoting-model"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = messages[-1].text
        context, _, question = prompt.rpartition("Question:")
        asked = set(words(question))
        lines = [ln.strip() for ln in context.splitlines() if ln.strip()]
        overlap = [len(asked & set(words(ln))) for ln in lines]
        best = sorted((i for i in range(len(lines)) if overlap[i]), key=lambda i: -overlap[i])[:4]
        answer = "\n  ".join(lines[i] for i in sorted(best)) or "(no matching line in the context)"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(f"From the context:\n  {answer}"))])


PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer from the context only."),
    ("human", "{context}\n\nQuestion: {question}"),
])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="How does shlex split a command line with quotes?")
    parser.add_argument("--keep", type=float, default=0.3, help="keep ratio for the retrieved documents")
    parser.add_argument("--draft", default="embedded", help="draft model: embedded, hub id, directory or .gguf")
    args = parser.parse_args(argv)

    retriever = LexicalRetriever(docs=load_chunks(FILES))
    compressor = SpecPrefillDocumentCompressor(compressor=SpecPrefillCompressor(args.draft), keep_ratio=args.keep)

    def retrieve_and_compress(question: str, config: Any) -> list[Document]:
        docs = retriever.invoke(question, config=config)
        return list(compressor.compress_documents(docs, question, callbacks=config.get("callbacks")))

    retrieve = RunnableLambda(retrieve_and_compress, name="retrieve_and_compress")
    chain = {"docs": retrieve, "question": RunnablePassthrough()} | RunnablePassthrough.assign(
        answer=(lambda x: {"context": "\n\n".join(d.page_content for d in x["docs"]), "question": x["question"]})
        | PROMPT | QuotingModel())

    stats = SpecPrefillCallbackHandler()
    result = chain.invoke(args.question, config={"callbacks": [stats]})
    print(f"question: {args.question}\n")
    for doc in result["docs"]:
        info = doc.metadata["specprefill"]
        print(f"{doc.id:16s} {info['original_tokens']:4d} -> {info['compressed_tokens']:4d} tokens, "
              f"{len(info['kept_spans'])} kept span(s)")
    total = stats.summary()
    print(f"\nretrieved context: {total['original_tokens']} -> {total['compressed_tokens']} tokens "
          f"(saved {total['saved_tokens']}), scoring {total['scoring_seconds']:.2f}s\n")
    print(result["answer"].text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
