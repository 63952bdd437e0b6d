"""Overload, a server killed mid-request, and a graceful drain: real server processes."""

from __future__ import annotations

import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from specprefill_agents import Segment, ServiceUnavailableError
from specprefill_agents.service import RemoteCompressor

from .conftest import TOKEN, Server, start_server

pytestmark = pytest.mark.integration

TOOL_TEXT = "The deploy failed because the migration timed out on the orders table. " * 30


def _segments(query_tag: str) -> list[Segment]:
    return [Segment(TOOL_TEXT, role="tool", id="t"), Segment(f"{query_tag}: why did the deploy fail?", role="user")]


class _Call(threading.Thread):
    """Runs ``fn`` on its own thread; ``outcome`` is its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn, self.outcome = fn, None

    def run(self) -> None:
        try:
            self.outcome = self.fn()
        except Exception as exc:  # the test inspects it
            self.outcome = exc


def _post(server: Server, query: str) -> Callable[[], httpx.Response]:
    body = {"segments": [{"text": TOOL_TEXT, "role": "tool"}], "query": query}
    return lambda: httpx.post(server.url + "/v1/compress", json=body, headers=server.headers(), timeout=60)


def _count(metrics: str, status: str) -> float:
    found = re.search(rf'^specprefill_requests_total{{path="/v1/compress",status="{status}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker, one queue slot, ``slow...`` queries take 3 s."""
    srv = start_server(tmp_path_factory.mktemp("slow"), "--queue-size", "1", "--max-batch", "1", "--slow", "3")
    yield srv
    srv.stop()


def test_a_full_queue_answers_429_with_retry_after(slow_server: Server) -> None:
    running = _Call(_post(slow_server, "slow one"))
    running.start()
    time.sleep(1.0)  # the worker has taken it
    queued = _Call(_post(slow_server, "slow two"))
    queued.start()
    time.sleep(0.5)  # it waits in the one queue slot
    refused = httpx.post(
        slow_server.url + "/v1/compress", json={"segments": [{"text": "x"}]}, headers=slow_server.headers()
    )
    assert refused.status_code == 429 and refused.json()["error"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    with pytest.raises(ServiceUnavailableError, match="429"):
        RemoteCompressor(slow_server.url, token=TOKEN, retries=0).compress_segments(_segments("fast"))
    running.join(30)
    queued.join(30)
    assert running.outcome.status_code == 200 and queued.outcome.status_code == 200  # nothing lost
    metrics = httpx.get(slow_server.url + "/metrics", headers=slow_server.headers()).text
    assert _count(metrics, "200") == 2 and _count(metrics, "429") == 2  # each answered once
    ran = re.search(r"^specprefill_compressions_total (\S+)$", metrics, re.M)
    assert ran and float(ran.group(1)) == 2  # refused requests never ran


def _errors(metrics: str, kind: str) -> float:
    found = re.search(rf'^specprefill_errors_total{{kind="{kind}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_request_past_its_deadline_or_left_by_its_client_is_not_computed(slow_server: Server) -> None:
    running = _Call(_post(slow_server, "slow one"))
    running.start()
    time.sleep(1.0)  # the worker is busy for two more seconds
    late = httpx.post(
        slow_server.url + "/v1/compress",
        headers=slow_server.headers(),
        json={"segments": [{"text": TOOL_TEXT}], "query": "late", "deadline_s": 0.5},
    )
    assert late.status_code == 504 and late.json()["error"] == "deadline_exceeded"
    with pytest.raises(httpx.ReadTimeout):  # this client leaves while its request is queued
        httpx.post(
            slow_server.url + "/v1/compress",
            headers=slow_server.headers(),
            timeout=0.5,
            json={"segments": [{"text": TOOL_TEXT}], "query": "gone"},
        )
    running.join(30)
    assert running.outcome.status_code == 200
    time.sleep(0.5)
    metrics = httpx.get(slow_server.url + "/metrics", headers=slow_server.headers()).text
    assert _errors(metrics, "deadline") == 1 and _errors(metrics, "client_gone") == 1
    ran = re.search(r"^specprefill_compressions_total (\S+)$", metrics, re.M)
    assert _count(metrics, "200") == 3 and ran and float(ran.group(1)) == 3  # the dropped two never ran


def test_sigterm_drains_the_request_in_flight(slow_server: Server) -> None:
    call = _Call(lambda: RemoteCompressor(slow_server.url, token=TOKEN).compress_segments(_segments("slow")))
    call.start()
    time.sleep(1.0)  # in the worker now
    slow_server.proc.send_signal(signal.SIGTERM)
    call.join(30)
    assert not isinstance(call.outcome, Exception), call.outcome
    assert call.outcome.segments[0].text != TOOL_TEXT  # a real, compressed answer
    assert slow_server.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    assert "Application shutdown complete" in slow_server.log.read_text()
    with pytest.raises(ServiceUnavailableError):
        RemoteCompressor(slow_server.url, token=TOKEN, retries=0).compress_segments(_segments("late"))


class _Seen(BaseCallbackHandler):
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.messages.append(messages[0])


def test_a_server_killed_mid_request_fails_open(tmp_path: Any) -> None:
    from langchain_specprefill import SpecPrefillLLM

    server = start_server(tmp_path, "--slow", "3")
    try:
        call = _Call(lambda: RemoteCompressor(server.url, token=TOKEN).compress_segments(_segments("slow")))
        call.start()
        time.sleep(1.0)
        server.proc.kill()
        call.join(30)
        assert isinstance(call.outcome, ServiceUnavailableError)
    finally:
        server.stop()
    conversation = [
        SystemMessage("You are terse."),
        HumanMessage("Why did the deploy fail?"),
        AIMessage("", tool_calls=[{"name": "logs", "args": {}, "id": "c1"}]),
        ToolMessage(TOOL_TEXT, tool_call_id="c1"),
    ]
    seen = _Seen()
    llm = SpecPrefillLLM(
        inner=GenericFakeChatModel(messages=iter([AIMessage("migration timeout")])),
        compressor=RemoteCompressor(server.url, token=TOKEN, retries=0),
        on_failure="warn",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = llm.invoke(conversation, config={"callbacks": [seen]})
    assert answer.content == "migration timeout"
    assert any("compression failed" in str(w.message) for w in caught)
    sent = [m for m in seen.messages[-1]]
    assert [m.content for m in sent] == [m.content for m in conversation]  # passed through uncompressed
