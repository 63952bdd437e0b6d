"""Run the app under uvicorn: bind, log structured lines, drain on SIGTERM.

uvicorn handles SIGTERM and SIGINT: it stops accepting connections, lets in-flight requests
finish (up to ``drain_s``), then runs the app's shutdown, which lets the worker finish what
is queued before the process exits.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from typing import Any

import uvicorn

from .app import create_app
from .engine import Engine
from .settings import ServiceSettings

__all__ = ["JsonLogFormatter", "configure_logging", "serve"]

logger = logging.getLogger(__name__)


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the record's ``event`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line.update(event)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Structured logs on stderr for the service's and uvicorn's loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    for name in ("specprefill_agents", "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(engine: Engine, settings: ServiceSettings, *, warm_up: bool = True) -> None:
    """Serve until SIGTERM / SIGINT (blocking)."""
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    app = create_app(engine, settings, warm_up=warm_up)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=int(max(1, settings.drain_s))
    )
    logger.info(
        "listening",
        extra={
            "event": {
                "url": f"http://{host}:{port}",
                "auth": bool(settings.token),
                "batching": settings.batching,
                "queue_size": settings.queue_size,
            }
        },
    )
    t0 = time.monotonic()
    uvicorn.Server(config).run(sockets=[sock])
    logger.info("exited", extra={"event": {"uptime_s": round(time.monotonic() - t0, 1)}})
