"""The one RMSNorm: LLaDA's blocks and the projector's output both use it, differing only in the dtype the scale is
applied in (LLaDA casts back first, as its ``RMSLayerNorm``; Llama, and so the projector, scales in float32)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """x / RMS(x) · weight over the last dim, the RMS in float32, the result in x's dtype."""

    def __init__(self, size: int, eps: float, scale_in_float32: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.scale_in_float32 = scale_in_float32
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.scale_in_float32:
            return (x32 * self.weight.float()).to(dtype)
        return self.weight * x32.to(dtype)
