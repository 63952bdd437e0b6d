"""Version shims for transformers internals: attention dispatch, KV cache classes, forward keywords.

transformers changes these interfaces often (LLMLingua broke on the 5.x KV cache,
issue #210 there); everything that touches them lives here, nowhere else.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol, cast

import torch

__all__ = [
    "ATTN_IMPL",
    "AttentionCapture",
    "KVLayers",
    "capture_attention",
    "cut_kv",
    "forward",
    "forward_rows",
    "has_sliding_layer",
    "install_scoring_attention",
    "kv_nbytes",
    "new_kv_cache",
    "restore_kv",
    "snapshot_kv",
]

ATTN_IMPL = "specprefill_sdpa"

KVLayers = tuple[tuple[Any, Any, int], ...]
"""A KV snapshot: per layer (keys, values, tokens seen); the tensors are views, never copies."""


class AttentionCapture(Protocol):
    """What the scoring attention calls, at every attention layer, on the capture of the forward
    running in this thread or task (:class:`capture_attention`)."""

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float | None,
               sliding_window: int | None, softcap: float | None) -> None:
        """Take the layer's post-RoPE ``query`` (1, heads, q, d) and its full ``key`` states."""

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None, sliding_window: int | None,
               softcap: float | None) -> torch.Tensor | None:
        """The layer's attention output (1, q, heads, d), or None to let SDPA compute it."""


# The capture for the forward pass running in this thread / task, if any.
_CAPTURE: ContextVar[AttentionCapture | None] = ContextVar("specprefill_attention_capture", default=None)
_REGISTER_LOCK = threading.Lock()
_registered = False


class capture_attention:
    """Route the attention layers of forwards run inside this block to ``capture`` (:class:`AttentionCapture`)."""

    def __init__(self, capture: AttentionCapture) -> None:
        self._capture = capture
        self._token: Any = None

    def __enter__(self) -> AttentionCapture:
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
    layer (cache included), i.e. exactly what the model attends with.  A capture that holds KV
    outside the layer's cache computes the output itself (``attend``).
    """
    capture = _CAPTURE.get()
    if capture is not None:
        scaling, sliding_window, softcap = kwargs.get("scaling"), kwargs.get("sliding_window"), kwargs.get("softcap")
        capture.record(module, query, key, scaling, sliding_window, softcap)
        out = capture.attend(module, query, key, value, attention_mask, scaling, sliding_window, softcap)
        if out is not None:
            return out, None
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



def new_kv_cache(model: Any, capacity: int = 0) -> Any:
    """An empty dynamic KV cache laid out for ``model`` (sliding-window layers included).

    Full-attention layers allocate room for ``capacity`` tokens at once (more if their first
    update is longer; doubling when outgrown) and append in place instead of re-concatenating
    the whole cache at every step, so the query block and the lookahead tokens cost O(new
    tokens) of copying, not O(cache).
    """
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        if type(layer).__name__ == "DynamicLayer":
            cache.layers[i] = _growable_layer_class()(capacity)
    return cache


_GROWABLE: Any = None


def _growable_layer_class() -> Any:
    global _GROWABLE
    if _GROWABLE is None:
        from transformers.cache_utils import DynamicLayer

        class GrowableLayer(DynamicLayer):  # type: ignore[misc, valid-type]
            """A DynamicLayer that writes new tokens into spare capacity (views out, never in place
            over tokens already handed out, so snapshots of ``keys[:n]`` stay valid)."""

            def __init__(self, capacity: int) -> None:
                super().__init__()
                self._capacity, self._len = max(int(capacity), 0), 0
                self._buf_k: torch.Tensor | None = None
                self._buf_v: torch.Tensor | None = None

            def _ensure(self, like_k: torch.Tensor, like_v: torch.Tensor, needed: int) -> None:
                cap = 0 if self._buf_k is None else self._buf_k.shape[-2]
                if needed <= cap:
                    return
                size = max(needed, self._capacity, 2 * cap)
                k = like_k.new_empty((*like_k.shape[:-2], size, like_k.shape[-1]))
                v = like_v.new_empty((*like_v.shape[:-2], size, like_v.shape[-1]))
                if self._len and self._buf_k is not None and self._buf_v is not None:
                    k[..., : self._len, :] = self._buf_k[..., : self._len, :]
                    v[..., : self._len, :] = self._buf_v[..., : self._len, :]
                self._buf_k, self._buf_v = k, v

            def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                       **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                n = key_states.shape[-2]
                self._ensure(key_states, value_states, self._len + n)
                buf_k, buf_v = cast(torch.Tensor, self._buf_k), cast(torch.Tensor, self._buf_v)
                buf_k[..., self._len : self._len + n, :] = key_states
                buf_v[..., self._len : self._len + n, :] = value_states
                self._len += n
                self.keys, self.values = buf_k[..., : self._len, :], buf_v[..., : self._len, :]
                return self.keys, self.values

            def get_seq_length(self) -> int:
                return self._len

        _GROWABLE = GrowableLayer
    return _GROWABLE



def has_sliding_layer(cache: Any) -> bool:
    """Whether any layer of a dynamic cache keeps only a sliding window of tokens."""
    return any(getattr(layer, "is_sliding", False) for layer in cache.layers)


def snapshot_kv(cache: Any, length: int | None = None) -> tuple[KVLayers, bool]:
    """Per layer (keys, values, tokens seen) of a dynamic cache's first ``length`` tokens (default
    all), and whether any layer slides.

    The tensors are referenced, not copied: a cache never writes into them again (a dynamic
    layer grows by ``torch.cat``, a growable one only past what it has handed out, and a sliding
    layer re-slices a new tensor).  Sliding layers can only be taken whole.
    """
    layers, sliding = [], False
    for layer in cache.layers:
        seen = int(layer.get_seq_length())
        is_sliding = bool(getattr(layer, "is_sliding", False))
        sliding = sliding or is_sliding
        if length is None or length == seen:
            layers.append((layer.keys, layer.values, seen))
        elif is_sliding or length > seen:
            raise ValueError(f"cannot snapshot {length} tokens of a layer holding {seen} (sliding: {is_sliding})")
        else:
            layers.append((layer.keys[..., :length, :], layer.values[..., :length, :], length))
    return tuple(layers), sliding


def cut_kv(layers: KVLayers, length: int) -> KVLayers:
    """A snapshot's first ``length`` tokens, as views (a prefix cache entry may hold a longer
    context than the prefix that was looked up).  Sliding-window layers cannot be cut."""
    out = []
    for keys, values, seen in layers:
        if seen != length and (length > seen or keys.shape[-2] != seen):
            raise ValueError(f"cannot cut a layer holding {keys.shape[-2]} of {seen} tokens to {length}")
        out.append((keys, values, seen) if seen == length else (keys[..., :length, :], values[..., :length, :], length))
    return tuple(out)



def restore_kv(model: Any, layers: KVLayers, length: int, reserve: int = 0) -> Any:
    """A fresh cache holding the first ``length`` tokens of a snapshot (the snapshot is not touched).

    Full-attention layers copy the prefix once into their own buffer (with ``reserve`` spare
    tokens); sliding-window layers can only be restored at the snapshot's own length (they no
    longer hold older tokens) and share its tensors until their next update re-slices them.
    """
    cache = new_kv_cache(model, length + reserve)
    for layer, (keys, values, seen) in zip(cache.layers, layers):
        if not getattr(layer, "is_sliding", False):
            layer.update(keys[..., :length, :], values[..., :length, :])
            continue
        if seen != length:
            raise ValueError("a sliding-window layer can only resume at its full length")
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        layer.cumulative_length = length
    return cache


def kv_nbytes(layers: KVLayers) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v, _ in layers)


@torch.inference_mode()
def forward(model: Any, ids: list[int], cache: Any, *, position_ids: torch.Tensor | None = None,
            logits: bool = False) -> torch.Tensor | None:
    """Run ``ids`` (one sequence) through ``model`` on top of the KV ``cache``; the next-token logits
    of the last position with ``logits``, else None (no vocabulary projection at all).  Never
    records gradients (inference mode).

    The cache goes under the keyword this transformers version takes: ``cache`` from 5.24 (where
    ``past_key_values`` warns, and goes in 5.40), ``past_key_values`` before.
    """
    device = model.device
    out = model(input_ids=torch.tensor([ids], device=device), position_ids=position_ids, use_cache=True,
                logits_to_keep=1 if logits else _no_logits(device), **{_cache_keyword(model.__class__): cache})
    return out.logits[0, -1] if logits else None


@torch.inference_mode()
def forward_rows(model: Any, ids: list[list[int]], cache: Any, position_ids: torch.Tensor, *,
                 logits: bool = False) -> torch.Tensor | None:
    """:func:`forward` of several sequences of equal length as one batch (rows of ``cache``, whose
    batch size they fix on its first update), at explicit ``position_ids`` (rows, length); the
    next-token logits of each row's last position (rows, vocab) with ``logits``."""
    device = model.device
    out = model(input_ids=torch.tensor(ids, device=device), position_ids=position_ids, use_cache=True,
                logits_to_keep=1 if logits else _no_logits(device), **{_cache_keyword(model.__class__): cache})
    return out.logits[:, -1] if logits else None


@functools.cache
def _cache_keyword(model_class: Any) -> str:
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params or "past_key_values" not in params else "past_key_values"


@functools.cache
def _no_logits(device: torch.device) -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long, device=device)  # logits_to_keep: no position
