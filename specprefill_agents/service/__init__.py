"""The resident draft service: one process owns the draft and its caches; agents share it.

* :class:`RemoteCompressor` (``client``): the client, a :class:`~specprefill_agents.Compressor`.
* ``app.create_app`` / ``server.serve``: the FastAPI app and its uvicorn runner
  (``pip install "specprefill-agents[service]"``; ``specprefill serve``).
* ``schema``: the versioned wire format.
* ``ray_serve``: the service scaled out over Ray Serve replicas, routed by prefix affinity
  (``affinity``: the agent key and the rendezvous ranking; ``ray_router``: Ray's request router)
  (``pip install "specprefill-agents[ray]"``; ``specprefill serve --ray``).

Importing this package loads nothing optional: ``RemoteCompressor`` loads ``httpx`` on first
access, and the web stack loads with ``app``.
"""

from __future__ import annotations

from typing import Any

from .settings import TOKEN_ENV, ServiceSettings

__all__ = ["RemoteCompressor", "ServiceSettings", "URL_ENV", "TOKEN_ENV"]

URL_ENV = "SPECPREFILL_URL"
"""Environment variable naming the service (``http://127.0.0.1:8765``): integrations given no
compressor use a :class:`RemoteCompressor` on it."""


def __getattr__(name: str) -> Any:
    if name == "RemoteCompressor":
        from .client import RemoteCompressor

        return RemoteCompressor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
