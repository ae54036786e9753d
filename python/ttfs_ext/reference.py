"""Pure-PyTorch reference of the TTFS ops: the closed forms of the B1 model, differentiated
by autograd. It is the oracle of the tests, the baseline of the benchmarks and the
fallback where no compiled kernel exists. Arguments are as in ttfs_ext.functional
(without validation: call the functional ops for checked input).

B1 model (tau_c = 1): a layer fires in [t_min, t_max]; its inputs arrived before t_min.
    activation   x = t_min - t_in
    potential    u = W x + b
    spike time   t = t_max - u if t_max - u < t_max else t_max   (t_max: no spike)
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

__all__ = ["linear", "conv2d", "readout", "max_pool2d", "encode"]

Window = Union[float, torch.Tensor]
IntPair = Union[int, tuple[int, int]]


def _activation(t_in: torch.Tensor, t_min: Window, weight: torch.Tensor) -> torch.Tensor:
    # The difference is taken in the spike-time dtype, then cast to the matrix dtype.
    return (t_min - t_in).to(weight.dtype)


def _fire(u: torch.Tensor, t_max: Window) -> torch.Tensor:
    t = t_max - u
    return torch.where(t >= t_max, t_max, t)  # no spike: t_max; NaN stays NaN


def linear(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           t_min: Window, t_max: Window) -> torch.Tensor:
    """t_out = min(t_max - (W (t_min - t_in) + b), t_max); t_in (..., in), weight (out, in)."""
    return _fire(readout(t_in, weight, bias, t_min), t_max)


def readout(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
            t_min: Window) -> torch.Tensor:
    """V = W (t_min - t_in) + b: the membrane potential at t_min, i.e. the logits."""
    u = F.linear(_activation(t_in, t_min, weight), weight).to(t_in.dtype)
    return u if bias is None else u + bias


def conv2d(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           t_min: Window, t_max: Window, stride: IntPair = 1, padding: IntPair = 0,
           dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """The dense form with a convolution. Zero-padded activations are t_min-padded spike
    times. bias is (C_out,) or per output position (C_out, H_out, W_out)."""
    x = _activation(t_in, t_min, weight)
    u = F.conv2d(x, weight, None, stride, padding, dilation, groups).to(t_in.dtype)
    if bias is not None:
        u = u + (bias.view(-1, 1, 1) if bias.dim() == 1 else bias)
    return _fire(u, t_max)


def max_pool2d(t_in: torch.Tensor, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0) -> torch.Tensor:
    """Max-pooling of activations is the earliest spike: the minimum of t over each window."""
    return -F.max_pool2d(-t_in, kernel_size, stride, padding)


def encode(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Input spike times in the window [0, 1]: t = 1 - clamp((x - low) / (high - low), 0, 1)."""
    return 1.0 - ((x - low) / (high - low)).clamp(0.0, 1.0)
