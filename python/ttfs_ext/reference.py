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

__all__ = ["linear", "conv2d", "readout", "max_pool2d", "encode", "first_spike_linear", "first_spike_conv2d", "clamp",
           "arrival", "input_activation"]

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


def clamp(x: torch.Tensor, low: Optional[float] = None, high: Optional[float] = None) -> torch.Tensor:
    """torch.clamp with this library's gradient at the limits: 1 for low <= x <= high (a value
    at a limit lies in the range), 0 outside; NaN stays NaN. torch's own clamp passes 0 at the
    limits from torch 2.14 on (1 before), so the rule is written here, once, for every version:
    the encoder, the arrival of an input at t_start (the compiled first_spike kernels follow
    the same rule) and fake quantisation use it. The spike clamp at t_max is the other rule:
    t = t_max is no spike and has no gradient, as ReLU's at 0."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.clamp(low, high)  # the same values in one pass
    if low is not None:
        x = torch.where(x < low, low, x)
    if high is not None:
        x = torch.where(x > high, high, x)
    return x


def arrival(t_in: torch.Tensor, t_start: Window) -> torch.Tensor:
    """Input times relative to t_start, where an input before t_start acts from t_start:
    max(t_in - t_start, 0). An input at t_start arrives with its gradient (clamp)."""
    return clamp(t_in - t_start, low=0.0)


def input_activation(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """The input layer's activation a = clamp((x - low) / (high - low), 0, 1) (its spike time
    is 1 - a): the ReLU twin's input and the root of encode."""
    if low == 0.0 and high == 1.0:  # (x - 0) / 1 is x exactly: one pass instead of three
        return clamp(x, 0.0, 1.0)
    return clamp((x - low) / (high - low), 0.0, 1.0)


def encode(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Input spike times in the window [0, 1]: t = 1 - clamp((x - low) / (high - low), 0, 1)."""
    return 1.0 - input_activation(x, low, high)


# --- the general neuron, event-exact -------------------------------------------------------
# dV_i/dt = alpha_i H(t - t_start) + sum_j W_ij H(t - t_j), V_i(t_start) = 0; the neuron fires at
# the first t >= t_start with V_i(t) >= theta_i if that is before t_max, else t = t_max. V is
# piecewise linear between the sorted arrivals, so with k inputs arrived (prefix sums
# S_k = sum W, P_k = sum W tau over them, tau = t - t_start) the segment's crossing is
#     tau* = (theta + P_k) / (alpha + S_k),
# and the spike is the first segment whose slope alpha + S_k is positive and whose crossing
# falls before the next arrival. This reference materialises every prefix of every neuron,
# memory batch x inputs x outputs (the sort-and-gather method of Stanojevic et al. 2022);
# the compiled kernels keep batch x (inputs + outputs).

def first_spike_linear(t_in: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, threshold: torch.Tensor,
                       t_start: float, t_max: float, t_origin: float = 0.0) -> torch.Tensor:
    """First spike times of a layer of general neurons: t_in (..., N), weight (O, N),
    alpha and threshold (O,). Returns (..., O): the spike times minus t_origin (where the
    outputs' time axis starts on the inputs'; local time: the input width), t_max (on the
    outputs' axis) where a neuron does not fire."""
    lead = t_in.shape[:-1]
    tau = arrival(t_in.reshape(-1, t_in.shape[-1]), t_start)
    out = _first_spike_rows(tau, weight, alpha.unsqueeze(0), threshold.unsqueeze(0), t_start, t_max, t_origin)
    return out.reshape(*lead, weight.shape[0])


def first_spike_conv2d(t_in: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, threshold: torch.Tensor,
                       t_start: float, t_max: float, stride: IntPair = 1, padding: IntPair = 0,
                       dilation: IntPair = 1, groups: int = 1, t_origin: float = 0.0) -> torch.Tensor:
    """first_spike_linear over the patches of a convolution; padding never spikes. t_in
    (B, C_in, H, W); weight (C_out, C_in/groups, kH, kW); alpha and threshold (C_out,) or per
    output position (C_out, H_out, W_out). Returns (B, C_out, H_out, W_out)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    batch, c_in = t_in.shape[:2]
    kernel = tuple(weight.shape[2:])
    tau = arrival(t_in, t_start)
    tau = F.pad(tau, (padding[1], padding[1], padding[0], padding[0]), value=float("inf"))
    patches = F.unfold(tau, kernel, dilation=dilation, stride=stride)  # (B, C_in*kH*kW, L)
    positions = patches.shape[-1]
    h_out = (tau.shape[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    c_out = weight.shape[0]
    o_group, k_group = c_out // groups, weight[0].numel()

    def per_row(p: torch.Tensor) -> torch.Tensor:  # (C_out,) or (C_out, H_out, W_out) -> (rows or 1, C_out)
        if p.dim() == 1:
            return p.unsqueeze(0)
        return p.reshape(c_out, positions).T.repeat(batch, 1)

    alpha_rows, theta_rows = per_row(alpha), per_row(threshold)
    outs = []
    for g in range(groups):
        rows = patches[:, g * k_group:(g + 1) * k_group].transpose(1, 2).reshape(batch * positions, k_group)
        o = slice(g * o_group, (g + 1) * o_group)
        out = _first_spike_rows(rows, weight[o].reshape(o_group, k_group), alpha_rows[:, o], theta_rows[:, o],
                                t_start, t_max, t_origin)
        outs.append(out.reshape(batch, positions, o_group))
    return torch.cat(outs, dim=2).transpose(1, 2).reshape(batch, c_out, h_out, positions // h_out)


def _pair(value: IntPair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _first_spike_rows(tau: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, theta: torch.Tensor,
                      t_start: float, t_max: float, t_origin: float = 0.0) -> torch.Tensor:
    """tau (R, K): arrival times relative to t_start, >= 0, +inf for padding (never arrives);
    weight (O, K); alpha, theta (R or 1, O). Returns spike times (R, O) minus t_origin, t_max
    (on that axis) for no spike."""
    tau_sorted, order = tau.sort(dim=1, stable=True)
    arrived = torch.isfinite(tau_sorted).unsqueeze(1)                               # (R, 1, K)
    w = torch.where(arrived, weight[:, order].permute(1, 0, 2), 0.0)                 # (R, O, K)
    wt = w * torch.where(arrived, tau_sorted.unsqueeze(1), 0.0)
    zero = w.new_zeros(w.shape[:2] + (1,))
    slope = alpha.unsqueeze(-1) + torch.cat([zero, w.cumsum(-1)], dim=-1)            # (R, O, K+1)
    rising = slope > 0
    cand = (theta.unsqueeze(-1) + torch.cat([zero, wt.cumsum(-1)], dim=-1)) / torch.where(rising, slope, 1.0)
    start = F.pad(tau_sorted, (1, 0), value=0.0).unsqueeze(1)                        # segment k: [start, end]
    end = F.pad(tau_sorted, (0, 1), value=float("inf")).unsqueeze(1)
    valid = rising & (cand <= end)                                                   # crossing of segment k
    k = valid.to(torch.int8).argmax(dim=-1, keepdim=True)                            # first valid segment
    fired = valid.any(dim=-1)
    t_rel = torch.maximum(cand.gather(-1, k), start.expand_as(cand).gather(-1, k)).squeeze(-1)
    t_rel = torch.where(theta <= 0, torch.zeros_like(t_rel), t_rel)  # at threshold when integration starts
    t = t_start + t_rel - t_origin  # on the outputs' axis, as t_max
    return torch.where(((theta <= 0) | fired) & (t < t_max), t, torch.full_like(t, t_max))


# --- the neurons of feedback SNNs (IDE / SPIDE, Xiao et al.; ttfs_ext.spide) -------------------
# One time step of a population, in place on u and rate, as the authors' time loops run it
# (spike ">=", reset by subtraction of the quantum V_th - u_rest, then the leak).

def spide_forward_step(u: torch.Tensor, rate: torch.Tensor, current: torch.Tensor, extra: Optional[torch.Tensor],
                       gate: Optional[torch.Tensor], v_th: float, reset: float, leak: float) -> torch.Tensor:
    """v = u + current [+ extra]; s = [v >= v_th]; u = (v - reset s) leak; rate = leak rate + s.
    Returns s, times gate (the dropout mask of the next connection) when given."""
    v = u + current
    if extra is not None:
        v = v + extra
    s = (v >= v_th).to(u.dtype)
    u.copy_((v - reset * s) * leak)
    rate.mul_(leak).add_(s)
    return s * gate if gate is not None else s


def spide_backward_step(u: torch.Tensor, rate: torch.Tensor, current: torch.Tensor,
                        current_gate: Optional[torch.Tensor], inject: Optional[torch.Tensor],
                        gate: Optional[torch.Tensor], v_th: float, reset: float, amplitude: float,
                        leak: float) -> torch.Tensor:
    """The ternary neuron couple: v = u + current [* current_gate] [+ inject];
    k = [v >= v_th] - [v <= -v_th]; u = (v - reset k) leak; rate = leak rate + amplitude k.
    Returns amplitude k, times gate (the forward mask m = [0 < a < 1]) when given."""
    v = u + (current * current_gate if current_gate is not None else current)
    if inject is not None:
        v = v + inject
    k = (v >= v_th).to(u.dtype) - (v <= -v_th).to(u.dtype)
    u.copy_((v - reset * k) * leak)
    s = amplitude * k
    rate.mul_(leak).add_(s)
    return s * gate if gate is not None else s


__all__ += ["spide_forward_step", "spide_backward_step"]


# --- event-driven products with spike tensors (spike_conv2d) ----------------------------------

def spike_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding, dilation,
                 transposed: bool, output_size) -> torch.Tensor:
    """The dense product the event-driven kernel computes: weight packed (C_in, kH, kW, C_out),
    conv2d (transposed False) or conv_transpose2d with the output_size's output padding."""
    if transposed:
        w = weight.permute(0, 3, 1, 2)  # conv_transpose2d's (C_in, C_out, kH, kW)
        base = [(input.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[1 + i] - 1) + 1
                for i in range(2)]
        pad = [output_size[i] - base[i] for i in range(2)]
        out = torch.nn.functional.conv_transpose2d(input, w, bias, list(stride), list(padding), pad, 1,
                                                   list(dilation))
    else:
        w = weight.permute(3, 0, 1, 2)  # conv2d's (C_out, C_in, kH, kW)
        out = torch.nn.functional.conv2d(input, w, bias, list(stride), list(padding), list(dilation))
    return out.contiguous(memory_format=torch.channels_last)  # the kernel's layout


__all__ += ["spike_conv2d"]
