"""Version shims for transformers model *loading* (GGUF de-quantisation, dtype kwarg, progress bars).

Attention / KV-cache shims live in ``_compat.py``; this module holds only what
``draft.py`` needs to load and convert models, so each can change on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["dtype_kwargs", "strip_gguf_quantization", "transformers_bars_off", "transformers_progress_enabled",
           "transformers_version"]


def transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """``from_pretrained`` keyword for the weight dtype: ``dtype`` (>= 4.56), ``torch_dtype`` before."""
    if _version_tuple(transformers_version()) >= (4, 56):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def strip_gguf_quantization(model: Any) -> None:
    """Forget the GGUF quantizer so ``save_pretrained`` writes plain (de-quantised) safetensors.

    transformers 5.x attaches a ``GgufHfQuantizer`` after a GGUF load and refuses to
    save (or saves a ``quantization_config`` that a reload then misreads) unless it is removed.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    remove = getattr(quantizer, "remove_quantization_config", None)
    if remove is not None:
        remove(model)
        return
    # Older releases: do by hand what remove_quantization_config does.
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def transformers_progress_enabled() -> bool:
    """Whether transformers shows its own tqdm bars (e.g. while de-quantising GGUF tensors)."""
    try:
        from transformers.utils import logging as hf_logging

        return bool(hf_logging.is_progress_bar_enabled())
    except (ImportError, AttributeError):
        return False


@contextmanager
def transformers_bars_off() -> Iterator[None]:
    """No transformers progress bars (its "Loading weights" bar) within the block; restored after.

    transformers keeps one process-wide switch (which also covers huggingface_hub's bars), so
    a load in another thread at the same moment is quiet too.
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    was_on = bool(hf_logging.is_progress_bar_enabled())
    if was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
