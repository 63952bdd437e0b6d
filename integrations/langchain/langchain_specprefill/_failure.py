"""The integration's failure policy: an agent never dies because compression failed.

Every call into a compressor (the in-process one, a user's own, or a remote client)
goes through :func:`handle_failure`, so the policy holds whatever the compressor's own
``on_failure`` setting is.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal, get_args

from specprefill_agents import ConfigError, ScoringError

__all__ = ["OnFailure", "CompressorFailure", "check_on_failure", "handle_failure"]

logger = logging.getLogger(__name__)

OnFailure = Literal["passthrough", "warn", "raise"]
"""``"warn"`` (default): pass the input through unchanged and warn; ``"passthrough"``:
pass it through silently (logged at WARNING); ``"raise"``: raise the error."""


class CompressorFailure(ScoringError):
    """A compressor reported a failure in its result instead of raising (it fell back itself)."""


def check_on_failure(value: object) -> OnFailure:
    """``value`` if it is a valid policy, else :class:`ConfigError` saying what is allowed."""
    if value not in get_args(OnFailure):
        raise ConfigError(f"on_failure must be one of {get_args(OnFailure)}, got {value!r}")
    return value  # type: ignore[return-value]


def handle_failure(on_failure: OnFailure, exc: BaseException, where: str) -> str:
    """Apply the policy to ``exc`` raised while compressing in ``where``.

    Returns a one-line description for stats (``"TypeName: message"``); raises ``exc``
    itself under ``"raise"``.
    """
    if on_failure == "raise":
        raise exc
    failure = f"{type(exc).__name__}: {exc}"
    message = f"{where}: compression failed, the context passed through uncompressed ({failure})"
    if on_failure == "warn":
        warnings.warn(message, RuntimeWarning, stacklevel=4)
    logger.warning(message)
    return failure
