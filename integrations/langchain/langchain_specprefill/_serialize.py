"""LangChain serialization of the chat-model wrapper: its constructor, when all it holds can be rebuilt."""

from __future__ import annotations

from typing import Any

from langchain_core.load import dumpd
from langchain_core.load.serializable import to_json_not_implemented

__all__ = ["serialized"]


def serialized(llm: Any, constructor: Any, compressor_spec: Any) -> Any:
    """``constructor`` (what ``Serializable.to_json`` made of ``llm``) with the policy as a dict and
    the compressor's draft spec; or a ``not_implemented`` entry whose ``repr`` says why not."""
    reason = _why_not(llm, compressor_spec)
    if reason is not None:
        out = to_json_not_implemented(llm)
        out["repr"] = f"{type(llm).__name__} cannot be serialized: {reason}"
        return out
    kwargs = dict(constructor["kwargs"])
    if "policy" in kwargs:
        kwargs["policy"] = llm.policy.to_dict()
    if isinstance(compressor_spec, str):
        kwargs["compressor"] = compressor_spec
    return {**constructor, "kwargs": kwargs}


def _why_not(llm: Any, compressor_spec: Any) -> str | None:
    if compressor_spec is not None and not isinstance(compressor_spec, str):
        return (
            f"its compressor is a {type(compressor_spec).__name__} object; give a draft spec "
            "('embedded', a hub id, a directory or a .gguf file) to serialize it"
        )
    if llm.token_counter is not None:
        return "its token_counter is a live object; set it again after loading"
    if _holds_not_implemented(dumpd(llm.inner)):
        return f"its inner model ({type(llm.inner).__name__}) is not serializable, or holds something that is not"
    return None


def _holds_not_implemented(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("lc") == 1 and node.get("type") == "not_implemented":
            return True
        return any(_holds_not_implemented(v) for v in node.values())
    if isinstance(node, list):
        return any(_holds_not_implemented(v) for v in node)
    return False
