"""Draft loading: resolution, errors, memoisation, cache root and the convert-once logic (no real weights)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

from specprefill_agents import draft as draft_mod
from specprefill_agents.config import DraftConfig
from specprefill_agents.draft import (
    DraftModel,
    clear_draft_cache,
    converted_gguf_dir,
    draft_cache_root,
    load_draft,
)
from specprefill_agents.errors import ConfigError, DraftModelError, DraftNotInstalledError
from specprefill_agents.testing import tiny_draft
from specprefill_agents.weights import EMBEDDED_WHEEL


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_draft_cache()
    yield
    clear_draft_cache()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny = tiny_draft("llama")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


class FakeConverter:
    """Stands in for the transformers GGUF conversion: writes files, records calls."""

    def __init__(self, delay: float = 0.0, fail: bool = False, save_tiny: bool = False) -> None:
        self.calls: list[tuple[Path, Path]] = []
        self.delay = delay
        self.fail = fail
        self.save_tiny = save_tiny
        self._lock = threading.Lock()

    def __call__(self, gguf: Path, out_dir: Path) -> None:
        with self._lock:
            self.calls.append((gguf, out_dir))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("converter exploded")
        if self.save_tiny:
            tiny = tiny_draft("llama")
            tiny.model.save_pretrained(out_dir)
            tiny.tokenizer.save_pretrained(out_dir)
        else:
            (out_dir / "model.safetensors").write_bytes(b"weights")


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "Tiny-Model.Q4_1.gguf"
    path.parent.mkdir()
    path.write_bytes(os.urandom(4096))
    return path


# ----------------------------------------------------------------------------- local directories


def test_local_dir_loads_on_cpu_in_eval_mode(tiny_dir: Path) -> None:
    draft = load_draft(DraftConfig(model=str(tiny_dir), device="cpu", dtype="float32"))
    assert isinstance(draft, DraftModel)
    assert draft.name.startswith(f"dir:{tiny_dir.resolve()}@")
    assert draft.max_context == 512
    assert draft.device.type == "cpu"
    assert draft.dtype == torch.float32
    assert not draft.model.training
    assert draft.tokenizer.is_fast
    assert draft.model.config._attn_implementation == "sdpa"
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = tiny_draft("llama").model(ids).logits
        got = draft.model(ids).logits
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (False, False, torch.float32), (True, False, torch.bfloat16), (False, True, torch.bfloat16)])
def test_auto_device_and_dtype_without_accelerator(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   amx: bool, avx512_bf16: bool, expected: torch.dtype) -> None:
    """bf16 on a CPU that multiplies it natively (AMX tiles or AVX512-BF16), fp32 elsewhere."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    draft = load_draft(str(tiny_dir))
    assert draft.device.type == "cpu"
    assert draft.dtype == expected


def test_dtype_override(tiny_dir: Path) -> None:
    draft = load_draft(DraftConfig(model=str(tiny_dir), device="cpu", dtype="bfloat16"))
    assert draft.dtype == torch.bfloat16


def test_dir_name_changes_when_weights_are_saved_again(tiny_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy"
    tiny = tiny_draft("llama")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    first = load_draft(DraftConfig(model=str(path), device="cpu")).name
    later = time.time_ns() + 5_000_000_000
    os.utime(path / "model.safetensors", ns=(later, later))
    clear_draft_cache()
    assert load_draft(DraftConfig(model=str(path), device="cpu")).name != first


def test_bad_device_is_a_config_error(tiny_dir: Path) -> None:
    with pytest.raises(ConfigError):
        load_draft(DraftConfig(model=str(tiny_dir), device="not-a-device"))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("spec", ["missing-dir", "missing.gguf", "a/b/c"])
def test_missing_path_says_no_such_file(spec: str, tmp_path: Path) -> None:
    path = tmp_path / spec
    with pytest.raises(DraftModelError) as info:
        load_draft(str(path))
    assert str(path) in str(info.value)
    assert "no such file or directory" in str(info.value)


def test_relative_missing_path_is_not_sent_to_the_hub() -> None:
    with pytest.raises(DraftModelError, match="no such file or directory"):
        load_draft("./models/not-here")


def test_non_gguf_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "weights.txt"
    path.write_text("x")
    with pytest.raises(DraftModelError, match=r"\.gguf"):
        load_draft(str(path))


def test_unknown_hub_id_offline_is_a_draft_error() -> None:
    config = DraftConfig(model="specprefill-test/does-not-exist", local_files_only=True, device="cpu")
    with pytest.raises(DraftModelError, match="hub"):
        load_draft(config)


def test_embedded_not_installed_nor_cached_offline_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def fake_find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name == EMBEDDED_WHEEL.package else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    monkeypatch.setenv("SPECPREFILL_CACHE_DIR", str(tmp_path / "default"))
    with pytest.raises(DraftNotInstalledError) as info:
        load_draft(DraftConfig(cache_dir=str(tmp_path / "cache"), local_files_only=True))
    message = str(info.value)
    assert "specprefill prepare" in message and EMBEDDED_WHEEL.requirement in message
    assert isinstance(info.value, DraftModelError) and isinstance(info.value, ImportError)


def test_slow_tokenizer_is_rejected(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_loads: list[str] = []
    real_model_loader = transformers.AutoModelForCausalLM.from_pretrained

    def slow_tokenizer(*args: object, **kwargs: object) -> SimpleNamespace:
        return SimpleNamespace(is_fast=False)

    def counting_model_loader(*args: object, **kwargs: object) -> object:
        model_loads.append(str(args[0]))
        return real_model_loader(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", slow_tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", counting_model_loader)
    with pytest.raises(DraftModelError, match="fast tokenizer"):
        load_draft(DraftConfig(model=str(tiny_dir), device="cpu"))
    assert model_loads == []


@pytest.mark.parametrize(
    ("max_pos", "tok_max", "expected"),
    [(8192, 10**30, 8192), (None, 4096, 4096), (None, 10**30, 2048), (None, None, 2048)],
)
def test_max_context_fallbacks(max_pos: int | None, tok_max: int | None, expected: int) -> None:
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=max_pos))
    tokenizer = SimpleNamespace(model_max_length=tok_max)
    assert draft_mod._max_context(model, tokenizer) == expected


# ----------------------------------------------------------------------------- memoisation


def test_memoised_per_config(tiny_dir: Path) -> None:
    config = DraftConfig(model=str(tiny_dir), device="cpu")
    first = load_draft(config)
    assert load_draft(DraftConfig(model=str(tiny_dir), device="cpu")) is first
    assert load_draft(DraftConfig(model=str(tiny_dir), device="cpu", dtype="bfloat16")) is not first
    clear_draft_cache()
    assert load_draft(config) is not first


def test_concurrent_loads_of_one_config_load_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[DraftConfig] = []

    def slow_load(config: DraftConfig) -> object:
        calls.append(config)
        time.sleep(0.1)
        return object()

    monkeypatch.setattr(draft_mod, "_load_uncached", slow_load)
    results: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(load_draft("some-org/some-model"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)


# ----------------------------------------------------------------------------- cache root


def test_cache_root_argument_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(draft_mod.CACHE_ENV, str(tmp_path / "env"))
    assert draft_cache_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert draft_cache_root(None) == tmp_path / "env"


def test_cache_root_default_is_user_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv(draft_mod.CACHE_ENV, raising=False)
    assert draft_cache_root() == Path(platformdirs.user_cache_dir("specprefill-agents"))


# ----------------------------------------------------------------------------- convert once


def _target(root: Path, gguf: Path) -> Path:
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    return root / "drafts" / f"{gguf.stem}-{sha[:16]}"


def test_concurrent_conversions_happen_once(fake_gguf: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    converter = FakeConverter(delay=0.2)
    monkeypatch.setattr(draft_mod, "_convert_gguf", converter)
    root = tmp_path / "cache"
    results: list[Path] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(converted_gguf_dir(fake_gguf, root))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    target = _target(root, fake_gguf)
    assert results == [target] * 6
    assert len(converter.calls) == 1
    assert converter.calls[0][1] != target  # converted into a temp dir, then renamed
    manifest = json.loads((target / draft_mod.MANIFEST).read_text())
    assert manifest["sha256"] == hashlib.sha256(fake_gguf.read_bytes()).hexdigest()
    assert manifest["source"] == str(fake_gguf)
    assert manifest["transformers"] == transformers.__version__
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []
    assert converted_gguf_dir(fake_gguf, root) == target
    assert len(converter.calls) == 1


def test_stale_temp_dir_and_partial_target_do_not_break_conversion(
    fake_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    converter = FakeConverter()
    monkeypatch.setattr(draft_mod, "_convert_gguf", converter)
    root = tmp_path / "cache"
    target = _target(root, fake_gguf)
    stale = target.parent / f".{target.name}.tmp-crashed"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    target.mkdir()  # a target without a manifest: not a finished conversion
    (target / "junk").write_text("x")
    assert converted_gguf_dir(fake_gguf, root) == target
    assert len(converter.calls) == 1
    assert not stale.exists()
    assert not (target / "junk").exists()
    assert (target / draft_mod.MANIFEST).is_file()


def test_failed_conversion_leaves_nothing_and_can_be_retried(
    fake_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    monkeypatch.setattr(draft_mod, "_convert_gguf", FakeConverter(fail=True))
    with pytest.raises(DraftModelError, match="converter exploded"):
        converted_gguf_dir(fake_gguf, root)
    target = _target(root, fake_gguf)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []
    good = FakeConverter()
    monkeypatch.setattr(draft_mod, "_convert_gguf", good)
    assert converted_gguf_dir(fake_gguf, root) == target
    assert len(good.calls) == 1


def test_gguf_file_loads_through_the_cache(fake_gguf: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    converter = FakeConverter(save_tiny=True)
    monkeypatch.setattr(draft_mod, "_convert_gguf", converter)
    config = DraftConfig(model=str(fake_gguf), cache_dir=str(tmp_path / "cache"), device="cpu")
    with caplog.at_level(logging.INFO, logger=draft_mod.__name__):
        draft = load_draft(config)
    sha16 = hashlib.sha256(fake_gguf.read_bytes()).hexdigest()[:16]
    assert draft.name == f"gguf:{fake_gguf.stem}@{sha16}"
    assert draft.max_context == 512
    assert any("later loads are fast" in r.getMessage() for r in caplog.records)
    clear_draft_cache()
    again = load_draft(config)
    assert again.name == draft.name
    assert len(converter.calls) == 1


def test_dir_with_gguf_file_uses_the_conversion(fake_gguf: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draft_mod, "_convert_gguf", FakeConverter(save_tiny=True))
    config = DraftConfig(model=str(fake_gguf.parent), gguf_file=fake_gguf.name,
                         cache_dir=str(tmp_path / "cache"), device="cpu")
    assert load_draft(config).name.startswith(f"gguf:{fake_gguf.stem}@")
    with pytest.raises(DraftModelError, match="no such file or directory"):
        load_draft(config.replace(gguf_file="other.gguf"))


def test_stop_token_ids_gather_every_eos() -> None:
    draft = tiny_draft("llama")
    draft.model.generation_config.eos_token_id = [3, 7]
    draft.model.config.eos_token_id = 9
    expected = {3, 7, 9} | ({draft.tokenizer.eos_token_id} if draft.tokenizer.eos_token_id is not None else set())
    assert draft.stop_token_ids == expected


def test_a_damaged_conversion_is_converted_again(fake_gguf: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted files are checked against the manifest (size on every load, hash once per
    process): truncated or bit-flipped weights are converted again, never loaded."""
    converter = FakeConverter()
    monkeypatch.setattr(draft_mod, "_convert_gguf", converter)
    monkeypatch.setattr(draft_mod, "_VERIFIED", set())
    root = tmp_path / "cache"
    target = converted_gguf_dir(fake_gguf, root)
    weights = target / "model.safetensors"
    manifest = json.loads((target / draft_mod.MANIFEST).read_text())
    assert manifest["files"]["model.safetensors"] == {"size": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert converted_gguf_dir(fake_gguf, root) == target and len(converter.calls) == 1  # intact: reused
    weights.write_bytes(b"wei")  # truncated
    assert converted_gguf_dir(fake_gguf, root) == target and len(converter.calls) == 2
    assert weights.read_bytes() == b"weights"
    weights.write_bytes(b"weighTs")  # same size, one byte changed
    monkeypatch.setattr(draft_mod, "_VERIFIED", set())  # as a new process: hashes are checked again
    assert converted_gguf_dir(fake_gguf, root) == target and len(converter.calls) == 3
    assert weights.read_bytes() == b"weights"
    del manifest["files"]  # a conversion that recorded no files cannot be checked: converted again
    (target / draft_mod.MANIFEST).write_text(json.dumps(manifest))
    assert converted_gguf_dir(fake_gguf, root) == target and len(converter.calls) == 4
