"""Token counting and budgets.

Budgets are measured in the *target's* tokens when the caller gives a tokenizer or
a counter, otherwise in the draft's.  :func:`make_counter` turns whatever the caller
has (a callable, a Hugging Face tokenizer, a tiktoken ``Encoding``) into one
``str -> int`` function that never counts special tokens, plus a name for stats.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

__all__ = ["APPROXIMATE", "TokenCounter", "approximate_tokens", "budget_tokens", "count_or_approximate",
           "countable", "make_counter"]

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]

_WHAT_TO_PASS = (
    "pass a callable str -> int, a Hugging Face tokenizer (with .encode(text, add_special_tokens=False)) "
    "or a tiktoken Encoding"
)


def _accepts_add_special_tokens(encode: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(encode).parameters.values()
    except (TypeError, ValueError):
        return True  # builtins without a signature: HF Rust tokenizers accept the keyword
    return any(p.name == "add_special_tokens" or p.kind is p.VAR_KEYWORD for p in params)


def _checked(fn: Callable[[str], Any], name: str) -> TokenCounter:
    """Wrap a user counter so a wrong result raises ConfigError when it first shows."""

    def count(text: str) -> int:
        result = fn(text)
        if isinstance(result, bool) or not isinstance(result, numbers.Integral):
            raise ConfigError(
                f"token counter {name!r} returned {type(result).__name__}; it must return an int"
            )
        if result < 0:
            raise ConfigError(f"token counter {name!r} returned {result}; it must return an int >= 0")
        return int(result)

    count.__name__ = name
    return count


def _encoder_counter(obj: Any) -> tuple[TokenCounter, str]:
    encode_ordinary = getattr(obj, "encode_ordinary", None)
    if callable(encode_ordinary):  # tiktoken: ordinary text, special-token strings included
        name = str(getattr(obj, "name", type(obj).__name__))
        return (lambda text: len(encode_ordinary(text))), name
    encode = obj.encode
    if _accepts_add_special_tokens(encode):  # Hugging Face tokenizers
        name = str(getattr(obj, "name_or_path", "") or type(obj).__name__)
        return (lambda text: len(encode(text, add_special_tokens=False))), name
    name = str(getattr(obj, "name", "") or type(obj).__name__)
    return (lambda text: len(encode(text))), name


def make_counter(obj: Any) -> tuple[TokenCounter, str]:
    """A ``str -> int`` token counter and its name, from what the caller has.

    * an object with ``.encode``: a Hugging Face tokenizer (counted with
      ``add_special_tokens=False``, named by ``name_or_path``), a tiktoken
      ``Encoding`` (counted with ``encode_ordinary`` when present, named by ``.name``),
      or any ``.encode(text)`` returning a sequence;
    * a callable ``str -> int`` (named by ``__name__`` or ``repr``); its result is
      checked on every call and a non-int or negative result raises ConfigError.

    Anything else (a string such as a model name included) raises ConfigError.
    """
    if isinstance(obj, (str, bytes)):
        raise ConfigError(
            f"got the string {obj!r} as a token counter; load the tokenizer and {_WHAT_TO_PASS}"
        )
    if callable(getattr(obj, "encode", None)):
        return _encoder_counter(obj)
    if callable(obj):
        name = str(getattr(obj, "__name__", None) or repr(obj))
        return _checked(obj, name), name
    raise ConfigError(f"cannot count tokens with a {type(obj).__name__}; {_WHAT_TO_PASS}")


def budget_tokens(total: int, keep_ratio: float | None, max_tokens: int | None) -> int:
    """The token budget for ``total`` compressible tokens.

    The smaller of ``ceil(keep_ratio * total)`` and ``max_tokens`` (whichever are
    set), at least 1 when ``total > 0``, and 0 when ``total == 0``.  ``max_tokens``
    alone is not capped at ``total``.
    """
    if isinstance(total, bool) or not isinstance(total, numbers.Integral) or total < 0:
        raise ConfigError(f"total must be an int >= 0, got {total!r}")
    if keep_ratio is None and max_tokens is None:
        raise ConfigError("set keep_ratio or max_tokens (or both)")
    if keep_ratio is not None and not 0.0 < float(keep_ratio) <= 1.0:
        raise ConfigError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 1):
        raise ConfigError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
    if total == 0:
        return 0
    limits = []
    if keep_ratio is not None:
        product = float(keep_ratio) * int(total)
        limits.append(math.ceil(product - 1e-9 * max(1.0, product)))  # 0.1 * 30 is 3.0000000000000004
    if max_tokens is not None:
        limits.append(int(max_tokens))
    return max(1, min(limits))


def countable(text: str) -> str:
    """``text`` with lone surrogates (undecodable input bytes) replaced by "?", same length."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


APPROXIMATE = "chars/4"
"""Name of :func:`approximate_tokens` in stats: what is counted when no counter can count."""


def approximate_tokens(text: str) -> int:
    """About one token per 4 characters: the count of last resort (a counter failed or cannot load)."""
    return (len(text) + 3) // 4


def count_or_approximate(counter: TokenCounter | None, name: str, texts: list[str]) -> tuple[list[int], str]:
    """Each text counted with ``counter`` (named ``name``), or all of them approximated when there is
    no counter or it raises: stats of a pass-through must never turn it into a crash."""
    if counter is not None:
        try:
            return [counter(countable(text)) for text in texts], name
        except Exception:
            pass
    return [approximate_tokens(text) for text in texts], APPROXIMATE
