"""Pure-PyTorch reference of the few-spikes neuron (Stöckl & Maass): the K-step loop of the
authors' inference code, differentiated by autograd with their surrogate gradient. It is the
oracle of the tests and the baseline of the benchmarks (about five element-wise passes over
the tensor per step). Arguments as in ttfs_ext.fs.fs_activation, without validation.

    v(1) = x;  for t = 1..K:  z(t) = [v(t) > T(t)];  y += d(t) z(t);  v(t+1) = v(t) - h(t) z(t)

Surrogate: v_s(t) = (v(t) - T(t)) / (|v(t)| + 1) (positive exactly where z fires) and
dz/dv_s = max(0, 1 - |v_s|). NaN x gives NaN y. float16/bfloat16 x run the steps in float32.
"""
from __future__ import annotations

from typing import Union

import torch

__all__ = ["fs_activation", "fs_activation_full", "vreg"]


class _Spike(torch.autograd.Function):
    """Forward: the spike z (given); backward: the triangle pseudo-derivative in v_s."""

    @staticmethod
    def forward(vs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (vs,) = ctx.saved_tensors
        return grad * torch.clamp(1 - vs.abs(), min=0), None


def fs_activation_full(x: torch.Tensor, h: torch.Tensor, d: torch.Tensor, T: torch.Tensor, spike_mode: int = 0,
                       with_reg: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, spikes, reg) as the op torch.ops.ttfs_ext.fs_activation returns them: spikes are uint8
    counts (spike_mode 1), int32 K-bit masks (2, bit t for step t) or empty (0); reg the K means
    max(|v_s(t)| - 1, 0) over x (with_reg), or empty."""
    low = x.dtype in (torch.float16, torch.bfloat16)
    xc = x.float() if low else x
    v = xc
    y = torch.zeros_like(xc)
    spikes = torch.zeros(x.shape, dtype=torch.int32, device=x.device) if spike_mode else None
    regs = []
    for t in range(h.shape[0]):
        fire = v > T[t]
        vs = (v - T[t]) / (v.abs() + 1)
        if with_reg:
            regs.append(torch.relu(vs.abs() - 1).mean())
        z = _Spike.apply(vs, fire.to(v.dtype))
        y = y + d[t] * z
        v = v - h[t] * z
        if spike_mode == 1:
            spikes = spikes + fire.to(torch.int32)
        elif spike_mode == 2:
            spikes = spikes | (fire.to(torch.int32) << t)
    y = torch.where(torch.isnan(xc), xc, y)
    if low:
        y = y.to(x.dtype)
    if spike_mode == 1:
        spikes = spikes.to(torch.uint8)
    elif spike_mode == 0:
        spikes = torch.empty(0, dtype=torch.uint8, device=x.device)
    reg = torch.stack(regs) if with_reg else h.new_empty(0)
    return y, spikes, reg


def fs_activation(x: torch.Tensor, h: torch.Tensor, d: torch.Tensor, T: torch.Tensor,
                  return_spikes: Union[bool, str] = False):
    """y, or (y, spikes) with return_spikes=True (uint8 counts) or "mask" (int32 K-bit masks)."""
    mode = {False: 0, True: 1, "count": 1, "mask": 2}[return_spikes]
    y, spikes, _ = fs_activation_full(x, h, d, T, mode, False)
    return (y, spikes) if mode else y


def vreg(reg: torch.Tensor) -> torch.Tensor:
    """The fitting loss's potential regulariser sum_t (mean_x max(|v_s(t)| - 1, 0))^2 from the
    per-step means that fs_activation_full returns."""
    return reg.square().sum()
