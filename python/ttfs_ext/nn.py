"""Drop-in TTFS modules.

TTFSLinear, TTFSConv2d and TTFSReadout take the constructor arguments and have the
state_dict keys of nn.Linear / nn.Conv2d, so a ReLU network's checkpoint loads into its TTFS
twin. Spiking layers fire in a window [t_min, t_max]; TTFSSequential chains the windows
(t_min of each spiking layer = t_max of the one before, the input window being [0, 1]) and
reports spike statistics per layer.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from . import functional as TF

__all__ = ["TTFSLinear", "TTFSConv2d", "TTFSMaxPool2d", "TTFSReadout", "TTFSEncoder", "TTFSSequential",
           "LayerReport", "TTFSReport"]


class _Windowed:
    """A layer that fires in [t_min, t_max]; both None until set by the user or a container."""

    t_min: Optional[float]
    t_max: Optional[float]

    def set_window(self, t_min: float, t_max: float) -> None:
        t_min, t_max = float(t_min), float(t_max)
        if not (math.isfinite(t_min) and math.isfinite(t_max) and t_max > t_min):
            raise ValueError(f"{type(self).__name__}: the window must satisfy t_min < t_max, got [{t_min}, {t_max}]")
        self.t_min, self.t_max = t_min, t_max

    def _window(self) -> tuple[float, float]:
        if self.t_min is None or self.t_max is None:
            raise RuntimeError(f"{type(self).__name__}: the window [t_min, t_max] is not set; pass t_min/t_max "
                               "to the constructor, call set_window(), or put the layer in a TTFSSequential")
        return self.t_min, self.t_max


class TTFSLinear(_Windowed, nn.Linear):
    """Dense TTFS layer: t_out = min(t_max - (W (t_min - t_in) + b), t_max).
    Same constructor and state_dict as nn.Linear, plus the window."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 t_min: Optional[float] = None, t_max: Optional[float] = None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.t_min, self.t_max = None, None
        if t_min is not None or t_max is not None:
            self.set_window(t_min, t_max)

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return TF.linear(t_in, self.weight, self.bias, *self._window())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window=[{self.t_min}, {self.t_max}]"


class TTFSConv2d(_Windowed, nn.Conv2d):
    """Convolutional TTFS layer; padding holds t_min (activation 0). Same constructor and
    state_dict as nn.Conv2d (padding_mode 'zeros' only), plus the window. The bias may be
    replaced by a per-position one of shape (C_out, H_out, W_out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 t_min: Optional[float] = None, t_max: Optional[float] = None) -> None:
        if padding_mode != "zeros":
            raise ValueError("TTFSConv2d: padding_mode must be 'zeros' (the padding of spike times is t_min, "
                             f"i.e. activation 0), got {padding_mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.t_min, self.t_max = None, None
        if t_min is not None or t_max is not None:
            self.set_window(t_min, t_max)

    def _padding_pair(self) -> tuple[int, int]:
        if isinstance(self.padding, str):
            if self.padding == "valid":
                return (0, 0)
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if any(t % 2 for t in totals):
                raise ValueError("TTFSConv2d: padding='same' needs an odd effective kernel size")
            return (totals[0] // 2, totals[1] // 2)
        return tuple(self.padding)  # type: ignore[return-value]

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return TF.conv2d(t_in, self.weight, self.bias, *self._window(), self.stride, self._padding_pair(),
                         self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window=[{self.t_min}, {self.t_max}]"


class TTFSMaxPool2d(nn.MaxPool2d):
    """Max-pooling of activations = the earliest spike of each window. Spike times keep the
    window of the layer before."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False) -> None:
        if dilation != 1 or return_indices or ceil_mode:
            raise ValueError("TTFSMaxPool2d supports kernel_size, stride and padding only")
        super().__init__(kernel_size, stride, padding)

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return TF.max_pool2d(t_in, self.kernel_size, self.stride, self.padding)


class TTFSReadout(nn.Linear):
    """Non-spiking output layer: its membrane potential at t_min, V = W (t_min - t_in) + b,
    which equals the logits of the ReLU twin. Same constructor and state_dict as nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 t_min: Optional[float] = None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.t_min = None if t_min is None else float(t_min)

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        if self.t_min is None:
            raise RuntimeError("TTFSReadout: t_min is not set; pass t_min to the constructor or put the layer "
                               "in a TTFSSequential")
        return TF.readout(t_in, self.weight, self.bias, self.t_min)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, t_min={self.t_min}"


class TTFSEncoder(nn.Module):
    """Input values in [low, high] to spike times in [0, 1]: t = 1 - clamp((x - low)/(high - low), 0, 1)."""

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__()
        self.low, self.high = float(low), float(high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return TF.encode(x, self.low, self.high)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


@dataclass
class LayerReport:
    """Spike statistics of one spiking layer over a batch."""
    index: int
    name: str
    t_min: float
    t_max: float
    neurons: int                # per sample
    spikes_per_neuron: float    # fraction of neurons with t < t_max
    margin: float               # min(t_out) - t_min; negative: a spike before the window opens


@dataclass
class TTFSReport:
    layers: list[LayerReport] = field(default_factory=list)
    latency: Optional[float] = None   # t_min of the readout: when the logits are read

    @property
    def spikes_per_neuron(self) -> float:
        """Over all spiking layers, weighted by their neuron counts."""
        total = sum(r.neurons for r in self.layers)
        return sum(r.spikes_per_neuron * r.neurons for r in self.layers) / total if total else float("nan")

    def __str__(self) -> str:
        rows = [f"{'layer':<24}{'window':>24}{'neurons':>10}{'spikes/neuron':>15}{'margin':>12}"]
        for r in self.layers:
            window = f"[{r.t_min:.4g}, {r.t_max:.4g}]"
            rows.append(f"{r.index:>2} {r.name:<21}{window:>24}{r.neurons:>10}{r.spikes_per_neuron:>15.4f}"
                        f"{r.margin:>12.4g}")
        rows.append(f"latency (readout t_min): {self.latency}   spikes/neuron overall: {self.spikes_per_neuron:.4f}")
        return "\n".join(rows)


class TTFSSequential(nn.Sequential):
    """A TTFS network: modules applied in order, with the windows of its spiking layers chained.

    The input window is [0, 1]; spiking layer n fires in [t_min_n, t_min_n + widths[n]] with
    t_min_1 = 1 and t_min_{n+1} = t_max_n; a TTFSReadout reads its potential at the t_max of the
    last spiking layer (the latency). Other modules (pooling, flatten) keep spike times as they
    are. `widths` is one width for all spiking layers or one per layer; the windows are saved
    in the state_dict (as extra state) and restored on load.
    """

    def __init__(self, *modules: nn.Module, widths: Union[float, Sequence[float]] = 10.0) -> None:
        super().__init__(*modules)
        self.set_widths(widths)

    def spiking_layers(self) -> list[_Windowed]:
        return [m for m in self if isinstance(m, _Windowed)]

    @property
    def widths(self) -> list[float]:
        return [m.t_max - m.t_min for m in self.spiking_layers()]  # type: ignore[operator]

    @property
    def latency(self) -> float:
        """When the readout reads the logits: t_min of the readout = 1 + sum of the widths."""
        return 1.0 + math.fsum(self.widths)

    def set_widths(self, widths: Union[float, Sequence[float]]) -> None:
        """Set the window widths and re-chain every window."""
        layers = self.spiking_layers()
        if isinstance(widths, (int, float)):
            widths = [float(widths)] * len(layers)
        widths = [float(w) for w in widths]
        if len(widths) != len(layers):
            raise ValueError(f"TTFSSequential: got {len(widths)} widths for {len(layers)} spiking layers")
        if not all(math.isfinite(w) and w > 0 for w in widths):
            raise ValueError(f"TTFSSequential: widths must be positive and finite, got {widths}")
        t_min = 1.0  # the input window is [0, 1]
        it = iter(widths)
        for m in self:
            if isinstance(m, _Windowed):
                width = next(it)
                m.set_window(t_min, t_min + width)
                t_min = m.t_max
            elif isinstance(m, TTFSReadout):
                m.t_min = t_min

    def get_extra_state(self) -> dict[str, Any]:
        return {"widths": self.widths}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.set_widths(state["widths"])

    @torch.no_grad()
    def report(self, x: torch.Tensor, warn: bool = True) -> tuple[torch.Tensor, TTFSReport]:
        """Run the network on x and return (output, TTFSReport): per spiking layer the window,
        spikes per neuron (fraction with t < t_max) and margin min(t_out) - t_min. A negative
        margin means a spike before the window opens, where the closed form is no longer the
        true dynamics; it warns (widen that layer's window)."""
        report = TTFSReport()
        out = x
        for i, m in enumerate(self):
            out = m(out)
            if isinstance(m, _Windowed):
                t_min, t_max = m.t_min, m.t_max
                margin = float(out.min() - t_min) if out.numel() else float("inf")
                per_sample = out[0].numel() if out.dim() > 1 else out.numel()
                report.layers.append(LayerReport(
                    i, type(m).__name__, t_min, t_max, per_sample,
                    float((out < t_max).double().mean()) if out.numel() else 0.0, margin))
                if warn and margin < 0:
                    warnings.warn(f"TTFSSequential: layer {i} ({type(m).__name__}) fires at t={t_min + margin:.6g}, "
                                  f"before its window opens at t_min={t_min:.6g}; the closed form is not the true "
                                  f"neuron dynamics there. Widen that layer's window (width now {t_max - t_min:.6g}).",
                                  RuntimeWarning, stacklevel=2)
            elif isinstance(m, TTFSReadout):
                report.latency = m.t_min
        return out, report
