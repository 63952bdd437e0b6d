"""What one call may cost: a size limit on the draft's input and an optional deadline.

``max_input_tokens`` (:class:`~specprefill_agents.CompressionConfig`) bounds the draft tokens a
call runs; when unset it is sized to the draft and the device (:func:`default_input_limit`).
A deadline is set per call with :func:`deadline` and checked before every draft forward (a
window's prefill, the query block, each lookahead step) by :func:`check_deadline`; both raise a
typed error that the compressor's failure policy turns into a pass-through.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from .errors import DeadlineExceededError, InputTooLargeError

__all__ = ["check_deadline", "check_input_size", "deadline", "default_input_limit"]

#: Draft work (tokens x parameters) one call may cost by default: ~33k tokens of a 135M draft
#: on a CPU (a few minutes on two cores in fp32), eight times that on an accelerator.
WORK_LIMIT = {"cpu": 4.5e12, "accelerator": 3.6e13}
MIN_INPUT_LIMIT, MAX_INPUT_LIMIT = 4096, 1 << 20

_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("specprefill_deadline", default=None)


def default_input_limit(model: torch.nn.Module, device: torch.device) -> int:
    """Most draft tokens per call for ``model`` on ``device`` when ``max_input_tokens`` is unset."""
    params = sum(p.numel() for p in model.parameters())
    work = WORK_LIMIT["cpu" if device.type == "cpu" else "accelerator"]
    return int(min(max(work / max(params, 1), MIN_INPUT_LIMIT), MAX_INPUT_LIMIT))


def check_input_size(tokens: int, limit: int) -> None:
    """:class:`InputTooLargeError` when ``tokens`` draft tokens are more than ``limit``."""
    if tokens > limit:
        raise InputTooLargeError(
            f"the draft would read {tokens} tokens, over max_input_tokens={limit}; raise "
            "CompressionConfig(max_input_tokens=...) or send less context (it passes through uncompressed)")


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Within the block, :func:`check_deadline` raises once ``seconds`` have passed (None: never)."""
    token = _DEADLINE.set(None if seconds is None else (time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check_deadline() -> None:
    """:class:`DeadlineExceededError` if the current call's deadline has passed."""
    current = _DEADLINE.get()
    if current is not None and time.monotonic() > current[0]:
        raise DeadlineExceededError(
            f"compression took longer than its deadline of {current[1]:g} s; the input passes through "
            "uncompressed (raise deadline_s, or use a faster device for the draft)")
