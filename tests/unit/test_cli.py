"""The specprefill command, run in-process with a tiny draft saved to disk."""

from __future__ import annotations

import inspect
import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from specprefill_agents import CompressionConfig, cli

PROSE = inspect.getdoc(textwrap.TextWrapper) or ""


class _Std(io.TextIOWrapper):
    """A text stream backed by bytes, like the real sys.stdout/stdin."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8", errors="surrogateescape", newline="")

    def value(self) -> bytes:
        self.flush()
        return self.buffer.getvalue()  # type: ignore[attr-defined]


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch, stdin: bytes = b"") -> tuple[int, bytes, str]:
    out, err = _Std(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", _Std(stdin))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = cli.main(args)
    return code, out.value(), err.getvalue()


def test_compress_files_to_stdout_with_stats(tmp_path: Path, draft_dir: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(PROSE)
    b.write_text(PROSE.upper())
    code, out, err = _run(["compress", str(a), str(b), "--query", "width?", "--keep", "0.3",
                           "--draft", draft_dir], monkeypatch)
    assert code == 0
    text = out.decode()
    assert 0 < len(text) < len(PROSE) * 2
    assert "tokens" in err and "budget" in err


def test_stdin_and_json(draft_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = _run(["compress", "-", "--max-tokens", "50", "--unit", "word", "--json", "--draft", draft_dir],
                        monkeypatch, stdin=PROSE.encode())
    assert code == 0
    payload = json.loads(out)
    assert len(payload["texts"]) == 1
    assert payload["stats"]["compressed_tokens"] <= payload["stats"]["budget_tokens"] == 50
    for start, end in payload["kept_spans"][0]:
        assert PROSE[start:end] in payload["texts"][0]


def test_undecodable_bytes_survive(draft_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"short \xff\xfe text"
    code, out, _ = _run(["compress", "--draft", draft_dir], monkeypatch, stdin=data)
    assert code == 0 and out == data + b"\n"


def test_errors_are_one_line_and_nonzero(tmp_path: Path, draft_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _run(["compress", str(tmp_path / "missing.txt"), "--draft", draft_dir], monkeypatch)
    assert code == 1 and err.startswith("specprefill: error:") and err.count("\n") == 1
    code, _, err = _run(["compress", "--keep", "3", "--draft", draft_dir], monkeypatch, stdin=b"x")
    assert code == 1 and "keep_ratio" in err
    code, _, err = _run(["compress", "--lexical-boost", "-1", "--draft", draft_dir], monkeypatch, stdin=b"x")
    assert code == 1 and "lexical_boost" in err
    code, _, err = _run(["compress", "--draft", str(tmp_path / "nope")], monkeypatch, stdin=b"x " * 200)
    assert code == 1 and "nope" in err


def test_lexical_boost_option_reaches_the_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.build_parser().parse_args(["compress", "--lexical-boost", "0", "--lookahead", "2",
                                          "--lexical-feedback", "1", "--sampling", "proportional",
                                          "--semantic-boost", "8", "--semantic-model", "/models/enc"])
    config = cli._compression_config(args)
    assert config.lexical_boost == 0 and config.scoring.lookahead == 2 and config.lexical_feedback == 1
    assert config.semantic_boost == 8 and config.semantic_model == "/models/enc"
    assert config.sampling == "proportional"
    assert cli._compression_config(cli.build_parser().parse_args(["compress"])) == CompressionConfig()


def test_help_and_no_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "compress" in capsys.readouterr().out
    assert cli.main([]) == 2


def test_prepare_reports_the_draft(draft_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = _run(["prepare", "--draft", draft_dir], monkeypatch)
    info = json.loads(out)
    assert code == 0 and info["name"].startswith("dir:") and info["max_context"] == 512


def test_prepare_semantic_loads_the_encoder_too_and_says_why_it_cannot(
        draft_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertConfig, BertModel

    from specprefill_agents.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertModel(config).save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    code, out, _ = _run(["prepare", "--draft", draft_dir, "--semantic", str(tmp_path / "enc")], monkeypatch)
    assert code == 0 and json.loads(out)["semantic_model"] == str(tmp_path / "enc")
    code, out, err = _run(["prepare", "--draft", draft_dir, "--semantic", str(tmp_path / "none")], monkeypatch)
    assert code == 1 and out == b"" and "could not load the semantic model" in err


def test_json_holds_valid_unicode_and_the_exact_bytes_of_undecodable_input(
        draft_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    data = b"short \xff\xfe text"
    code, out, _ = _run(["compress", "--json", "--draft", draft_dir], monkeypatch, stdin=data)
    assert code == 0
    payload = json.loads(out)
    payload["texts"][0].encode("utf-8")  # no lone surrogates: any strict JSON reader takes it
    assert "\ufffd" in payload["texts"][0]
    assert base64.b64decode(payload["raw_base64"]["0"]) == data  # short: passed through whole


def test_serve_ray_without_ray_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    monkeypatch.delitem(sys.modules, "specprefill_agents.service.ray_serve", raising=False)
    assert cli.main(["serve", "--ray", "--replicas", "2"]) == 1
    assert "pip install 'specprefill-agents[ray]'" in capsys.readouterr().err
