"""Version shims for transformers internals (attention dispatch, KV caches).

transformers changes these interfaces often (LLMLingua broke on the 5.x KV cache,
issue #210); everything that touches them lives here, nowhere else.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any, cast
from collections.abc import Callable, Iterable

import torch

__all__ = [
    "ATTN_IMPL",
    "active_capture",
    "cpu_has_native_bf16",
    "has_sliding_layer",
    "capture_attention",
    "install_scoring_attention",
    "new_kv_cache",
    "snapshot_kv",
    "restore_kv",
    "stack_kv",
    "cut_kv",
    "rope_frequencies",
    "rope_shift",
    "fused_attention_available",
    "attention_with_lse",
    "install_cpu_gemv",
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
    layer (cache included), i.e. exactly what the model attends with.  A capture with an
    ``attend`` method (one that holds KV outside the layer's cache) computes the output itself.
    """
    capture = _CAPTURE.get()
    if capture is not None:
        capture.record(module, query, key, kwargs.get("scaling"), kwargs.get("sliding_window"),
                       kwargs.get("softcap"))
        attend = getattr(capture, "attend", None)
        if attend is not None:
            return attend(module, query, key, value, attention_mask, kwargs.get("scaling"),
                          kwargs.get("sliding_window"), kwargs.get("softcap")), None
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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (Intel AMX tiles), so that a bf16
    draft runs faster than fp32 instead of slower (torch's probe is private: absent -> False)."""
    probe = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if callable(probe) else False
    except Exception:  # a failing probe only means "use fp32"
        return False


def install_cpu_gemv(model: Any) -> int:
    """On a bf16 model on the CPU, send one-row inputs of its ``nn.Linear`` layers (decode steps)
    through ``torch.mv``; returns how many layers were switched (idempotent: already switched
    layers are left alone).

    oneDNN's bf16 GEMM costs about as much for one row as for sixteen on CPUs (2.2x slower than
    the GEMV kernel for SmolLM2's MLP, 2.4x for its vocab projection: torch 2.13, Xeon with
    AMX); the GEMV gives the same values (fp32 accumulation).  Other dtypes and devices keep
    ``F.linear`` (fp32 GEMM is already at GEMV speed; fp16 GEMV is slower).
    """
    params = next(iter(model.parameters()), None)
    if params is None or params.device.type != "cpu" or params.dtype != torch.bfloat16:
        return 0
    switched = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and "forward" not in vars(module):
            module.forward = _gemv_forward.__get__(module)  # type: ignore[method-assign]
            switched += 1
    return switched


def _gemv_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.numel() != self.in_features or x.dtype != torch.bfloat16 or self.weight.dtype != torch.bfloat16 \
            or x.device.type != "cpu":
        return torch.nn.functional.linear(x, self.weight, self.bias)
    flat = x.reshape(-1)
    out = torch.mv(self.weight, flat) if self.bias is None else torch.addmv(self.bias, self.weight, flat)
    return out.reshape(*x.shape[:-1], self.out_features)


def fused_attention_available(query: torch.Tensor) -> bool:
    """Whether :func:`attention_with_lse` runs for tensors like ``query``: torch's CPU flash
    kernel (a private op, present since torch 2.2) on a CPU tensor of a float dtype it takes."""
    return (query.device.type == "cpu" and query.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and _FLASH_CPU is not None)


def attention_with_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                       scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention of ``query`` (1, h, r, d) over ``key`` / ``value`` (1, h, n, d), all of the
    same dtype, under an additive ``mask`` of that dtype broadcastable to (1, h, r, n) (None: every
    key visible): the output (1, h, r, d) and each row's fp32 log-sum-exp of its logits (1, h, r).
    A row whose keys are all masked gets output 0 and log-sum-exp 0 (not -inf): callers mark it.
    Only where :func:`fused_attention_available` says so."""
    return cast(tuple[torch.Tensor, torch.Tensor], _FLASH_CPU(query, key, value, attn_mask=mask, scale=scale))


# looked up once: both functions above run per layer and per decode step
_FLASH_CPU: Any = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


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

            def put_row(self, row: int, batch: int, keys: torch.Tensor, values: torch.Tensor) -> None:
                """Copy a one-row ``keys`` / ``values`` into batch row ``row`` of ``batch`` (the first
                call sizes the buffer; every row must have the same length)."""
                n = keys.shape[-2]
                if self._buf_k is None or self._buf_v is None:
                    self.lazy_initialization(keys, values)
                    size = max(n, self._capacity)
                    self._buf_k = keys.new_empty((batch, *keys.shape[1:-2], size, keys.shape[-1]))
                    self._buf_v = values.new_empty((batch, *values.shape[1:-2], size, values.shape[-1]))
                    self._len = n
                    self.keys, self.values = self._buf_k[..., :n, :], self._buf_v[..., :n, :]
                self._buf_k[row, ..., :n, :] = keys[0]
                self._buf_v[row, ..., :n, :] = values[0]

        _GROWABLE = GrowableLayer
    return _GROWABLE


def has_sliding_layer(cache: Any) -> bool:
    """Whether any layer of a dynamic cache keeps only a sliding window of tokens."""
    return any(getattr(layer, "is_sliding", False) for layer in cache.layers)


def snapshot_kv(cache: Any, length: int | None = None) -> tuple[tuple[tuple[Any, Any, int], ...], bool]:
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


def cut_kv(layers: tuple[tuple[Any, Any, int], ...], length: int) -> tuple[tuple[Any, Any, int], ...]:
    """A snapshot's first ``length`` tokens, as views (a prefix cache entry may hold a longer
    context than the prefix that was looked up).  Sliding-window layers cannot be cut."""
    out = []
    for keys, values, seen in layers:
        if seen != length and (length > seen or keys.shape[-2] != seen):
            raise ValueError(f"cannot cut a layer holding {keys.shape[-2]} of {seen} tokens to {length}")
        out.append((keys, values, seen) if seen == length else (keys[..., :length, :], values[..., :length, :], length))
    return tuple(out)


def restore_kv(model: Any, layers: tuple[tuple[Any, Any, int], ...], length: int, reserve: int = 0) -> Any:
    """A fresh cache holding the first ``length`` tokens of a snapshot (the snapshot is not touched).

    Full-attention layers copy the prefix once into their own buffer (with ``reserve`` spare
    tokens); sliding-window layers can only be restored at the snapshot's own length (they no
    longer hold older tokens) and share its tensors until their next update re-slices them.
    """
    return stack_kv(model, [layers], 1, length, reserve)


def stack_kv(model: Any, snapshots: Iterable[tuple[tuple[Any, Any, int], ...]], batch: int, length: int,
             reserve: int = 0) -> Any:
    """A fresh cache whose ``batch`` rows are ``snapshots`` cut to their first ``length`` tokens
    (as taken by :func:`snapshot_kv`), with ``reserve`` spare tokens per full-attention layer.

    The snapshots are never touched.  Full-attention layers copy them, one at a time: a
    snapshot made on the fly (a window just forwarded) can be freed before the next one is
    made.  Sliding-window layers resume only at a snapshot's full length; a single row shares
    its tensors until the next update re-slices them.
    """
    cache = new_kv_cache(model, length + reserve)
    sliding: dict[int, list[tuple[Any, Any]]] = {}
    for row, snapshot in enumerate(snapshots):
        for i, (layer, (keys, values, seen)) in enumerate(zip(cache.layers, snapshot)):
            if getattr(layer, "is_sliding", False):
                if seen != length:
                    raise ValueError("a sliding-window layer can only resume at its full length")
                sliding.setdefault(i, []).append((keys, values))
            else:
                layer.put_row(row, batch, keys[..., :length, :], values[..., :length, :])
    for i, parts in sliding.items():
        keys, values = parts[0] if len(parts) == 1 else (torch.cat([k for k, _ in parts]),
                                                         torch.cat([v for _, v in parts]))
        layer = cache.layers[i]
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        layer.cumulative_length = length
    return cache


def kv_nbytes(layers: tuple[tuple[Any, Any, int], ...]) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v, _ in layers)


def rope_shift(query: torch.Tensor, delta: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Post-RoPE ``query`` (..., rows, head_dim) as if each row sat ``delta`` positions later.

    RoPE rotates each (i, i + d/2) pair by position x frequency, so moving a query is one more
    rotation (any attention scaling the model folds into cos/sin is already in ``query``).
    Angles are computed in float64 on the CPU (``delta * freq`` reaches thousands of radians;
    some devices have no float64).
    """
    angles = delta * inv_freq.detach().to(device="cpu", dtype=torch.float64)
    cos = torch.cat((angles.cos(), angles.cos())).to(device=query.device, dtype=query.dtype)
    sin = torch.cat((angles.sin(), angles.sin())).to(device=query.device, dtype=query.dtype)
    half = query.shape[-1] // 2
    rotated = torch.cat((-query[..., half:], query[..., :half]), dim=-1)
    return query * cos + rotated * sin


class _QueryProbe:
    """Keeps each layer's (post-RoPE) query of the last position of a forward."""

    def __init__(self) -> None:
        self.queries: dict[int, torch.Tensor] = {}

    def record(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, *args: Any) -> None:
        self.queries[int(getattr(module, "layer_idx", 0))] = query[0, :, -1, :].float()


def _probe_queries(model: Any, token_id: int, position: int) -> dict[int, torch.Tensor]:
    probe = _QueryProbe()
    device = next(model.parameters()).device
    with torch.inference_mode(), capture_attention(probe):
        model(input_ids=torch.tensor([[token_id]], device=device),
              position_ids=torch.tensor([[position]], device=device), use_cache=False, logits_to_keep=1)
    return probe.queries


def rope_frequencies(model: Any, token_id: int, offsets: tuple[int, ...] = (1, 37, 1001),
                     tolerance: float = 0.05) -> dict[int, torch.Tensor] | None:
    """Per attention layer, the RoPE frequencies that :func:`rope_shift` must use to move its
    queries, or None when some layer's queries do not move that way (no RoPE on a layer, an
    interleaved or partial rotary, a layer type whose frequencies the model does not expose).

    Checked, not assumed: one token at position 0 and at each offset (its hidden states do not
    depend on where it sits, only the rotation does), against every ``inv_freq`` buffer of the
    model (Gemma 3 has one per layer type).  The model must use the scoring attention.
    """
    candidates: list[torch.Tensor] = []
    for name, buf in model.named_buffers():
        if name.endswith("inv_freq") and not any(torch.equal(buf.float(), c) for c in candidates):
            candidates.append(buf.detach().float())
    if not candidates:
        return None
    base = _probe_queries(model, token_id, 0)
    moved = {d: _probe_queries(model, token_id, d) for d in offsets}
    found: dict[int, torch.Tensor] = {}
    for layer, q0 in base.items():
        for freq in candidates:
            if 2 * freq.numel() == q0.shape[-1] and all(
                    _relative_error(rope_shift(q0, d, freq), moved[d][layer]) < tolerance for d in offsets):
                found[layer] = freq
                break
        else:
            return None
    return found or None


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))
