"""The HTTP app: FastAPI routes over one :class:`~.engine.Engine` and its :class:`~.worker.Worker`.

Routes: ``POST /v1/compress``, ``GET /v1/info``, ``GET /healthz`` (alive), ``GET /readyz``
(draft loaded and warm), ``GET /metrics`` (Prometheus text).  Every route but ``/healthz``
needs ``Authorization: Bearer <token>`` when the service has a token.  Errors are JSON
(:class:`~.schema.ErrorResponse`).  An app that is one replica of several (``replica=``)
names it in every response's ``X-Specprefill-Replica`` header and in ``/v1/info``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from .. import __version__
from ..errors import ConfigError, InputError
from ..serialization import result_to_dict
from .affinity import REPLICA_HEADER
from .engine import Engine
from .metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from .schema import SCHEMA_VERSION, CompressRequest
from .settings import ServiceSettings
from .worker import CancelledJobError, DeadlineExceededError, Job, QueueFullError, Worker

__all__ = ["create_app", "HTTPError"]

logger = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting request checks that its client is still there


class HTTPError(Exception):
    """An answer with a status, a kind and a detail (rendered as JSON)."""

    def __init__(self, status: int, error: str, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON written ASCII-escaped: lone surrogates in texts survive the trip."""
    return Response(
        json.dumps(payload).encode("ascii"), status_code=status, headers=headers, media_type="application/json"
    )


class _Service:
    """What the routes share: settings, engine, worker, metrics, readiness (and the replica's name)."""

    def __init__(self, engine: Engine, settings: ServiceSettings, warm_up: bool, replica: str | None = None) -> None:
        self.engine, self.settings, self.warm_up, self.replica = engine, settings, warm_up, replica
        self.ready = threading.Event()
        self.metrics = ServiceMetrics(lambda: self.worker.depth(), engine.cache_bytes)
        engine.on_shared_forward = self.metrics.shared_rows.observe
        self.worker = Worker(
            engine,
            settings.queue_size,
            settings.max_batch,
            settings.batching,
            on_batch=self.metrics.batch.observe,
            on_run=self.metrics.compressions.inc,
        )

    def check_auth(self, request: Request) -> str:
        """401 unless the request carries an accepted bearer token; the request's cache namespace
        (the token's digest with ``cache_per_token``, else the shared ``""``)."""
        tokens = self.settings.accepted_tokens
        if not tokens:
            return ""
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        value = value.strip() if scheme.lower() == "bearer" else ""
        matches = [hmac.compare_digest(value.encode(), token.encode()) for token in tokens]  # every one compared
        if not any(matches):
            raise HTTPError(
                401,
                "unauthorized",
                "send 'Authorization: Bearer <token>' with the service's token",
                {"WWW-Authenticate": "Bearer"},
            )
        if not self.settings.cache_per_token:
            return ""
        return hashlib.blake2b(value.encode(), digest_size=8, person=b"specprefill-ns").hexdigest()

    def start(self) -> None:
        self.worker.start()

        def warm() -> None:
            try:
                if self.warm_up:
                    self.engine.warm_up()
                else:
                    self.engine.load()
                self.ready.set()
                logger.info("ready", extra={"event": {"draft": self.engine.info()["draft"]}})
            except Exception as exc:  # stays not ready; /readyz says so
                logger.error("warm-up failed: %s: %s", type(exc).__name__, exc)

        threading.Thread(target=warm, name="specprefill-warm-up", daemon=True).start()


def create_app(
    engine: Engine, settings: ServiceSettings | None = None, *, warm_up: bool = True, replica: str | None = None
) -> FastAPI:
    """The service's app. The worker starts and the draft warms up when the app starts (lifespan).

    ``replica``: this app's name among the replicas of a scaled-out service (answered in a header).
    """
    service = _Service(engine, settings or ServiceSettings(), warm_up, replica)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.ready.clear()
        await asyncio.to_thread(service.worker.stop, service.settings.drain_s)
        logger.info("stopped")

    app = FastAPI(title="specprefill draft service", version=__version__, lifespan=lifespan)
    app.state.service = service
    _routes(app, service)
    if replica is not None:
        app.add_middleware(_ReplicaHeader, value=replica)
    return app


class _ReplicaHeader:
    """ASGI middleware: every HTTP response carries ``X-Specprefill-Replica: <value>``."""

    def __init__(self, app: Any, value: str) -> None:
        self.app, self.header = app, (REPLICA_HEADER.encode("ascii"), value.encode("latin-1"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def _routes(app: FastAPI, service: _Service) -> None:
    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> Response:
        service.metrics.requests.labels(request.url.path, str(exc.status)).inc()
        return json_response({"error": exc.error, "detail": exc.detail}, exc.status, exc.headers)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        service.check_auth(request)
        if not service.ready.is_set():
            raise HTTPError(503, "not_ready", "the draft is loading or warming up")
        return json_response({"status": "ready"})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        service.check_auth(request)
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info")
    async def info(request: Request) -> Response:
        service.check_auth(request)
        s = service.settings
        limits = {
            "max_body_bytes": s.max_body_bytes,
            "max_segments": s.max_segments,
            "max_total_chars": s.max_total_chars,
            "queue_size": s.queue_size,
            "deadline_s": s.deadline_s,
        }
        return json_response(
            {
                "version": __version__,
                "schema": SCHEMA_VERSION,
                **service.engine.info(),
                "limits": limits,
                "batching": {"enabled": s.batching, "max_batch": s.max_batch},
                "cache_per_token": s.cache_per_token,
                "ready": service.ready.is_set(),
                **({"replica": service.replica} if service.replica is not None else {}),
            }
        )

    @app.post("/v1/compress")
    async def compress(request: Request) -> Response:
        t0 = time.monotonic()
        namespace = service.check_auth(request)
        job = _job(service, await _read_body(request, service.settings.max_body_bytes), namespace)
        try:
            future = asyncio.wrap_future(service.worker.submit(job))
        except QueueFullError as exc:
            service.metrics.errors.labels("queue_full").inc()
            raise HTTPError(429, "queue_full", str(exc), {"Retry-After": str(exc.retry_after)}) from exc
        result = await _wait(service, request, job, future)
        seconds = time.monotonic() - t0
        queue_seconds = max(0.0, seconds - result.stats.timings.get("total", 0.0))
        service.metrics.record(result.stats, seconds, queue_seconds)
        service.metrics.requests.labels(request.url.path, "200").inc()
        logger.info(
            "compress",
            extra={
                "event": {
                    "segments": len(job.segments),
                    "tokens_in": result.stats.original_tokens,
                    "tokens_out": result.stats.compressed_tokens,
                    "reused": result.stats.draft_tokens_reused,
                    "batch_size": job.batch_size,
                    "seconds": round(seconds, 4),
                }
            },
        )
        return json_response(
            {
                "version": SCHEMA_VERSION,
                "result": result_to_dict(result),
                "batch_size": job.batch_size,
                "queue_seconds": queue_seconds,
                "seconds": seconds,
            }
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "body_too_large", f"the body has {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "body_too_large", f"the body passed the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _job(service: _Service, body: bytes, namespace: str = "") -> Job:
    """Parse, validate and bound a compress request (422 / 413 with a JSON reason)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(422, "malformed_json", f"the body is not JSON: {exc}") from exc
    try:
        req = CompressRequest.model_validate(data)
    except ValidationError as exc:
        raise HTTPError(422, "invalid_request", json.loads(exc.json(include_url=False))) from exc
    s = service.settings
    if len(req.segments) > s.max_segments:
        raise HTTPError(413, "too_many_segments", f"{len(req.segments)} segments; the limit is {s.max_segments}")
    chars = sum(len(seg.text) for seg in req.segments) + len(req.query or "")
    if chars > s.max_total_chars:
        raise HTTPError(413, "too_many_chars", f"{chars} characters; the limit is {s.max_total_chars}")
    overrides = req.config.model_dump(exclude_none=True)
    try:
        service.engine.configured(overrides)
    except (ConfigError, TypeError) as exc:
        raise HTTPError(422, "invalid_config", str(exc)) from exc
    key_data = {"segments": [seg.model_dump() for seg in req.segments], "query": req.query, "config": overrides,
                "namespace": namespace}  # tenants apart: identical requests of two tenants are two jobs
    key = hashlib.blake2b(json.dumps(key_data, sort_keys=True).encode("ascii"), digest_size=16).hexdigest()
    deadline = time.monotonic() + (req.deadline_s or s.deadline_s)
    return Job([seg.to_segment() for seg in req.segments], req.query, overrides, key, deadline, namespace)


async def _wait(service: _Service, request: Request, job: Job, future: asyncio.Future[Any]) -> Any:
    """The job's result; the job is dropped when its client leaves, 504 past its deadline."""
    while True:
        done, _ = await asyncio.wait({future}, timeout=POLL_S)
        if done:
            break
        if await request.is_disconnected():
            service.worker.discard(job)
            future.cancel()
            service.metrics.errors.labels("client_gone").inc()
            raise HTTPError(499, "client_gone", "the client closed the connection")
        if time.monotonic() > job.deadline:
            service.worker.discard(job)
            future.cancel()
            service.metrics.errors.labels("deadline").inc()
            raise HTTPError(504, "deadline_exceeded", "the request's deadline passed before its result was ready")
    try:
        return future.result()
    except DeadlineExceededError as exc:
        service.metrics.errors.labels("deadline").inc()
        raise HTTPError(504, "deadline_exceeded", str(exc)) from exc
    except CancelledJobError as exc:
        raise HTTPError(499, "client_gone", str(exc)) from exc
    except (InputError, ConfigError) as exc:
        service.metrics.errors.labels("invalid_input").inc()
        raise HTTPError(422, "invalid_input", str(exc)) from exc
    except Exception as exc:
        service.metrics.errors.labels("compression_failed").inc()
        logger.error("compression failed: %s: %s", type(exc).__name__, exc)
        raise HTTPError(500, "compression_failed", f"{type(exc).__name__}: {exc}") from exc
