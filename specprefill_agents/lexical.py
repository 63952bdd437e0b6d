"""Lexical prior: chunks that share rare words with the query get their draft score raised.

The draft's attention finds what the question is about, including what shares no word with
it (a second hop, a variable's earlier value), but a small draft reading a long context is
pulled towards recent text and can miss a chunk that names the asked-about identifier
outright.  Okapi BM25 of each chunk against the query (every chunk of the request is the
document collection, so a word frequent in the context weighs little) catches exactly
those.  :func:`boost_plans` multiplies each chunk's draft score by
``1 + weight * bm25 / max(bm25)``: a chunk without query words keeps its draft score, the best
lexical match gets up to ``1 + weight`` times its own, and the order among non-matching
chunks is the draft's (``CompressionConfig.lexical_boost``; measured in
``benchmarks/results/retention_lexical_prior_cpu.md``, the weight 8 in
``benchmarks/results/completion_boost_cpu_epyc.md``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .selection import SegmentPlan, scaled_plans

__all__ = ["bm25_scores", "boost_plans", "expand_query", "query_terms"]

_WORD = re.compile(r"\w+")


def query_terms(text: str) -> list[str]:
    """Lower-cased words, and the parts of snake_case words (``load_draft`` -> ``load``, ``draft``)."""
    words = _WORD.findall(text.lower())
    return words + [part for word in words if "_" in word for part in word.split("_") if part]


def bm25_scores(documents: Sequence[str], query: str, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Okapi BM25 of each document against ``query`` (the documents are the collection)."""
    return _bm25(_bags(documents), query, k1, b)


def _bags(documents: Sequence[str]) -> list[Counter[str]]:
    return [Counter(query_terms(doc)) for doc in documents]


def _bm25(bags: list[Counter[str]], query: str, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """:func:`bm25_scores` over documents already split into term counts (``_bags``)."""
    scores = np.zeros(len(bags))
    if not bags:
        return scores
    lengths = np.array([sum(bag.values()) for bag in bags], dtype=np.float64)
    norm = k1 * (1 - b + b * lengths / max(float(lengths.mean()), 1.0))
    for term in set(query_terms(query)):
        tf = np.array([bag.get(term, 0) for bag in bags], dtype=np.float64)
        df = int(np.count_nonzero(tf))
        if df:
            idf = math.log((len(bags) - df + 0.5) / (df + 0.5) + 1.0)
            scores += idf * tf * (k1 + 1) / (tf + norm)
    return scores


#: Pseudo-relevance feedback takes, per round, at most this many words from the best chunk:
#: those in the fewest other chunks (but in at least one other, or they lead nowhere).
FEEDBACK_TERMS = 3
#: ... and only words found in at most this many chunks (rare enough to name one thing).
FEEDBACK_MAX_DF = 3


def expand_query(documents: Sequence[str], query: str, rounds: int) -> str:
    """``query`` plus, for each of ``rounds`` rounds, the rarest words of the best BM25 match not used
    yet (a chain ``A = 5``, ``B = A``, ``C = B`` is walked one link per round)."""
    return _expanded(_bags(documents), query, rounds)


def _expanded(bags: list[Counter[str]], query: str, rounds: int) -> str:
    df = Counter(term for bag in bags for term in bag)
    asked, used, extra = set(query_terms(query)), set(), list[str]()
    for _ in range(rounds):
        scores = _bm25(bags, " ".join([query, *extra]))
        best = next((int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0 and int(i) not in used),
                    None)
        if best is None:
            break
        used.add(best)
        new = sorted((t for t in bags[best] if t not in asked and 2 <= df[t] <= FEEDBACK_MAX_DF),
                     key=lambda t: (df[t], t))[:FEEDBACK_TERMS]
        asked.update(new)
        extra += new
    return " ".join([query, *extra])


def boost_plans(plans: Sequence[SegmentPlan], query: str, weight: float, feedback: int = 0) -> list[SegmentPlan]:
    """``plans`` with every chunk's score times ``1 + weight * bm25 / max(bm25)`` (BM25 over all
    chunks of all plans against ``query``, expanded by ``feedback`` rounds of :func:`expand_query`);
    unchanged when ``weight`` is 0 or no chunk shares a word with the query."""
    if weight <= 0 or not plans:
        return list(plans)
    bags = _bags([plan.chunk_text(i) for plan in plans for i in range(len(plan.chunks))])
    lexical = _bm25(bags, _expanded(bags, query, feedback) if feedback else query)
    best = float(lexical.max())
    if best <= 0:
        return list(plans)
    return scaled_plans(plans, 1.0 + weight * lexical / best)
