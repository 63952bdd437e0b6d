"""Facts that must be chained, hidden in stdlib docstring prose.

* ``two_hop``: "<person>'s team works on codename <X>." + "Codename <X> runs on hardware
  housed in <city>." The question names the person and asks for the city; the second
  fact shares no word with the question (checked), so only the bridge ``<X>`` links them.
  Distractor pairs use the same templates with other people, codenames and cities.
* ``variable_tracking``: ``VAR A = 12345.`` ... ``VAR B = VAR A.`` ... ``VAR C = VAR B.``;
  asked the value of the last variable, every link must survive.  A distractor chain of
  the same length runs through the same text.
"""

from __future__ import annotations

import random
import re

from .base import Counter, Names, TaskInstance, haystack_with

__all__ = ["shared_words", "two_hop", "variable_tracking"]

_HOP_A = "{person}'s team works on codename {code}."
_HOP_B = "Codename {code} runs on hardware housed in {city}."
_QUESTION = "Which city hosts the machine used by {person}'s team?"


def shared_words(a: str, b: str) -> set[str]:
    """Lower-cased ``\\w+`` words common to ``a`` and ``b``."""
    return set(re.findall(r"\w+", a.lower())) & set(re.findall(r"\w+", b.lower()))


def two_hop(n_tokens: int, seed: int, counter: Counter, n_distractors: int = 3) -> TaskInstance:
    rng = random.Random(f"two_hop/{seed}/{n_tokens}")
    names = Names(rng)
    chains = [(names.person(), f"{names.word(2).capitalize()}-{rng.randrange(2, 99)}", names.city())
              for _ in range(1 + n_distractors)]
    person, code, city = chains[0]
    question = _QUESTION.format(person=person)
    hop_a, hop_b = _HOP_A.format(person=person, code=code), _HOP_B.format(code=code, city=city)
    if shared_words(question, hop_b):  # cannot happen with these templates; guard against edits
        raise RuntimeError(f"second hop shares words with the question: {shared_words(question, hop_b)}")
    facts = [f for p, c, t in chains for f in (_HOP_A.format(person=p, code=c), _HOP_B.format(code=c, city=t))]
    text, depths = haystack_with(rng, n_tokens, counter, facts)
    return TaskInstance("two_hop", seed, (("document", text),), question, (hop_a, hop_b), city,
                        counter(text), {"depths": depths[:2]})


def variable_tracking(n_tokens: int, seed: int, counter: Counter, hops: int = 3) -> TaskInstance:
    rng = random.Random(f"variable_tracking/{seed}/{n_tokens}")
    names = Names(rng)
    chains = []
    for _ in range(2):  # the asked chain and one distractor
        variables = [names.upper() for _ in range(hops)]
        lines = [f"VAR {variables[0]} = {names.number(5)}."]
        lines += [f"VAR {variables[i]} = VAR {variables[i - 1]}." for i in range(1, hops)]
        chains.append((variables, lines))
    facts = [line for pair in zip(chains[0][1], chains[1][1]) for line in pair]
    text, depths = haystack_with(rng, n_tokens, counter, facts, ordered=True)
    variables, lines = chains[0]
    value = lines[0].split("= ")[1].rstrip(".")
    return TaskInstance("variable_tracking", seed, (("document", text),),
                        f"What is the value of VAR {variables[-1]}?", tuple(lines), value, counter(text),
                        {"depths": depths[0::2]})
