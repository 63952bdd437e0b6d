"""Settings, the CLI's flags and the SPECPREFILL_URL switch: no server needed."""

from __future__ import annotations

import re

import pytest

from specprefill_agents import ConfigError
from specprefill_agents.cli import build_parser
from specprefill_agents.service import RemoteCompressor, ServiceSettings


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.4", "example.org", "::"])
def test_binding_beyond_loopback_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="token"):
        ServiceSettings(host=host)
    assert ServiceSettings(host=host, token="long-enough-token").host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    assert ServiceSettings(host=host).token is None


@pytest.mark.parametrize(
    "change",
    [
        {"port": 70000},
        {"queue_size": 0},
        {"max_batch": True},
        {"deadline_s": 0},
        {"token": "short"},
        {"max_body_bytes": -1},
    ],
)
def test_bad_settings_raise_config_error(change: dict) -> None:
    with pytest.raises(ConfigError):
        ServiceSettings(**change)


def test_serve_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    for action in serve._actions:
        assert action.help, f"{action.option_strings} has no help"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--token",
        "--queue-size",
        "--max-batch",
        "--no-batching",
        "--deadline",
        "--drain",
        "--max-body-bytes",
        "--max-segments",
        "--max-total-chars",
        "--draft",
        "--device",
    ):
        assert re.search(rf"{flag}\b", text)
    assert "SPECPREFILL_TOKEN" in text and "SPECPREFILL_URL" in text


def test_serve_refuses_an_open_host_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from specprefill_agents.cli import main

    monkeypatch.delenv("SPECPREFILL_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 1  # before loading anything
    assert "token" in capsys.readouterr().err


def test_specprefill_url_switches_the_integrations_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from specprefill_agents.integration import DOCUMENT_SETTINGS, resolve_compressor

    from specprefill_agents import SpecPrefillCompressor

    monkeypatch.delenv("SPECPREFILL_URL", raising=False)
    assert isinstance(resolve_compressor(None), SpecPrefillCompressor)
    monkeypatch.setenv("SPECPREFILL_URL", "http://127.0.0.1:9")
    remote = resolve_compressor(None)
    assert isinstance(remote, RemoteCompressor) and remote.url == "http://127.0.0.1:9"
    assert remote.config == {}
    documents = resolve_compressor(None, DOCUMENT_SETTINGS)  # the document entry points' settings, per request
    assert isinstance(documents, RemoteCompressor) and documents.config == dict(DOCUMENT_SETTINGS)
    given = SpecPrefillCompressor("embedded")
    assert resolve_compressor(given) is given  # an explicit compressor always wins
    assert resolve_compressor(given, DOCUMENT_SETTINGS) is given and given.config.semantic_boost == 0
    monkeypatch.delenv("SPECPREFILL_URL")
    local = resolve_compressor(None, DOCUMENT_SETTINGS)
    assert isinstance(local, SpecPrefillCompressor)
    assert local.config.semantic_boost == DOCUMENT_SETTINGS["semantic_boost"] > 0
    assert local.on_failure == "raise" and local.on_part_failure == "warn"


@pytest.mark.parametrize("url", ["", "127.0.0.1:8765", "ftp://x"])
def test_remote_compressor_needs_an_http_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPECPREFILL_URL", raising=False)
    with pytest.raises(ConfigError, match="URL"):
        RemoteCompressor(url)
