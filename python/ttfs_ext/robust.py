"""Hardware non-idealities for fine-tuning and evaluation (Stanojevic et al. 2024, robust
training): Gaussian noise on spike times, fake quantisation of spike times and weights with
a straight-through gradient. Set on a network with TTFSSequential.set_robustness().

Spike times are quantised relative to the window they lie in: the input times of a layer
lie in [t_start, t_min] (the window of the layer before; [0, 1] for the network's input),
so k bits give 2^k levels over that window in every layer (the reference code's range is
right only in the first layer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from . import reference

__all__ = ["Robustness", "fake_quantize", "quantize_weight"]


def fake_quantize(x: torch.Tensor, low: float, high: float, bits: int) -> torch.Tensor:
    """Round x to the 2^bits levels of [low, high] (clamping first). Straight-through
    gradient: the identity on [low, high], limits included, zero outside (as TensorFlow's
    fake_quant; ttfs_ext.reference.clamp)."""
    if not (isinstance(bits, int) and bits >= 1):
        raise ValueError(f"fake_quantize: bits must be an int >= 1, got {bits!r}")
    if not high > low:
        raise ValueError(f"fake_quantize: need low < high, got [{low}, {high}]")
    step = (high - low) / (2 ** bits - 1)
    clamped = reference.clamp(x, low, high)
    rounded = low + torch.round((clamped - low) / step) * step
    return clamped + (rounded - clamped).detach()


def quantize_weight(weight: torch.Tensor, bits: int, weight_range: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """Fake-quantise a weight tensor to `bits` bits over weight_range, or over the symmetric
    range [-max|w|, max|w|] of the tensor when weight_range is None."""
    if weight_range is None:
        bound = float(weight.detach().abs().max()) if weight.numel() else 1.0
        weight_range = (-bound, bound) if bound > 0 else (-1.0, 1.0)
    return fake_quantize(weight, float(weight_range[0]), float(weight_range[1]), bits)


@dataclass
class Robustness:
    """noise: std of the Gaussian noise added to every spiking layer's output times in every
    forward pass (training and evaluation). input_noise: the same on the input spike times
    (clamped at 0); None uses `noise`. time_bits: quantise every layer's input times to
    2^time_bits levels of their window. weight_bits: quantise the weights of every spiking
    layer and of the readout (over weight_range, or symmetric per layer)."""
    noise: float = 0.0
    input_noise: Optional[float] = None
    time_bits: Optional[int] = None
    weight_bits: Optional[int] = None
    weight_range: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        for name in ("noise", "input_noise"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Robustness: {name} must be >= 0, got {value}")
        for name in ("time_bits", "weight_bits"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"Robustness: {name} must be an int >= 1 or None, got {value!r}")

    @property
    def active(self) -> bool:
        return bool(self.noise or self.input_noise or self.time_bits or self.weight_bits)

    @property
    def input_sigma(self) -> float:
        return self.noise if self.input_noise is None else self.input_noise
