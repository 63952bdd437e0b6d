"""The ``specprefill serve`` subcommand: its flags and how they become settings."""

from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..config import CacheConfig, CompressionConfig, DraftConfig
from ..errors import ConfigError
from .settings import TOKEN_ENV, ServiceSettings

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["add_serve_parser", "engine_factory", "parse_builder_args", "run_serve", "settings_from"]

_DEFAULTS = ServiceSettings()

_EPILOG = f"""examples:
  specprefill serve                                   # embedded draft on 127.0.0.1:8765
  SPECPREFILL_TOKEN=... specprefill serve --host 0.0.0.0 --device cuda
  SPECPREFILL_URL=http://127.0.0.1:8765 python my_agent.py   # agents use the service
  specprefill serve --ray --replicas 4                # 4 replicas over Ray Serve, one GPU each when CUDA is there

Every route but /healthz needs 'Authorization: Bearer <token>' when a token is set
(--token or ${TOKEN_ENV}; prefer the variable: a flag shows in the process list).
Routes: POST /v1/compress, GET /v1/info, /healthz, /readyz, /metrics (Prometheus).
"""


def add_serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add ``serve`` to ``sub`` (the ``specprefill`` command's subparsers)."""
    p = sub.add_parser(
        "serve",
        help="run one resident draft that many agent processes share (HTTP JSON)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--host", default=_DEFAULTS.host, help="interface to bind (default 127.0.0.1); any other needs a token"
    )
    p.add_argument("--port", type=int, default=_DEFAULTS.port, help="TCP port (default 8765; 0 = any free port)")
    p.add_argument(
        "--token",
        action="append",
        default=[],
        help=f"bearer token clients must send; repeat it for one token per tenant (default ${TOKEN_ENV}, "
        "several separated by commas)",
    )
    p.add_argument(
        "--cache-per-token",
        action="store_true",
        help="each token its own cache namespace: a tenant never hits, or learns of, another tenant's cached "
        "KV prefixes and scores",
    )
    p.add_argument("--draft", default="embedded", help="'embedded', a hub id, a directory or a .gguf file")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: CUDA when present)")
    p.add_argument("--cache-dir", default=None, help="where converted drafts are cached")
    p.add_argument("--keep", type=float, default=None, help="default keep ratio of requests that set none (0.25)")
    p.add_argument(
        "--kv-cache-bytes",
        type=int,
        default=CacheConfig().kv_cache_bytes,
        help="bound on the draft KV prefix cache shared by all clients (bytes; 0 = off)",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=_DEFAULTS.queue_size,
        help=f"requests waiting for the draft at most; more get 429 + Retry-After (default {_DEFAULTS.queue_size})",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=_DEFAULTS.max_batch,
        help=f"requests in flight at most: worker threads on the shared draft (default {_DEFAULTS.max_batch})",
    )
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="each request's draft forwards its own, instead of the query blocks and lookahead steps of the "
        "requests in flight sharing forwards (and queued identical requests computed once)",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=_DEFAULTS.deadline_s,
        help=f"default per-request deadline, seconds (default {_DEFAULTS.deadline_s:g}; a request may ask for less)",
    )
    p.add_argument(
        "--drain",
        type=float,
        default=_DEFAULTS.drain_s,
        help=f"on SIGTERM, seconds in-flight requests get to finish (default {_DEFAULTS.drain_s:g})",
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=_DEFAULTS.max_body_bytes, help="largest request body (413 above)"
    )
    p.add_argument(
        "--max-segments", type=int, default=_DEFAULTS.max_segments, help="most segments per request (413 above)"
    )
    p.add_argument(
        "--max-total-chars",
        type=int,
        default=_DEFAULTS.max_total_chars,
        help="most characters per request, all segments and the query (413 above)",
    )
    p.add_argument(
        "--no-warm-up",
        action="store_true",
        help="skip the warm-up compression at start (/readyz turns ready once the draft is loaded)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice); 1 on a CPU shared with other work",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs (structured JSON lines on stderr)")
    _ray_args(p)
    return p


def _ray_args(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group(
        "scale out with Ray Serve (pip install 'specprefill-agents[ray]')",
        "replicas of this service, each with its own draft and caches, behind Ray's HTTP proxy on --host/--port; "
        "an agent's requests go to the replica holding its KV prefix (on an existing cluster: "
        "serve run specprefill_agents.service.ray_serve:app replicas=N ...)",
    )
    ray.add_argument("--ray", action="store_true", help="serve over Ray Serve replicas instead of one process")
    ray.add_argument("--replicas", type=int, default=1, help="number of replicas (default 1)")
    ray.add_argument(
        "--gpus-per-replica",
        type=float,
        default=None,
        help="GPUs each replica reserves (default: 1 when --device is CUDA or CUDA is present here, else 0)",
    )
    ray.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs each replica reserves (default 1)")
    ray.add_argument(
        "--affinity-imbalance",
        type=int,
        default=8,
        help="queued requests an agent's replica may have beyond the least loaded one before its "
        "requests go elsewhere (default 8)",
    )


def engine_factory(args: argparse.Namespace) -> Callable[[], Engine]:
    """A picklable factory of the engine ``args`` describe (nothing loads until it is called)."""
    from .engine import Engine

    config = CompressionConfig() if args.keep is None else CompressionConfig(keep_ratio=args.keep)
    threads = None if args.threads is None else max(1, args.threads)
    draft = DraftConfig(model=args.draft, device=args.device, cache_dir=args.cache_dir, num_threads=threads)
    return functools.partial(Engine, draft, config, CacheConfig(kv_cache_bytes=args.kv_cache_bytes))


def parse_builder_args(values: Mapping[str, Any]) -> argparse.Namespace:
    """``serve run ...:app key=value`` arguments as ``specprefill serve --ray`` flags would be.

    Keys are the flag names without dashes (``draft``, ``replicas``, ``kv_cache_bytes``...);
    switches take ``true`` / ``false``.
    """
    p = add_serve_parser(argparse.ArgumentParser(prog="specprefill").add_subparsers())
    argv = ["--ray"]
    for key, value in values.items():
        flag = "--" + str(key).replace("_", "-")
        action = p._option_string_actions.get(flag)
        if action is None or flag == "--ray":
            known = sorted(a.dest for a in p._actions if a.option_strings and a.dest not in ("help", "ray"))
            raise ConfigError(f"unknown argument {key!r}; known: {', '.join(known)}")
        if action.nargs == 0:  # a switch
            if str(value).lower() not in ("true", "1", "yes", "false", "0", "no"):
                raise ConfigError(f"{key} takes true or false, got {value!r}")
            argv += [flag] if str(value).lower() in ("true", "1", "yes") else []
        else:
            argv += [flag, str(value)]
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> ServiceSettings:
    tokens = args.token or [t.strip() for t in os.environ.get(TOKEN_ENV, "").split(",") if t.strip()]
    return ServiceSettings(
        host=args.host,
        port=args.port,
        token=tokens[0] if tokens else None,
        tokens=tuple(tokens[1:]),
        cache_per_token=args.cache_per_token,
        max_body_bytes=args.max_body_bytes,
        max_segments=args.max_segments,
        max_total_chars=args.max_total_chars,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
        batching=not args.no_batching,
        deadline_s=args.deadline,
        drain_s=args.drain,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Validate everything, then serve until SIGTERM (returns the exit status)."""
    settings = settings_from(args)
    replicated = _ray_runner() if args.ray else None
    from .server import configure_logging, serve  # the web stack loads only for this command

    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    if replicated is not None:
        return int(replicated(args, settings))
    serve(engine_factory(args)(), settings, warm_up=not args.no_warm_up)
    return 0


def _ray_runner() -> Callable[[argparse.Namespace, ServiceSettings], int]:
    try:
        from .ray_serve import run_replicas
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray Serve: pip install 'specprefill-agents[ray]' ({exc})") from exc
    return run_replicas
