"""Fuzzing the ``specprefill`` command: any bytes on stdin and any mix of options end in exit code
0 (output keeps the invariants), 1 (one ``specprefill: error:`` line) or 2 (a usage error), never
a traceback; undecodable bytes come back exactly."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.conftest import draft_dir  # noqa: F401  (a fixture)
from tests.unit.test_cli import _run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_SETTINGS = settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_words = st.lists(st.sampled_from(["the", "port", "is", "8080.", "value", "\n", "error:", "ok", "{\"k\": 1}"]),
                  min_size=20, max_size=300).map(" ".join)
_stdin = st.one_of(
    _words.map(str.encode),
    st.binary(max_size=2000),
    st.text(max_size=800).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 3000)),
    st.builds(lambda s, n: s * n, st.sampled_from([b"\n", b"a", b"\xff", "🙂".encode(), b"x=1; "]),
              st.integers(0, 3000)),
)
_options = st.fixed_dictionaries({}, optional={
    "--keep": st.one_of(st.floats(0.01, 1.0), st.sampled_from(["0", "-1", "2", "nan", "x"])),
    "--max-tokens": st.one_of(st.integers(1, 500), st.sampled_from(["0", "-3", "x"])),
    "--unit": st.sampled_from(["auto", "word", "line", "sentence", "bogus"]),
    "--min-tokens": st.integers(-1, 80),
    "--lookahead": st.integers(-1, 3),
    "--query": st.text(max_size=30),
    "--json": st.none(),
})


def _argv(options: dict[str, object], draft: str) -> list[str]:
    argv = ["compress", "--draft", draft]
    for flag, value in options.items():
        argv += [flag] if value is None else [flag, str(value)]
    return argv


def _is_subsequence(small: bytes, big: bytes) -> bool:
    it = iter(big)
    return all(byte in it for byte in small)


@_SETTINGS
@given(data=_stdin, options=_options)
def test_any_stdin_and_options_end_cleanly(data: bytes, options: dict[str, object], draft_dir: str,  # noqa: F811
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        code, out, err = _run(_argv(options, draft_dir), monkeypatch, stdin=data)
    except SystemExit as exc:  # argparse rejects the options before any work
        assert exc.code == 2
        return
    assert "Traceback" not in err
    if code == 1:
        assert err.startswith("specprefill: error:") and err.count("\n") == 1
        return
    assert code == 0
    if "--json" not in options:
        kept = out if data.endswith(b"\n") else out.removesuffix(b"\n")  # the command ends its output with one
        for marker in (b" [...] ", b"\n# [...]\n"):
            kept = kept.replace(marker, b"")
        assert _is_subsequence(kept, data)
        return
    payload = json.loads(out)
    text = payload["texts"][0]
    text.encode("utf-8")  # valid JSON text, no lone surrogates
    raw = payload.get("raw_base64", {})
    if payload["stats"]["compressed_tokens"] == payload["stats"]["original_tokens"] and "0" in raw:
        assert base64.b64decode(raw["0"]) == data  # a pass-through of undecodable input is exact
