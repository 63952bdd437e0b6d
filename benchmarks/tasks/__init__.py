"""Seeded long-context task generators over real text (the installed Python standard library).

Every generator is ``family(n_tokens, seed, counter) -> TaskInstance``: the same arguments
give the same instance (for a given Python version).  ``counter`` (``str -> int``) sizes the
context, e.g. the draft tokenizer's count; :func:`word_counter` for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .base import Counter, TaskInstance, word_counter
from .code_qa import code_qa
from .needles import needle_multikey, needle_multivalue, needle_single
from .reasoning import shared_words, two_hop, variable_tracking

__all__ = ["FAMILIES", "Counter", "TaskInstance", "make_suite", "shared_words", "word_counter"]

FAMILIES: dict[str, Callable[[int, int, Counter], TaskInstance]] = {
    "needle_single": needle_single,
    "needle_multikey": needle_multikey,
    "needle_multivalue": needle_multivalue,
    "two_hop": two_hop,
    "variable_tracking": variable_tracking,
    "code_qa": code_qa,
}


def make_suite(families: Iterable[str], lengths: Iterable[int], n: int, counter: Counter,
               seed: int = 0) -> list[TaskInstance]:
    """``n`` instances per (family, length), seeds ``seed .. seed + n - 1``."""
    lengths = list(lengths)
    return [FAMILIES[f](length, seed + i, counter) for f in families for length in lengths for i in range(n)]
