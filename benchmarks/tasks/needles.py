"""Needle-in-a-haystack variants over stdlib docstring prose (RULER-style).

* ``needle_single``: one ``key → value`` fact; asked for the value.
* ``needle_multikey``: several facts of the same template with different keys; one asked.
* ``needle_multivalue``: one key with several values; all asked (all must survive).
"""

from __future__ import annotations

import random

from .base import Counter, Names, TaskInstance, haystack_with

__all__ = ["needle_multikey", "needle_multivalue", "needle_single"]

_FACT = "The access code for the {key} vault is {value}."
_MULTI = "One of the access codes for the {key} vault is {value}."


def needle_single(n_tokens: int, seed: int, counter: Counter) -> TaskInstance:
    rng = random.Random(f"needle_single/{seed}/{n_tokens}")
    names = Names(rng)
    key, value = names.word(), names.number()
    fact = _FACT.format(key=key, value=value)
    text, depths = haystack_with(rng, n_tokens, counter, [fact])
    return TaskInstance("needle_single", seed, (("document", text),),
                        f"What is the access code for the {key} vault?", (fact,), value, counter(text),
                        {"depths": depths})


def needle_multikey(n_tokens: int, seed: int, counter: Counter, n_keys: int = 6) -> TaskInstance:
    rng = random.Random(f"needle_multikey/{seed}/{n_tokens}")
    names = Names(rng)
    pairs = [(names.word(), names.number()) for _ in range(n_keys)]
    facts = [_FACT.format(key=k, value=v) for k, v in pairs]
    asked = rng.randrange(n_keys)
    text, depths = haystack_with(rng, n_tokens, counter, facts)
    key, value = pairs[asked]
    return TaskInstance("needle_multikey", seed, (("document", text),),
                        f"What is the access code for the {key} vault?", (facts[asked],), value, counter(text),
                        {"depths": depths, "asked": asked})


def needle_multivalue(n_tokens: int, seed: int, counter: Counter, n_values: int = 4) -> TaskInstance:
    rng = random.Random(f"needle_multivalue/{seed}/{n_tokens}")
    names = Names(rng)
    key = names.word()
    values = [names.number() for _ in range(n_values)]
    facts = [_MULTI.format(key=key, value=v) for v in values]
    text, depths = haystack_with(rng, n_tokens, counter, facts)
    return TaskInstance("needle_multivalue", seed, (("document", text),),
                        f"What are all the access codes for the {key} vault?", tuple(facts),
                        ", ".join(values), counter(text), {"depths": depths})
