"""The bounded queue in front of the draft, and the threads that serve it.

``max_batch`` threads share one compressor (and KV prefix cache).  With batching on, each
thread takes the next queued request together with every queued request identical to it
(computed once) and runs it seated at the draft's
:class:`~specprefill_agents.scoring.batching.BlockBatcher`: each request restores or prefills
its own windows' KV (a prefix two of them need is computed once: the KV prefix cache makes the
second wait for the first), and the query blocks and lookahead decode steps of the requests in
flight run as the rows of shared forwards.  A thread that finishes takes the next request at
once, so a long prefill holds up only its own request.  With batching off, each request runs
alone on its thread, its forwards its own.

A request still queued past its deadline, or whose client went away, is dropped unrun.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..types import CompressionResult, Segment
from .engine import Engine

__all__ = ["Job", "QueueFullError", "DeadlineExceededError", "CancelledJobError", "Worker"]

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """The queue holds ``queue_size`` requests; try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full; retry after {retry_after} s")
        self.retry_after = retry_after


class DeadlineExceededError(Exception):
    """The request's deadline passed before the draft got to it."""


class CancelledJobError(Exception):
    """The client went away before the draft got to the request."""


@dataclass(eq=False)  # compared by identity: two identical requests are two jobs
class Job:
    """One request waiting for the draft; ``future`` gets its result (or error)."""

    segments: list[Segment]
    query: str | None
    overrides: dict[str, Any]
    key: str  # equal keys: identical requests
    deadline: float  # time.monotonic() limit
    namespace: str = ""  # the tenant's cache namespace ("" shared)
    future: Future[Any] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)
    batch_size: int = 0  # requests in flight when it was taken (itself included)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def alive(self) -> bool:
        """False (and the future settled or cancelled) when the job must not run."""
        if not self.future.set_running_or_notify_cancel():  # the waiting side gave up
            return False
        if self.cancelled.is_set():
            self.future.set_exception(CancelledJobError("client went away"))
            return False
        if time.monotonic() > self.deadline:
            self.future.set_exception(DeadlineExceededError("deadline passed while queued"))
            return False
        return True


class Worker:
    """Serves :class:`Job` s from a bounded queue on ``engine``; ``on_batch(n)`` sees the requests in
    flight as each one starts and ``on_run()`` each compression the draft ran (identical requests
    taken together run once)."""

    def __init__(
        self, engine: Engine, queue_size: int, max_batch: int, batching: bool, on_batch: Any = None, on_run: Any = None
    ) -> None:
        self.engine, self.queue_size, self.max_batch, self.batching = engine, queue_size, max_batch, batching
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = 0
        self._seconds: collections.deque[float] = collections.deque(maxlen=32)  # recent compute times, for Retry-After
        self._on_batch = on_batch or (lambda n: None)
        self._on_run = on_run or (lambda: None)
        self._threads = [
            threading.Thread(target=self._loop, name=f"specprefill-worker-{i}", daemon=True) for i in range(max_batch)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, job: Job) -> Future[Any]:
        """Queue ``job``; :class:`QueueFullError` when ``queue_size`` requests already wait."""
        with self._cond:
            if self._stopping:
                raise QueueFullError(self._retry_after())
            if len(self._queue) >= self.queue_size:
                raise QueueFullError(self._retry_after())
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def discard(self, job: Job) -> None:
        """Drop ``job`` unrun (its client left or its deadline passed), freeing its queue slot."""
        job.cancelled.set()
        job.future.cancel()
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued (up to ``timeout`` seconds), then stop the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, end - time.monotonic()))

    def _retry_after(self) -> int:
        per = sum(self._seconds) / len(self._seconds) if self._seconds else 1.0
        return max(1, math.ceil(per * (len(self._queue) + 1) / self.max_batch))

    def _take(self) -> list[Job] | None:
        """The next request, with the queued requests identical to it when batching; None once
        stopping and empty."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            first = self._queue.popleft()
            same = [job for job in self._queue if job.key == first.key] if self.batching else []
            for job in same:
                self._queue.remove(job)
            self._busy += 1
            for job in (first, *same):
                job.batch_size = self._busy
            return [first, *same]

    def _loop(self) -> None:
        batcher = self._batcher()
        while (jobs := self._take()) is not None:
            try:
                self._on_batch(jobs[0].batch_size)
                alive = [job for job in jobs if job.alive()]
                if alive and batcher is not None:
                    with batcher.joined():
                        self._run(alive)
                elif alive:
                    self._run(alive)
            finally:
                with self._cond:
                    self._busy -= 1

    def _batcher(self) -> Any:
        """The draft's block batcher when batching (None: each request's forwards its own)."""
        if not self.batching:
            return None
        try:
            return self.engine.batcher()
        except Exception:  # the draft does not load: each request reports it on its own
            return None

    def _run(self, jobs: list[Job]) -> None:
        head = jobs[0]
        t0 = time.perf_counter()
        try:
            result: CompressionResult = self.engine.compress(head.segments, head.query, head.overrides,
                                                             head.namespace)
        except Exception as exc:
            logger.warning("compression failed: %s: %s", type(exc).__name__, exc)
            for job in jobs:
                job.future.set_exception(exc)
            return
        self._seconds.append(time.perf_counter() - t0)
        self._on_run()
        for job in jobs:
            job.future.set_result(result)
