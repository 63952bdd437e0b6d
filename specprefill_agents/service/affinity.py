"""Prefix affinity: which replica of a scaled-out service should serve an agent's requests.

An agent's requests share their head (the system prompt and the first message after it), so
sending them to one replica lets that replica's KV prefix cache serve the unchanged prefix.
The client computes :func:`affinity_key` from the segments it sends and puts it in the
:data:`AFFINITY_HEADER`; the router ranks the current replicas for that key by rendezvous
hashing (:func:`rank_replicas`): every router computes the same ranking with no shared
state, and adding or removing one of N replicas moves only about 1/N of the agents.
:func:`route` adds the load rule: the home replica unless it is far busier than the least
busy one, then power of two choices.  Pure functions: no Ray, no web stack.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence

from ..types import Segment

__all__ = ["AFFINITY_HEADER", "REPLICA_HEADER", "affinity_key", "rank_replicas", "route"]

AFFINITY_HEADER = "x-specprefill-affinity"
"""Request header carrying :func:`affinity_key` (sent by ``RemoteCompressor``)."""

REPLICA_HEADER = "x-specprefill-replica"
"""Response header naming the replica that answered (scaled-out services only)."""

MAX_KEY_CHARS = 64  # longer header values are cut: a key is a hash, not data


def affinity_key(segments: Sequence[Segment]) -> str | None:
    """A stable 16-hex-digit key for the agent that sent ``segments`` (``None`` when empty).

    It hashes the role and text of the leading ``system`` segments and of the first segment
    after them (for an agent: its system prompt and its task), so agents that share a system
    prompt but not a task still spread over the replicas, and every step of one agent keeps
    the same key while its history grows behind that head.
    """
    head: list[tuple[str, str]] = []
    for seg in segments:
        head.append((seg.role, seg.text))
        if seg.role != "system":
            break
    if not head:
        return None
    data = json.dumps(head).encode("ascii")  # ASCII escapes: lone surrogates hash too
    return hashlib.blake2b(data, digest_size=8, person=b"spa-affinity").hexdigest()


def _weight(key: str, replica: str) -> int:
    digest = hashlib.blake2b(f"{key}\0{replica}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank_replicas(key: str, replicas: Iterable[str]) -> list[str]:
    """``replicas`` (ids), best first for ``key``: highest rendezvous weight, ties by id.

    The order depends only on the key and the set of ids, never on their order or on who asks.
    """
    return sorted(set(replicas), key=lambda r: (_weight(key, r), r), reverse=True)


def route(
    key: str | None,
    replicas: Sequence[str],
    queue_lens: Mapping[str, int | None],
    imbalance: int,
    rng: random.Random | None = None,
) -> list[list[str]]:
    """Ranks of replica ids to try, most preferred first.

    With a key: ``[[home], two others]`` (the router takes the first rank that accepts,
    the least loaded within a rank); when the home's known queue exceeds the least loaded
    known queue by more than ``imbalance`` requests, the key is ignored for this request.
    Without a key (or home skipped): one rank of two random replicas (power of two choices).
    ``queue_lens`` maps ids to their last known queue length (``None`` or absent: unknown,
    counted as idle).
    """
    rng = rng or random.Random()
    if not replicas:
        return []
    if key is not None and len(replicas) > 1:
        home = rank_replicas(key, replicas)[0]
        known = [q for q in (queue_lens.get(r) for r in replicas) if q is not None]
        home_len = queue_lens.get(home) or 0
        if not known or home_len - min(known) <= imbalance:
            others = [r for r in replicas if r != home]
            return [[home], _two(others, rng)]
    return [_two(list(replicas), rng)]


def _two(replicas: list[str], rng: random.Random) -> list[str]:
    """Two of ``replicas`` in random order (the router breaks equal loads by order)."""
    return rng.sample(replicas, min(2, len(replicas)))
