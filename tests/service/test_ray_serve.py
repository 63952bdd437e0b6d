"""The service over Ray Serve: two replicas on a local Ray instance, reached through RemoteCompressor.

Skipped without ``ray[serve]`` (``pip install 'specprefill-agents[ray]'``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from specprefill_agents import Segment, SpecPrefillCompressor  # noqa: E402
from specprefill_agents.errors import ConfigError  # noqa: E402
from specprefill_agents.service import RemoteCompressor  # noqa: E402
from specprefill_agents.service.affinity import AFFINITY_HEADER, REPLICA_HEADER  # noqa: E402
from specprefill_agents.service.engine import Engine  # noqa: E402
from specprefill_agents.service.ray_serve import app, application, wait_for_replicas  # noqa: E402
from specprefill_agents.service.settings import ServiceSettings  # noqa: E402
from specprefill_agents.testing import tiny_draft  # noqa: E402

from .conftest import SERVICE_CONFIG, TOKEN, free_port  # noqa: E402
from .test_api import _same  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCE = inspect.getsource(inspect)
SYSTEM = Segment("You are a careful assistant.", role="system", protected=True)


def _draft() -> Any:
    return tiny_draft("llama", max_pos=2048)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """Two replicas of the service on the tiny draft, behind Ray's proxy on a loopback port."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = ServiceSettings(port=port, token=TOKEN)
        target = application(functools.partial(Engine, _draft(), SERVICE_CONFIG), settings, replicas=2,
                             cpus_per_replica=0.5)
        serve.run(target, name="specprefill", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        assert len(wait_for_replicas(base, 2)) == 2  # the proxy routes to both
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def small_url(url: str) -> str:
    """A second app on the same Ray: two replicas that hold two requests each (a proxy queue of two)."""
    base = url + "/small"
    settings = ServiceSettings(port=0, token=TOKEN, queue_size=2)
    target = application(functools.partial(Engine, _draft(), SERVICE_CONFIG), settings, replicas=2,
                         cpus_per_replica=0.5)
    serve.run(target, name="small", route_prefix="/small")
    assert len(wait_for_replicas(base, 2)) == 2
    return base


class Recorded:
    """A RemoteCompressor on the service that notes which replica answered each compression."""

    def __init__(self, url: str, affinity: str | None = None) -> None:
        self.client = RemoteCompressor(url, token=TOKEN, timeout=60, affinity=affinity)
        self.replicas: list[str] = []
        hooks = self.client._sync().event_hooks["response"]  # the client's own pooled connection
        hooks.append(lambda response: self.replicas.append(response.headers[REPLICA_HEADER]))


def _agent(n: int, step: int) -> list[Segment]:
    """Agent ``n`` at ``step``: the shared system prompt, its task, its growing tool outputs."""
    starts = [(n * 7 + s) * 900 % (len(SOURCE) - 900) for s in range(step + 1)]
    history = [Segment(SOURCE[i : i + 900], role="tool", kind="code") for i in starts]
    return [SYSTEM, Segment(f"Task {n}: which function formats the signature?", role="user"), *history]


def test_results_equal_the_in_process_compressor(url: str) -> None:
    local = SpecPrefillCompressor(_draft(), SERVICE_CONFIG, on_failure="raise")
    client = RemoteCompressor(url, token=TOKEN, timeout=60)
    for segs, keep in ((_agent(100, 0), None), (_agent(101, 1), 0.15)):
        remote = client.compress_segments(segs, keep_ratio=keep)
        _same(remote, local.compress_segments(segs, keep_ratio=keep))
        assert remote.segments[-1].text != segs[-1].text  # compressed


def test_an_agent_stays_on_one_replica_and_reuses_its_kv(url: str) -> None:
    rec = Recorded(url)
    first = rec.client.compress_segments(_agent(0, 0))
    second = rec.client.compress_segments(_agent(0, 1))
    third = rec.client.compress_segments(_agent(0, 2))
    assert len(set(rec.replicas)) == 1
    assert second.stats.draft_tokens_reused > 0 and third.stats.draft_tokens_reused > second.stats.draft_tokens_reused
    assert first.stats.draft_tokens_reused < second.stats.draft_tokens_reused


def test_agents_spread_over_both_replicas_and_each_keeps_its_own(url: str) -> None:
    rec = Recorded(url)
    homes: dict[int, set[str]] = {}
    for n in range(1, 17):
        for step in (0, 1):
            result = rec.client.compress_segments(_agent(n, step))
            homes.setdefault(n, set()).add(rec.replicas[-1])
            if step:
                assert result.stats.draft_tokens_reused > 0
    assert all(len(h) == 1 for h in homes.values())  # each agent's two steps on one replica
    assert len(set().union(*homes.values())) == 2  # 16 agents over both replicas
    info = httpx.get(url + "/v1/info", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert info["replica"] in set().union(*homes.values()) and info["draft"]["loaded"]


def test_a_fixed_affinity_pins_a_client_whatever_its_segments(url: str) -> None:
    rec = Recorded(url, affinity="thread-42")
    for n in range(40, 46):  # six heads that would spread over both replicas
        rec.client.compress_segments(_agent(n, 0))
    assert len(rec.replicas) == 6 and len(set(rec.replicas)) == 1


def test_a_full_home_replica_does_not_pin_its_agent(small_url: str) -> None:
    """Four concurrent requests of one agent: its home holds two, the other two go to the other replica."""
    seen: list[str] = []

    async def burst() -> list[Any]:
        async with httpx.AsyncClient(base_url=small_url, timeout=120,
                                     event_hooks={"response": [_note(seen)]}) as client:
            body = {"segments": [{"text": SOURCE[i * 4000 : (i + 1) * 4000], "role": "tool"} for i in range(3)]}
            headers = {"authorization": f"Bearer {TOKEN}", AFFINITY_HEADER: "one-busy-agent"}

            async def post(i: int) -> Any:  # a little apart: each is placed before the next reaches the proxy,
                await asyncio.sleep(0.1 * i)  # whose own queue (two) would drop a burst that arrives all at once
                return await client.post("/v1/compress", json=body, headers=headers)

            return await asyncio.gather(*(post(i) for i in range(4)))

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 4
    assert len(set(seen)) == 2  # the home was full: no request waited for it


def _note(seen: list[str]) -> Any:
    async def hook(response: httpx.Response) -> None:
        seen.append(response.headers[REPLICA_HEADER])

    return hook


def test_requests_without_a_key_and_the_service_routes_still_work(url: str) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    seen = set()
    for _ in range(12):  # no affinity header: power of two choices
        r = httpx.post(url + "/v1/compress", json={"segments": [{"text": SOURCE[:1500]}]}, headers=auth, timeout=60)
        assert r.status_code == 200 and r.json()["result"]["segments"][0]["text"] != SOURCE[:1500]
        seen.add(r.headers[REPLICA_HEADER])
    assert len(seen) == 2
    assert httpx.post(url + "/v1/compress", json={"segments": []}).status_code == 401  # the token holds
    assert httpx.get(url + "/readyz", headers=auth).status_code == 200
    assert "specprefill_" in httpx.get(url + "/metrics", headers=auth).text


def test_the_serve_run_builder_takes_the_serve_flags() -> None:
    built = app({"draft": "embedded", "replicas": "3", "gpus_per_replica": "1", "kv_cache_bytes": "1000000",
                 "no_batching": "true"})
    deployment = built._bound_deployment
    assert deployment.num_replicas == 3 and deployment.ray_actor_options["num_gpus"] == 1
    make_engine, settings = deployment.init_args
    assert not settings.batching and make_engine().cache_config.kv_cache_bytes == 1_000_000
    with pytest.raises(ConfigError, match="unknown argument 'replica'"):
        app({"replica": "2"})
    with pytest.raises(ConfigError, match="no_batching takes true or false"):
        app({"no_batching": "maybe"})
