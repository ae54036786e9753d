"""Exact event-driven simulation of TTFS networks.

Every spiking neuron is the general non-leaky integrate-and-fire neuron of
ttfs_ext.functional.first_spike_linear / first_spike_conv2d,

    dV_i/dt = alpha_i H(t - t_start) + sum_j W_ij H(t - t_j),    V_i(t_start) = 0,

firing at the first t >= t_start with V_i(t) >= theta_i (t_max: no spike), with t_start the
t_min of the spiking layer before (0 for the first). A neuron that does not fire emits its
spike at t_max (it is forced to, as in Stanojevic et al. 2022); padding never spikes.

A B1 layer (ttfs_ext.nn.TTFSLinear / TTFSConv2d, weights W, bias b, window [t_min, t_max])
is the general neuron of ttfs_ext.nn.neurons (alpha = 1 - S_in, S_in the sum of its weights):
once every input has arrived the potential rises with slope 1 and crosses at the closed form
t_max - (W (t_min - t_in) + b). It can cross earlier, before t_min, where the window is too
narrow for the activation (the closed form gives t < t_min) and also where V overshoots
theta while inputs still arrive and falls back (a strongly negative alpha (t_min - t_start),
as in deep layers with long input windows), even when every activation fits. simulate()
finds these spikes and counts them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import functional as TF, reference
from .nn import (SpikingLayer, TTFSAlphaConv2d, TTFSAlphaLinear, TTFSConv2d, TTFSEncoder, TTFSLinear, TTFSMaxPool2d,
                 TTFSReadout, alpha_and_threshold, inside_sum)

__all__ = ["simulate", "SimulationResult", "LayerSimulation", "neuron_parameters", "first_spike_times",
           "conv2d_first_spike_times", "peak_potential"]

IntPair = Union[int, tuple[int, int]]
_PASSTHROUGH = (TTFSEncoder, TTFSMaxPool2d, TTFSReadout, nn.Flatten, nn.Identity, nn.Dropout)


def _b1_parameters(weight_sum: torch.Tensor, bias: Optional[torch.Tensor], t_start: float, t_min: float,
                   t_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, threshold) of B1 neurons in absolute time, not trained through."""
    return alpha_and_threshold(weight_sum, None if bias is None else bias.detach(), t_min - t_start, t_max - t_start)


def neuron_parameters(layer: nn.Module, in_shape: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight, alpha, threshold) of the general neurons of a spiking layer in a chained
    window, for inputs of per-sample shape in_shape (detached). Conv layers get per-position
    alpha and threshold where padding makes them depend on the position."""
    if isinstance(layer, (TTFSAlphaLinear, TTFSAlphaConv2d)):
        return layer.weight.detach(), layer.alpha.detach(), layer.threshold.detach()
    if not isinstance(layer, (TTFSLinear, TTFSConv2d)):
        raise TypeError(f"neuron_parameters: {type(layer).__name__} is not a spiking layer")
    weight, alpha, theta = layer.neuron_parameters(in_shape)
    return weight.detach(), alpha.detach().to(weight.dtype), theta.detach().to(weight.dtype)


def first_spike_times(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      t_start: float, t_min: float, t_max: float) -> torch.Tensor:
    """Exact event-driven spike times of a dense B1 layer firing in [t_min, t_max] whose
    neurons integrate from t_start. t_in (..., N); weight (O, N); bias (O,) or None."""
    alpha, theta = _b1_parameters(weight.detach().sum(dim=1), bias, t_start, t_min, t_max)
    return TF.first_spike_linear(t_in, weight, alpha.to(t_in.dtype), theta.to(t_in.dtype), t_start, t_max)


def conv2d_first_spike_times(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                             t_start: float, t_min: float, t_max: float, stride: IntPair = 1, padding: IntPair = 0,
                             dilation: IntPair = 1, groups: int = 1) -> torch.Tensor:
    """first_spike_times for a convolutional B1 layer; bias (C_out,), (C_out, H_out, W_out) or
    None. Padding never spikes; alpha and threshold follow the taps inside the image."""
    s_in = inside_sum(weight.detach(), tuple(t_in.shape[-3:]), stride, padding, dilation, groups)
    alpha, theta = _b1_parameters(s_in, bias, t_start, t_min, t_max)
    return TF.first_spike_conv2d(t_in, weight, alpha.to(t_in.dtype), theta.to(t_in.dtype), t_start, t_max,
                                 stride, padding, dilation, groups)


@dataclass
class LayerSimulation:
    index: int                 # position in the network
    name: str
    t_min: float               # the window, absolute
    t_max: float
    local_spike_times: torch.Tensor  # event-driven, as the network carries them (local time in a TTFSSequential)
    origin: float              # local + origin = absolute (t_min in local time, else 0)
    local_end: float           # no spike on the local axis (the width in local time, else t_max)
    spikes: int                # neurons that fired (t < t_max)
    early_spikes: int          # fired before the window opened (t < t_min)
    deviating: int             # differ from the closed form of the layer on the same inputs
    max_deviation: float       # max |t_event - t_closed|

    @property
    def spike_times(self) -> torch.Tensor:
        """Event-driven spike times on the absolute axis, in float64; t_max exactly = no spike."""
        t = self.local_spike_times
        return torch.where(t >= self.local_end, self.t_max, t.double() + self.origin)

    @property
    def neurons(self) -> int:
        return self.local_spike_times.numel()


@dataclass
class SimulationResult:
    logits: torch.Tensor                      # the readout's potentials (or the last spike times)
    layers: list[LayerSimulation] = field(default_factory=list)

    @property
    def spike_times(self) -> list[torch.Tensor]:
        """Per spiking layer, the absolute spike times (float64)."""
        return [layer.spike_times for layer in self.layers]

    @property
    def exact(self) -> bool:
        """True where every event-driven spike equals the closed form of its layer."""
        return all(layer.deviating == 0 for layer in self.layers)

    def __str__(self) -> str:
        rows = [f"{'layer':>5}  {'name':<18}{'window':>24}{'spikes':>10}{'early':>8}{'off closed form':>17}"
                f"{'max |dt|':>11}"]
        for r in self.layers:
            window = f"[{r.t_min:.4g}, {r.t_max:.4g}]"
            rows.append(f"{r.index:>5}  {r.name:<18}{window:>24}{r.spikes:>10}{r.early_spikes:>8}{r.deviating:>17}"
                        f"{r.max_deviation:>11.3g}")
        return "\n".join(rows)


@torch.no_grad()
def simulate(network: nn.Sequential, x: torch.Tensor, tolerance: Optional[float] = None) -> SimulationResult:
    """Run a TTFS network (a TTFSSequential from ttfs_ext.convert or built by hand) on x with
    every spiking layer simulated event by event (the exact first_spike ops), instead of the
    closed form. Returns the logits, and per spiking layer the spike times, the number of
    spikes, of early spikes (before the layer's window opens: the window is too narrow, or V
    overshot) and of neurons whose event-driven spike differs from the closed form of the
    layer given the same (event-driven) inputs, by more than `tolerance` (default 1e-9 in
    float64, 1e-4 in float32, relative to max(1, the window's end on the outputs' axis: its
    width in local time)).

    One convention for every neuron, the readout included: it integrates from the start of
    its input window, and an input that arrived before it (an early spike of the layer
    before) acts from then on. The readout's potential at its t_min is then
    W (t_min - max(t_in, t_start)) + b."""
    param = next(network.parameters(), None)  # x is cast to the network's dtype
    out = x if param is None else x.to(param.dtype)
    result = SimulationResult(logits=out)
    window_start = 0.0  # of the inputs of the next layer, in absolute time: the t_min of the layer before
    for index, m in enumerate(network):
        if isinstance(m, SpikingLayer):
            t_in = out
            out = m.event_forward(t_in)
            closed = m.closed_forward(t_in)
            (t_min, t_max), (lo, hi) = m.window(), m.output_window()
            tol = tolerance if tolerance is not None else (1e-9 if out.dtype == torch.float64 else 1e-4)
            diff = (out - closed).abs()
            result.layers.append(LayerSimulation(
                index, type(m).__name__, t_min, t_max, out, t_min if m.local else 0.0, hi, int((out < hi).sum()),
                int((out < lo).sum()), int((diff > tol * max(1.0, abs(hi))).sum()),
                float(diff.max()) if diff.numel() else 0.0))
            window_start = t_min
        elif isinstance(m, TTFSReadout):
            out = m.event_forward(out, window_start)  # from its t_start, like every neuron
        elif isinstance(m, _PASSTHROUGH):
            out = m(out)
        else:
            raise TypeError(f"ttfs_ext.simulate: unsupported module {type(m).__name__} at index {index}")
    result.logits = out
    return result


@torch.no_grad()
def peak_potential(t_in: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, t_start: float, t_end: float,
                   conv: Optional[dict] = None) -> torch.Tensor:
    """max over t in [t_start, t_end] of the potential V(t) of general neurons (threshold
    ignored): where it reaches the threshold before t_end, the neuron fires before t_end.
    Dense: t_in (B, N), weight (O, N), alpha (O,); conv (conv = dict(stride, padding,
    dilation, groups)): t_in (B, C, H, W), alpha (C_out,) or (C_out, H_out, W_out). V is
    piecewise linear, so its maximum is at an input arrival or at an end; the scan keeps
    memory rows x outputs (one Python step per input)."""
    if conv is None:
        return _peak_rows(reference.arrival(t_in, t_start), weight, alpha.unsqueeze(0), t_end - t_start)
    stride, padding, dilation, groups = (conv["stride"], conv["padding"], conv["dilation"], conv["groups"])
    batch = t_in.shape[0]
    tau = F.pad(reference.arrival(t_in, t_start), (padding[1], padding[1], padding[0], padding[0]),
                value=float("inf"))
    patches = F.unfold(tau, tuple(weight.shape[2:]), dilation=dilation, stride=stride)  # (B, K, L)
    positions, c_out = patches.shape[-1], weight.shape[0]
    o_group, k_group = c_out // groups, weight[0].numel()
    rows_alpha = (alpha.unsqueeze(0) if alpha.dim() == 1 else alpha.reshape(c_out, positions).T.repeat(batch, 1))
    peaks = []
    for g in range(groups):
        rows = patches[:, g * k_group:(g + 1) * k_group].transpose(1, 2).reshape(batch * positions, k_group)
        o = slice(g * o_group, (g + 1) * o_group)
        peak = _peak_rows(rows, weight[o].reshape(o_group, k_group), rows_alpha[:, o], t_end - t_start)
        peaks.append(peak.reshape(batch, positions, o_group))
    h_out = (tau.shape[2] - dilation[0] * (weight.shape[2] - 1) - 1) // stride[0] + 1
    return torch.cat(peaks, dim=2).transpose(1, 2).reshape(batch, c_out, h_out, positions // h_out)


def _peak_rows(tau: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, span: float) -> torch.Tensor:
    """tau (R, K) relative arrivals (+inf: never); weight (O, K); alpha (R or 1, O). Returns the
    max of V over [0, span], (R, O)."""
    tau_sorted, order = tau.sort(dim=1)
    rows, outputs = tau.shape[0], weight.shape[0]
    v = tau.new_zeros(rows, outputs)
    peak = v.clone()
    slope = alpha.expand(rows, outputs).clone()
    now = tau.new_zeros(rows, 1)
    for k in range(tau.shape[1]):
        arrival = tau_sorted[:, k:k + 1]
        when = arrival.clamp_max(span)
        v = v + slope * (when - now)
        peak = torch.maximum(peak, v)
        now = when
        slope = slope + torch.where(arrival <= span, weight[:, order[:, k]].T, 0.0)
    return torch.maximum(peak, v + slope * (span - now))
