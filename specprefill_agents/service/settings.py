"""The service's settings: one frozen dataclass, validated, shared by the CLI and the app."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["ServiceSettings", "TOKEN_ENV", "is_loopback"]

TOKEN_ENV = "SPECPREFILL_TOKEN"
"""Environment variable holding the bearer token (the server's, and the client's default)."""


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServiceSettings:
    """How the draft service listens, what it accepts and how it queues work."""

    host: str = _help("Interface to bind. Anything but loopback requires a token.", "127.0.0.1")
    port: int = _help("TCP port (0: any free port).", 8765)
    token: str | None = _help(f"Bearer token every request except /healthz must carry (or ${TOKEN_ENV}).", None)
    tokens: tuple[str, ...] = _help("More bearer tokens accepted besides ``token``: one per tenant.", ())
    cache_per_token: bool = _help(
        "Give each bearer token its own cache namespace: a tenant's requests never hit (so never reveal, "
        "by their reuse or their timing) the KV prefixes and scores another tenant's requests cached.",
        False,
    )
    max_body_bytes: int = _help("Largest request body accepted (413 above).", 8 << 20)
    max_segments: int = _help("Most segments in one request (413 above).", 1024)
    max_total_chars: int = _help(
        "Most characters over all segments and the query of one request (413 above).", 2_000_000
    )
    queue_size: int = _help("Requests waiting for the draft at most; more get 429 with Retry-After.", 64)
    max_batch: int = _help("Requests in flight at most (worker threads on the shared draft).", 16)
    batching: bool = _help(
        "Requests in flight share the draft's forwards: their query blocks and lookahead decode steps run "
        "as the rows of one batch, and queued requests identical to one being taken are computed once; "
        "off: each request's forwards are its own.",
        True,
    )
    deadline_s: float = _help(
        "Default per-request deadline in seconds; a request still queued past it gets 504 and is not computed.", 60.0
    )
    drain_s: float = _help("On SIGTERM, seconds to let in-flight requests finish before exiting.", 30.0)

    @property
    def accepted_tokens(self) -> tuple[str, ...]:
        """Every bearer token the service accepts (empty: no authentication)."""
        return (self.token, *self.tokens) if self.token else ()

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be an int in [0, 65535], got {self.port!r}")
        for token in (self.token, *self.tokens):
            if token is not None and (not isinstance(token, str) or len(token) < 8):
                raise ConfigError("a token must be a string of at least 8 characters")
        if self.tokens and not self.token:
            raise ConfigError("tokens: give the first one as token")
        if self.cache_per_token and not self.token:
            raise ConfigError("cache_per_token needs bearer tokens (token, tokens): they name the namespaces")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(
                f"binding {self.host!r} exposes the service beyond this machine: set a bearer "
                f"token (--token or ${TOKEN_ENV}), or bind 127.0.0.1"
            )
        for name in ("max_body_bytes", "max_segments", "max_total_chars", "queue_size", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("deadline_s", "drain_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
