"""The B1 layer as general neurons: the one formula for alpha and the threshold.

A general (alpha-model) neuron integrates dV/dt = alpha H(t - t_start) + sum_j J_j H(t - t_j)
and fires when V reaches its threshold. It computes the ReLU layer of weights w = J / B and
bias b in its window [t_min, t_max] (t = t_max - (w x + b)) when, once every input has
arrived, its potential rises with slope B:

    alpha = B - S_in,    threshold = B (span - b) - S_in in_width,

S_in the sum of its weights J (of the taps inside the image for a convolution), span =
t_max - t_start and in_width = t_min - t_start. The B1 model has B = 1 (J = w); the alpha1
mapping B = 1 / (1 - sum w). The threshold depends on the widths of the windows only, not on
where they lie in time.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

IntPair = Union[int, tuple[int, int]]

__all__ = ["inside_sum", "integration_bias", "alpha_and_threshold", "width_below_threshold"]


def inside_sum(weight: torch.Tensor, in_shape: tuple, stride: IntPair = 1, padding: IntPair = 0,
               dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """Per output position (C_out, H_out, W_out), the sum of the kernel taps that fall inside
    an image of per-sample shape in_shape (C, H, W): a padded tap never spikes, so it adds
    neither current nor slope."""
    ones = torch.ones((1, *in_shape[-3:]), dtype=weight.dtype, device=weight.device)
    return F.conv2d(ones, weight, None, stride, padding, dilation, groups)[0]


def _per_position(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-channel (C,) value viewed against a per-position (C, H, W) one."""
    return value.view(-1, 1, 1) if like.dim() == 3 and value.dim() == 1 else value


def integration_bias(weight_sum: torch.Tensor, slope: Optional[torch.Tensor] = None) -> torch.Tensor:
    """alpha = B - S_in: weight_sum S_in (O,) or per position (O, H_out, W_out); slope B (O,),
    None for B1 (1)."""
    return 1.0 - weight_sum if slope is None else _per_position(slope, weight_sum) - weight_sum


def alpha_and_threshold(weight_sum: torch.Tensor, bias: Optional[torch.Tensor], in_width: float, span: float,
                        slope: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, threshold) of the neurons (see the module): weight_sum S_in (O,) or per position
    (O, H_out, W_out); bias b (O,), per position or None (0); slope B (O,), None for B1 (1).
    Differentiable in every tensor argument: callers detach what must not train."""
    b = torch.zeros((), dtype=weight_sum.dtype, device=weight_sum.device) if bias is None else bias
    b = _per_position(b, weight_sum)
    alpha = integration_bias(weight_sum, slope)
    if slope is None:
        return alpha, (span - b) - weight_sum * in_width
    return alpha, _per_position(slope, weight_sum) * (span - b) - weight_sum * in_width


def width_below_threshold(peak: torch.Tensor, alpha: torch.Tensor, in_width: float, bias: torch.Tensor,
                          slope: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The window width at which the threshold equals `peak`, the largest potential while the
    inputs arrive: threshold = B width + alpha in_width - B b (alpha_and_threshold with span =
    in_width + width), so a wider window keeps the neuron from firing before it opens."""
    excess = peak - alpha * in_width
    if slope is not None:
        excess = excess / _per_position(slope, alpha)
    return excess + _per_position(bias, alpha)
