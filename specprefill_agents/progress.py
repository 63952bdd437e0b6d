"""When to show a progress bar: long work only, on a terminal or when asked, never when quiet.

``SpecPrefillCompressor(progress=...)`` sets the choice for its calls through a context
variable (thread- and task-safe); ``None`` means: on when stderr is a terminal and the
``specprefill_agents`` logger lets warnings through (the CLI's ``--quiet`` raises it to errors).
Bars are tqdm's, written to stderr; nothing here prints otherwise.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["MIN_WINDOWS", "progress_enabled", "requested_progress", "window_bar"]

MIN_WINDOWS = 4  # a compression of fewer windows takes seconds: no bar
_REQUESTED: ContextVar[bool | None] = ContextVar("specprefill_progress", default=None)


@contextmanager
def requested_progress(progress: bool | None) -> Iterator[None]:
    """Within this block, bars follow ``progress`` (True: always, False: never, None: automatic)."""
    token = _REQUESTED.set(progress)
    try:
        yield
    finally:
        _REQUESTED.reset(token)


def progress_enabled() -> bool:
    """Whether a long piece of work should show a bar now."""
    asked = _REQUESTED.get()
    if asked is not None:
        return asked
    if not logging.getLogger("specprefill_agents").isEnabledFor(logging.WARNING):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def window_bar(windows: int) -> Any:
    """A tqdm bar over ``windows`` scoring windows (disabled for short work or when not wanted)."""
    from tqdm import tqdm

    show = windows >= MIN_WINDOWS and progress_enabled()
    return tqdm(
        total=windows,
        desc="specprefill: scoring",
        unit="window",
        file=sys.stderr,
        leave=False,
        disable=not show,
        dynamic_ncols=True,
    )
