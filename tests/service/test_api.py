"""The service's API against a real server process on a loopback port (tiny draft)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import inspect
from typing import Any

import httpx
import pytest

from specprefill_agents import CompressionResult, Segment, SpecPrefillCompressor
from specprefill_agents.errors import ServiceRequestError, ServiceUnavailableError
from specprefill_agents.service import RemoteCompressor
from specprefill_agents.testing import tiny_draft

from .conftest import SERVICE_CONFIG, TOKEN, Server

pytestmark = pytest.mark.integration

SOURCE = inspect.getsource(inspect)  # real code, 100k+ characters


def _segments(offset: int = 0) -> list[Segment]:
    return [
        Segment("You are a careful assistant.", role="system", protected=True),
        Segment(SOURCE[offset : offset + 3000], role="tool", id="call-1", kind="code"),
        Segment("Which function removes common leading whitespace?", role="user"),
    ]


def _same(remote: CompressionResult, local: CompressionResult, cost: bool = True) -> None:
    """Equal results, the shared KV cache aside (it only moves tokens from forwarded to reused);
    ``cost=False``: apart from what computing them cost (a score-cache hit)."""
    assert remote.segments == local.segments  # texts, roles, ids, flags: byte for byte
    assert remote.kept_spans == local.kept_spans
    strip: dict = {"timings": {}, "draft_tokens_forwarded": 0, "draft_tokens_reused": 0}
    if cost:
        r, q = remote.stats, local.stats
        assert r.draft_tokens_forwarded + r.draft_tokens_reused == q.draft_tokens_forwarded + q.draft_tokens_reused
    else:
        strip.update(score_cache_hits=0, windows=0, lookahead_tokens=0)
    assert dataclasses.replace(remote.stats, **strip) == dataclasses.replace(local.stats, **strip)


@pytest.fixture
def client(server: Server) -> RemoteCompressor:
    return RemoteCompressor(server.url, token=TOKEN, timeout=60)


def test_round_trip_equals_the_in_process_compressor(client: RemoteCompressor) -> None:
    local = SpecPrefillCompressor(tiny_draft("llama", max_pos=2048), SERVICE_CONFIG, on_failure="raise")
    for offset, keep in ((0, None), (4000, 0.15)):
        segs = _segments(offset)
        remote = client.compress_segments(segs, keep_ratio=keep)
        _same(remote, local.compress_segments(segs, keep_ratio=keep))
        assert remote.segments[0].text == segs[0].text and remote.segments[1].text != segs[1].text


def test_gap_references_travel_and_expand_like_in_process(client: RemoteCompressor) -> None:
    local = SpecPrefillCompressor(tiny_draft("llama", max_pos=2048), SERVICE_CONFIG, on_failure="raise")
    segs = _segments(6000)
    remote = client.compress_segments(segs, keep_ratio=0.15, gap_refs=True)
    here = local.compress_segments(segs, keep_ratio=0.15, gap_refs=True)
    _same(remote, here)
    assert remote.gaps == here.gaps and remote.originals == here.originals
    assert remote.gaps and all(f"ref {g.ref}" in remote.segments[g.segment].text for g in remote.gaps
                               if g.start > 0 and g.end < len(segs[g.segment].text))
    gap = remote.gaps[0]
    assert remote.expand(gap.ref) == segs[gap.segment].text[gap.start : gap.end]


def test_async_client_returns_the_same_result(client: RemoteCompressor) -> None:
    segs = _segments(9000)

    async def both() -> tuple[CompressionResult, CompressionResult]:
        return await asyncio.gather(client.acompress_segments(segs), client.acompress_segments(segs))

    first, second = asyncio.run(both())
    again = client.compress_segments(segs)
    assert again.stats.score_cache_hits == 1
    _same(first, again, cost=False)
    _same(second, first, cost=False)  # the later of the two came from the score cache


def test_per_request_overrides_match_the_same_config_in_process(client: RemoteCompressor, server: Server) -> None:
    segs = _segments(12000)
    changes = {"unit": "word", "sampling": "proportional"}
    local = SpecPrefillCompressor(tiny_draft("llama", max_pos=2048), SERVICE_CONFIG.replace(**changes),
                                  on_failure="raise")
    remote = RemoteCompressor(server.url, token=TOKEN, config=changes)
    _same(remote.compress_segments(segs, max_tokens=120), local.compress_segments(segs, max_tokens=120))
    small = client.compress_segments(segs, keep_ratio=0.1).compressed_tokens
    assert small < client.compress_segments(segs, keep_ratio=0.6).compressed_tokens
    with pytest.raises(ServiceRequestError, match="422"):
        RemoteCompressor(server.url, token=TOKEN, config={"lookahead": -1}).compress_segments(segs)
    with pytest.raises(ServiceRequestError, match="422"):
        RemoteCompressor(server.url, token=TOKEN, config={"sampling": "random"}).compress_segments(segs)
    with pytest.raises(ServiceRequestError, match="422"):
        RemoteCompressor(server.url, token=TOKEN, config={"semantic_boost": -1}).compress_segments(segs)


def test_lone_surrogates_travel_exactly(client: RemoteCompressor) -> None:
    raw = "bytes \udcff\udc80 that were not UTF-8 " * 40
    result = client.compress_segments([Segment(raw), Segment("a question?", role="user")])
    assert result.segments[0].text == raw  # not clean UTF-8: passed through, exactly


def test_auth(server: Server) -> None:
    assert httpx.get(server.url + "/healthz").status_code == 200  # liveness needs no token
    for headers in ({}, {"authorization": "Bearer wrong-token-000"}, {"authorization": TOKEN}):
        response = httpx.post(server.url + "/v1/compress", json={"segments": []}, headers=headers)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"
        assert httpx.get(server.url + "/metrics", headers=headers).status_code == 401
    with pytest.raises(ServiceRequestError, match="401"):
        RemoteCompressor(server.url, token="wrong-token-000").compress_segments(_segments())


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"segments": [{"text": "x"}] * 9}, "too_many_segments"),
        ({"segments": [{"text": "x" * 60_000}]}, "too_many_chars"),
        ({"segments": [{"text": "x" * 49_000}], "query": "y" * 2_000}, "too_many_chars"),
        ({"segments": [{"text": "\u00e9" * 40_000}] * 3}, "body_too_large"),
    ],
)
def test_limits_answer_413_with_a_reason(server: Server, body: dict, error: str) -> None:
    response = httpx.post(server.url + "/v1/compress", content=json.dumps(body), headers=server.headers())
    assert response.status_code == 413
    assert response.json()["error"] == error and "limit" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (json.dumps({"segments": [], "extra": 1}).encode(), "invalid_request"),
        (json.dumps({"segments": [{"text": "x", "colour": "red"}]}).encode(), "invalid_request"),
        (json.dumps({"segments": [{"text": 1}]}).encode(), "invalid_request"),
        (json.dumps({"segments": [], "config": {"keep_ratio": 2}}).encode(), "invalid_request"),
        (json.dumps({"segments": [], "config": {"temperature": 1}}).encode(), "invalid_request"),
        (json.dumps({"segments": [], "version": "v0"}).encode(), "invalid_request"),
        (json.dumps([1, 2]).encode(), "invalid_request"),
    ],
)
def test_bad_requests_answer_422(server: Server, body: bytes, error: str) -> None:
    response = httpx.post(server.url + "/v1/compress", content=body, headers=server.headers())
    assert response.status_code == 422 and response.json()["error"] == error


def test_two_clients_sharing_a_prefix_reuse_the_kv(server: Server) -> None:
    first, second = (RemoteCompressor(server.url, token=TOKEN) for _ in range(2))
    shared = [Segment(SOURCE[20000:23000], role="tool", id="a"), Segment(SOURCE[23000:25000], role="tool", id="b")]
    before = first.compress_segments([*shared, Segment("What wraps text?", role="user")])
    after = second.compress_segments(
        [*shared, Segment(SOURCE[25000:26500], role="tool"), Segment("What fills a paragraph?", role="user")]
    )
    assert before.stats.draft_tokens_reused == 0
    assert after.stats.draft_tokens_reused > 0
    metrics = httpx.get(server.url + "/metrics", headers=server.headers()).text
    reused = re.search(r"^specprefill_draft_tokens_reused_total (\S+)$", metrics, re.M)
    assert reused and float(reused.group(1)) >= after.stats.draft_tokens_reused


def test_info_health_and_metrics(server: Server, client: RemoteCompressor) -> None:
    info = client.info()
    assert info["schema"] == "v1" and info["draft"]["name"] == "tiny-llama-2048-0" and info["draft"]["loaded"]
    assert info["config"]["keep_ratio"] == SERVICE_CONFIG.keep_ratio and info["limits"]["max_segments"] == 8
    assert client.identity()["draft"] == "tiny-llama-2048-0"
    assert httpx.get(server.url + "/readyz", headers=server.headers()).json() == {"status": "ready"}
    metrics = httpx.get(server.url + "/metrics", headers=server.headers()).text
    for name in (
        "specprefill_requests_total",
        "specprefill_queue_depth",
        "specprefill_batch_size_bucket",
        "specprefill_tokens_in_total",
        "specprefill_kv_cache_bytes",
        "specprefill_request_seconds_bucket",
    ):
        assert name in metrics


def test_nothing_listening_is_unavailable() -> None:
    from .conftest import free_port

    with pytest.raises(ServiceUnavailableError, match="did not answer"):
        RemoteCompressor(f"http://127.0.0.1:{free_port()}", retries=1).compress_segments(_segments())


def test_concurrent_requests_share_the_draft_forwards(server: Server, client: RemoteCompressor) -> None:
    """Requests in flight together (one of them slow) share their query-block forwards, and each
    result is what the request gets alone (scores equal up to float rounding)."""
    local = SpecPrefillCompressor(tiny_draft("llama", max_pos=2048), SERVICE_CONFIG, on_failure="raise")
    asks = ["Which function removes common leading whitespace?", "What does getsource return?",
            "How are signatures bound?", "Where are frames inspected?"]
    requests = [[Segment(SOURCE[50000 + 3000 * i:53000 + 3000 * i], role="tool"), Segment(q, role="user")]
                for i, q in enumerate(asks)]

    def rows_metric() -> tuple[float, float]:
        text = httpx.get(server.url + "/metrics", headers=server.headers()).text
        one = re.search(r'^specprefill_shared_forward_rows_bucket{le="1.0"} (\S+)$', text, re.M)
        count = re.search(r"^specprefill_shared_forward_rows_count (\S+)$", text, re.M)
        return (float(one.group(1)) if one else 0.0), (float(count.group(1)) if count else 0.0)

    single_before, count_before = rows_metric()

    async def burst() -> list[CompressionResult]:
        busy = asyncio.create_task(client.acompress_segments(
            [Segment(SOURCE[:2000], role="tool"), Segment("slow: hold the worker", role="user")]))
        await asyncio.sleep(0.5)  # the slow request holds a worker thread while the next four arrive
        results = await asyncio.gather(*(client.acompress_segments(segs) for segs in requests))
        await busy
        return list(results)

    results = asyncio.run(burst())
    single_after, count_after = rows_metric()
    assert count_after - count_before > single_after - single_before  # some forward carried several requests
    for segs, remote in zip(requests, results):
        alone = local.compress_segments(segs)
        assert remote.segments[1].text == segs[1].text  # the question is never cut
        assert remote.stats.compressed_tokens <= alone.stats.compressed_tokens + 8
        assert len(set(remote.kept_spans[0]) & set(alone.kept_spans[0])) >= 0.8 * len(alone.kept_spans[0])


def test_per_token_cache_namespaces_keep_tenants_apart(tmp_path: Any) -> None:
    from .conftest import start_server

    other = "other-tenant-token-42"
    srv = start_server(tmp_path, "--token", TOKEN, "--token", other, "--cache-per-token", token=TOKEN)
    try:
        a, b = RemoteCompressor(srv.url, token=TOKEN), RemoteCompressor(srv.url, token=other)
        shared = [Segment(SOURCE[30000:33000], role="tool", id="doc")]
        ask = Segment("Which function reads a frame?", role="user")
        first = a.compress_segments([*shared, ask])
        same_for_b = b.compress_segments([*shared, ask])  # identical request, other tenant
        grown = [*shared, Segment(SOURCE[33000:34000], role="tool"), ask]
        b_grown, a_grown = b.compress_segments(grown), a.compress_segments(grown)
        assert first.stats.draft_tokens_reused == 0
        assert same_for_b.stats.score_cache_hits == 0 and same_for_b.stats.draft_tokens_reused == 0
        assert same_for_b.segments == first.segments  # same answer, computed apart
        assert b_grown.stats.draft_tokens_reused > 0  # from b's own first request
        assert a_grown.stats.draft_tokens_reused == b_grown.stats.draft_tokens_reused  # a from its own, not b's
        assert a_grown.stats.score_cache_hits == 0
        with pytest.raises(ServiceRequestError, match="401"):
            RemoteCompressor(srv.url, token="third-token-000").compress_segments([*shared, ask])
    finally:
        srv.stop()
