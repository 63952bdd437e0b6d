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
    "DraftModelError",
    "DraftNotInstalledError",
    "ScoringError",
    "GapNotFoundError",
]


class SpecPrefillError(Exception):
    """Base class of every error raised by specprefill-agents."""


class ConfigError(SpecPrefillError, ValueError):
    """A configuration value is invalid (out of range, wrong type, contradictory)."""


class InputError(SpecPrefillError, ValueError):
    """The input to compress cannot be handled (wrong type, invalid text)."""


class DraftModelError(SpecPrefillError, RuntimeError):
    """The draft model could not be loaded or converted."""


class DraftNotInstalledError(DraftModelError, ImportError):
    """The package that carries the requested draft weights is not installed."""


class ScoringError(SpecPrefillError, RuntimeError):
    """The draft model failed while scoring (out of memory, model error)."""


class GapNotFoundError(SpecPrefillError, LookupError):
    """A gap reference is unknown here (mistyped, forged, or from another conversation)."""
