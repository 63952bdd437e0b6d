"""A draft service on the tiny in-process draft, run as its own process by the tests.

``python -m tests.service.server_proc --port P [--token T]... [--cache-per-token] [--queue-size N]
[--max-batch N] [--slow S] [--no-batching]``: requests whose query starts with ``slow`` wait ``S`` seconds in
the worker before compressing, so a test can catch one in flight.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from specprefill_agents import asked_query
from specprefill_agents.service.engine import Engine
from specprefill_agents.service.server import configure_logging, serve
from specprefill_agents.service.settings import ServiceSettings
from specprefill_agents.testing import save_tiny_semantic, tiny_draft

from .conftest import SERVICE_CONFIG


class SlowEngine(Engine):
    """An engine whose ``slow...`` queries first sleep: a long request, on demand."""

    def __init__(self, slow: float) -> None:
        encoder = save_tiny_semantic(tempfile.mkdtemp(prefix="tiny-encoder-"))  # for requests with semantic_boost
        super().__init__(tiny_draft("llama", max_pos=2048), SERVICE_CONFIG.replace(semantic_model=str(encoder)))
        self.slow = slow

    def compress(self, segments: Any, query: str | None, overrides: dict[str, Any], namespace: str = "") -> Any:
        asked = asked_query(segments, query)  # the explicit query, else the latest user turn
        if asked is not None and asked.startswith("slow"):
            time.sleep(self.slow)
        return super().compress(segments, query, overrides, namespace)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", action="append", default=[])
    p.add_argument("--cache-per-token", action="store_true")
    p.add_argument("--queue-size", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--slow", type=float, default=2.0)
    p.add_argument("--no-batching", action="store_true")
    p.add_argument("--max-body-bytes", type=int, default=200_000)
    args = p.parse_args()
    configure_logging()
    settings = ServiceSettings(
        port=args.port,
        token=args.token[0] if args.token else None,
        tokens=tuple(args.token[1:]),
        cache_per_token=args.cache_per_token,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
        batching=not args.no_batching,
        max_body_bytes=args.max_body_bytes,
        max_segments=8,
        max_total_chars=50_000,
        drain_s=10.0,
    )
    serve(SlowEngine(args.slow), settings)


if __name__ == "__main__":
    main()
