"""Prometheus metrics of one service instance (its own registry, so apps never share counters)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..types import CompressionStats

__all__ = ["ServiceMetrics", "CONTENT_TYPE_LATEST"]

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    """Requests, errors by kind, queue depth, batch sizes, tokens, draft reuse, cache bytes, latency."""

    def __init__(self, queue_depth: Callable[[], float], cache_bytes: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "specprefill_requests", "HTTP requests by path and status", ["path", "status"], registry=r
        )
        self.errors = Counter("specprefill_errors", "Failed compress requests by kind", ["kind"], registry=r)
        self.compressions = Counter(
            "specprefill_compressions",
            "Compressions the draft ran (identical requests of one worker round run once; dropped requests never run)",
            registry=r,
        )
        self.tokens_in = Counter("specprefill_tokens_in", "Tokens received (counted by the service)", registry=r)
        self.tokens_out = Counter("specprefill_tokens_out", "Tokens returned after compression", registry=r)
        self.forwarded = Counter("specprefill_draft_tokens_forwarded", "Draft tokens run through the model", registry=r)
        self.reused = Counter(
            "specprefill_draft_tokens_reused", "Draft tokens restored from the KV prefix cache", registry=r
        )
        self.score_hits = Counter("specprefill_score_cache_hits", "Requests answered from the score cache", registry=r)
        self.batch = Histogram(
            "specprefill_batch_size", "Requests per worker round", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64)
        )
        self.shared_rows = Histogram(
            "specprefill_shared_forward_rows",
            "Requests' query blocks per shared draft forward (batching)",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.latency = Histogram(
            "specprefill_request_seconds", "Compress request latency (queue + compute)", registry=r, buckets=_LATENCY
        )
        self.queued = Histogram(
            "specprefill_queue_seconds", "Time a request waited for the draft", registry=r, buckets=_LATENCY
        )
        Gauge("specprefill_queue_depth", "Requests waiting for the draft", registry=r).set_function(queue_depth)
        Gauge("specprefill_kv_cache_bytes", "Bytes held by the draft KV prefix cache", registry=r).set_function(
            cache_bytes
        )

    def record(self, stats: CompressionStats, seconds: float, queue_seconds: float) -> None:
        self.tokens_in.inc(stats.original_tokens)
        self.tokens_out.inc(stats.compressed_tokens)
        self.forwarded.inc(stats.draft_tokens_forwarded)
        self.reused.inc(stats.draft_tokens_reused)
        self.score_hits.inc(stats.score_cache_hits)
        self.latency.observe(seconds)
        self.queued.observe(queue_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
