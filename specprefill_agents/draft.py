"""Load the draft model and tokenizer (hub id, local directory, GGUF file, or "embedded").

GGUF drafts (the embedded SmolLM2 among them) are de-quantised by transformers, which
is slow (~20 s on a laptop CPU).  They are therefore converted *once* into plain
safetensors under a cache directory and reloaded from there afterwards (well under a second
for the weights).  The conversion is atomic and safe against concurrent processes: a file
lock, a temporary directory next to the target, a manifest written last, and a rename.

Network access happens only for a hub id (design invariant 7), and once for the embedded
draft's weights when neither its package nor a cached copy is there (``weights.py``: through
pip, from the index it is configured with; ``local_files_only`` forbids it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._compat_loading import (
    dtype_kwargs,
    strip_gguf_quantization,
    transformers_bars_off,
    transformers_progress_enabled,
    transformers_version,
)
from .config import DraftConfig
from .hub import hub_offline_reason
from .errors import ConfigError, DraftModelError, DraftNotInstalledError, SpecPrefillError
from .kernels import cpu_has_native_bf16
from .threads import apply_num_threads
from .weights import embedded_gguf

__all__ = ["DraftModel", "clear_draft_cache", "converted_gguf_dir", "draft_cache_root", "load_draft"]

logger = logging.getLogger(__name__)

CACHE_ENV = "SPECPREFILL_CACHE_DIR"
MANIFEST = "specprefill-convert.json"
_INSTALL_HINT = (
    "install it with `pip install gguf` (a dependency of specprefill-agents), "
    "or pass another draft (a hub id or a local model directory)"
)


@dataclass(eq=False)
class DraftModel:
    """A loaded draft: causal LM + fast tokenizer + an identity string for cache keys.

    ``name`` must change whenever the weights change (it feeds cache keys);
    ``max_context`` is the longest sequence the draft can attend over.
    """

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # a *fast* tokenizer (offset mapping is required)
    name: str
    max_context: int

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def stop_token_ids(self) -> set[int]:
        """Token ids that end generation: the generation config's, the model config's and the
        tokenizer's EOS (models list one or several)."""
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, name: str | None = None) -> DraftModel:
        """Wrap an already-loaded model and tokenizer (no copy, no download)."""
        max_ctx = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        return cls(model=model.eval(), tokenizer=tokenizer, name=name or model.config.name_or_path or "draft",
                   max_context=max_ctx)


@dataclass(frozen=True)
class _Source:
    """Where ``from_pretrained`` should read: a local directory or a hub id."""

    location: str
    name: str
    hub: bool = False


# --------------------------------------------------------------------------- public API

_LOADED: dict[str, DraftModel] = {}
_KEY_LOCKS: dict[str, threading.Lock] = {}
_LOADED_LOCK = threading.Lock()


def load_draft(config: DraftConfig | str | None = None) -> DraftModel:
    """Load (once per process) the draft described by ``config``.

    ``None`` is the embedded SmolLM2-135M-Instruct; a string is ``DraftConfig(model=...)``.
    Raises :class:`DraftNotInstalledError` / :class:`DraftModelError` with what to do.
    """
    if config is None:
        config = DraftConfig()
    elif isinstance(config, (str, os.PathLike)):
        config = DraftConfig(model=os.fspath(config))
    elif not isinstance(config, DraftConfig):
        raise ConfigError(f"load_draft takes a DraftConfig, a str or None, got {type(config).__name__}")
    key = config.to_json()
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        with _LOADED_LOCK:
            if key in _LOADED:
                return _LOADED[key]
        draft = _load_uncached(config)
        with _LOADED_LOCK:
            _LOADED[key] = draft
    return draft


def clear_draft_cache() -> None:
    """Forget every draft loaded by :func:`load_draft` in this process (for tests)."""
    with _LOADED_LOCK:
        _LOADED.clear()
        _KEY_LOCKS.clear()


def draft_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Root of converted drafts: ``cache_dir``, else ``$SPECPREFILL_CACHE_DIR``, else the user cache dir."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("specprefill-agents"))


def _load_uncached(config: DraftConfig) -> DraftModel:
    device = _pick_device(config)
    if device.type == "cpu":
        apply_num_threads(config.num_threads)
    dtype = _pick_dtype(config, device)
    source = _resolve(config)
    start = time.perf_counter()
    draft = _load_source(source, config, device, dtype)
    elapsed = time.perf_counter() - start
    logger.info("loaded draft %s on %s (%s) in %.1f s", draft.name, device, dtype, elapsed)
    return draft


# --------------------------------------------------------------------------- resolution


def _resolve(config: DraftConfig) -> _Source:
    spec = config.model.strip()
    if spec == "embedded":
        root = draft_cache_root(config.cache_dir)  # weights fetched into the default cache are reused too
        gguf = embedded_gguf(root, download=not config.local_files_only, also=[draft_cache_root()])
        return _gguf_source(gguf, config, f"embedded:{gguf.stem}")
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise DraftModelError(
                f"{path} is a file but not a .gguf file; pass a .gguf file, a model directory or a hub id"
            )
        return _gguf_source(path, config, f"gguf:{path.stem}")
    if path.is_dir():
        if config.gguf_file:
            gguf = path / config.gguf_file
            if not gguf.is_file():
                raise DraftModelError(f"no such file or directory: {gguf} (gguf_file inside {path})")
            return _gguf_source(gguf, config, f"gguf:{gguf.stem}")
        resolved = path.resolve()
        return _Source(str(resolved), f"dir:{resolved}@{_dir_stamp(resolved)}")
    if _looks_like_path(spec):
        raise DraftModelError(
            f"no such file or directory: {path}. Pass an existing model directory or .gguf file, "
            "a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or 'embedded'"
        )
    if config.gguf_file:
        gguf = _hub_gguf(spec, config.gguf_file, config)
        return _gguf_source(gguf, config, f"gguf:{Path(config.gguf_file).stem}")
    return _Source(spec, f"hub:{spec}@{config.revision or 'main'}", hub=True)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _looks_like_path(spec: str) -> bool:
    if spec.startswith(("/", ".", "~", "\\")) or re.match(r"[A-Za-z]:[\\/]", spec):
        return True
    return spec.lower().endswith((".gguf", ".safetensors", ".bin")) or not _HUB_ID.fullmatch(spec)


def _dir_stamp(path: Path) -> int:
    """Newest mtime (ns) of the files that define the weights: changes when they are re-saved."""
    patterns = ("config.json", "*.safetensors", "*.bin", "*.gguf", "tokenizer.json")
    stamps = [p.stat().st_mtime_ns for pattern in patterns for p in path.glob(pattern) if p.is_file()]
    return max(stamps, default=0)


def _hub_gguf(repo_id: str, filename: str, config: DraftConfig) -> Path:
    from huggingface_hub import hf_hub_download

    offline = None if config.local_files_only else hub_offline_reason()
    try:
        return Path(hf_hub_download(repo_id, filename, revision=config.revision,
                                    local_files_only=config.local_files_only or offline is not None))
    except Exception as exc:
        where = f"it is not in the local Hugging Face cache and the hub is offline ({offline})" if offline else exc
        raise DraftModelError(
            f"could not fetch {filename!r} from hub repo {repo_id!r}: {where}. Pass a local .gguf file, "
            "a local model directory, or 'embedded' (no network is used for those)"
        ) from exc


def _gguf_source(gguf: Path, config: DraftConfig, prefix: str) -> _Source:
    sha = _file_sha256(gguf)
    target = converted_gguf_dir(gguf, draft_cache_root(config.cache_dir), sha=sha)
    return _Source(str(target), f"{prefix}@{sha[:16]}")


# --------------------------------------------------------------------------- GGUF conversion

_SHA_MEMO: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key in _SHA_MEMO:
            return _SHA_MEMO[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    with _SHA_LOCK:
        _SHA_MEMO[key] = digest.hexdigest()
    return digest.hexdigest()


def converted_gguf_dir(gguf: Path, cache_root: Path, sha: str | None = None) -> Path:
    """Directory of safetensors converted from ``gguf`` (converting it now if needed; once)."""
    from filelock import FileLock, Timeout

    sha = sha or _file_sha256(gguf)
    target = cache_root / "drafts" / f"{gguf.stem}-{sha[:16]}"
    if _is_complete(target, sha):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. $SPECPREFILL_CACHE_DIR names a file
        raise DraftModelError(f"cannot create the draft cache under {cache_root}: {exc}; point cache_dir or "
                              f"${CACHE_ENV} at a writable directory") from exc
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process to finish converting %s into %s", gguf.name, target)
        lock.acquire()
    try:
        if not _is_complete(target, sha):
            _convert_into(gguf, target, sha)
    finally:
        lock.release()
    return target


def _is_complete(target: Path, sha: str) -> bool:
    """Whether ``target`` holds a finished conversion of the GGUF with hash ``sha``, intact: every
    file the manifest lists has its recorded size (checked on every load) and hash (checked on
    the first load in this process).  False sends the caller to convert again, under the lock."""
    try:
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("sha256") != sha or not isinstance(manifest.get("files"), dict):
        return False
    files: dict[str, Any] = manifest["files"]
    try:
        if any((target / name).stat().st_size != entry["size"] for name, entry in files.items()):
            raise ValueError("size")
        key = (str(target), sha)
        if key not in _VERIFIED:
            if any(_file_sha256(target / name) != entry["sha256"] for name, entry in files.items()):
                raise ValueError("hash")
            _VERIFIED.add(key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("the converted draft in %s is damaged (%s); converting it again", target, exc)
        return False
    return True


def _file_records(directory: Path) -> dict[str, dict[str, Any]]:
    return {p.name: {"size": p.stat().st_size, "sha256": _file_sha256(p)}
            for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}


_VERIFIED: set[tuple[str, str]] = set()  # converted dirs whose file hashes this process checked


def _convert_into(gguf: Path, target: Path, sha: str) -> None:
    """Convert under the lock: temp dir next to the target, manifest last, then rename into place."""
    prefix = f".{target.name}.tmp-"
    for stale in target.parent.iterdir():  # left by a crashed conversion (we hold the lock)
        if stale.name.startswith(prefix):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        logger.info("converting %s to safetensors in %s once; later loads are fast", gguf, target)
        start = time.perf_counter()
        _convert_gguf(gguf, tmp)
        manifest = {"source": str(gguf), "sha256": sha, "transformers": transformers_version(),
                    "torch": torch.__version__, "seconds": round(time.perf_counter() - start, 2),
                    "files": _file_records(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if target.exists():  # incomplete or from another source: replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
    except SpecPrefillError:
        raise
    except ImportError as exc:
        raise DraftNotInstalledError(
            f"converting {gguf.name} needs the gguf package ({exc}); {_INSTALL_HINT}"
        ) from exc
    except Exception as exc:
        raise DraftModelError(f"could not convert {gguf} to safetensors: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantise ``gguf`` with transformers and save model + tokenizer into ``out_dir``."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    # transformers shows its own bar while de-quantising; add ours only when that one is off.
    with tqdm(total=4, desc=f"Converting {gguf.name}", unit="step",
              disable=transformers_progress_enabled()) as bar:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
        bar.update()
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kw, **dtype_kwargs(torch.float32))
        strip_gguf_quantization(model)
        bar.update()
        model.save_pretrained(str(out_dir))
        bar.update()
        tokenizer.save_pretrained(str(out_dir))
        bar.update()


# --------------------------------------------------------------------------- loading


def _pick_device(config: DraftConfig) -> torch.device:
    if config.device:
        try:
            device = torch.device(config.device)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"device {config.device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', 'mps')"
            ) from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DraftModelError(
                f"device {config.device!r} asked for but CUDA is not available; pass device='cpu'"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _pick_dtype(config: DraftConfig, device: torch.device) -> torch.dtype:
    if config.dtype:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[config.dtype]
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return torch.float32


def _load_source(
    source: _Source, config: DraftConfig, device: torch.device, dtype: torch.dtype
) -> DraftModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = hub_offline_reason() if source.hub and not config.local_files_only else None
    kw: dict[str, Any] = {"trust_remote_code": config.trust_remote_code,
                          "local_files_only": config.local_files_only or not source.hub or offline is not None}
    if source.hub:
        kw["revision"] = config.revision
    quiet = nullcontext() if source.hub else transformers_bars_off()  # a hub download keeps its bar
    try:
        with quiet:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **kw)
            _require_fast(tokenizer, source)
            model = AutoModelForCausalLM.from_pretrained(source.location, attn_implementation="sdpa",
                                                         **dtype_kwargs(dtype), **kw)
        model = model.to(device).eval()  # type: ignore[arg-type]
    except SpecPrefillError:
        raise
    except Exception as exc:
        raise DraftModelError(_load_failure(source, exc, offline)) from exc
    return DraftModel(model=model, tokenizer=tokenizer, name=source.name,
                      max_context=_max_context(model, tokenizer))


def _require_fast(tokenizer: Any, source: _Source) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise DraftModelError(
            f"the tokenizer of {source.location} is a slow tokenizer ({type(tokenizer).__name__}); "
            "offset mapping needs a fast tokenizer: save a tokenizer.json with the model, "
            "or pick another draft"
        )


def _load_failure(source: _Source, exc: Exception, offline: str | None = None) -> str:
    cause = str(exc).strip().rstrip(".")
    if source.hub and offline:
        return (
            f"could not load draft {source.location!r}: it is not in the local Hugging Face cache and the hub "
            f"is offline ({offline}). Download it where there is a network, or pass a local model directory, "
            "a .gguf file, or 'embedded'"
        )
    if source.hub:
        return (
            f"could not load draft {source.location!r} from the Hugging Face hub: {cause}. "
            "Pass a reachable hub id (network needed unless it is in the local HF cache), "
            "a local model directory, a .gguf file, or 'embedded'"
        )
    return (
        f"could not load a draft from {source.location}: {cause}. The directory needs config.json, "
        "the weights and a fast tokenizer (save both with save_pretrained), or set gguf_file= "
        "for a .gguf inside it"
    )


def _max_context(model: Any, tokenizer: Any) -> int:
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    max_pos = getattr(config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and max_pos > 0:
        return max_pos
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 10**6:
        return tok_max
    return 2048
