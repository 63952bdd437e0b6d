"""Real servers on loopback ports, each its own process on the tiny draft (no HTTP mocks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from specprefill_agents import CompressionConfig, ScoringConfig

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789"
SERVICE_CONFIG = CompressionConfig(keep_ratio=0.3, min_tokens=32, scoring=ScoringConfig(lookahead=2))


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {TOKEN}"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(tmp: Path, *args: str, token: str | None = TOKEN) -> Server:
    """Start ``tests.service.server_proc`` and wait until it is ready (draft warm)."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "tests.service.server_proc", "--port", str(port), *args]
    if token:
        cmd += ["--token", token]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(server.url + "/readyz", headers=headers, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready in time:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with a token, shared by a module's tests."""
    srv = start_server(tmp_path_factory.mktemp("service"))
    yield srv
    srv.stop()
