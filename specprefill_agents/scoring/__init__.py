"""Token importance from the draft model's attention (SpecPrefill / SpecPC).

The context runs through the draft with SDPA and a KV cache, so no n x n attention is ever
materialised; then the query block and a few greedy lookahead tokens run on top of it, and
their query rows' fp32 softmax over the context keys is folded into one score per token.

* :mod:`.window_kv`: the KV of context windows (prefix-cache lookup, restore, prefill, store);
* :mod:`.query_block`: the query block's forward and the greedy lookahead decode;
* :mod:`.capture`: the query rows collected during those forwards and the score fold;
* :mod:`.scorer`: :class:`DraftScorer`, which plans the windows and puts the three together.
"""

from .scorer import Cost, DraftScorer, RawScores, plan_windows

__all__ = ["Cost", "DraftScorer", "RawScores", "plan_windows"]
