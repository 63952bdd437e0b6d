"""Version shims for transformers internals (attention dispatch, KV caches).

transformers changes these interfaces often (LLMLingua broke on the 5.x KV cache,
issue #210); everything that touches them lives here, nowhere else.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any
from collections.abc import Callable

import torch

__all__ = [
    "ATTN_IMPL",
    "active_capture",
    "capture_attention",
    "install_scoring_attention",
    "new_kv_cache",
    "snapshot_kv",
    "restore_kv",
]

ATTN_IMPL = "specprefill_sdpa"

# The capture object for the forward pass running in this thread / task, if any.
_CAPTURE: ContextVar[Any] = ContextVar("specprefill_attention_capture", default=None)
_REGISTER_LOCK = threading.Lock()
_registered = False


def active_capture() -> Any:
    return _CAPTURE.get()


class capture_attention:
    """Route the attention layers of forwards run inside this block to ``capture.record``."""

    def __init__(self, capture: Any) -> None:
        self._capture = capture
        self._token: Any = None

    def __enter__(self) -> Any:
        self._token = _CAPTURE.set(self._capture)
        return self._capture

    def __exit__(self, *exc: object) -> None:
        _CAPTURE.reset(self._token)


def _sdpa_forward() -> Callable[..., Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


def _scoring_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                       value: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any) -> Any:
    """SDPA attention that also hands (query, key) to the active capture, if any.

    The capture sees post-RoPE / post-norm queries and the full key states of the
    layer (cache included), i.e. exactly what the model attends with.
    """
    capture = _CAPTURE.get()
    if capture is not None:
        capture.record(module, query, key, kwargs.get("scaling"), kwargs.get("sliding_window"),
                       kwargs.get("softcap"))
    return _sdpa_forward()(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    global _registered
    with _REGISTER_LOCK:
        if _registered:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATTN_IMPL, _scoring_attention)
        AttentionMaskInterface.register(ATTN_IMPL, sdpa_mask)
        _registered = True


def install_scoring_attention(model: Any) -> None:
    """Switch ``model`` to the capturing SDPA attention (idempotent).

    Outside a :class:`capture_attention` block it behaves exactly like ``"sdpa"``.
    """
    _register()
    if getattr(model.config, "_attn_implementation", None) == ATTN_IMPL:
        return
    model.set_attn_implementation(ATTN_IMPL)
    if getattr(model.config, "_attn_implementation", None) != ATTN_IMPL:
        from .errors import DraftModelError

        raise DraftModelError(
            f"{type(model).__name__} does not support pluggable attention (transformers AttentionInterface); "
            "use a Llama-, Qwen2-, Gemma3- or similar draft"
        )


def new_kv_cache(model: Any) -> Any:
    """An empty dynamic KV cache laid out for ``model`` (sliding-window layers included)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def snapshot_kv(cache: Any) -> tuple[tuple[tuple[Any, Any, int], ...], bool]:
    """Per layer (keys, values, tokens seen) of a dynamic cache, and whether any layer slides.

    The tensors are referenced, not copied: a dynamic cache never writes into them again
    (it grows by ``torch.cat``, and a sliding layer re-slices a new tensor).
    """
    layers, sliding = [], False
    for layer in cache.layers:
        sliding = sliding or bool(getattr(layer, "is_sliding", False))
        layers.append((layer.keys, layer.values, int(layer.get_seq_length())))
    return tuple(layers), sliding


def restore_kv(model: Any, layers: tuple[tuple[Any, Any, int], ...], length: int) -> Any:
    """A fresh dynamic cache holding the first ``length`` tokens of a snapshot.

    Full-attention layers are sliced (a view); sliding-window layers can only be restored
    at the snapshot's own length (they no longer hold older tokens).
    """
    cache = new_kv_cache(model)
    for layer, (keys, values, seen) in zip(cache.layers, layers):
        if getattr(layer, "is_sliding", False):
            if length != seen:
                raise ValueError("a sliding-window layer can only resume at its full length")
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            layer.cumulative_length = seen
        else:
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys[:, :, :length, :], values[:, :, :length, :]
    return cache


def kv_nbytes(layers: tuple[tuple[Any, Any, int], ...]) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v, _ in layers)
