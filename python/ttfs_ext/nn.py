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
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from . import functional as TF, reference
from .robust import Robustness, fake_quantize, quantize_weight

__all__ = ["TTFSLinear", "TTFSConv2d", "TTFSAlphaLinear", "TTFSAlphaConv2d", "TTFSMaxPool2d", "TTFSReadout",
           "TTFSEncoder", "TTFSSequential", "LayerReport", "TTFSReport"]


class _Windowed:
    """A layer that fires in a window [t_min, t_max], both None until set by the user or a
    container. t_start is when its neurons start integrating: the t_min of the spiking layer
    before (0, the start of the input window, for the first), so its inputs fired in
    [t_start, t_min], a window of width in_width.

    Time axis: a layer on its own takes and gives absolute times (t_in in [t_start, t_min],
    t_out in [t_min, t_max]). In a TTFSSequential it runs in local time (`local` is set): each
    window measured from its own start, t_in in [0, in_width] and t_out in [0, width], so that
    float32 times round at the size of their window, not at the depth of the network. The
    absolute window stays in t_min, t_max and t_start, in float64, for reports and plots."""

    t_min: Optional[float]
    t_max: Optional[float]
    t_start: Optional[float] = None
    width: Optional[float] = None      # t_max - t_min
    in_width: Optional[float] = None   # t_min - t_start: the width of the input window
    local: bool = False

    def set_window(self, t_min: float, t_max: float, t_start: Optional[float] = None) -> None:
        """Set the window in absolute time: the layer then takes and gives absolute times. A
        layer chained in a TTFSSequential (local time) gets its width from the network."""
        if self.local:
            raise RuntimeError(f"{type(self).__name__}: this layer's window is chained in a TTFSSequential (local "
                               "time); set it with the network's set_widths()")
        t_min, t_max = float(t_min), float(t_max)
        if not (math.isfinite(t_min) and math.isfinite(t_max) and t_max > t_min):
            raise ValueError(f"{type(self).__name__}: the window must satisfy t_min < t_max, got [{t_min}, {t_max}]")
        if t_start is not None and not (math.isfinite(float(t_start)) and float(t_start) <= t_min):
            raise ValueError(f"{type(self).__name__}: t_start must satisfy t_start <= t_min, got t_start={t_start} "
                             f"and t_min={t_min}")
        self.t_min, self.t_max, self.width = t_min, t_max, t_max - t_min
        if t_start is not None:
            self.t_start = float(t_start)
        self.in_width = None if self.t_start is None else t_min - self.t_start

    def _chain(self, t_start: float, t_min: float, in_width: float, width: float) -> None:
        """Place the layer in a chain of windows, in local time, with exact widths (the absolute
        times follow from their sums)."""
        self.t_start, self.t_min, self.t_max = t_start, t_min, t_min + width
        self.in_width, self.width, self.local = in_width, width, True

    def _take_window(self, other: "_Windowed") -> None:
        self.t_start, self.t_min, self.t_max = other.t_start, other.t_min, other.t_max
        self.in_width, self.width, self.local = other.in_width, other.width, other.local

    def _start(self) -> float:
        if self.t_start is None:
            raise RuntimeError(f"{type(self).__name__}: t_start (when integration starts, the t_min of the spiking "
                               "layer before) is not set; pass it to set_window() or put the layer in a TTFSSequential")
        return self.t_start

    def _window(self) -> tuple[float, float]:
        """The absolute window [t_min, t_max]."""
        if self.t_min is None or self.t_max is None:
            raise RuntimeError(f"{type(self).__name__}: the window [t_min, t_max] is not set; pass t_min/t_max "
                               "to the constructor, call set_window(), or put the layer in a TTFSSequential")
        return self.t_min, self.t_max

    def _in_width(self) -> float:
        return self.in_width if self.in_width is not None else self._window()[0] - self._start()

    def _layer_scalars(self) -> dict[str, float]:
        """The window arguments of the B1 ops in the layer's time form."""
        t_min, t_max = self._window()
        return {"in_width": self.in_width, "width": self.width} if self.local else {"t_min": t_min, "t_max": t_max}

    def _event_scalars(self) -> dict[str, float]:
        """The window arguments of the first_spike ops in the layer's time form."""
        t_max = self._window()[1]
        return {"in_width": self.in_width, "width": self.width} if self.local else \
            {"t_start": self._start(), "t_max": t_max}

    def output_window(self) -> tuple[float, float]:
        """The layer's window on the axis of its output times: (0, width) in local time, else
        (t_min, t_max). An output below the first is a spike before the window opens; at the
        second, no spike."""
        return (0.0, self.width) if self.local else self._window()

    def input_window(self) -> tuple[float, float]:
        """The window of the layer's inputs on their axis: (0, in_width) in local time, else
        (t_start, t_min)."""
        return (0.0, self._in_width()) if self.local else (self._start(), self._window()[0])

    def absolute(self, t: torch.Tensor) -> torch.Tensor:
        """The layer's output times t on the absolute axis, in float64; no spike is t_max exactly."""
        if not self.local:
            return t.double()
        t_min, t_max = self._window()
        return torch.where(t >= self.width, t_max, t.double() + t_min)


class _B1Neurons(_Windowed):
    """B1 layers as general neurons: alpha = 1 - S_in (slope 1 once every input has arrived)
    and threshold = (t_max - t_start - b) - S_in (t_min - t_start) = (in_width + width - b) -
    S_in in_width, S_in the sum of a neuron's weights (of the taps inside the image for a
    convolution). mode="closed" (default) computes the closed form t_max - (W (t_min - t_in) +
    b); mode="event" the exact event-driven neuron (ttfs_ext.functional.first_spike_*), with
    exact gradients for W and b through alpha and the threshold: spikes before the window
    opens are then what the real network would do (latency fine-tuning trains through them)."""

    mode: str = "closed"

    def _weight_sum(self, in_shape: tuple) -> torch.Tensor:
        raise NotImplementedError

    def neuron_parameters(self, in_shape: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight, alpha, threshold) of the layer's neurons for inputs of per-sample shape
        in_shape, differentiable with respect to weight and bias. The threshold depends on the
        widths of the windows only, not on where they lie in time."""
        in_width, width = self._in_width(), self.width
        s_in = self._weight_sum(in_shape)
        b = self.bias if self.bias is not None else torch.zeros((), dtype=self.weight.dtype, device=self.weight.device)
        if s_in.dim() == 3 and b.dim() == 1:
            b = b.view(-1, 1, 1)
        return self.weight, 1.0 - s_in, (in_width + width - b) - s_in * in_width

    def set_mode(self, mode: str) -> None:
        if mode not in ("closed", "event"):
            raise ValueError(f"{type(self).__name__}: mode must be 'closed' or 'event', got {mode!r}")
        self.mode = mode

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return self.event_forward(t_in) if self.mode == "event" else self.closed_forward(t_in)


class TTFSLinear(_B1Neurons, nn.Linear):
    """Dense TTFS layer: t_out = min(t_max - (W (t_min - t_in) + b), t_max).
    Same constructor and state_dict as nn.Linear, plus the window (and mode, see _B1Neurons)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 t_min: Optional[float] = None, t_max: Optional[float] = None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.t_min, self.t_max = None, None
        if t_min is not None or t_max is not None:
            self.set_window(t_min, t_max)

    def _weight_sum(self, in_shape: tuple) -> torch.Tensor:
        return self.weight.sum(dim=1)

    def closed_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        """The closed form, whatever the mode."""
        return TF.linear(t_in, self.weight, self.bias, **self._layer_scalars())

    def event_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        """The exact event-driven neurons, whatever the mode."""
        weight, alpha, theta = self.neuron_parameters(tuple(t_in.shape[-1:]))
        return TF.first_spike_linear(t_in, weight, alpha, theta, **self._event_scalars())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window=[{self.t_min}, {self.t_max}]"


class TTFSConv2d(_B1Neurons, nn.Conv2d):
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

    def _weight_sum(self, in_shape: tuple) -> torch.Tensor:
        ones = torch.ones((1, *in_shape[-3:]), dtype=self.weight.dtype, device=self.weight.device)
        s_in = nn.functional.conv2d(ones, self.weight, None, self.stride, self._padding_pair(), self.dilation,
                                    self.groups)[0]
        flat = s_in.detach().reshape(s_in.shape[0], -1)
        if bool((flat == flat[:, :1]).all()) and (self.bias is None or self.bias.dim() == 1):
            return s_in[:, 0, 0]  # no padding in play: the same for every position
        return s_in

    def closed_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        """The closed form, whatever the mode."""
        return TF.conv2d(t_in, self.weight, self.bias, stride=self.stride, padding=self._padding_pair(),
                         dilation=self.dilation, groups=self.groups, **self._layer_scalars())

    def event_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        """The exact event-driven neurons, whatever the mode."""
        weight, alpha, theta = self.neuron_parameters(tuple(t_in.shape[-3:]))
        return TF.first_spike_conv2d(t_in, weight, alpha, theta, stride=self.stride, padding=self._padding_pair(),
                                     dilation=self.dilation, groups=self.groups, **self._event_scalars())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window=[{self.t_min}, {self.t_max}]"


class _AlphaNeurons(_Windowed):
    """Layers of general alpha-model neurons (Stanojevic et al. 2022): synaptic weights J
    (`weight`), a constant bias current `alpha` from t_start (a buffer: fixed, 1 in the
    alpha1 mapping) and a firing threshold `threshold` (a parameter, set for the widths of the
    windows it was made for, wherever they lie in time). dV/dt = alpha H(t - t_start) + sum_j J_j H(t - t_j).

    mode="closed" (default) evaluates the closed form that assumes every input arrived before
    the spike, t = t_start + (threshold + sum_j J_j (t_j - t_start)) / (alpha + sum_j J_j),
    as fast tensor ops; mode="event" runs the exact event-driven neuron
    (ttfs_ext.functional.first_spike_*). Both clamp at t_max (no spike)."""

    mode: str

    def _check_mode(self, mode: str) -> str:
        if mode not in ("closed", "event"):
            raise ValueError(f"{type(self).__name__}: mode must be 'closed' or 'event', got {mode!r}")
        return mode

    def _activations(self, t_in: torch.Tensor) -> torch.Tensor:
        """x = in_width - max(t_in - t_start, 0) on the inputs' axis: the inputs as activations,
        0 for a silent one (an input before t_start acts from t_start)."""
        return self._in_width() - reference.arrival(t_in, self.input_window()[0])

    def _fire(self, numerator: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        """The spike time on the outputs' axis, t_min + numerator / slope (t_min = 0 in local
        time), where the slope is positive and the time falls before the window's end; else
        the end (no spike). The closed form t = t_start + (theta + sum_j J_j (t_j - t_start)) / B
        is written as t = t_min + (theta - alpha in_width - sum_j J_j x_j) / B with the inputs'
        activations x (B = alpha + S_in, S_in the sum of J over the arrived taps): silent inputs
        add nothing, and no large offset is added and taken away again (each cost the float32
        network several times its twin's error, measured on a converted one)."""
        lo, hi = self.output_window()
        rising = slope > 0  # after the last input the potential must rise, or the neuron never fires
        t = numerator / torch.where(rising, slope, torch.ones_like(slope))
        t = t + lo if lo else t
        return torch.where(rising & (t < hi), t, torch.full_like(t, hi))

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return self.event_forward(t_in) if self.mode == "event" else self.closed_forward(t_in)


class TTFSAlphaLinear(_AlphaNeurons, nn.Module):
    """Dense layer of general alpha-model neurons (see _AlphaNeurons): weight (out, in),
    alpha and threshold (out,). Built by ttfs_ext.convert(..., mapping="alpha1")."""

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None, *,
                 t_min: Optional[float] = None, t_max: Optional[float] = None, t_start: Optional[float] = None,
                 mode: str = "closed") -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Linear
        self.threshold = nn.Parameter(torch.ones(out_features, **factory))
        self.register_buffer("alpha", torch.ones(out_features, **factory))
        self.mode = self._check_mode(mode)
        self.t_min, self.t_max, self.t_start = None, None, None
        if t_min is not None or t_max is not None:
            self.set_window(t_min, t_max, t_start)

    def closed_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        numerator = self.threshold - self.alpha * self._in_width() - nn.functional.linear(
            self._activations(t_in), self.weight)
        return self._fire(numerator, self.alpha + self.weight.sum(dim=1))

    def event_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return TF.first_spike_linear(t_in, self.weight, self.alpha, self.threshold, **self._event_scalars())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}, "
                f"window=[{self.t_min}, {self.t_max}], t_start={self.t_start}")


class TTFSAlphaConv2d(_AlphaNeurons, nn.Module):
    """Convolutional layer of general alpha-model neurons (see _AlphaNeurons): weight
    (C_out, C_in/groups, kH, kW); alpha and threshold (C_out,) or per output position
    (C_out, H_out, W_out). Padding never spikes: a padded tap adds no current."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, device=None, dtype=None, *, t_min: Optional[float] = None,
                 t_max: Optional[float] = None, t_start: Optional[float] = None, mode: str = "closed") -> None:
        super().__init__()
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        factory = dict(device=device, dtype=dtype)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Conv2d
        self.threshold = nn.Parameter(torch.ones(out_channels, **factory))
        self.register_buffer("alpha", torch.ones(out_channels, **factory))
        self.mode = self._check_mode(mode)
        self.t_min, self.t_max, self.t_start = None, None, None
        if t_min is not None or t_max is not None:
            self.set_window(t_min, t_max, t_start)

    def _padding_pair(self) -> tuple[int, int]:
        return self.padding  # type: ignore[return-value]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # alpha and threshold may be per position: take the shapes of the checkpoint.
        for name in ("alpha", "threshold"):
            value = state_dict.get(prefix + name)
            if value is not None and value.shape != getattr(self, name).shape:
                getattr(self, name).data = torch.empty_like(value, device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def closed_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        x = self._activations(t_in if t_in.dim() == 4 else t_in[None])
        ones = torch.ones_like(x[:1, :1]).expand(1, x.shape[1], *x.shape[2:])
        weight_sum = nn.functional.conv2d(ones, self.weight, None, *geometry)  # taps inside the image
        per_channel = lambda p: p.view(-1, 1, 1) if p.dim() == 1 else p  # noqa: E731
        alpha = per_channel(self.alpha)
        # zero padding: a padded tap never arrives, so adds neither to the sum nor to the slope
        numerator = per_channel(self.threshold) - alpha * self._in_width() - \
            nn.functional.conv2d(x, self.weight, None, *geometry)
        out = self._fire(numerator, alpha + weight_sum)
        return out if t_in.dim() == 4 else out.squeeze(0)

    def event_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return TF.first_spike_conv2d(t_in, self.weight, self.alpha, self.threshold, stride=self.stride,
                                     padding=self.padding, dilation=self.dilation, groups=self.groups,
                                     **self._event_scalars())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, mode={self.mode}, "
                f"window=[{self.t_min}, {self.t_max}], t_start={self.t_start}")


class TTFSMaxPool2d(nn.MaxPool2d):
    """Max-pooling of activations = the earliest spike of each window. Spike times keep the
    window of the layer before.

    channel_sign (C,) of +1/-1, optional: channels with -1 pool the latest spike instead
    (min-pooling of activations). Conversion needs it where a batch norm with a negative
    scale is folded across the pool (max(k x) = k min(x) for k < 0)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False, *, channel_sign: Optional[torch.Tensor] = None) -> None:
        if dilation != 1 or return_indices or ceil_mode:
            raise ValueError("TTFSMaxPool2d supports kernel_size, stride and padding only")
        super().__init__(kernel_size, stride, padding)
        if channel_sign is not None:
            channel_sign = torch.as_tensor(channel_sign)
            if channel_sign.dim() != 1 or not bool(((channel_sign == 1) | (channel_sign == -1)).all()):
                raise ValueError("TTFSMaxPool2d: channel_sign must be a 1-D tensor of +1 and -1")
        self.register_buffer("channel_sign", channel_sign)

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        if self.channel_sign is None:
            return TF.max_pool2d(t_in, self.kernel_size, self.stride, self.padding)
        channels = t_in.shape[-3]
        if self.channel_sign.numel() != channels:
            raise ValueError(f"TTFSMaxPool2d: channel_sign has {self.channel_sign.numel()} entries but t_in has "
                             f"{channels} channels")
        sign = self.channel_sign.to(t_in).view(channels, 1, 1)  # x -1 is exact: the pooling stays exact
        return sign * TF.max_pool2d(sign * t_in, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        extra = "" if self.channel_sign is None else f", latest-spike channels={int((self.channel_sign < 0).sum())}"
        return super().extra_repr() + extra


class TTFSReadout(nn.Linear):
    """Non-spiking output layer: its membrane potential at t_min, V = W (t_min - t_in) + b,
    which equals the logits of the ReLU twin. Same constructor and state_dict as nn.Linear.
    On its own it takes absolute times; in a TTFSSequential, local times (V = W (in_width -
    tau_in) + b, in_width the width of the last spiking layer's window)."""

    t_start: Optional[float] = None
    in_width: Optional[float] = None
    local: bool = False
    mode: str = "closed"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 t_min: Optional[float] = None, mode: str = "closed") -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.t_min = None if t_min is None else float(t_min)
        self.t_start: Optional[float] = None  # the start of its input window (set by a TTFSSequential)
        self.in_width: Optional[float] = None
        self.local = False
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        """"closed": V = W (t_min - t_in) + b on the times as they are; "event": the readout
        neuron integrates from the start of its input window like every event-driven neuron, so
        an input that spiked before it (early) acts from then: W (t_min - max(t_in, t_start)) + b."""
        if mode not in ("closed", "event"):
            raise ValueError(f"TTFSReadout: mode must be 'closed' or 'event', got {mode!r}")
        self.mode = mode

    def _chain(self, t_start: float, t_min: float, in_width: float) -> None:
        self.t_start, self.t_min, self.in_width, self.local = t_start, t_min, in_width, True

    def input_window(self, t_start: Optional[float] = None) -> tuple[float, float]:
        """The window of the readout's inputs on their axis: (0, in_width) in local time, else
        (t_start, t_min), t_start given here where the readout has none of its own."""
        if self.local:
            return 0.0, self.in_width
        t_start = self.t_start if self.t_start is not None else t_start
        if self.t_min is None or t_start is None:
            raise RuntimeError("TTFSReadout: its input window is not set (t_min and the t_start of its inputs); put "
                               "the layer in a TTFSSequential")
        return t_start, self.t_min

    def closed_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        if self.local:
            return TF.readout(t_in, self.weight, self.bias, in_width=self.in_width)
        if self.t_min is None:
            raise RuntimeError("TTFSReadout: t_min is not set; pass t_min to the constructor or put the layer "
                               "in a TTFSSequential")
        return TF.readout(t_in, self.weight, self.bias, self.t_min)

    def event_forward(self, t_in: torch.Tensor, t_start: Optional[float] = None) -> torch.Tensor:
        """The readout neuron integrating from the start of its input window (t_start: for a
        readout outside a TTFSSequential, the t_min of the spiking layer before)."""
        return self.closed_forward(reference.clamp(t_in, low=self.input_window(t_start)[0]))

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return self.event_forward(t_in) if self.mode == "event" else self.closed_forward(t_in)

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
    in the state_dict (as extra state, widths only) and restored on load.

    Spike times travel between the layers in local time: each spiking layer gives its times
    from the start of its own window, in [0, width] (width: no spike; below 0: a spike before
    the window opens), and the encoder's lie in [0, 1]. So a float32 network is as precise as
    its ReLU twin however deep it is. The absolute times are the local ones plus each layer's
    t_min (float64): spike_times(x), report() and ttfs_ext.simulate give them.
    """

    def __init__(self, *modules: nn.Module, widths: Union[float, Sequence[float]] = 10.0) -> None:
        super().__init__(*modules)
        self.set_widths(widths)
        self.robustness: Optional[Robustness] = None

    def set_mode(self, mode: str) -> None:
        """"closed" (closed forms) or "event" (exact event-driven neurons) for every spiking layer
        and the readout."""
        for m in self:
            if isinstance(m, (_B1Neurons, TTFSReadout)):
                m.set_mode(mode)
            elif isinstance(m, _AlphaNeurons):
                m.mode = m._check_mode(mode)

    def set_robustness(self, robustness: Optional[Robustness] = None, **options: Any) -> None:
        """Hardware non-idealities in every forward pass (see ttfs_ext.robust.Robustness):
        set_robustness(noise=0.05, time_bits=4, weight_bits=4); set_robustness(None) clears."""
        if robustness is not None and options:
            raise TypeError("set_robustness: pass a Robustness or keyword options, not both")
        self.robustness = Robustness(**options) if options else robustness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = getattr(self, "robustness", None)
        if r is None or not r.active:
            return super().forward(x)
        out = x
        for m in self:
            if isinstance(m, (_Windowed, TTFSReadout)):
                if r.time_bits:  # input times lie in the window before: [0, in_width] in local time
                    out = fake_quantize(out, *m.input_window(), r.time_bits)
                if r.weight_bits:
                    weight = quantize_weight(m.weight, r.weight_bits, r.weight_range)
                    out = torch.func.functional_call(m, {"weight": weight}, (out,), strict=False)
                else:
                    out = m(out)
                if isinstance(m, _Windowed) and r.noise:
                    out = out + r.noise * torch.randn_like(out)
            elif isinstance(m, TTFSEncoder):
                out = m(out)
                if r.input_sigma:
                    out = reference.clamp(out + r.input_sigma * torch.randn_like(out), low=0.0)
            else:
                out = m(out)
        return out

    def spiking_layers(self) -> list[_Windowed]:
        return [m for m in self if isinstance(m, _Windowed)]

    _slice = False  # a view of another network's layers (net[i:j]): their windows are that network's

    def __getitem__(self, idx):
        if isinstance(idx, slice):  # the same modules, windows as they are (nn.Sequential would re-chain them)
            sub = TTFSSequential.__new__(TTFSSequential)
            nn.Sequential.__init__(sub, OrderedDict(list(self._modules.items())[idx]))
            sub.robustness = getattr(self, "robustness", None)
            sub._slice = True
            return sub
        return super().__getitem__(idx)

    def __setitem__(self, idx: int, module: nn.Module) -> None:
        """Replace a module; a spiking layer (or readout) takes the place of the one before in
        the chain of windows."""
        old = self[idx]
        windowed = (_Windowed, TTFSReadout)
        same_kind = (isinstance(module, _Windowed) and isinstance(old, _Windowed)) or \
            (isinstance(module, TTFSReadout) and isinstance(old, TTFSReadout))
        if (isinstance(module, windowed) or isinstance(old, windowed)) and not same_kind:
            raise TypeError("TTFSSequential: a spiking layer or readout can only replace one of its kind "
                            "(to change the layers, build a new TTFSSequential)")
        super().__setitem__(idx, module)
        if isinstance(module, _Windowed):
            module._take_window(old)
        elif isinstance(module, TTFSReadout) and old.local:
            module._chain(old.t_start, old.t_min, old.in_width)

    # Adding or removing modules re-chains the windows (every spiking layer keeps its width).
    def append(self, module: nn.Module) -> "TTFSSequential":
        self._check_window([module])
        super().append(module)
        self.set_widths(self.widths)
        return self

    def insert(self, index: int, module: nn.Module) -> "TTFSSequential":
        self._check_window([module])
        super().insert(index, module)
        self.set_widths(self.widths)
        return self

    def extend(self, sequential) -> "TTFSSequential":
        sequential = list(sequential)
        self._check_window(sequential)
        super().extend(sequential)
        self.set_widths(self.widths)
        return self

    def __delitem__(self, idx) -> None:
        super().__delitem__(idx)
        self.set_widths(self.widths)

    @staticmethod
    def _check_window(modules: Sequence[nn.Module]) -> None:
        missing = [type(m).__name__ for m in modules if isinstance(m, _Windowed) and m.width is None]
        if missing:
            raise ValueError(f"TTFSSequential: spiking layers without a window ({', '.join(missing)}); give them one "
                             "(set_window) before adding them, or build the network with widths=")

    @property
    def widths(self) -> list[float]:
        return [m.width for m in self.spiking_layers()]  # type: ignore[misc]

    @property
    def latency(self) -> float:
        """When the readout reads the logits: t_min of the readout = 1 + sum of the widths."""
        return 1.0 + math.fsum(self.widths)

    def set_widths(self, widths: Union[float, Sequence[float]]) -> None:
        """Set the window widths and re-chain every window."""
        if self._slice:
            raise RuntimeError("TTFSSequential: this is a slice of a network, sharing its layers and their windows; "
                               "set the widths on the network")
        layers = self.spiking_layers()
        if isinstance(widths, (int, float)):
            widths = [float(widths)] * len(layers)
        widths = [float(w) for w in widths]
        if len(widths) != len(layers):
            raise ValueError(f"TTFSSequential: got {len(widths)} widths for {len(layers)} spiking layers")
        if not all(math.isfinite(w) and w > 0 for w in widths):
            raise ValueError(f"TTFSSequential: widths must be positive and finite, got {widths}")
        # The input window is [0, 1]; the absolute times are exact sums of the widths (fsum).
        t_start, t_min, in_width, done = 0.0, 1.0, 1.0, [1.0]
        it = iter(widths)
        for m in self:
            if isinstance(m, _Windowed):
                width = next(it)
                m._chain(t_start, t_min, in_width, width)
                done.append(width)
                t_start, t_min, in_width = t_min, math.fsum(done), width
                m.t_max = t_min
            elif isinstance(m, TTFSReadout):
                m._chain(t_start, t_min, in_width)

    def get_extra_state(self) -> dict[str, Any]:
        return {"widths": self.widths}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.set_widths(state["widths"])

    @torch.no_grad()
    def spike_times(self, x: torch.Tensor, absolute: bool = True) -> list[tuple[int, nn.Module, torch.Tensor]]:
        """(index, layer, spike times) of every spiking layer on x: absolute times in float64
        (the local ones plus the layer's t_min), or with absolute=False the local times the
        network carries."""
        out, layers = x, []
        for i, m in enumerate(self):
            out = m(out)
            if isinstance(m, _Windowed):
                layers.append((i, m, m.absolute(out) if absolute else out))
        return layers

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
                t_min, t_max = m._window()
                lo, hi = m.output_window()
                margin = float(out.min()) - lo if out.numel() else float("inf")
                per_sample = out[0].numel() if out.dim() > 1 else out.numel()
                report.layers.append(LayerReport(
                    i, type(m).__name__, t_min, t_max, per_sample,
                    float((out < hi).double().mean()) if out.numel() else 0.0, margin))
                if warn and margin < 0:
                    warnings.warn(f"TTFSSequential: layer {i} ({type(m).__name__}) fires at t={t_min + margin:.6g}, "
                                  f"before its window opens at t_min={t_min:.6g}; the closed form is not the true "
                                  f"neuron dynamics there. Widen that layer's window (width now {t_max - t_min:.6g}).",
                                  RuntimeWarning, stacklevel=2)
            elif isinstance(m, TTFSReadout):
                report.latency = m.t_min
        return out, report
