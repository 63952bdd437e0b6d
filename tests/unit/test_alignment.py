"""Unit tests for specprefill_agents.alignment: kind detection, units, unit scores."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprefill_agents.alignment import detect_kind, resolve_unit, split_units, unit_scores
from specprefill_agents.errors import ConfigError, InputError

PYTHON = textwrap.dedent(
    '''
    def moving_average(values, window=3):
        """Average of each window of values."""
        if window <= 0:
            raise ValueError("window must be positive")
        out = []
        for i in range(len(values) - window + 1):
            out.append(sum(values[i : i + window]) / window)
        return out
    '''
)
JSON_BLOB = json.dumps(
    {"user": {"id": 42, "name": "Ada", "roles": ["admin", "dev"]}, "active": True, "scores": [1.5, 2.0]},
    indent=2,
)
JSON_ONE_LINE = json.dumps({"id": 7, "tags": ["a", "b"], "nested": {"ok": False}})
LOG = textwrap.dedent(
    """
    2024-05-01 12:00:01,120 INFO  server: listening on 0.0.0.0:8080
    2024-05-01 12:00:02,004 WARN  db: slow query took 1200 ms
    2024-05-01 12:00:03,551 ERROR worker-3: task 19 failed, retrying in 5 s
    2024-05-01 12:00:09,002 INFO  worker-3: task 19 done
    """
)
YAML = "name: demo\nversion: 1.2.0\ndependencies:\n  - numpy\n  - torch\nscripts:\n  test: pytest -q\n"
TABLE = "| name | age |\n|------|-----|\n| Ada  | 36  |\n| Alan | 41  |\n"
PROSE = (
    "The committee met on Tuesday to review the proposal. After a long discussion, the members agreed\n"
    "that the plan was sound, although several of them asked for a clearer budget. The chair promised\n"
    "to circulate a revised version before the next meeting, which is scheduled for early March."
)
MARKDOWN = (
    "## Installation\n\n"
    "To install the package, run `pip install demo` in a fresh virtual environment.\n"
    "The **core** has no optional dependencies; see the [docs](https://example.org) for extras.\n\n"
    "- Download the archive.\n"
    "- Unpack it somewhere convenient.\n"
    "- Run the installer and follow the prompts."
)

# RULER's qa_1 layout: SQuAD paragraphs, one line each, under "Document N:" headings (half the lines end in ':')
DOCUMENTS = (
    "Document 1:\n"
    "In 1096, Crusaders passing by the siege of Amalfi were joined by Bohemond of Taranto. Bohemond was the "
    "de facto leader of the Crusade during its passage through Asia Minor.[citation needed]\n\n"
    "Document 2:\n"
    "When Edward the Confessor returned from his father's refuge in 1041, he brought with him a Norman-educated "
    "mind. He also brought many Norman counsellors and fighters.\n\n"
    "Document 3:\n"
    "The French Wars of Religion in the 16th century drove many Huguenots abroad. Some of them settled in "
    "the Cape Colony, where they founded vineyards.\n"
)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (PYTHON, "code"),
        (JSON_BLOB, "code"),
        (JSON_ONE_LINE, "code"),
        (LOG, "code"),
        (YAML, "code"),
        (TABLE, "code"),
        (PROSE, "prose"),
        (MARKDOWN, "prose"),
        (DOCUMENTS, "prose"),
        ("Answer the question below:", "prose"),
        ("A single line of ordinary prose, with a comma.", "prose"),
        ("", "prose"),
        ("   \n\t\n", "prose"),
    ],
)
def test_detect_kind_examples(text: str, kind: str) -> None:
    assert detect_kind(text) == kind


def test_resolve_unit() -> None:
    assert resolve_unit("auto", "code") == "line"
    assert resolve_unit("auto", "prose") == "statement"
    assert resolve_unit("sentence", "code") == "sentence"
    with pytest.raises(ConfigError):
        resolve_unit("paragraph", "prose")
    with pytest.raises(ConfigError):
        resolve_unit("auto", "poetry")


def _texts(text: str, spans: np.ndarray) -> list[str]:
    return [text[a:b] for a, b in spans]


def test_split_words() -> None:
    text = "  Hello,\tworld!\n\nfoo   bar "
    spans = split_units(text, "word")
    assert spans.dtype == np.int64 and spans.shape == (4, 2)
    assert _texts(text, spans) == ["Hello,", "world!", "foo", "bar"]


def test_split_lines_keeps_indentation_and_drops_trailing_space() -> None:
    text = "def f():\n    return 1   \n\n   \r\nx = 2\r\n"
    assert _texts(text, split_units(text, "line")) == ["def f():", "    return 1", "x = 2"]


def test_split_sentences() -> None:
    text = 'It rained. Did it stop? "Yes!" she said.\nNo heading\n\nNew paragraph without stop\nstill same'
    assert _texts(text, split_units(text, "sentence")) == [
        "It rained.",
        "Did it stop?",
        '"Yes!"',
        "she said.",
        "No heading",
        "New paragraph without stop\nstill same",
    ]
    assert _texts("3.14 is pi", split_units("3.14 is pi", "sentence")) == ["3.14 is pi"]


def test_split_statements_ends_short_lines_and_colons_but_not_wrapped_prose() -> None:
    text = ("Document 1:\nBilly Preston\nBilly Preston (born 1997) is a player. He plays for the Kansas\n"
            "Jayhawks since 2017 and more words.\nVAR AB = VAR CD The grass is green.\n- item one\n- item two")
    assert _texts(text, split_units(text, "statement")) == [
        "Document 1:",
        "Billy Preston",
        "Billy Preston (born 1997) is a player.",
        "He plays for the Kansas\nJayhawks since 2017 and more words.",
        "VAR AB = VAR CD The grass is green.",
        "- item one",
        "- item two",
    ]
    # sentences do not end at those line breaks
    first = "Document 1:\nBilly Preston\nBilly Preston (born 1997) is a player."
    assert _texts(text, split_units(text, "sentence"))[0] == first


@pytest.mark.parametrize("unit", ["word", "line", "sentence", "statement"])
@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \n", "\u3000\u00a0"])
def test_split_empty(unit: str, text: str) -> None:
    spans = split_units(text, unit)  # type: ignore[arg-type]
    assert spans.shape == (0, 2) and spans.dtype == np.int64


def test_split_unicode() -> None:
    combining = "cafe\u0301 nai\u0308ve"
    text = f"日本語のテキスト。 🙂👍🏽 {combining} 👨‍👩‍👧 end."
    words = _texts(text, split_units(text, "word"))
    assert words == ["日本語のテキスト。", "🙂👍🏽", "cafe\u0301", "nai\u0308ve", "👨‍👩‍👧", "end."]
    assert _texts(text, split_units(text, "sentence")) == ["日本語のテキスト。", text[text.index("🙂") :]]
    assert _texts(text, split_units(text, "line")) == [text]
    lone = "bad \udc80 surrogate. ok"
    assert _texts(lone, split_units(lone, "sentence")) == ["bad \udc80 surrogate.", "ok"]


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab.!?: \n\t\u00e9日🙂")), max_size=60))
def test_split_units_invariants(text: str) -> None:
    for unit in ("word", "line", "sentence", "statement"):
        spans = split_units(text, unit)  # type: ignore[arg-type]
        assert np.all(spans[:, 1] > spans[:, 0])
        assert np.all(spans[1:, 0] >= spans[:-1, 1])
        for a, b in spans:
            assert not text[b - 1].isspace()
            assert unit == "line" or not text[a].isspace()
        covered = "".join(text[a:b] for a, b in spans)
        assert "".join(covered.split()) == "".join(text.split())


def _brute(units: np.ndarray, offsets: np.ndarray, scores: np.ndarray, reduce: str) -> tuple[list, list]:
    out, counts = [], []
    for us, ue in units:
        hits = [s for (ts, te), s in zip(offsets, scores) if te > ts and ts < ue and te > us]
        counts.append(max(len(hits), 1))
        out.append(0.0 if not hits else (max(hits) if reduce == "max" else float(np.mean(hits))))
    return out, counts


def test_unit_scores_max_and_mean() -> None:
    text = "alpha beta gamma"
    units = split_units(text, "word")
    offsets = np.array([[0, 3], [3, 5], [5, 10], [10, 16]])  # "alp" "ha" " beta" " gamma"
    scores = np.array([0.1, 0.5, 0.2, 0.9], dtype=np.float32)
    got, counts = unit_scores(units, offsets, scores, "max")
    np.testing.assert_allclose(got, [0.5, 0.2, 0.9], rtol=1e-6)
    assert counts.tolist() == [2, 1, 1] and counts.dtype == np.int64
    got, _ = unit_scores(units, offsets, scores, "mean")
    np.testing.assert_allclose(got, [0.3, 0.2, 0.9], rtol=1e-6)


def test_unit_scores_byte_level_overlaps() -> None:
    text = "x 🙂 y"  # the emoji is 4 UTF-8 bytes: byte-level BPE gives several tokens one span
    units = split_units(text, "word")
    offsets = np.array([[0, 1], [1, 3], [2, 3], [2, 3], [1, 2], [3, 5], [4, 4]])
    scores = np.array([0.1, 0.2, 0.7, 0.4, 0.3, 0.6, 9.0], dtype=np.float32)
    got, counts = unit_scores(units, offsets, scores, "max")
    np.testing.assert_allclose(got, [0.1, 0.7, 0.6], rtol=1e-6)
    assert counts.tolist() == [1, 3, 1]  # the zero-length token [4, 4) is ignored
    got, _ = unit_scores(units, offsets, scores, "mean")
    np.testing.assert_allclose(got, [0.1, (0.2 + 0.7 + 0.4) / 3, 0.6], rtol=1e-6)


def test_unit_scores_uncovered_and_empty() -> None:
    units = np.array([[0, 2], [5, 8]])
    got, counts = unit_scores(units, np.zeros((0, 2), dtype=np.int64), np.zeros(0, np.float32))
    assert got.tolist() == [0.0, 0.0] and counts.tolist() == [1, 1]
    got, counts = unit_scores(np.zeros((0, 2), np.int64), np.array([[0, 1]]), np.array([1.0]))
    assert got.shape == (0,) and counts.shape == (0,)
    got, counts = unit_scores(units, np.array([[0, 8]]), np.array([0.5]), "mean")
    assert got.tolist() == [0.5, 0.5] and counts.tolist() == [1, 1]


def test_unit_scores_bad_input() -> None:
    with pytest.raises(InputError):
        unit_scores(np.array([[0, 1]]), np.array([[0, 1], [1, 2]]), np.array([1.0]))
    with pytest.raises(ConfigError):
        unit_scores(np.array([[0, 1]]), np.array([[0, 1]]), np.array([1.0]), "median")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4)), min_size=0, max_size=25),
    st.lists(st.tuples(st.integers(-2, 60), st.integers(-1, 12)), min_size=0, max_size=40),
    st.sampled_from(["max", "mean"]),
    st.integers(0, 2**32 - 1),
)
def test_unit_scores_matches_brute_force(gaps_lengths, tokens, reduce, seed) -> None:  # type: ignore[no-untyped-def]
    pos, units = 0, []
    for gap, length in gaps_lengths:
        units.append((pos + gap, pos + gap + length))
        pos += gap + length
    units_arr = np.array(units, dtype=np.int64).reshape(-1, 2)
    offsets = np.array([(s, s + w) for s, w in tokens], dtype=np.int64).reshape(-1, 2)
    scores = np.random.default_rng(seed).random(len(offsets)).astype(np.float32)
    got, counts = unit_scores(units_arr, offsets, scores, reduce)
    want, want_counts = _brute(units_arr, offsets, scores.astype(np.float64), reduce)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert counts.tolist() == want_counts


def test_unit_scores_long_text_vectorised() -> None:
    text = " ".join(f"w{i}" for i in range(50_000))
    units = split_units(text, "word")
    offsets = units.copy()
    scores = np.arange(len(units), dtype=np.float32)
    got, counts = unit_scores(units, offsets, scores, "max")
    np.testing.assert_array_equal(got, scores)
    assert counts.min() == counts.max() == 1
