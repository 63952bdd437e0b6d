"""LangChain's standard chat-model unit suite, run on the wrapper around a tool-calling fake."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import model_validator
from specprefill_agents.testing import tiny_draft

from langchain_specprefill import SpecPrefillLLM

from .fakes import RecordingChatModel

_STANDARD = ("temperature", "max_tokens", "timeout", "stop", "max_retries", "streaming", "api_key")


class WrappedFake(SpecPrefillLLM):
    """The wrapper as the suite builds it.  Standard parameters (temperature, max_tokens,
    api_key, ...) belong to the inner model, so they are routed there; SpecPrefillLLM itself
    forbids unknown fields (a typo or a misplaced ``temperature`` raises)."""

    @model_validator(mode="before")
    @classmethod
    def _route_standard_params(cls, values: Any) -> Any:
        if isinstance(values, dict) and "inner" not in values:
            values = dict(values)
            inner = {k: values.pop(k) for k in _STANDARD if k in values}
            values["inner"] = RecordingChatModel(**inner)  # it ignores what it does not know
        return values


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
