"""What an integration may call: the :class:`Compressor` protocol and the failure policy.

The in-process :class:`~specprefill_agents.SpecPrefillCompressor` implements the protocol, and so
can a client of a remote draft service; integrations accept either and call nothing else.
Every failure inside compression goes through :func:`handle_failure` (or, for an optional part
such as the semantic prior, :func:`handle_part_failure`), so an agent step never dies because
compression failed unless the caller asked for that (``on_failure="raise"``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from .budget import TokenCounter
from .errors import ConfigError
from .types import CompressionResult, Segment

__all__ = ["Compressor", "OnFailure", "check_on_failure", "handle_failure", "handle_part_failure"]

logger = logging.getLogger(__name__)

OnFailure = Literal["passthrough", "warn", "raise"]
"""``"warn"`` (default): pass the input through unchanged and warn; ``"passthrough"``: pass it
through silently (logged at WARNING); ``"raise"``: raise the error."""


@runtime_checkable
class Compressor(Protocol):
    """A compressor as integrations see it."""

    def compress_segments(self, segments: Sequence[Segment], query: str | None = None, *,
                          keep_ratio: float | None = None, max_tokens: int | None = None,
                          token_counter: Any = None, gap_refs: bool | None = None) -> CompressionResult:
        """Compress the compressible segments for ``query``: same count and order out as in,
        protected segments byte-identical, stats counted with ``token_counter`` when given;
        ``result.gaps`` lists what was left out (integrations pass ``gap_refs`` only when asked
        to make gaps expandable: markers then carry the references)."""
        ...

    def counter(self, token_counter: Any = None) -> tuple[TokenCounter, str]:
        """The counter (and its name) that budgets and stats of a call with ``token_counter`` use."""
        ...

    def identity(self) -> dict[str, Any]:
        """What decides the output (draft, config, cache mode) as a plain dict, loading nothing."""
        ...


def check_on_failure(value: object) -> OnFailure:
    """``value`` if it is a valid policy, else :class:`ConfigError` saying what is allowed."""
    if value not in get_args(OnFailure):
        raise ConfigError(f"on_failure must be one of {get_args(OnFailure)}, got {value!r}")
    return value  # type: ignore[return-value]


def handle_failure(on_failure: OnFailure, exc: BaseException, where: str) -> str:
    """Apply the policy to ``exc``, raised while compressing in ``where``.

    Returns a one-line description for stats (``"TypeName: message"``); raises ``exc`` itself
    under ``"raise"``.
    """
    if on_failure == "raise":
        raise exc
    failure = f"{type(exc).__name__}: {exc}"
    message = f"{where}: compression failed, the input passed through uncompressed ({failure})"
    if on_failure == "warn":
        warnings.warn(message, RuntimeWarning, stacklevel=4)
    logger.warning(message)
    return failure


def handle_part_failure(on_failure: OnFailure, exc: BaseException, where: str, part: str) -> str:
    """Apply the policy to ``exc``, raised by an optional ``part`` of a compression in ``where``
    that the rest can do without: raises ``exc`` under ``"raise"``; otherwise the compression goes
    on without that part, and the returned line (for ``stats.degraded``) is warned (``"warn"``)
    and logged."""
    if on_failure == "raise":
        raise exc
    message = f"{part} skipped ({type(exc).__name__}: {exc})"
    if on_failure == "warn":
        warnings.warn(f"{where}: {message}", RuntimeWarning, stacklevel=4)
    logger.warning("%s: %s", where, message)
    return message
