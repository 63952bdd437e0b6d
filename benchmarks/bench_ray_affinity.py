"""Prefix-affinity routing vs power of two choices, on one Ray Serve deployment of the draft service.

One local Ray instance runs ``--replicas`` replicas of the service (each its own draft and KV
prefix cache, one CPU, ``--threads`` torch threads).  ``--agents`` agent loops per mode, each
``--steps`` steps: a system prompt every agent shares, the agent's own task, then one more real
tool output (standard-library source) per step.  Both modes use the same deployment at the same
time, interleaved request by request (agent i of one mode, then agent i of the other, the order
swapped every step), one request at a time:

* ``affinity``: ``RemoteCompressor`` as shipped (its ``X-Specprefill-Affinity`` header);
* ``no_key``: the same client without the header (Ray's power of two choices).

The two modes' agents have distinct tasks, so neither reuses a prefix the other computed beyond
the shared system prompt.  Reported per mode: draft tokens forwarded and reused, replicas per
agent, compression seconds per request seen by the client (mean, and over the steps after the
first), and the no-key / affinity ratios.

    python -m benchmarks.bench_ray_affinity [--draft embedded|tiny] [--replicas 2] [--agents 6] [--steps 5]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_service import MODULES, SYSTEM, _cpu

ROOT = Path(__file__).resolve().parents[1]
MODES = ("affinity", "no_key")


def agent_segments(mode: str, agent: int, step: int, chars: int) -> list[Any]:
    """Agent ``agent`` of ``mode`` at ``step``: shared system prompt, own task, growing tool outputs."""
    from specprefill_agents import Segment

    index = MODES.index(mode) * 1000 + agent
    outputs = []
    for s in range(step + 1):
        name = MODULES[(index + s) % len(MODULES)]
        source = inspect.getsource(__import__(name))
        start = (index * 131) % max(1, len(source) - chars)
        outputs.append(Segment(source[start : start + chars], role="tool", id=f"{mode}-{agent}-{s}"))
    task = Segment(f"Agent {mode}-{agent}: find where {MODULES[index % len(MODULES)]} handles bad input.", role="user")
    return [Segment(SYSTEM, role="system", protected=True), task, *outputs]


def _engine_factory(draft: str, threads: int) -> Any:
    from specprefill_agents import CompressionConfig, DraftConfig
    from specprefill_agents.service.engine import Engine

    if draft == "tiny":
        from specprefill_agents.testing import tiny_draft

        return functools.partial(Engine, tiny_draft("llama", max_pos=4096), CompressionConfig())
    return functools.partial(Engine, DraftConfig(model=draft, num_threads=threads), CompressionConfig())


def _client(url: str, mode: str, replicas: list[str]) -> Any:
    from specprefill_agents.service import RemoteCompressor
    from specprefill_agents.service.affinity import REPLICA_HEADER

    class NoKey(RemoteCompressor):
        def _body(self, *args: Any, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
            body, _ = super()._body(*args, **kwargs)
            return body, {}

    client = (RemoteCompressor if mode == "affinity" else NoKey)(url, timeout=600)
    client._sync().event_hooks["response"].append(lambda r: replicas.append(r.headers[REPLICA_HEADER]))
    return client


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    seen: dict[str, list[str]] = {mode: [] for mode in MODES}
    clients = {mode: [_client(url, mode, seen[mode]) for _ in range(args.agents)] for mode in MODES}
    for step in range(args.steps):
        order = MODES if step % 2 == 0 else MODES[::-1]
        for agent in range(args.agents):
            for mode in order:
                segs = agent_segments(mode, agent, step, args.chars)
                t0 = time.perf_counter()
                result = clients[mode][agent].compress_segments(segs)
                seconds = time.perf_counter() - t0
                rows.append({"mode": mode, "agent": agent, "step": step, "seconds": round(seconds, 4),
                             "replica": seen[mode][-1], "forwarded": result.stats.draft_tokens_forwarded,
                             "reused": result.stats.draft_tokens_reused,
                             "original_tokens": result.stats.original_tokens})
    return {"rows": rows, "summary": {mode: _summary([r for r in rows if r["mode"] == mode]) for mode in MODES}}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    later = [r["seconds"] for r in rows if r["step"] > 0]
    homes: dict[int, set[str]] = {}
    for r in rows:
        homes.setdefault(r["agent"], set()).add(r["replica"])
    forwarded, reused = sum(r["forwarded"] for r in rows), sum(r["reused"] for r in rows)
    return {
        "requests": len(rows),
        "draft_tokens_forwarded": forwarded,
        "draft_tokens_reused": reused,
        "reused_share": round(reused / max(1, forwarded + reused), 3),
        "replicas_per_agent_mean": round(statistics.mean(len(h) for h in homes.values()), 2),
        "seconds_mean": round(statistics.mean(r["seconds"] for r in rows), 3),
        "seconds_mean_after_step_0": round(statistics.mean(later), 3) if later else None,
        "seconds_total": round(sum(r["seconds"] for r in rows), 2),
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import torch
    from ray import serve

    from specprefill_agents.service.ray_serve import application, wait_for_replicas
    from specprefill_agents.service.settings import ServiceSettings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    load_before = os.getloadavg()[0]
    ray.init(address="local", num_cpus=args.replicas, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        t0 = time.perf_counter()
        target = application(_engine_factory(args.draft, args.threads), ServiceSettings(port=port),
                             replicas=args.replicas, cpus_per_replica=1.0)
        serve.run(target, name="specprefill", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        reached = wait_for_replicas(url, args.replicas)
        start_s = time.perf_counter() - t0
        result = run(args, url)
    finally:
        serve.shutdown()
        ray.shutdown()
    a, n = result["summary"]["affinity"], result["summary"]["no_key"]
    ratios = {
        "draft_tokens_forwarded": round(n["draft_tokens_forwarded"] / max(1, a["draft_tokens_forwarded"]), 2),
        "seconds_mean": round(n["seconds_mean"] / a["seconds_mean"], 2),
        "seconds_mean_after_step_0": round(n["seconds_mean_after_step_0"] / a["seconds_mean_after_step_0"], 2)
        if a["seconds_mean_after_step_0"] else None,
    }
    import ray as ray_module

    return {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "load_average_before_after": [
            round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "versions": {"ray": ray_module.__version__, "torch": torch.__version__},
        "draft": args.draft, "replicas": args.replicas, "replicas_reached": len(reached), "agents": args.agents,
        "steps": args.steps, "chars_per_output": args.chars, "torch_threads": args.threads,
        "startup_s": round(start_s, 1), "summary": result["summary"], "ratios_no_key_over_affinity": ratios,
        "rows": result["rows"],
    }


def _markdown(r: dict[str, Any]) -> str:
    keys = ["requests", "draft_tokens_forwarded", "draft_tokens_reused", "reused_share", "replicas_per_agent_mean",
            "seconds_mean", "seconds_mean_after_step_0", "seconds_total"]
    rows = ["| | affinity | no key (power of two choices) |", "|---|---|---|"]
    rows += [f"| {k} | {r['summary']['affinity'][k]} | {r['summary']['no_key'][k]} |" for k in keys]
    ratios = ", ".join(f"{k} {v}x" for k, v in r["ratios_no_key_over_affinity"].items())
    load = r["machine"]["load_average_before_after"]
    return (
        f"# Prefix-affinity routing on Ray Serve ({r['machine']['cpu']}, {r['machine']['cores']} cores)\n\n"
        f"Ray {r['versions']['ray']}, {r['replicas']} replicas of the service (draft `{r['draft']}`, one CPU and "
        f"{r['torch_threads']} torch thread each; started in {r['startup_s']} s), {r['agents']} agents per mode, "
        f"{r['steps']} steps each (shared system prompt, own task, one more tool output of {r['chars_per_output']} "
        f"characters per step), both modes interleaved on the same deployment, one request at a time. 1-minute "
        f"load average {load[0]} before, {load[1]} after (a shared machine).\n\n"
        + "\n".join(rows)
        + f"\n\nNo key / affinity: {ratios}.\n"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draft", default="embedded", help="'tiny' (random in-process test draft) or a draft spec")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--agents", type=int, default=6, help="agents per mode")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--chars", type=int, default=1200, help="characters per tool output")
    p.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/ray_affinity_cpu_epyc.json"))
    args = p.parse_args()
    result = bench(args)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
