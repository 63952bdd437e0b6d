"""Task instances, a seeded name generator and the prose haystack with inserted facts."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .corpus import prose_paragraphs

__all__ = ["Counter", "TaskInstance", "Names", "haystack_with", "word_counter"]

Counter = Callable[[str], int]


def word_counter(text: str) -> int:
    """Whitespace word count: a stand-in token counter for tests and quick runs."""
    return len(text.split())


@dataclass(frozen=True)
class TaskInstance:
    """One long-context question.

    ``segments`` are ``(role, text)`` pairs in prompt order; ``evidence`` are exact
    substrings of the context that must *all* survive compression for the instance to
    count as retained; ``answer`` is what a target model should say.
    """

    family: str
    seed: int
    segments: tuple[tuple[str, str], ...]
    question: str
    evidence: tuple[str, ...]
    answer: str
    n_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> str:
        return "\n\n".join(text for _, text in self.segments)


_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kl", "l", "m", "n", "p", "qu", "r", "s", "st",
           "t", "tr", "v", "z", "zh", "h", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ia")
_CODAS = ("", "n", "r", "l", "s", "th", "x", "nd", "rk", "m")
CITIES = ("Reykjavik", "Montevideo", "Ulaanbaatar", "Windhoek", "Tbilisi", "Ljubljana", "Nairobi", "Hobart",
          "Valparaiso", "Tromso", "Yerevan", "Bergen", "Cusco", "Da Nang", "Asuncion", "Bratislava",
          "Antananarivo", "Thimphu", "Dushanbe", "Paramaribo")


class Names:
    """Seeded made-up words (absent from the stdlib text), numbers and city names, never repeated."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _fresh(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            value = make()
            if value.lower() not in self.used:
                self.used.add(value.lower())
                return value
        raise RuntimeError("name space exhausted")

    def word(self, syllables: int = 3) -> str:
        r = self.rng
        return self._fresh(lambda: "".join(r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS)
                                           for _ in range(syllables)))

    def person(self) -> str:
        return self._fresh(lambda: f"{self.word(2).capitalize()} {self.word(2).capitalize()}")

    def number(self, digits: int = 7) -> str:
        return self._fresh(lambda: str(self.rng.randrange(10 ** (digits - 1), 10**digits)))

    def upper(self, letters: int = 5) -> str:
        return self._fresh(lambda: "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(letters)))

    def city(self) -> str:
        return self._fresh(lambda: self.rng.choice(CITIES))


def _paragraphs(rng: random.Random, n_tokens: int, counter: Counter) -> list[str]:
    pool = list(prose_paragraphs())
    rng.shuffle(pool)
    out, total = [], 0
    for paragraph in pool * (1 + n_tokens // 20_000):
        if total >= n_tokens:
            break
        out.append(paragraph)
        total += counter(paragraph) + 1
    return out


def haystack_with(
    rng: random.Random, n_tokens: int, counter: Counter, facts: Sequence[str], ordered: bool = False
) -> tuple[str, list[float]]:
    """Stdlib docstring paragraphs of about ``n_tokens`` (counted with ``counter``), with each
    fact inserted as its own sentence at the start of a random paragraph (depths in [0.05, 0.95]).

    ``ordered``: facts appear in the given order.  Returns the text and each fact's depth.
    """
    paragraphs = _paragraphs(rng, max(n_tokens - sum(counter(f) for f in facts), 1), counter)
    n = len(paragraphs)
    slots = sorted(rng.sample(range(max(1, n // 20), max(2, n - n // 20)), len(facts)))
    if not ordered:
        rng.shuffle(slots)
    for fact, slot in sorted(zip(facts, slots), key=lambda pair: -pair[1]):
        paragraphs[slot] = f"{fact} {paragraphs[slot]}"
    depths = [slot / n for slot in slots]
    return "\n\n".join(paragraphs), depths
