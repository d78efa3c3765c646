"""FP8 for the DiT (issue #11 "fp8" mode, chosen per deployment because it changes the weights).

GEMMs: row-wise scaled e4m3 (one scale per weight output row, one per activation token), bf16 out, either through
our `Float8RowwiseLinear` (`torch._scaled_mm`, the pattern measured in acceleration-reference §2.2-2.3) or through
torchao's `Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())` (the same kernel behind a tensor
subclass). Both need sm_89+ on CUDA; `torch._scaled_mm` also runs on CPU in recent torch, which the CPU tests use.

Which layers: only the token-wise GEMMs of the transformer blocks (M = tokens, 56,320 at 704x1280), where FP8 pays:
self-attention Q/K/V/O, cross-attention Q/O, the MLP's two layers. Kept in bf16: the AdaLN(-LoRA) linears (one
row: nothing to gain), the cross-attention K/V projections of the 512 T5 tokens (1 % of the FLOPs), patch
embedding (K = 68, not a multiple of 16), the time embedding and the output projection. Policy ``qk_bf16`` (default)
also keeps the self- and cross-attention Q/K projections in bf16: the best speed/quality point of vllm-omni PR
#4337's FP8 layer sweep on Cosmos3-Nano (1.20x end to end); ``all`` quantizes them too.

Attention: FA3's FP8 forward (Hopper) for self-attention only, with per-(batch, head) scales and K smoothing
(subtracting the per-head mean key over the tokens leaves softmax unchanged, SageAttention's observation, and
removes the common offset that would otherwise eat FP8's range). Naive per-tensor FP8 attention is known to break
video DiTs (SageAttention2 paper, Table 2), so this is opt-in and must be judged on real weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FP8_BACKENDS = ("scaled_mm", "torchao")
FP8_POLICIES = ("qk_bf16", "all")
E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
_SELF = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")
_CROSS = ("attn2.to_q", "attn2.to_out.0")  # attn2.to_k / to_v act on the 512 context tokens: kept bf16
_MLP = ("ff.net.0.proj", "ff.net.2")
_QK = ("attn1.to_q", "attn1.to_k", "attn2.to_q")


def fp8_linear_names(model: Any, policy: str = "qk_bf16") -> list[str]:
    """Fully-qualified names (as `named_modules` spells them) of the Linear layers FP8 applies to."""
    if policy not in FP8_POLICIES:
        raise ValueError(f"fp8 policy must be one of {FP8_POLICIES}, got {policy!r}")
    local = [n for n in (*_SELF, *_CROSS, *_MLP) if policy == "all" or n not in _QK]
    names = [f"transformer_blocks.{i}.{n}" for i in range(len(model.transformer_blocks)) for n in local]
    modules = dict(model.named_modules())
    missing = [n for n in names if not isinstance(modules.get(n), nn.Linear)]
    if missing:
        raise ValueError(f"not Linear layers of this model: {missing[:4]}")
    return names


def fp8_supported(device: torch.device | str) -> bool:
    """FP8 GEMMs on this device: CUDA compute capability 8.9 (Ada) or newer."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def _rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 values and fp32 scales [rows, 1] with x ~= values * scales, one scale per row."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12)
    scale = amax / E4M3_MAX
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


class Float8RowwiseLinear(nn.Module):
    """y = x W^T with W in e4m3 (scale per output row) and x quantized per token at run time, via
    `torch._scaled_mm` (fp32 accumulate, bf16 out). Under torch.compile the activation quantization fuses into
    the preceding elementwise kernel. No bias (the Cosmos DiT has none)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Float8RowwiseLinear takes bias-free Linear layers")
        self.in_features: int = linear.in_features
        self.out_features: int = linear.out_features
        if self.in_features % 16 or self.out_features % 16:
            raise ValueError(f"FP8 GEMMs need K and N multiples of 16, got {self.in_features}->{self.out_features}")
        w8, scale = _rowwise(linear.weight.detach())
        self.weight_fp8: torch.Tensor
        self.weight_scale: torch.Tensor
        self.register_buffer("weight_fp8", w8)  # [N, K] row-major, so weight_fp8.t() is the column-major B
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())  # [1, N]
        self.out_dtype: torch.dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        rows = x2.shape[0]
        pad = -rows % 16  # cuBLASLt wants M a multiple of 16 too; Cosmos token counts already are
        if pad:
            x2 = torch.nn.functional.pad(x2, (0, 0, 0, pad))
        x8, x_scale = _rowwise(x2)
        y = torch._scaled_mm(x8, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                             out_dtype=self.out_dtype, use_fast_accum=True)
        return y[:rows].reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 row-wise"


def apply_fp8(model: Any, backend: str = "scaled_mm", policy: str = "qk_bf16",
              require_hardware: bool = True) -> list[str]:
    """Quantize the selected Linear layers in place; returns their names. Irreversible (frees the bf16 weights).
    Run it before torch.compile so the activation quantization fuses."""
    if backend not in FP8_BACKENDS:
        raise ValueError(f"fp8 backend must be one of {FP8_BACKENDS}, got {backend!r}")
    names = fp8_linear_names(model, policy)
    device = next(model.parameters()).device
    if require_hardware and not fp8_supported(device):
        raise RuntimeError(f"FP8 GEMMs need a CUDA device of compute capability >= 8.9, the DiT is on {device}")
    if backend == "torchao":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        selected = set(names)
        quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
                  filter_fn=lambda module, fqn: fqn in selected and isinstance(module, nn.Linear))
        return names
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, Float8RowwiseLinear(getattr(parent, child)))
    return names


def smooth_and_quantize_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                                  ) -> tuple[torch.Tensor, ...]:
    """FP8 inputs for FA3's FP8 forward from bf16 q, k, v in [B, L, H, D]: K minus its per-head mean over the
    tokens (softmax-invariant), then e4m3 with one scale per (batch, head). Returns q8, k8, v8 and the descale
    tensors [B, H] (fp32) FA3 multiplies back."""

    def per_head(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = (x.abs().amax(dim=(1, 3)) / E4M3_MAX).clamp_min(1e-12)  # [B, H]
        return (x / scale[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale

    kf = k.float()
    (q8, qs), (k8, ks), (v8, vs) = per_head(q.float()), per_head(kf - kf.mean(dim=1, keepdim=True)), per_head(v.float())
    return q8, k8, v8, qs, ks, vs
