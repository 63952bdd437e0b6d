"""LangChain's standard chat-model unit suite, run on the wrapper around a tool-calling fake."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import model_validator
from specprefill_agents.testing import tiny_draft

from langchain_specprefill import SpecPrefillLLM

from .fakes import RecordingChatModel

_INNER_ONLY = ("streaming", "api_key")


class WrappedFake(SpecPrefillLLM):
    """The wrapper as the suite builds it: from parameters alone, so it makes its recording inner
    model.  Standard parameters (temperature, max_tokens, stop...) reach that model through
    SpecPrefillLLM's own forwarding; provider settings (api_key, streaming) are given to it here.
    SpecPrefillLLM still forbids unknown fields (a typo raises)."""

    @model_validator(mode="before")
    @classmethod
    def _make_inner(cls, values: Any) -> Any:
        if isinstance(values, dict) and "inner" not in values:
            values = dict(values)
            inner = {k: values.pop(k) for k in _INNER_ONLY if k in values}
            values["inner"] = RecordingChatModel(**inner)  # it ignores what it does not know
        return values

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False  # its compressor is a live in-process draft; see test_inner_models for serialization


class TestSpecPrefillLLMStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return WrappedFake

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"compressor": tiny_draft("llama", max_pos=4096), "keep_ratio": 0.3}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True
