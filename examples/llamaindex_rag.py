"""A LlamaIndex query engine over real text files, its retrieved nodes compressed for the question.

Offline: the files are modules of the installed Python standard library, read by
``SimpleDirectoryReader`` and split into nodes; the index is a ``VectorStoreIndex`` with a
small local embedding (hashed word counts: a stand-in for a real embedding model); the LLM is
a stand-in that quotes the context lines matching the question (swap in any LLM).
``SpecPrefillNodePostprocessor`` compresses the retrieved nodes with the embedded
SmolLM2-135M draft under one budget; every node keeps its id, score and metadata, with its
stats under ``metadata["specprefill"]`` (never shown to the LLM).

    python examples/llamaindex_rag.py [--question Q] [--keep 0.3] [--draft embedded|HUB_ID|DIR|FILE.gguf]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
from llama_index.core.llms import CustomLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.postprocessor.specprefill import SpecPrefillNodePostprocessor
from specprefill_agents import SpecPrefillCompressor

FILES = [Path(textwrap.__file__), Path(shlex.__file__)]
WORD = re.compile(r"[A-Za-z_]{3,}")
STOP = {"does", "how", "what", "the", "with", "and", "for", "this", "that", "from", "into", "are", "its", "option"}


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text) if w.lower() not in STOP]


class HashedWordsEmbedding(BaseEmbedding):
    """Word counts hashed into ``dim`` buckets, L2-normalised: a local, offline embedding."""

    dim: int = 512

    def _vector(self, text: str) -> Embedding:
        vec = [0.0] * self.dim
        for word in words(text):
            vec[int(hashlib.blake2b(word.encode(), digest_size=4).hexdigest(), 16) % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._vector(text)


class QuotingLLM(CustomLLM):
    """Stands in for the LLM: quotes the context lines that share a word with the question."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="quoting-stand-in")

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        context, _, question = prompt.rpartition("Query: ")
        asked = set(words(question.splitlines()[0] if question else ""))
        lines = [line.strip() for line in context.splitlines() if asked & set(words(line))]
        quoted = "\n  ".join(dict.fromkeys(lines)) or "(nothing relevant in the context)"
        return CompletionResponse(text=f"From the context:\n  {quoted}")

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield self.complete(prompt, formatted, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="How does shlex split a command line with quotes?")
    parser.add_argument("--keep", type=float, default=0.3, help="keep ratio for the retrieved context")
    parser.add_argument("--draft", default="embedded", help="draft model: embedded, hub id, directory or .gguf")
    args = parser.parse_args(argv)

    documents = SimpleDirectoryReader(input_files=[str(p) for p in FILES]).load_data()
    index = VectorStoreIndex.from_documents(
        documents,
        embed_model=HashedWordsEmbedding(),
        transformations=[SentenceSplitter(chunk_size=384, chunk_overlap=0)],
    )
    postprocessor = SpecPrefillNodePostprocessor(SpecPrefillCompressor(args.draft), keep_ratio=args.keep)
    engine = index.as_query_engine(llm=QuotingLLM(), similarity_top_k=4, node_postprocessors=[postprocessor])
    response = engine.query(args.question)

    print(f"question: {args.question}\n")
    before = after = 0
    for n in response.source_nodes:
        info = n.node.metadata["specprefill"]
        before, after = before + info["original_tokens"], after + info["compressed_tokens"]
        print(
            f"{n.node.metadata['file_name']} {n.node.node_id[:8]} score {n.score:.3f}  "
            f"{info['original_tokens']:4d} -> {info['compressed_tokens']:4d} tokens"
        )
    print(f"\nretrieved context: {before} -> {after} tokens (counted with {info['counted_with']})\n")
    print(response.response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
