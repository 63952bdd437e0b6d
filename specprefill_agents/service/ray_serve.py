"""The draft service scaled out over Ray Serve replicas, with prefix-affinity routing.

Each replica runs the app of ``specprefill serve`` (same routes, schema, limits and token)
on its own draft, KV prefix cache and worker; Ray's HTTP proxy (one per node) routes each
request with :class:`~.ray_router.AffinityRouter`, so the requests of one agent reach the
replica that holds its KV.  A replica takes requests only once its draft is warm.

* one machine: ``specprefill serve --ray --replicas 4`` (one GPU per replica when CUDA is
  there; :func:`run_replicas`);
* a Ray cluster: ``serve run specprefill_agents.service.ray_serve:app replicas=4 ...``
  (:func:`app`, the application builder; its keys are ``specprefill serve``'s flags);
* from Python: :func:`application` with any engine factory.

Needs ``pip install "specprefill-agents[ray]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

try:
    from ray import serve
    from ray.serve import Application
    from ray.serve.config import HTTPOptions, RequestRouterConfig
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the scaled-out service needs Ray Serve: pip install 'specprefill-agents[ray]'"
    ) from exc

import httpx

from ..errors import ConfigError
from .affinity import REPLICA_HEADER
from .app import create_app
from .engine import Engine
from .ray_router import DEFAULT_IMBALANCE, AffinityRouter
from .serve_cli import engine_factory, parse_builder_args, settings_from
from .settings import ServiceSettings

__all__ = ["DEPLOYMENT", "DEPLOYMENT_NAME", "DraftReplica", "app", "application", "run_replicas", "wait_for_replicas"]

logger = logging.getLogger(__name__)

DEPLOYMENT_NAME = "specprefill"


@serve.ingress()
class DraftReplica:
    """One replica: an engine from ``make_engine``, warmed up, under the service's FastAPI app."""

    def __init__(self, make_engine: Callable[[], Engine], settings: ServiceSettings) -> None:
        engine = make_engine()
        engine.warm_up()  # the replica is ready, and routed to, once its draft is warm
        replica = serve.get_replica_context().replica_id.unique_id
        self._app = create_app(engine, settings, warm_up=False, replica=replica)
        logger.info("replica %s ready: %s", replica, engine.info()["draft"])

    def __serve_build_asgi_app__(self) -> Any:
        return self._app


DEPLOYMENT = serve.deployment(name=DEPLOYMENT_NAME)(DraftReplica)
ROUTER = f"{AffinityRouter.__module__}:{AffinityRouter.__qualname__}"


def application(
    make_engine: Callable[[], Engine],
    settings: ServiceSettings | None = None,
    *,
    replicas: int = 1,
    gpus_per_replica: float = 0.0,
    cpus_per_replica: float = 1.0,
    imbalance: int = DEFAULT_IMBALANCE,
) -> Application:
    """The Ray Serve application: ``replicas`` copies of the service, routed by prefix affinity.

    ``make_engine`` must pickle (a module-level function or a ``functools.partial`` of one):
    each replica calls it once.  A replica holds up to ``settings.queue_size`` requests; Ray's
    proxy queues as many more and answers 503 beyond (the client's fail-open path).
    """
    settings = settings or ServiceSettings()
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigError(f"replicas must be an int >= 1, got {replicas!r}")
    router: dict[str, Any] = {"request_router_class": ROUTER, "request_router_kwargs": {"imbalance": imbalance}}
    deployment = DEPLOYMENT.options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        max_ongoing_requests=settings.queue_size,
        max_queued_requests=settings.queue_size,
        graceful_shutdown_timeout_s=settings.drain_s,
        request_router_config=RequestRouterConfig(**router),
    )
    return deployment.bind(make_engine, settings)


def app(args: dict[str, str]) -> Application:
    """Application builder of ``serve run specprefill_agents.service.ray_serve:app key=value ...``.

    Keys are ``specprefill serve``'s flags without dashes: ``draft=embedded replicas=4
    gpus_per_replica=1 kv_cache_bytes=...``; the token comes from ``$SPECPREFILL_TOKEN`` (or
    ``token=``).  Ray's proxy listens where ``serve start --http-host/--http-port`` said.
    """
    parsed = parse_builder_args(args)
    return _application(parsed, settings_from(parsed))


def _application(args: argparse.Namespace, settings: ServiceSettings) -> Application:
    return application(
        engine_factory(args),
        settings,
        replicas=args.replicas,
        gpus_per_replica=_gpus(args),
        cpus_per_replica=args.cpus_per_replica,
        imbalance=args.affinity_imbalance,
    )


def _gpus(args: argparse.Namespace) -> float:
    if args.gpus_per_replica is not None:
        return float(args.gpus_per_replica)
    device = args.device or ""
    if device.startswith("cpu"):
        return 0.0
    if device.startswith("cuda"):
        return 1.0
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def wait_for_replicas(url: str, replicas: int, timeout: float = 60.0) -> set[str]:
    """Block until keyless requests to ``url`` reach ``replicas`` distinct replicas (the names seen).

    The proxies learn of new replicas a moment after Serve reports them running; until then an
    agent's first requests would go to its home among fewer replicas.
    """
    seen: set[str] = set()
    end = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=10) as client:
        while len(seen) < replicas and time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError):
                seen.add(client.get("/healthz").headers.get(REPLICA_HEADER, ""))
            time.sleep(0.05)
    seen.discard("")
    return seen


def run_replicas(args: argparse.Namespace, settings: ServiceSettings) -> int:
    """``specprefill serve --ray``: join the Ray cluster running here (``ray start``) or at ``$RAY_ADDRESS``,
    else start one; serve until SIGTERM."""
    import ray

    target = _application(args, settings)
    ray.init(logging_level=logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve.start(http_options=HTTPOptions(host=settings.host, port=settings.port))
        serve.run(target, name=DEPLOYMENT_NAME, route_prefix="/")
        wait_for_replicas(f"http://{_connect_host(settings.host)}:{settings.port}", args.replicas)
        logger.info(
            "listening",
            extra={"event": {"url": f"http://{settings.host}:{settings.port}", "replicas": args.replicas}},
        )
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(DEPLOYMENT_NAME)  # only this app: a joined cluster may serve others
        ray.shutdown()
    return 0


def _connect_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
