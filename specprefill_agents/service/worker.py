"""The bounded queue in front of the draft, and the threads that serve it.

With batching on, one worker takes up to ``max_batch`` queued requests per round (a
micro-batch): identical requests (same segments, query and overrides) are computed once and
answered together.  The distinct requests of a round run side by side, each on its own
thread seated at the draft's :class:`~specprefill_agents.scoring.batching.BlockBatcher`
(``shared_forwards``): each restores or prefills its own windows' KV (a prefix two of them
share is computed once, the KV prefix cache making the other wait for it), and their query
blocks and lookahead decode steps run as the rows of shared forwards.  Without
``shared_forwards`` they run one after another, shared prefixes adjacent.  With batching off,
``max_batch`` threads each take one request at a time and run it alone on the shared
compressor.

A request still queued past its deadline, or whose client went away, is dropped unrun.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
    batch_size: int = 0  # requests in the round that served it
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
    """Serves :class:`Job` s from a bounded queue on ``engine``; ``on_batch(n)`` sees each round's size and
    ``on_run()`` each compression the draft ran (identical requests of one round run once)."""

    def __init__(
        self, engine: Engine, queue_size: int, max_batch: int, batching: bool, on_batch: Any = None, on_run: Any = None,
        shared_forwards: bool = True,
    ) -> None:
        self.engine, self.queue_size, self.max_batch, self.batching = engine, queue_size, max_batch, batching
        self.shared_forwards = batching and shared_forwards
        self._side = ThreadPoolExecutor(max_batch, "specprefill-round") if self.shared_forwards else None
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = 0
        self._seconds: collections.deque[float] = collections.deque(maxlen=32)  # recent compute times, for Retry-After
        self._on_batch = on_batch or (lambda n: None)
        self._on_run = on_run or (lambda: None)
        count = 1 if batching else max_batch
        self._threads = [
            threading.Thread(target=self._loop, name=f"specprefill-worker-{i}", daemon=True) for i in range(count)
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
        if self._side is not None:
            self._side.shutdown(wait=False, cancel_futures=True)

    def _retry_after(self) -> int:
        per = sum(self._seconds) / len(self._seconds) if self._seconds else 1.0
        workers = 1 if self.batching else self.max_batch
        return max(1, math.ceil(per * (len(self._queue) + 1) / workers))

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            take = self.max_batch if self.batching else 1
            batch = [self._queue.popleft() for _ in range(min(take, len(self._queue)))]
            self._busy += 1
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._on_batch(len(batch))
                self._serve(batch)
            finally:
                with self._cond:
                    self._busy -= 1

    def _serve(self, batch: list[Job]) -> None:
        groups: dict[str, list[Job]] = {}  # identical requests: computed once
        for job in batch:
            job.batch_size = len(batch)
            groups.setdefault(job.key, []).append(job)
        ordered = sorted(groups.values(), key=lambda jobs: _first_text(jobs[0]))  # shared prefixes adjacent
        batcher = self._batcher() if len(ordered) > 1 else None
        if batcher is None or self._side is None:
            for jobs in ordered:
                self._run_alive(jobs)
            return
        seats = batcher.seats(len(ordered))  # taken before any starts: the first block waits for the rest
        running = [self._side.submit(self._run_seated, seat, jobs) for seat, jobs in zip(seats, ordered)]
        wait(running)
        for seat in seats:
            seat.leave()  # one that never started (shutdown) gives its seat up too

    def _batcher(self) -> Any:
        """The draft's block batcher when the requests of a round run side by side (None: one by one)."""
        if self._side is None:
            return None
        try:
            return self.engine.batcher()
        except Exception:  # the draft does not load: each request reports it on its own
            return None

    def _run_seated(self, seat: Any, jobs: list[Job]) -> None:
        with seat:
            self._run_alive(jobs)

    def _run_alive(self, jobs: list[Job]) -> None:
        alive = [job for job in jobs if job.alive()]
        if alive:
            self._run(alive)

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


def _first_text(job: Job) -> str:
    return job.segments[0].text if job.segments else ""
