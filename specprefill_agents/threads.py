"""How many CPU threads the draft uses (torch's intra-op pool).

torch starts one thread per core.  On a machine where another process keeps a core busy (the
agent itself, a target model, a second test run), an intra-op pool that wants every core waits
at each parallel region for the thread that shares a core with that process: scoring stalls
(measured in ``benchmarks/bench_threads.py``).  The default leaves one core free and never
raises a thread count set before; the semantic prior's encoder runs on a worker thread beside
the draft (:mod:`specprefill_agents.semantic_call`) and takes that core when nothing else does.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["apply_num_threads", "default_num_threads", "usable_cpus"]

logger = logging.getLogger(__name__)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def default_num_threads() -> int:
    """One less than the usable CPUs (at least one), and never more than torch uses now: a lower
    setting already made (``torch.set_num_threads``, ``OMP_NUM_THREADS``) is kept."""
    return max(1, min(int(torch.get_num_threads()), usable_cpus() - 1))


def apply_num_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads (process-wide) to ``num_threads``, or the default for None."""
    wanted = default_num_threads() if num_threads is None else num_threads
    if torch.get_num_threads() != wanted:
        logger.info("torch intra-op threads: %d -> %d", torch.get_num_threads(), wanted)
        torch.set_num_threads(wanted)
    return wanted
