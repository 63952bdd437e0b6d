"""Callback plumbing for the chat-model wrapper: its run, the inner model's child run, the stats event.

langchain-core's v1 streaming paths (``stream``/``astream``, and ``invoke`` while a
streaming handler listens, as LangGraph's ``stream_mode="messages"`` does) call ``_stream``
without the run manager.  The wrapper then finds its run here: ``stash`` keeps the run
manager that ``_should_stream`` saw, or a stand-in that ``stream`` built for the run id
it chose, and ``take`` hands it to the next ``_stream``/``_astream`` exactly once.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
    Callbacks,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.runnables import RunnableConfig

from .engine import EVENT_NAME, CompressionReport

__all__ = ["child_manager", "achild_manager", "emit", "aemit", "emit_in_context", "aemit_in_context",
           "emit_to_callbacks", "aemit_to_callbacks", "stash", "take", "stand_in_run"]

logger = logging.getLogger(__name__)

NO_STREAM_TAG = "nostream"
"""Tag on the inner model's run (not inherited): stream consumers such as LangGraph's
``stream_mode="messages"`` then show each token once, from the wrapper's run, instead of
twice (wrapper and inner).  Callbacks and traces still see the inner run."""


_RUN: ContextVar[Any] = ContextVar("specprefill_wrapper_run", default=None)

RunManager = CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun


def stash(run_manager: RunManager | None) -> None:
    """Remember the wrapper's run for the ``_stream``/``_astream`` call that follows."""
    _RUN.set(run_manager)


def take(kind: type[RunManager]) -> Any:
    """The stashed run manager if it is a ``kind``, once; then forget it."""
    run_manager = _RUN.get()
    _RUN.set(None)
    return run_manager if isinstance(run_manager, kind) else None


def _handlers(callbacks: Callbacks) -> list[Any]:
    if isinstance(callbacks, BaseCallbackManager):
        return list(callbacks.handlers)
    return list(callbacks or [])


def stand_in_run(manager: BaseCallbackManager, run_id: UUID, config: dict[str, Any], local: Callbacks,
                 local_tags: list[str] | None, local_metadata: dict[str, Any] | None, kind: type[RunManager]) -> Any:
    """A run manager describing the wrapper's run that ``stream`` is about to start with
    ``run_id`` and the callbacks of ``manager`` (used for its child run and its event only)."""
    tags, metadata = list(config.get("tags") or []), dict(config.get("metadata") or {})
    return kind(run_id=run_id, handlers=[*manager.handlers, *_handlers(local)],
                inheritable_handlers=list(manager.inheritable_handlers), parent_run_id=manager.parent_run_id,
                tags=[*manager.tags, *tags, *(local_tags or [])], inheritable_tags=[*manager.inheritable_tags, *tags],
                metadata={**manager.metadata, **metadata, **(local_metadata or {})},
                inheritable_metadata={**manager.inheritable_metadata, **metadata})


def _child(run_manager: Any, manager_cls: Any) -> Any:
    """A callback manager whose runs are children of ``run_manager``'s run (what
    ``ParentRunManager.get_child`` does; LLM run managers have no such method)."""
    if run_manager is None:
        return None
    manager = manager_cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    manager.add_tags([NO_STREAM_TAG], inherit=False)
    return manager


def child_manager(run_manager: CallbackManagerForLLMRun | None) -> CallbackManager | None:
    return cast("CallbackManager | None", _child(run_manager, CallbackManager))


def achild_manager(run_manager: AsyncCallbackManagerForLLMRun | None) -> AsyncCallbackManager | None:
    return cast("AsyncCallbackManager | None", _child(run_manager, AsyncCallbackManager))


def _data(report: CompressionReport, source: str) -> dict[str, Any]:
    return {"source": source, **report.to_dict()}


def emit(run_manager: CallbackManagerForLLMRun | None, report: CompressionReport, source: str) -> None:
    """Send the stats event to every handler of ``run_manager``'s run, as that run's event."""
    if run_manager is None or not run_manager.handlers:
        return
    manager = CallbackManager(handlers=run_manager.handlers, parent_run_id=run_manager.parent_run_id,
                              tags=run_manager.tags, metadata=run_manager.metadata)
    manager.on_custom_event(EVENT_NAME, _data(report, source), run_id=run_manager.run_id)


async def aemit(run_manager: AsyncCallbackManagerForLLMRun | None, report: CompressionReport, source: str) -> None:
    if run_manager is None or not run_manager.handlers:
        return
    manager = AsyncCallbackManager(handlers=run_manager.handlers, parent_run_id=run_manager.parent_run_id,
                                   tags=run_manager.tags, metadata=run_manager.metadata)
    await manager.on_custom_event(EVENT_NAME, _data(report, source), run_id=run_manager.run_id)


def emit_in_context(report: CompressionReport, source: str, config: RunnableConfig | None = None) -> None:
    """Send the stats event from inside a running runnable (a graph node, a lambda); outside
    any run there is nobody to tell, and that is fine."""
    try:
        dispatch_custom_event(EVENT_NAME, _data(report, source), config=config)
    except RuntimeError:
        logger.debug("no parent run to attach the %s event to", EVENT_NAME)


async def aemit_in_context(report: CompressionReport, source: str, config: RunnableConfig | None = None) -> None:
    try:
        await adispatch_custom_event(EVENT_NAME, _data(report, source), config=config)
    except RuntimeError:
        logger.debug("no parent run to attach the %s event to", EVENT_NAME)


def emit_to_callbacks(callbacks: Callbacks, report: CompressionReport, source: str) -> None:
    """Send the stats event to ``callbacks`` (what a retriever hands its document compressor), as
    an event of their parent run."""
    manager = CallbackManager.configure(inheritable_callbacks=callbacks)
    if manager.handlers:
        manager.on_custom_event(EVENT_NAME, _data(report, source), run_id=manager.parent_run_id)


async def aemit_to_callbacks(callbacks: Callbacks, report: CompressionReport, source: str) -> None:
    manager = AsyncCallbackManager.configure(inheritable_callbacks=callbacks)
    if manager.handlers:
        await manager.on_custom_event(EVENT_NAME, _data(report, source), run_id=manager.parent_run_id)
