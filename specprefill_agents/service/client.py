"""``RemoteCompressor``: the :class:`~specprefill_agents.Compressor` protocol over HTTP.

It returns the same :class:`~specprefill_agents.CompressionResult` the in-process compressor
would (the service runs one), sync or async, over pooled ``httpx`` connections.  A request is
retried only when the connection could not be made (nothing was sent), and after a 429 (the
service refused it unrun) once its ``Retry-After`` passed; a request that reached the service
is never sent twice.  Down, unreachable, timed out, 5xx, or still 429 after the retries:
:class:`~specprefill_agents.ServiceUnavailableError`, which integrations' ``on_failure`` turns
into a pass-through.  Other 4xx (bad token, too large, invalid): :class:`ServiceRequestError`.
Each request names its agent (``X-Specprefill-Affinity``: a hash of the segments' head), which
a service scaled out over Ray Serve replicas routes by.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import httpx

from ..budget import APPROXIMATE, TokenCounter, approximate_tokens, make_counter
from ..compressor import _validate_segments
from ..errors import ConfigError, InputError, ServiceRequestError, ServiceUnavailableError
from ..serialization import result_from_dict, segment_to_dict
from ..types import CompressionResult, Segment
from . import URL_ENV
from .affinity import AFFINITY_HEADER, MAX_KEY_CHARS, affinity_key
from .settings import TOKEN_ENV

__all__ = ["RemoteCompressor", "URL_ENV"]

logger = logging.getLogger(__name__)


class RemoteCompressor:
    """A client of ``specprefill serve``, usable wherever a compressor is.

    Args:
        url: the service's base URL; default ``$SPECPREFILL_URL``.
        token: bearer token; default ``$SPECPREFILL_TOKEN``.
        timeout: seconds for the whole request (connect, queue, compute, read).
        retries: attempts after a failed connection or a 429, each after a short wait.
        max_retry_wait: longest ``Retry-After`` honoured before giving up on a 429.
        config: per-request overrides sent with every call (``unit``, ``lookahead``...; see
            :class:`~specprefill_agents.service.schema.Overrides`).
        affinity: the key a service scaled out over replicas routes this client's requests by
            (an agent or thread id, printable ASCII); default: per request, a hash of the
            segments' head (:func:`~specprefill_agents.service.affinity.affinity_key`).

    Budgets and stats are counted by the service (``stats.counted_with`` names the counter); a
    ``token_counter`` passed to a call cannot travel and is ignored, with a warning.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        *,
        retries: int = 2,
        max_retry_wait: float = 5.0,
        config: dict[str, Any] | None = None,
        affinity: str | None = None,
    ) -> None:
        url = url or os.environ.get(URL_ENV)
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(f"RemoteCompressor needs the service URL (http://host:port), or ${URL_ENV}; got {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.max_retry_wait = float(timeout), int(retries), float(max_retry_wait)
        self.config = dict(config or {})
        if affinity is not None and not (
            isinstance(affinity, str) and 0 < len(affinity) <= MAX_KEY_CHARS and affinity.isascii()
            and affinity.isprintable()
        ):
            raise ConfigError(f"affinity must be 1-{MAX_KEY_CHARS} printable ASCII characters, got {affinity!r}")
        self.affinity = affinity
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
        self._client: httpx.Client | None = None
        self._async: dict[int, httpx.AsyncClient] = {}
        self._lock = threading.Lock()
        self._warned = False
        self._identity: dict[str, Any] | None = None

    # ------------------------------------------------------------------ protocol
    def compress_segments(
        self,
        segments: Sequence[Segment],
        query: str | None = None,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
        token_counter: Any = None,
        gap_refs: bool | None = None,
    ) -> CompressionResult:
        """Compress on the service (same arguments and result as the in-process compressor)."""
        body, headers = self._body(segments, query, keep_ratio, max_tokens, token_counter, gap_refs)
        for attempt in range(self.retries + 1):
            try:
                answer: httpx.Response | httpx.HTTPError = self._sync().post(
                    "/v1/compress", content=body, headers=headers
                )
            except httpx.HTTPError as exc:
                answer = exc
            result, wait = self._outcome(answer, attempt)
            if result is not None:
                return result
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def acompress_segments(
        self,
        segments: Sequence[Segment],
        query: str | None = None,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
        token_counter: Any = None,
        gap_refs: bool | None = None,
    ) -> CompressionResult:
        """The async twin of :meth:`compress_segments` (same rules, same result)."""
        body, headers = self._body(segments, query, keep_ratio, max_tokens, token_counter, gap_refs)
        for attempt in range(self.retries + 1):
            try:
                answer: httpx.Response | httpx.HTTPError = await self._aclient().post(
                    "/v1/compress", content=body, headers=headers
                )
            except httpx.HTTPError as exc:
                answer = exc
            result, wait = self._outcome(answer, attempt)
            if result is not None:
                return result
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def compress(self, context: str | Sequence[str], query: str | None = None, **kw: Any) -> CompressionResult:
        """One text or a list of texts, each its own segment (as the in-process ``compress``)."""
        texts = [context] if isinstance(context, str) else list(context)
        if not all(isinstance(t, str) for t in texts):
            raise InputError("context must be a str or a list of str; use compress_segments for Segment objects")
        return self.compress_segments([Segment(t) for t in texts], query, **kw)

    def counter(self, token_counter: Any = None) -> tuple[TokenCounter, str]:
        """``token_counter`` when given; else an approximation (the service's counter is remote)."""
        if token_counter is not None:
            return make_counter(token_counter)
        return approximate_tokens, APPROXIMATE

    def identity(self) -> dict[str, Any]:
        """The service's URL, draft and default config (asked once; the URL alone if it is down)."""
        if self._identity is None:
            try:
                info = self.info()
            except ServiceUnavailableError:
                return {"service": self.url}
            self._identity = {
                "service": self.url,
                "draft": info["draft"]["name"],
                "config": info["config"],
                "cache_mode": info["cache"]["mode"],
                "overrides": self.config,
            }
        return self._identity

    # ------------------------------------------------------------------ other calls
    def info(self) -> dict[str, Any]:
        """``GET /v1/info``: version, draft, default config, limits."""
        try:
            response = self._sync().get("/v1/info")
        except httpx.HTTPError as exc:
            raise _unavailable(self.url, exc) from exc
        _raise_for(response)
        return dict(response.json())

    def close(self) -> None:
        """Close the pooled connections (sync client; async ones close with :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        for client in list(self._async.values()):
            await client.aclose()
        self._async.clear()

    def __enter__(self) -> RemoteCompressor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _sync(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(base_url=self.url, headers=self._headers, timeout=self.timeout)
            return self._client

    def _aclient(self) -> httpx.AsyncClient:
        loop = id(asyncio.get_running_loop())  # an AsyncClient belongs to one event loop
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = httpx.AsyncClient(
                base_url=self.url, headers=self._headers, timeout=self.timeout
            )
        return client

    def _body(
        self,
        segments: Sequence[Segment],
        query: str | None,
        keep_ratio: float | None,
        max_tokens: int | None,
        token_counter: Any,
        gap_refs: bool | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The request body, and its affinity header (a replicated service routes an agent by it)."""
        segs = _validate_segments(segments)
        if query is not None and not isinstance(query, str):
            raise InputError(f"query must be a str or None, got {type(query).__name__}")
        if token_counter is not None and not self._warned:
            self._warned = True
            warnings.warn(
                "RemoteCompressor: the service counts budgets with its own counter (see "
                "stats.counted_with); token_counter is ignored",
                RuntimeWarning,
                stacklevel=3,
            )
        config = {
            **self.config,
            **{k: v for k, v in (("keep_ratio", keep_ratio), ("max_tokens", max_tokens), ("gap_refs", gap_refs))
               if v is not None},
        }
        payload = {
            "version": "v1",
            "segments": [segment_to_dict(s) for s in segs],
            "query": query,
            "config": config,
            "deadline_s": self.timeout,
        }
        key = self.affinity if self.affinity is not None else affinity_key(segs)
        headers = {AFFINITY_HEADER: key} if key is not None else {}
        return json.dumps(payload).encode("ascii"), headers  # ASCII escapes carry lone surrogates exactly

    def _outcome(
        self, answer: httpx.Response | httpx.HTTPError, attempt: int
    ) -> tuple[CompressionResult | None, float]:
        """The result of one attempt, or the seconds to wait before the next one; raises when done.

        Retried: a connection that could not be made (nothing was sent) and a 429 (refused
        unrun) whose Retry-After is short enough, ``retries`` times at most.
        """
        last = attempt >= self.retries
        if isinstance(answer, (httpx.ConnectError, httpx.ConnectTimeout)) and not last:
            logger.info("connection to %s failed (%s); retrying", self.url, answer)
            return None, 0.2 * 2**attempt
        if isinstance(answer, httpx.HTTPError):
            raise _unavailable(self.url, answer) from answer
        if answer.status_code != 429:
            return _result(answer), 0.0
        wait = _retry_after(answer)
        if last or wait > self.max_retry_wait:
            raise ServiceUnavailableError(
                f"{self.url} is overloaded (429, retry after {wait:g} s) after "
                f"{attempt + 1} attempt(s): add capacity or raise its --queue-size"
            )
        return None, wait


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _unavailable(url: str, exc: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"the draft service at {url} did not answer ({type(exc).__name__}: {exc}); "
        f"check that `specprefill serve` runs there"
    )


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json()
    except ValueError:
        detail = response.text[:500]
    if response.status_code >= 500 or response.status_code == 429:
        raise ServiceUnavailableError(f"the draft service answered {response.status_code}: {detail}")
    raise ServiceRequestError(f"the draft service rejected the request ({response.status_code}): {detail}")


def _result(response: httpx.Response) -> CompressionResult:
    _raise_for(response)
    try:
        payload = response.json()
        return result_from_dict(payload["result"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceUnavailableError(f"the draft service sent an unreadable answer: {exc}") from exc
