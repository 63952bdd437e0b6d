"""Prefix affinity without Ray: the agent key, the rendezvous ranking and the load rule."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from specprefill_agents import Segment
from specprefill_agents.errors import ConfigError
from specprefill_agents.service.affinity import affinity_key, rank_replicas, route

REPLICAS = [f"replica-{i}" for i in range(4)]
KEYS = [f"{i:016x}" for i in range(4000)]


def _home(key: str, replicas: list[str]) -> str:
    return rank_replicas(key, replicas)[0]


def test_the_key_is_the_head_of_the_agent_and_ignores_what_follows() -> None:
    system = Segment("You are a careful assistant.", role="system", protected=True)
    task = Segment("Fix the failing test in parser.py", role="user")
    step1 = [system, task, Segment("tool output 1", role="tool")]
    step2 = [*step1, Segment("thinking", role="assistant"), Segment("tool output 2", role="tool")]
    key = affinity_key(step1)
    assert key is not None and len(key) == 16 and int(key, 16) >= 0
    assert affinity_key(step2) == key  # the history grows behind the same head
    assert affinity_key([system, Segment("Another task", role="user")]) != key  # same system prompt, other agent
    assert affinity_key([Segment(task.text, role="tool"), system]) != affinity_key([task, system])  # role counts
    assert affinity_key([Segment("bad \udcff bytes")]) == affinity_key([Segment("bad \udcff bytes")])
    assert affinity_key([]) is None


def test_the_ranking_of_a_key_is_stable_and_independent_of_the_replica_order() -> None:
    for key in KEYS[:50]:
        ranked = rank_replicas(key, REPLICAS)
        assert sorted(ranked) == sorted(REPLICAS)
        assert rank_replicas(key, list(reversed(REPLICAS))) == ranked
        assert rank_replicas(key, random.Random(key).sample(REPLICAS, 4)) == ranked


def test_keys_spread_evenly_over_the_replicas() -> None:
    homes = Counter(_home(key, REPLICAS) for key in KEYS)
    assert set(homes) == set(REPLICAS)
    assert all(0.2 < n / len(KEYS) < 0.3 for n in homes.values())  # 1/4 each, by the hash


def test_adding_a_replica_moves_about_one_key_in_n_and_only_to_it() -> None:
    grown = [*REPLICAS, "replica-new"]
    moved = [key for key in KEYS if _home(key, REPLICAS) != _home(key, grown)]
    assert all(_home(key, grown) == "replica-new" for key in moved)
    assert 0.15 < len(moved) / len(KEYS) < 0.25  # 1/5 expected


def test_removing_a_replica_moves_only_its_own_keys() -> None:
    gone = REPLICAS[1]
    rest = [r for r in REPLICAS if r != gone]
    for key in KEYS[:1000]:
        before = rank_replicas(key, REPLICAS)
        if before[0] != gone:
            assert _home(key, rest) == before[0]
        else:
            assert _home(key, rest) == before[1]  # its next choice takes it


def test_route_prefers_the_home_then_two_others() -> None:
    key = KEYS[7]
    home = _home(key, REPLICAS)
    ranks = route(key, REPLICAS, {r: 2 for r in REPLICAS}, imbalance=8, rng=random.Random(0))
    assert ranks[0] == [home]
    assert len(ranks[1]) == 2 and home not in ranks[1] and set(ranks[1]) <= set(REPLICAS)
    assert route(key, REPLICAS, {}, imbalance=8)[0] == [home]  # unknown loads count as idle


def test_an_overloaded_home_does_not_pin_its_agent() -> None:
    key = KEYS[7]
    home = _home(key, REPLICAS)
    loads = {r: (20 if r == home else 3) for r in REPLICAS}
    seen = set()
    for seed in range(50):
        ranks = route(key, REPLICAS, loads, imbalance=8, rng=random.Random(seed))
        assert len(ranks) == 1 and len(ranks[0]) == 2  # power of two choices over all replicas
        seen.update(ranks[0])
    assert seen == set(REPLICAS)
    within = {r: (11 if r == home else 3) for r in REPLICAS}  # 8 more than the least loaded: still home
    assert route(key, REPLICAS, within, imbalance=8)[0] == [home]


@pytest.mark.parametrize("replicas", [["only"], REPLICAS])
def test_without_a_key_requests_get_power_of_two_choices(replicas: list[str]) -> None:
    firsts = Counter()
    for seed in range(200):
        (rank,) = route(None, replicas, {}, imbalance=8, rng=random.Random(seed))
        assert len(rank) == min(2, len(replicas)) and len(set(rank)) == len(rank)
        firsts[rank[0]] += 1
    assert set(firsts) == set(replicas)  # ties broken at random, not always the same replica
    assert route("k", [], {}, imbalance=8) == []


@pytest.mark.parametrize("bad", ["", "x" * 65, "new\nline", "caf\u00e9", 42])
def test_a_fixed_client_affinity_must_fit_a_header(bad: object) -> None:
    from specprefill_agents.service import RemoteCompressor

    with pytest.raises(ConfigError, match="affinity must be"):
        RemoteCompressor("http://127.0.0.1:9", affinity=bad)  # type: ignore[arg-type]
    assert RemoteCompressor("http://127.0.0.1:9", affinity="thread-42").affinity == "thread-42"
