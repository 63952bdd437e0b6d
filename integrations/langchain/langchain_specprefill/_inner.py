"""What ``SpecPrefillLLM(inner=...)`` accepts, and how the wrapper reaches the chat model behind it.

Accepted: a chat model; a binding of one (``.bind(...)``, ``.bind_tools(...)``,
``.with_config(...)``); ``.with_retry()`` / ``.with_fallbacks()`` of those; and
``init_chat_model(..., configurable_fields=...)`` (its ``configurable`` values come from the
config of each call).  A chat model is called through ``generate`` (its ``llm_output`` kept);
anything else through the Runnable interface.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.base import RunnableBindingBase
from langchain_core.runnables.fallbacks import RunnableWithFallbacks

_ConfigurableModel: type[Any] | None
try:  # the configurable model of init_chat_model (langchain, an optional extra)
    from langchain.chat_models.base import _ConfigurableModel
except ImportError:  # pragma: no cover - langchain not installed
    _ConfigurableModel = None

__all__ = [
    "STANDARD_PARAMS",
    "check_inner",
    "chat_model_of",
    "describe",
    "delegate",
    "map_chat",
    "with_params",
    "inner_config",
    "configurable_from",
    "current_configurable",
]

logger = logging.getLogger(__name__)

STANDARD_PARAMS = ("temperature", "max_tokens", "top_p", "stop", "timeout", "max_retries", "seed")
"""Parameters that ``SpecPrefillLLM`` takes for its inner model (LangChain's standard ones)."""

_ACCEPTED = (
    "a chat model, a binding of one (.bind(...), .bind_tools(...), .with_config(...)), .with_retry() or "
    ".with_fallbacks() of those, or init_chat_model(..., configurable_fields=...)"
)


def _is_configurable(inner: Any) -> bool:
    return _ConfigurableModel is not None and isinstance(inner, _ConfigurableModel)


def _reaches_chat_model(inner: Any) -> bool:
    if isinstance(inner, BaseChatModel) or _is_configurable(inner):
        return True
    if isinstance(inner, RunnableBindingBase):
        return _reaches_chat_model(inner.bound)
    if isinstance(inner, RunnableWithFallbacks):
        return all(_reaches_chat_model(r) for r in inner.runnables)
    return False


def check_inner(inner: Any) -> Runnable[Any, Any]:
    """``inner`` if it is something the wrapper can call as a chat model, else a ``TypeError``."""
    if not _reaches_chat_model(inner):
        raise TypeError(
            f"SpecPrefillLLM(inner=...) takes {_ACCEPTED}; got {type(inner).__name__}. "
            "A chain (prompt | model) goes after the wrapper instead: prompt | SpecPrefillLLM(inner=model)"
        )
    return inner


def chat_model_of(inner: Any) -> BaseChatModel | None:
    """The chat model behind ``inner`` (the first of fallbacks; a configurable model's default), for
    what only a chat model can say (tracing params, profile, token counts); None when there is none."""
    chat = _first_chat_model(inner)
    if chat is not None or not _is_configurable(_innermost(inner)):
        return chat
    try:
        return _first_chat_model(_innermost(inner)._model())
    except Exception as exc:  # no default model, provider package missing...: say nothing
        logger.debug("no default model behind the configurable inner model: %s", exc)
        return None


def _innermost(inner: Any) -> Any:
    while isinstance(inner, (RunnableBindingBase, RunnableWithFallbacks)):
        inner = inner.bound if isinstance(inner, RunnableBindingBase) else inner.runnable
    return inner


def describe(inner: Any) -> dict[str, Any]:
    """What decides ``inner``'s answers, for cache keys (no secrets: a configurable model shows only
    its model name, provider and which fields are configurable)."""
    if isinstance(inner, BaseChatModel):
        return {"_type": inner._llm_type, **inner._identifying_params}
    if isinstance(inner, RunnableBindingBase):
        return {"_type": type(inner).__name__, "bound": describe(inner.bound), "kwargs": dict(inner.kwargs)}
    if isinstance(inner, RunnableWithFallbacks):
        return {"_type": "fallbacks", "runnables": [describe(r) for r in inner.runnables]}
    defaults = getattr(inner, "_default_config", {})
    return {
        "_type": "configurable",
        "model": defaults.get("model"),
        "model_provider": defaults.get("model_provider"),
        "fields": getattr(inner, "_configurable_fields", None),
        "operations": [
            (name, repr(args), repr(kw)) for name, args, kw in getattr(inner, "_queued_declarative_operations", ())
        ],
    }


def map_chat(inner: Any, fn: Callable[[Any], Runnable[Any, Any]]) -> Runnable[Any, Any]:
    """``inner`` with ``fn`` applied to each model inside it (each fallback too; a configurable one
    as it is), keeping the bindings, retries and fallbacks around them."""
    if isinstance(inner, RunnableBindingBase):
        return inner.model_copy(update={"bound": map_chat(inner.bound, fn)})
    if isinstance(inner, RunnableWithFallbacks):
        return inner.model_copy(
            update={"runnable": map_chat(inner.runnable, fn), "fallbacks": [map_chat(f, fn) for f in inner.fallbacks]}
        )
    return fn(inner)


def delegate(inner: Any, method: str, /, *args: Any, **kwargs: Any) -> Runnable[Any, Any]:
    """``inner.<method>(...)`` (``bind_tools``, ``with_structured_output``) the way LangChain does it:
    a binding or fallbacks hand it to their models, a configurable model queues it; a retry, which
    has no such method, keeps its policy around the result."""
    if isinstance(inner, RunnableBindingBase) and not isinstance(inner, RunnableBinding):
        return inner.model_copy(update={"bound": delegate(inner.bound, method, *args, **kwargs)})
    return getattr(inner, method)(*args, **kwargs)


def with_params(inner: Any, params: Mapping[str, Any]) -> tuple[Runnable[Any, Any], dict[str, Any]]:
    """``inner`` with the standard ``params`` applied, and the ones left to pass with every call.

    Each chat model inside ``inner`` (bindings, retries and fallbacks kept) gets the parameters it
    declares as fields, in a copy (the caller's model is not changed); the parameters the first of
    them does not declare, and all of them for a configurable model, go with every call.
    """
    if not params:
        return inner, {}

    def set_fields(model: Any) -> Any:
        if not isinstance(model, BaseChatModel):
            return model
        fields = {k: v for k, v in params.items() if k in type(model).model_fields}
        return model.model_copy(update=fields) if fields else model

    target = map_chat(inner, set_fields)
    chat = target if isinstance(target, BaseChatModel) else _first_chat_model(target)
    declared = type(chat).model_fields if chat is not None else {}
    return target, {k: v for k, v in params.items() if k not in declared}


def _first_chat_model(inner: Any) -> BaseChatModel | None:
    """The first chat model inside bindings and fallbacks, without building a configurable one."""
    if isinstance(inner, BaseChatModel):
        return inner
    if isinstance(inner, RunnableBindingBase):
        return _first_chat_model(inner.bound)
    if isinstance(inner, RunnableWithFallbacks):
        return _first_chat_model(inner.runnable)
    return None


_CONFIGURABLE: ContextVar[dict[str, Any] | None] = ContextVar("specprefill_inner_configurable", default=None)


@contextmanager
def configurable_from(config: RunnableConfig) -> Iterator[None]:
    """While the wrapper runs, remember the ``configurable`` values of its call's config: its inner
    model is called with them (LangChain hands a chat model's ``_generate`` no config)."""
    token = _CONFIGURABLE.set(dict(config.get("configurable") or {}) or None)
    try:
        yield
    finally:
        with suppress(ValueError):  # a generator closed from another context: that context never saw the value
            _CONFIGURABLE.reset(token)


def current_configurable() -> dict[str, Any] | None:
    """The ``configurable`` values of the wrapper's call now running, if any."""
    return _CONFIGURABLE.get()


def inner_config(callbacks: Any) -> RunnableConfig:
    """The config of the inner model's call: the child run's callbacks, the caller's ``configurable``."""
    config: RunnableConfig = {"callbacks": callbacks}
    configurable = _CONFIGURABLE.get()
    if configurable:
        config["configurable"] = configurable
    return config
