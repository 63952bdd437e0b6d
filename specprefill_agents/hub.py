"""Is the Hugging Face hub reachable?  Asked once per load of a hub id, so that a machine with no
network fails in seconds with a message that says so, instead of retrying for a minute."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

__all__ = ["hub_offline_reason"]

PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def hub_offline_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be used now (``HF_HUB_OFFLINE`` set, or no route to its host), else None."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name} is set"
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"no route to {host}:{port} ({exc.strerror or type(exc).__name__})"
