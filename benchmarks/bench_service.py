"""Load test of the draft service on loopback: N agent clients, batching on vs off, memory.

Each of ``--clients`` threads plays an agent loop with its own ``RemoteCompressor``: every
step sends a shared prefix (a system prompt and a reference document every agent has) plus
its own growing tool outputs (slices of real standard-library sources) and a new question.
Servers run one after the other on the same workload, batching on and off, ``--max-batch``
worker threads each: on, the query blocks and lookahead decode steps of the requests in flight
run as the rows of shared draft forwards (and queued identical requests are computed once);
off, each request's forwards are its own.

The run is bounded: ``--steps`` requests per client and ``--max-seconds`` per mode, whichever
ends first.  Reported per mode: requests sent / answered / failed / lost (sent, never answered),
p50 and p99 latency, throughput, mean requests in flight and mean requests per shared forward,
draft tokens forwarded and reused (the shared KV cache); the on / off ratios; and peak memory
(RSS) of the server, of one client process, and of one in-process compressor (what each of N
agents would hold without the service).

    python -m benchmarks.bench_service [--draft tiny|embedded] [--clients 4] [--steps 4]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "textwrap",
    "shlex",
    "fnmatch",
    "glob",
    "heapq",
    "bisect",
    "base64",
    "calendar",
    "csv",
    "string",
    "difflib",
    "filecmp",
    "getopt",
    "operator",
    "pprint",
    "sched",
    "statistics",
    "copy",
    "shutil",
    "random",
]
TINY_NOTE = " (the random 3-layer, 64-wide test draft of `specprefill_agents.testing`: the service's own costs)"
SYSTEM = "You are a coding agent. Answer from the tool outputs; cite the function you used."


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _source(name: str, chars: int, offset: int = 0) -> str:
    module = __import__(name)
    return inspect.getsource(module)[offset : offset + chars]


def workload(client: int, steps: int, chars: int) -> list[dict[str, Any]]:
    """The requests one client sends, in order (an agent loop: the context grows each step)."""
    shared = [
        {"text": SYSTEM, "role": "system", "protected": True},
        {"text": _source("textwrap", chars * 2), "role": "tool", "id": "docs"},
    ]
    outputs, out = [], []
    for step in range(steps):
        name = MODULES[(client * steps + step) % len(MODULES)]
        outputs.append(
            {"text": _source(name, chars, offset=chars * (client % 3)), "role": "tool", "id": f"c{client}-s{step}"}
        )
        question = {"text": f"Which function in {name} should I call first, and why?", "role": "user"}
        out.append({"segments": [*shared, *outputs, question], "query": None})
    return out


# ---------------------------------------------------------------------------------- server side
def _engine(draft: str) -> Any:
    from specprefill_agents import CompressionConfig
    from specprefill_agents.service.engine import Engine

    if draft == "tiny":
        from specprefill_agents.testing import tiny_draft

        return Engine(tiny_draft("llama", max_pos=4096), CompressionConfig())
    from specprefill_agents import DraftConfig

    return Engine(DraftConfig(model=draft), CompressionConfig())


def serve_main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    from specprefill_agents.service.server import configure_logging, serve
    from specprefill_agents.service.settings import ServiceSettings

    configure_logging()
    settings = ServiceSettings(
        port=args.port,
        batching=args.batching == "on",
        max_batch=args.max_batch,
        queue_size=args.queue_size,
        deadline_s=600.0,
    )
    serve(_engine(args.draft), settings)


def inprocess_main(args: argparse.Namespace) -> None:
    """One agent's own compressor: load, compress one request, print peak RSS (MiB)."""
    torch.set_num_threads(args.threads)
    from specprefill_agents import Segment

    engine = _engine(args.draft)
    request = workload(0, 2, args.chars)[-1]
    engine.compress([Segment(**s) for s in request["segments"]], None, {})
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def client_main(args: argparse.Namespace) -> None:
    """One agent process using the service: compress one request remotely, print peak RSS (MiB)."""
    from specprefill_agents import Segment
    from specprefill_agents.service import RemoteCompressor

    request = workload(0, 2, args.chars)[-1]
    RemoteCompressor(args.url, timeout=600).compress_segments([Segment(**s) for s in request["segments"]])
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# ---------------------------------------------------------------------------------- load side
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: argparse.Namespace, batching: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_service",
        "--serve",
        "--port",
        str(port),
        "--draft",
        args.draft,
        "--batching",
        batching,
        "--threads",
        str(args.threads),
        "--max-batch",
        str(args.max_batch),
        "--queue-size",
        str(args.queue_size),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(3000):
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server not ready")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _agent(url: str, requests: list[dict[str, Any]], end: float, record: list[dict[str, Any]]) -> None:
    from specprefill_agents import Segment
    from specprefill_agents.service import RemoteCompressor

    remote = RemoteCompressor(url, timeout=600, retries=0)
    for request in requests:
        if time.monotonic() > end:
            break
        entry: dict[str, Any] = {"sent": True, "answered": False}
        record.append(entry)
        t0 = time.perf_counter()
        try:
            result = remote.compress_segments([Segment(**s) for s in request["segments"]], request["query"])
            entry.update(
                answered=True,
                ok=True,
                seconds=time.perf_counter() - t0,
                forwarded=result.stats.draft_tokens_forwarded,
                reused=result.stats.draft_tokens_reused,
                tokens_in=result.stats.original_tokens,
            )
        except Exception as exc:  # counted, and the run goes on
            entry.update(answered=True, ok=False, error=f"{type(exc).__name__}: {exc}"[:200])


def _histogram_mean(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(f"{name}_"))
    count = float(values.get(f"{name}_count", 0))
    return float(values.get(f"{name}_sum", 0)) / count if count else 0.0


def run_mode(args: argparse.Namespace, batching: str, out_dir: Path) -> dict[str, Any]:
    proc, url = _start(args, batching, out_dir / f"server_{batching}.log")
    try:
        records: list[list[dict[str, Any]]] = [[] for _ in range(args.clients)]
        end = time.monotonic() + args.max_seconds
        threads = [
            threading.Thread(target=_agent, args=(url, workload(c, args.steps, args.chars), end, records[c]))
            for c in range(args.clients)
        ]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t0
        flat = [e for rec in records for e in rec]
        ok = [e for e in flat if e.get("ok")]
        lat = sorted(e["seconds"] for e in ok)
        summary = {
            "batching": batching,
            "sent": len(flat),
            "answered": sum(e["answered"] for e in flat),
            "ok": len(ok),
            "failed": sum(1 for e in flat if e["answered"] and not e.get("ok")),
            "lost": sum(1 for e in flat if not e["answered"]),
            "wall_s": round(wall, 2),
            "throughput_rps": round(len(ok) / wall, 3) if wall else 0.0,
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
            "mean_batch": round(_histogram_mean(url, "specprefill_batch_size"), 2),
            "mean_rows_per_shared_forward": round(_histogram_mean(url, "specprefill_shared_forward_rows"), 2),
            "draft_tokens_forwarded": sum(e["forwarded"] for e in ok),
            "draft_tokens_reused": sum(e["reused"] for e in ok),
            "tokens_in": sum(e["tokens_in"] for e in ok),
            "errors": sorted({e["error"] for e in flat if "error" in e})[:5],
        }
        if batching == "on":
            summary["client_peak_rss_mib"] = round(_child(args, "--client", "--url", url)["peak_rss_mib"], 1)
        summary["server_peak_rss_mib"] = round(_peak_rss_mib(proc.pid), 1)
        return summary
    finally:
        proc.terminate()
        proc.wait(60)


def _child(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_service",
        *extra,
        "--draft",
        args.draft,
        "--chars",
        str(args.chars),
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    out_dir = Path(tempfile.mkdtemp(prefix="bench_service_"))  # server logs
    load_before = os.getloadavg()
    modes = args.modes.split(",")
    if "on" not in modes or not set(modes) <= set(MODES):
        raise SystemExit(f"--modes: a comma list of {', '.join(MODES)} that includes on")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(args.rounds):  # alternate, so a change in the machine's load hits every mode
        for mode in modes:
            runs[mode].append(run_mode(args, mode, out_dir))
    best = {m: min(runs[m], key=lambda r: r["wall_s"]) for m in modes}  # each mode's best round
    on = best["on"]
    inproc = _child(args, "--inprocess")["peak_rss_mib"]
    return {
        "machine": {
            "cpu": _cpu(),
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "rounds": args.rounds,
        "modes": modes,
        "torch_threads": args.threads,
        "draft": args.draft,
        "clients": args.clients,
        "steps": args.steps,
        "chars_per_output": args.chars,
        "max_batch": args.max_batch,
        "queue_size": args.queue_size,
        "results": best,
        "ratios_on_over_off": _ratios(on, best["off"]) if "off" in best else {},
        "memory_mib": {
            "server": on["server_peak_rss_mib"],
            "one_client_process": on["client_peak_rss_mib"],
            "one_inprocess_compressor": round(inproc, 1),
            f"{args.clients}_agents_with_service": round(
                on["server_peak_rss_mib"] + args.clients * on["client_peak_rss_mib"], 1
            ),
            f"{args.clients}_agents_inprocess": round(args.clients * inproc, 1),
        },
    }


MODES = ("on", "off")
MODE_NOTES = {
    "on": "batching: max_batch worker threads, each taking the next request (with the queued requests identical "
    "to it, computed once); a prefix two requests need is computed once, and the query blocks and lookahead "
    "decode steps of the requests in flight run as the rows of shared draft forwards",
    "off": "max_batch worker threads, each request's forwards its own",
}


def _ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    return {
        "throughput": round(a["throughput_rps"] / b["throughput_rps"], 3) if b["throughput_rps"] else None,
        "p50": round(a["p50_s"] / b["p50_s"], 3) if a["p50_s"] and b["p50_s"] else None,
        "p99": round(a["p99_s"] / b["p99_s"], 3) if a["p99_s"] and b["p99_s"] else None,
    }


def _markdown(r: dict[str, Any]) -> str:
    modes = r["modes"]
    rows = ["| | " + " | ".join(modes) + " |", "|---" * (len(modes) + 1) + "|"]
    for key in (
        "sent",
        "ok",
        "failed",
        "lost",
        "wall_s",
        "throughput_rps",
        "p50_s",
        "p99_s",
        "mean_batch",
        "mean_rows_per_shared_forward",
        "draft_tokens_forwarded",
        "draft_tokens_reused",
        "server_peak_rss_mib",
    ):
        rows.append(f"| {key} | " + " | ".join(str(r["results"][m][key]) for m in modes) + " |")
    mem = "\n".join(f"| {k} | {v} |" for k, v in r["memory_mib"].items())
    ratios = ", ".join(f"{k} {v}" for k, v in r["ratios_on_over_off"].items())
    notes = "\n".join(f"- `{m}`: {MODE_NOTES[m]}." for m in modes)
    load = r["machine"]["load_average_before_after"]
    return (
        f"# Draft service load test ({r['machine']['cpu']}, {r['machine']['cores']} cores)\n\n"
        f"Best of {r['rounds']} alternating round(s) per mode; 1-minute load average {load[0]} before, "
        f"{load[1]} after (a shared machine: other work ran alongside).\n\n"
        f"Draft `{r['draft']}`{TINY_NOTE if r['draft'] == 'tiny' else ''}, "
        f"{r['clients']} concurrent agent clients on loopback, {r['steps']} steps each "
        f"(context grows by one tool output of {r['chars_per_output']} characters per step; every agent shares "
        f"a system prompt and a reference document); torch threads {r.get('torch_threads', 1)}.\n\n"
        f"{notes}\n\n"
        + "\n".join(rows)
        + f"\n\nOn / off ratios: {ratios}.\n\n| peak memory (MiB) | |\n|---|---|\n{mem}\n"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draft", default="tiny", help="'tiny' (random in-process test draft) or a draft spec")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="requests per client")
    p.add_argument("--chars", type=int, default=1500, help="characters per tool output")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1, help="rounds of both modes (the best of each is reported)")
    p.add_argument("--modes", default="on,off", help="modes, in their order within a round")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server (and in-process compressor)")
    p.add_argument("--max-seconds", type=float, default=90.0, help="per mode; no new request after it")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/service_cpu.json"))
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--inprocess", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--batching", default="on", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return serve_main(args)
    if args.inprocess:
        return inprocess_main(args)
    if args.client:
        return client_main(args)
    result = bench(args)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    return None


if __name__ == "__main__":
    main()
