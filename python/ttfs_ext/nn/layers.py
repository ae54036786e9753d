"""The TTFS layers: B1 spiking layers (TTFSLinear, TTFSConv2d), general alpha-model layers
(TTFSAlphaLinear, TTFSAlphaConv2d), the max-pool, the readout and the encoder.

TTFSLinear, TTFSConv2d and TTFSReadout take the constructor arguments and have the
state_dict keys of nn.Linear / nn.Conv2d, so a ReLU network's checkpoint loads into its TTFS
twin.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .. import functional as TF, reference
from .neurons import alpha_and_threshold, inside_sum
from .window import SpikingLayer, check_mode

__all__ = ["TTFSLinear", "TTFSConv2d", "TTFSAlphaLinear", "TTFSAlphaConv2d", "TTFSMaxPool2d", "TTFSReadout",
           "TTFSEncoder", "explicit_padding"]


def explicit_padding(padding, kernel_size: tuple, dilation: tuple) -> Optional[tuple[int, int]]:
    """A Conv2d's padding as a pair; 'same' needs an odd effective kernel (None: it would pad
    asymmetrically)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
        if any(t % 2 for t in totals):
            return None
        return (totals[0] // 2, totals[1] // 2)
    return (padding, padding) if isinstance(padding, int) else tuple(padding)  # type: ignore[return-value]


class _B1Neurons(SpikingLayer):
    """B1 layers as general neurons (ttfs_ext.nn.neurons: alpha = 1 - S_in, slope 1 once every
    input has arrived). mode="closed" (default) computes the closed form t_max - (W (t_min -
    t_in) + b); mode="event" the exact event-driven neuron (ttfs_ext.functional.first_spike_*),
    with exact gradients for W and b through alpha and the threshold: spikes before the window
    opens are then what the real network would do (latency fine-tuning trains through them)."""

    def _weight_sum(self, in_shape: tuple) -> torch.Tensor:
        raise NotImplementedError

    def neuron_parameters(self, in_shape: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight, alpha, threshold) of the layer's neurons for inputs of per-sample shape
        in_shape, differentiable with respect to weight and bias."""
        in_width = self._in_width()
        alpha, threshold = alpha_and_threshold(self._weight_sum(in_shape), self.bias, in_width, in_width + self.width)
        return self.weight, alpha, threshold

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window=[{self.t_min}, {self.t_max}]"


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

    def padding_pair(self) -> tuple[int, int]:
        """The padding as a pair of ints ('same' and 'valid' resolved)."""
        pair = explicit_padding(self.padding, self.kernel_size, self.dilation)
        if pair is None:
            raise ValueError("TTFSConv2d: padding='same' needs an odd effective kernel size")
        return pair

    def _weight_sum(self, in_shape: tuple) -> torch.Tensor:
        s_in = inside_sum(self.weight, in_shape, self.stride, self.padding_pair(), self.dilation, self.groups)
        flat = s_in.detach().reshape(s_in.shape[0], -1)
        if bool((flat == flat[:, :1]).all()) and (self.bias is None or self.bias.dim() == 1):
            return s_in[:, 0, 0]  # no padding in play: the same for every position
        return s_in

    def closed_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        """The closed form, whatever the mode."""
        return TF.conv2d(t_in, self.weight, self.bias, stride=self.stride, padding=self.padding_pair(),
                         dilation=self.dilation, groups=self.groups, **self._layer_scalars())

    def event_forward(self, t_in: torch.Tensor) -> torch.Tensor:
        """The exact event-driven neurons, whatever the mode."""
        weight, alpha, theta = self.neuron_parameters(tuple(t_in.shape[-3:]))
        return TF.first_spike_conv2d(t_in, weight, alpha, theta, stride=self.stride, padding=self.padding_pair(),
                                     dilation=self.dilation, groups=self.groups, **self._event_scalars())


class _AlphaNeurons(SpikingLayer):
    """Layers of general alpha-model neurons (Stanojevic et al. 2022): synaptic weights J
    (`weight`), a constant bias current `alpha` from t_start (a buffer: fixed, 1 in the
    alpha1 mapping) and a firing threshold `threshold` (a parameter, set for the widths of the
    windows it was made for, wherever they lie in time). dV/dt = alpha H(t - t_start) + sum_j J_j H(t - t_j).

    mode="closed" (default) evaluates the closed form that assumes every input arrived before
    the spike, t = t_start + (threshold + sum_j J_j (t_j - t_start)) / (alpha + sum_j J_j),
    as fast tensor ops; mode="event" runs the exact event-driven neuron
    (ttfs_ext.functional.first_spike_*). Both clamp at t_max (no spike)."""

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
        add nothing, and no large offset is added and taken away again (each would cost float32
        precision)."""
        lo, hi = self.output_window()
        rising = slope > 0  # after the last input the potential must rise, or the neuron never fires
        t = numerator / torch.where(rising, slope, torch.ones_like(slope))
        t = t + lo if lo else t
        return torch.where(rising & (t < hi), t, torch.full_like(t, hi))

    def _init_neurons(self, out_features: int, mode: str, factory: dict, t_min, t_max, t_start) -> None:
        self.threshold = nn.Parameter(torch.ones(out_features, **factory))
        self.register_buffer("alpha", torch.ones(out_features, **factory))
        self.set_mode(mode)
        self.t_min, self.t_max, self.t_start = None, None, None
        if t_min is not None or t_max is not None:
            self.set_window(t_min, t_max, t_start)


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
        self._init_neurons(out_features, mode, factory, t_min, t_max, t_start)

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
        self._init_neurons(out_channels, mode, factory, t_min, t_max, t_start)

    def padding_pair(self) -> tuple[int, int]:
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
        weight_sum = inside_sum(self.weight, tuple(x.shape[1:]), *geometry)
        per_channel = lambda p: p.view(-1, 1, 1) if p.dim() == 1 else p  # noqa: E731
        alpha = per_channel(self.alpha)
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
        self.mode = check_mode(self, mode)

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

