"""The calibration pass: the calibration data read once, then the windows sized on it.

The data is read once into float64 batches, held in memory; every later step runs on those
batches, each network evaluated a fixed number of times per sample (not once per layer):
the activation widths need one pass, the event-safe widths one layer loop.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Optional, Union

import torch

from .. import nn as tnn
from .fold import F64, AffineStep
from .mappings import mapped_neurons

__all__ = ["Data", "read", "input_range", "activation_maxima", "event_safe_widths"]

Data = Union[torch.Tensor, Iterable[Any]]


def batches(data: Data, batch_size: int = 512) -> Iterator[torch.Tensor]:
    """Input tensors from a tensor (split into batches) or an iterable of tensors or of
    (input, ...) tuples, such as a DataLoader."""
    if isinstance(data, torch.Tensor):
        yield from data.split(batch_size)
        return
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise TypeError("ttfs_ext.convert: data must be a tensor or an iterable of tensors or (input, ...) "
                            f"tuples, got an item of type {type(x).__name__}")
        yield x


def float64_batches(data: Data) -> Iterator[torch.Tensor]:
    """The non-empty batches of the data, in float64 on the CPU."""
    for x in batches(data):
        if x.numel():
            yield x.to(F64).cpu()


def read(data: Data) -> tuple[list[torch.Tensor], tuple[float, float]]:
    """The calibration data's non-empty batches in float64 on the CPU, and its (min, max)."""
    held, lo, hi = [], math.inf, -math.inf
    for x in batches(data):
        if x.numel():
            x_lo, x_hi = (float(v) for v in torch.aminmax(x))  # NaN propagates into both
            if not (math.isfinite(x_lo) and math.isfinite(x_hi)):
                raise ValueError("ttfs_ext.convert: calibration_data contains NaN or inf")
            lo, hi = min(lo, x_lo), max(hi, x_hi)
            held.append(x.to(F64).cpu())
    if lo > hi:
        raise ValueError("ttfs_ext.convert: calibration_data is empty")
    return held, (lo, hi)


def input_range(data_range: tuple[float, float], requested: Optional[tuple[float, float]]) -> tuple[float, float]:
    """The input range to encode: the one requested (the data must lie inside), else the data's."""
    lo, hi = data_range
    if requested is None:
        if not hi > lo:
            raise ValueError(f"ttfs_ext.convert: the calibration data is constant ({lo}); pass input_range")
        return lo, hi
    try:
        low, high = (float(v) for v in requested)
    except (TypeError, ValueError):
        raise ValueError(f"ttfs_ext.convert: input_range must be a pair (low, high), got {requested!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"ttfs_ext.convert: input_range must satisfy low < high, got {requested!r}")
    if lo < low or hi > high:
        raise ValueError(f"ttfs_ext.convert: the calibration data spans [{lo:.6g}, {hi:.6g}], outside input_range "
                         f"({low:.6g}, {high:.6g}); inputs outside the range would be clipped by the encoder, and the "
                         "TTFS network would differ from the ReLU network there")
    return low, high


@torch.no_grad()
def activation_maxima(net: tnn.TTFSSequential, held: list[torch.Tensor]) -> list[float]:
    """Per spiking layer, its largest activation on the batches: one pass of the network. The
    B1 closed form has no lower clamp, so the window's end - t is the activation whatever
    the provisional windows are."""
    maxima = [0.0] * len(net.spiking_layers())
    for x in held:
        _, stats = tnn.run_with_stats(net, x)
        maxima = [max(m, s.activation_max) for m, s in zip(maxima, stats.layers)]
    return maxima


@torch.no_grad()
def event_safe_widths(net: tnn.TTFSSequential, spiking_steps: list[AffineStep], held: list[torch.Tensor],
                      zeta: float, mapping: str) -> None:
    """Widen each window, in order, to (1 + zeta) x the width at which the neurons' potential
    stays below threshold until the window opens, on the batches (width_below_threshold of
    ttfs_ext.nn.neurons). One loop over the layers: each is applied to every batch once, after
    its window is final, so the next layer sees its inputs as the final network gives them."""
    from ..events import peak_potential

    widths = net.widths
    if not widths:
        return
    steps = iter(spiking_steps)
    inputs, n = held, 0
    for m in net:
        if isinstance(m, tnn.SpikingLayer):
            step = next(steps)
            j, slope, s_in = mapped_neurons(step, mapping)
            alpha = tnn.integration_bias(s_in, slope)
            start, end = m.input_window()  # (0, in_width): the inputs' window, in local time
            need = 0.0
            for t in inputs:
                peak = peak_potential(t, j, alpha, start, end, step.conv)
                need = max(need, float(tnn.width_below_threshold(peak, alpha, end - start, step.bias, slope).max()))
            widths[n] = max(widths[n], (1.0 + zeta) * need)
            net.set_widths(widths)
            n += 1
            if n == len(widths):
                break
        inputs = [m(t) for t in inputs]
