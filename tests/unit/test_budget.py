"""Unit tests for specprefill_agents.budget: counters and budgets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from specprefill_agents.budget import budget_tokens, make_counter
from specprefill_agents.errors import ConfigError


class FakeHFTokenizer:
    """Mimics a Hugging Face tokenizer: callable, .encode adds BOS unless told not to."""

    name_or_path = "org/fake-tokenizer"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def encode(
        self, text: str, text_pair: str | None = None, add_special_tokens: bool = True, **kw: Any
    ) -> list[int]:
        self.calls.append({"text": text, "add_special_tokens": add_special_tokens})
        ids = [hash(w) % 1000 for w in text.split()]
        return [1, *ids] if add_special_tokens else ids

    def __call__(self, text: str) -> dict[str, list[int]]:
        raise AssertionError("the counter must use .encode, not __call__")


class FakeTiktoken:
    """Mimics a tiktoken Encoding: .encode(text) raises on special-token text; .encode_ordinary does not."""

    name = "cl100k_fake"

    def encode(self, text: str, *, disallowed_special: Any = "all") -> list[int]:
        if "<|endoftext|>" in text:
            raise ValueError("special token in text")
        return list(range(len(text.split())))

    def encode_ordinary(self, text: str) -> list[int]:
        return list(range(len(text.split())))


class EncodeOnly:
    """Anything with a plain .encode(text) returning a sequence."""

    name = "encode-only"

    def encode(self, text: str) -> list[int]:
        return list(text)


def word_count(text: str) -> int:
    return len(text.split())


def test_make_counter_callable() -> None:
    counter, name = make_counter(word_count)
    assert name == "word_count"
    assert counter("a b c") == 3 and counter("") == 0
    counter, name = make_counter(lambda text: np.int64(len(text)))
    assert name == "<lambda>" and counter("abcd") == 4 and type(counter("abcd")) is int


def test_make_counter_callable_without_name() -> None:
    class Counter:
        def __call__(self, text: str) -> int:
            return 2

        def __repr__(self) -> str:
            return "Counter()"

    counter, name = make_counter(Counter())
    assert name == "Counter()" and counter("x") == 2


@pytest.mark.parametrize("bad", [lambda t: 1.5, lambda t: "3", lambda t: None, lambda t: True, lambda t: -1])
def test_make_counter_validates_callable_results_lazily(bad: Any) -> None:
    counter, _ = make_counter(bad)  # no call yet
    with pytest.raises(ConfigError, match="must return an int"):
        counter("some text")


def test_make_counter_hf_like_never_counts_special_tokens() -> None:
    tok = FakeHFTokenizer()
    counter, name = make_counter(tok)
    assert name == "org/fake-tokenizer"
    assert counter("hello big world") == 3
    assert tok.calls == [{"text": "hello big world", "add_special_tokens": False}]


def test_make_counter_tiktoken_like() -> None:
    counter, name = make_counter(FakeTiktoken())
    assert name == "cl100k_fake"
    assert counter("end <|endoftext|> here") == 3


def test_make_counter_encode_only() -> None:
    counter, name = make_counter(EncodeOnly())
    assert name == "encode-only" and counter("abc") == 3


@pytest.mark.parametrize("bad", [None, 42, "gpt2", b"gpt2", object(), ["a"]])
def test_make_counter_rejects_bad_input(bad: Any) -> None:
    with pytest.raises(ConfigError, match="callable str -> int"):
        make_counter(bad)


@pytest.mark.parametrize(
    ("total", "ratio", "max_tokens", "want"),
    [
        (100, 0.25, None, 25),
        (30, 0.1, None, 3),  # 0.1 * 30 == 3.0000000000000004 must not round up to 4
        (101, 0.25, None, 26),
        (3, 0.1, None, 1),  # at least one token
        (100, None, 10, 10),
        (100, 0.5, 10, 10),
        (100, 0.05, 10, 5),
        (5, None, 10, 10),  # max_tokens alone is not capped at total
        (100, 1.0, None, 100),
        (0, 0.25, None, 0),
        (0, None, 10, 0),
        (1, 0.01, 1, 1),
    ],
)
def test_budget_tokens(total: int, ratio: float | None, max_tokens: int | None, want: int) -> None:
    assert budget_tokens(total, ratio, max_tokens) == want


@pytest.mark.parametrize(
    ("total", "ratio", "max_tokens"),
    [(10, None, None), (-1, 0.5, None), (10, 0.0, None), (10, 1.5, None), (10, None, 0), (2.5, 0.5, None)],
)
def test_budget_tokens_rejects_bad_values(total: Any, ratio: Any, max_tokens: Any) -> None:
    with pytest.raises(ConfigError):
        budget_tokens(total, ratio, max_tokens)
