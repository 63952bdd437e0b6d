"""One error hierarchy for the whole library.

Every error derives from :class:`SpecPrefillError`; the ones that are also a
builtin category (a bad value, a missing file) derive from that builtin too, so
callers that already catch ``ValueError`` keep working.  Messages say what to do.
"""

from __future__ import annotations

__all__ = [
    "SpecPrefillError",
    "ConfigError",
    "InputError",
    "InputTooLargeError",
    "DeadlineExceededError",
    "DraftModelError",
    "DraftNotInstalledError",
    "DraftDownloadError",
    "ScoringError",
    "ServiceUnavailableError",
    "ServiceRequestError",
    "GapNotFoundError",
]


class SpecPrefillError(Exception):
    """Base class of every error raised by specprefill-agents."""


class ConfigError(SpecPrefillError, ValueError):
    """A configuration value is invalid (out of range, wrong type, contradictory)."""


class InputError(SpecPrefillError, ValueError):
    """The input to compress cannot be handled (wrong type, invalid text)."""


class InputTooLargeError(InputError):
    """The input is larger than ``max_input_tokens``: under ``on_failure="warn"`` / ``"passthrough"``
    it passes through uncompressed, under ``"raise"`` this is raised."""


class DeadlineExceededError(SpecPrefillError, TimeoutError):
    """Compression ran past its deadline (``deadline_s``); the input passes through unless
    ``on_failure="raise"``."""


class DraftModelError(SpecPrefillError, RuntimeError):
    """The draft model could not be loaded or converted."""


class DraftNotInstalledError(DraftModelError, ImportError):
    """The package that carries the requested draft weights is not installed."""


class DraftDownloadError(DraftNotInstalledError):
    """The embedded draft's weights are not installed and fetching them failed (offline, bad hash)."""


class ScoringError(SpecPrefillError, RuntimeError):
    """The draft model failed while scoring (out of memory, model error)."""


class ServiceUnavailableError(SpecPrefillError, ConnectionError):
    """The draft service could not answer (down, unreachable, timed out, overloaded, server error).

    Integrations treat it like any compression failure: their ``on_failure`` policy passes the
    input through uncompressed.  Check the URL (``SPECPREFILL_URL``) and that ``specprefill serve``
    is running; on 429 the service is overloaded: add capacity or raise its ``--queue-size``.
    """


class ServiceRequestError(SpecPrefillError, ValueError):
    """The draft service rejected the request itself (bad token, too large, invalid fields): a 4xx
    answer other than 429.  The message carries the service's reason; fix the request or the token."""


class GapNotFoundError(SpecPrefillError, LookupError):
    """A gap reference is unknown here (mistyped, forged, or from another conversation)."""
