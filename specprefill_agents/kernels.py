"""CPU fast paths and the attention math the scorer needs beyond the model's own forward.

* :func:`attention_logits`: fp32 logits of query rows onto keys (GQA without repeating keys,
  softcap, sliding-window mask), shared by the score fold and the segment attention;
* :func:`attend_with_segments`: attention of a query block over KV segments that live outside
  the layer's cache (parallel context windows), on the CPU through torch's fused flash kernel
  per segment merged by log-sum-exp (split-K), elsewhere one fp32 softmax;
* :func:`install_cpu_gemv`: a bf16 model's one-row linears (decode steps) as GEMV on an AMX CPU;
* :func:`cpu_has_native_bf16`: whether the CPU multiplies bf16 natively (Intel AMX tiles or
  AVX512-BF16 dot products), which makes bf16 the faster dtype; :func:`cpu_has_amx`: the tiles.

Which fast path pays depends on the CPU: with AMX the fused kernel and the GEMV beat the
plain ones in bf16; with AVX512-BF16 alone both are slower, so bf16 there keeps the plain ones.

Measured in ``benchmarks/bench_cpu_kernels.py``.  Nothing here knows about transformers.
"""

from __future__ import annotations

from typing import Any, cast

import torch

__all__ = ["ROW_CHUNK", "attention_logits", "attend_with_segments", "attention_with_lse", "cpu_has_amx",
           "cpu_has_native_bf16", "fused_attention_available", "fused_attention_pays", "install_cpu_gemv"]

ROW_CHUNK = 64  # query rows scored / attended at once: bounds the (heads x rows x keys) temporaries


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively: Intel AMX tiles or AVX512-BF16 dot products
    (recent Xeons, AMD Zen 4 and later), so that a bf16 model runs faster than fp32 instead of
    slower (oneDNN otherwise emulates bf16 in fp32)."""
    return cpu_has_amx() or _cpu_supports("_is_avx512_bf16_supported")


def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (Sapphire Rapids and later Xeons)."""
    return _cpu_supports("_is_amx_tile_supported")


def _cpu_supports(probe_name: str) -> bool:
    """torch's private CPU feature probe ``torch.cpu.<probe_name>``: absent or failing -> False."""
    probe = getattr(getattr(torch, "cpu", None), probe_name, None)
    try:
        return bool(probe()) if callable(probe) else False
    except Exception:  # a failing probe only means "use fp32"
        return False


def install_cpu_gemv(model: Any, *, force: bool = False) -> int:
    """On a bf16 model on an AMX CPU, send one-row inputs of its ``nn.Linear`` layers (decode
    steps) through ``torch.mv``; returns how many layers were switched (idempotent: already
    switched layers are left alone).  ``force``: on any CPU (to measure it).

    With AMX, oneDNN's bf16 GEMM costs about as much for one row as for sixteen (2.2x slower
    than the GEMV kernel for SmolLM2's MLP, 2.4x for its vocab projection: torch 2.13, Xeon);
    the GEMV gives the same values (fp32 accumulation).  With AVX512-BF16 alone the GEMV is the
    slower one (a warm agent step's lookahead 0.27 s against 0.20 s: AMD EPYC,
    ``benchmarks/bench_cpu_kernels.py``), and so it is for other dtypes (fp32 GEMM is already at
    GEMV speed; fp16 GEMV is slower): they keep ``F.linear``.
    """
    params = next(iter(model.parameters()), None)
    if params is None or params.device.type != "cpu" or params.dtype != torch.bfloat16 \
            or not (force or cpu_has_amx()):
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


def fused_attention_pays(query: torch.Tensor) -> bool:
    """Whether :func:`attend_with_segments` should take the fused kernel for tensors like
    ``query``: where it runs, in fp32 (1.04-1.06x faster on a warm agent step, Xeon and EPYC)
    and in bf16 with AMX (1.18x); not in bf16 without AMX, where it is slower (a warm step's
    query block 0.183 s against 0.129 s, AMD EPYC with AVX512-BF16)."""
    return fused_attention_available(query) and (query.dtype != torch.bfloat16 or cpu_has_amx())


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



def attention_logits(rows: torch.Tensor, keys: torch.Tensor, scale: float, softcap: float | None,
                     sliding_window: int | None, row_pos: torch.Tensor, key_start: int) -> torch.Tensor:
    """fp32 logits (heads, r, n) of query ``rows`` (heads, r, d) onto ``keys`` (kv_heads, n, d),
    multiplied in the inputs' dtype, GQA without repeating keys; softcapped, and for a sliding
    layer -inf where a key (first at position ``key_start``) is ``sliding_window`` or more
    positions behind its row (at ``row_pos``)."""
    heads, r, dim = rows.shape
    kv_heads = keys.shape[0]
    grouped = rows.reshape(kv_heads, (heads // kv_heads) * r, dim)
    logits = torch.matmul(grouped, keys.transpose(-1, -2)).float().mul_(scale).reshape(heads, r, keys.shape[1])
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if sliding_window:
        key_pos = torch.arange(key_start, key_start + keys.shape[1], device=rows.device)
        hidden = key_pos[None, :] <= (row_pos[:, None] - sliding_window)
        logits = logits.masked_fill(hidden[None], float("-inf"))
    return logits


def attend_with_segments(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, segments: list[tuple[torch.Tensor, torch.Tensor, int]],
                         positions: torch.Tensor, scaling: float | None, sliding_window: int | None,
                         softcap: float | None, fused: bool | None = None) -> torch.Tensor:
    """Attention of ``query`` (1, heads, q, d) over key/value ``segments`` that live outside the
    layer's cache, as (keys, values, position of their first key) with keys (1, kv_heads, n, d),
    plus the layer's own ``key`` / ``value`` under ``attention_mask`` (the model's causal mask
    for them: bool, additive, or None for plain causal).  ``positions`` (q,) are the rows' RoPE
    positions; a sliding layer hides segment keys ``sliding_window`` or more positions back.
    Returns (1, q, heads, d) like the SDPA integration.

    ``fused`` (default: where :func:`fused_attention_pays`; never with a softcap): each
    segment runs through torch's fused flash kernel, which also gives its rows' log-sum-exp,
    and the per-segment outputs are merged with those (split-K / flash-decoding: the same
    softmax over all keys, no logits materialised).  Otherwise one fp32 softmax over every
    segment's logits, the products in the KV's dtype.
    """
    _, heads, q, dim = query.shape
    scale = scaling if scaling is not None else dim ** -0.5
    own = key.shape[-2]
    if attention_mask is None:  # causal: row i sees own keys up to its own position
        slots = torch.arange(own, device=query.device)
        allowed = slots[None, :] <= slots[own - q:, None]
    elif attention_mask.dtype == torch.bool:
        allowed = attention_mask[0, 0, :, -own:]
    else:
        allowed = attention_mask[0, 0, :, -own:] > torch.finfo(attention_mask.dtype).min / 2
    parts = [(k[0], v[0], start) for k, v, start in segments]
    if softcap is None and (fused_attention_pays(key) if fused is None else fused):
        return _attend_fused(query, key[0], value[0], allowed, parts, positions, scale, sliding_window)
    return _attend_softmax(query, key[0], value[0], allowed, parts, positions, scale, sliding_window, softcap)


def _attend_fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor,
                  parts: list[tuple[torch.Tensor, torch.Tensor, int]], positions: torch.Tensor, scale: float,
                  sliding_window: int | None) -> torch.Tensor:
    """:func:`attend_with_segments` with one fused kernel call per segment.  GQA without repeating
    keys: each KV head's query heads are stacked as rows of one head (no mask differs by head)."""
    _, heads, q, dim = query.shape
    kv_heads, dtype = key.shape[0], key.dtype
    group = heads // kv_heads
    rows = query.to(dtype).reshape(1, kv_heads, group * q, dim)
    row_pos = positions.repeat(group)
    outs, lses = [], []
    for keys, values, start in [*parts, (key, value, -1)]:
        mask, seen = None, None
        if start < 0:  # the block's own cache: the model's mask for it
            mask = _additive(allowed.repeat(group, 1), dtype)
        elif sliding_window:
            key_pos = torch.arange(start, start + keys.shape[-2], device=keys.device)
            visible = key_pos[None, :] > (row_pos[:, None] - sliding_window)
            seen = visible.any(-1)
            if not bool(seen.any()):
                continue
            mask = None if bool(visible.all()) else _additive(visible, dtype)
        out, lse = attention_with_lse(rows, keys[None], values[None], mask, scale)
        outs.append(out[0].float())
        lses.append(lse[0] if seen is None else lse[0].masked_fill(~seen, float("-inf")))
    weights = torch.softmax(torch.stack(lses), dim=0)  # (segments, kv_heads, rows): each segment's share
    merged = (torch.stack(outs) * weights[..., None]).sum(0)  # (kv_heads, group * q, d)
    return merged.reshape(heads, q, dim).transpose(0, 1).to(query.dtype)[None]


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, float("-inf"))


def _attend_softmax(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor,
                    parts: list[tuple[torch.Tensor, torch.Tensor, int]], positions: torch.Tensor, scale: float,
                    sliding_window: int | None, softcap: float | None) -> torch.Tensor:
    """:func:`attend_with_segments` as one fp32 softmax over every segment's logits (any device,
    softcap), ``ROW_CHUNK`` rows at a time."""
    _, heads, q, dim = query.shape
    kv_heads = key.shape[0]
    dtype = key.dtype  # products in the KV's dtype (as SDPA's math), softmax in fp32: no KV copy per step
    out = torch.empty(q, heads, dim, dtype=torch.float32, device=query.device)
    for r0 in range(0, q, ROW_CHUNK):
        r1 = min(r0 + ROW_CHUNK, q)
        rows = query[0, :, r0:r1, :].to(dtype)
        logits = [attention_logits(rows, keys, scale, softcap, sliding_window, positions[r0:r1], start)
                  for keys, _, start in parts]
        own_logits = attention_logits(rows, key, scale, softcap, None, positions[r0:r1], 0)
        logits.append(own_logits.masked_fill(~allowed[r0:r1][None], float("-inf")))
        weights = torch.softmax(torch.cat(logits, dim=-1), dim=-1).nan_to_num_(0.0)
        acc = torch.zeros(kv_heads, (heads // kv_heads) * (r1 - r0), dim, dtype=torch.float32, device=query.device)
        for values, w in zip([v for _, v, _ in parts] + [value],
                             weights.split([part.shape[-1] for part in logits], dim=-1)):
            acc.add_(torch.matmul(w.reshape(kv_heads, -1, w.shape[-1]).to(dtype), values).float())
        out[r0:r1] = acc.reshape(heads, r1 - r0, dim).transpose(0, 1)
    return out.to(query.dtype)[None]

