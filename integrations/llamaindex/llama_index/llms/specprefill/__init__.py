"""LlamaIndex LLM wrapper of specprefill-agents: compress tool outputs and long context for agents.

:class:`SpecPrefillLLM` wraps any ``LLM`` (a :class:`SpecPrefillFunctionCallingLLM` when the
inner one calls functions, so ``FunctionAgent`` and ``ReActAgent`` run with it).  What is
compressed is a :class:`MessagePolicy`, shared with the LangChain integration.
"""

from __future__ import annotations

from specprefill_agents import OnFailure
from specprefill_agents.message_compression import CompressionReport
from specprefill_agents.messages import MessagePolicy

from .base import METADATA_KEY, SpecPrefillFunctionCallingLLM, SpecPrefillLLM
from .messages import ChatMessageCompressor

__all__ = [
    "SpecPrefillLLM",
    "SpecPrefillFunctionCallingLLM",
    "ChatMessageCompressor",
    "MessagePolicy",
    "CompressionReport",
    "OnFailure",
    "METADATA_KEY",
]
