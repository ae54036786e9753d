"""Exact event-driven simulation of B1 TTFS layers (tau_c = 1), independent of the closed form.

A neuron i of a layer firing in [t_min, t_max], whose inputs spike at times t_j of the
previous window [t_min_prev, t_min], integrates step currents without leak:

    dV_i/dt = alpha_i H(t - t_min_prev) + sum_j W_ij H(t - t_j),    V_i(t_min_prev) = 0,
    alpha_i = 1 - sum_j W_ij                 (slope exactly 1 once every input has arrived),
    theta_i = (t_max - t_min) - b_i + alpha_i (t_min - t_min_prev).

Its spike time is the first t >= t_min_prev with V_i(t) >= theta_i, if that is < t_max
(t_max otherwise: no spike). V is piecewise linear between the sorted input events, so the
crossing is solved exactly segment by segment. When it happens at or after t_min it equals
the closed form t_max - (W (t_min - t_in) + b) of ttfs_ext.reference. It happens before t_min
where the window is too narrow (the closed form gives t < t_min, a negative margin), and can
also where V overshoots theta while inputs still arrive and falls back (alpha (t_min -
t_min_prev) very negative, as in deep layers with long input windows), though the margin is
non-negative. Everything runs in float64; this is an oracle, not a fast path.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import reference
from .nn import TTFSConv2d, TTFSEncoder, TTFSLinear, TTFSMaxPool2d, TTFSReadout

__all__ = ["first_spike_times", "conv2d_first_spike_times", "simulate"]

IntPair = Union[int, tuple[int, int]]
_F64 = torch.float64


def _first_crossing(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    t_min_prev: float, t_min: float, t_max: float) -> torch.Tensor:
    """Core of the simulation. t_in (R, N), weight (O, N), bias broadcastable to (R, O) or
    None; returns (R, O) first threshold-crossing times (t_max: none before t_max)."""
    # Integration starts at t_min_prev: an input before it acts as if it arrived then.
    t = t_in.detach().to(_F64).clamp_min(t_min_prev)
    w = weight.detach().to(_F64)
    rows, n_in = t.shape
    alpha = 1.0 - w.sum(dim=1)                                            # (O,)
    theta = (t_max - t_min) + alpha * (t_min - t_min_prev)                # (O,)
    if bias is not None:
        theta = theta - bias.detach().to(_F64)
    theta = theta.expand(rows, w.shape[0])
    times, order = t.sort(dim=1, stable=True)                             # events in time order

    spike = torch.full_like(theta, float("inf"))
    v = torch.zeros_like(theta)
    slope = alpha.expand_as(theta).clone()
    start = torch.full((rows, 1), float(t_min_prev), dtype=_F64, device=t.device)
    for k in range(n_in + 1):
        # Segment [start, end): V = v + slope (t - start); ties give empty segments.
        end = times[:, k:k + 1] if k < n_in else torch.full_like(start, float("inf"))
        above = v >= theta  # already at threshold when the segment opens
        cand = torch.where(above, start, start + (theta - v) / slope)
        hit = spike.isinf() & (above | ((slope > 0) & (cand <= end)))
        spike = torch.where(hit, cand, spike)
        if k == n_in:
            break
        v = v + slope * (end - start)
        slope = slope + w[:, order[:, k]].T                               # input k arrives
        start = end
    return torch.where(spike < t_max, spike, torch.full_like(spike, float(t_max)))


def first_spike_times(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      t_min_prev: float, t_min: float, t_max: float) -> torch.Tensor:
    """True first spike times of a dense layer firing in [t_min, t_max] (see the module
    docstring for the ODE). t_in (..., N_in) in [t_min_prev, t_min]; weight (N_out, N_in);
    bias (N_out,) or None. Returns float64 (..., N_out), t_max where the neuron does not fire."""
    lead = t_in.shape[:-1]
    out = _first_crossing(t_in.reshape(-1, t_in.shape[-1]), weight, bias,
                          float(t_min_prev), float(t_min), float(t_max))
    return out.reshape(*lead, weight.shape[0])


def _pair(value: IntPair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def conv2d_first_spike_times(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                             t_min_prev: float, t_min: float, t_max: float, stride: IntPair = 1,
                             padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """first_spike_times for a convolution: each output position is a dense neuron over its
    patch, padding being silent inputs (spike time t_min). t_in (B, C_in, H, W) or (C_in, H, W);
    weight (C_out, C_in/groups, kH, kW); bias (C_out,), (C_out, H_out, W_out) or None.
    Returns float64 (B, C_out, H_out, W_out)."""
    unbatched = t_in.dim() == 3
    t = t_in.unsqueeze(0) if unbatched else t_in
    (ph, pw), kernel = _pair(padding), tuple(weight.shape[2:])
    t = F.pad(t.to(_F64), (pw, pw, ph, ph), value=float(t_min))
    patches = F.unfold(t, kernel, dilation=_pair(dilation), stride=_pair(stride))  # (B, C_in*kH*kW, L)
    batch, _, positions = patches.shape
    h_out = (t.shape[2] - _pair(dilation)[0] * (kernel[0] - 1) - 1) // _pair(stride)[0] + 1
    c_out, k_group = weight.shape[0], weight[0].numel()
    o_group = c_out // groups
    if bias is not None:  # per (position, channel), so that row (b, l) sees its own bias
        bias = (bias.view(-1, 1) if bias.dim() == 1 else bias.reshape(c_out, positions)).T.detach().to(_F64)
        bias = bias.expand(batch, positions, c_out).reshape(batch * positions, c_out)
    outs = []
    for g in range(groups):
        rows = patches[:, g * k_group:(g + 1) * k_group].transpose(1, 2).reshape(batch * positions, k_group)
        channels = slice(g * o_group, (g + 1) * o_group)
        out = _first_crossing(rows, weight[channels].reshape(o_group, k_group),
                              None if bias is None else bias[:, channels],
                              float(t_min_prev), float(t_min), float(t_max))
        outs.append(out.reshape(batch, positions, o_group).transpose(1, 2))
    out = torch.cat(outs, dim=1).reshape(batch, c_out, h_out, positions // h_out)
    return out.squeeze(0) if unbatched else out


@torch.no_grad()
def simulate(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a ttfs_ext.nn.TTFSSequential on x in float64, simulating every spiking layer
    event by event (with t_min_prev the t_min of the spiking layer before, 0 for the first)
    and applying the reference ops for the encoder, pooling, flatten and readout. Returns
    the readout's potentials (the logits), or the last spike times if there is no readout."""
    def f64(p: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if p is None else p.detach().to(_F64)

    out, t_min_prev = x.to(_F64), 0.0
    for m in model:
        if isinstance(m, TTFSLinear):
            out = first_spike_times(out, m.weight, f64(m.bias), t_min_prev, *m._window())
            t_min_prev = m._window()[0]
        elif isinstance(m, TTFSConv2d):
            out = conv2d_first_spike_times(out, m.weight, f64(m.bias), t_min_prev, *m._window(), m.stride,
                                           m._padding_pair(), m.dilation, m.groups)
            t_min_prev = m._window()[0]
        elif isinstance(m, TTFSMaxPool2d):
            out = reference.max_pool2d(out, m.kernel_size, m.stride, m.padding)
        elif isinstance(m, TTFSReadout):
            if m.t_min is None:
                raise RuntimeError("simulate: the TTFSReadout has no t_min")
            out = reference.readout(out, f64(m.weight), f64(m.bias), m.t_min)
        elif isinstance(m, TTFSEncoder):
            out = reference.encode(out, m.low, m.high)
        elif isinstance(m, nn.Flatten):
            out = m(out)
        else:
            raise TypeError(f"simulate: unsupported module {type(m).__name__}")
    return out
