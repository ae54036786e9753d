"""convert: a trained ReLU network to an exact TTFS network (fold, map, calibrate, report)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .. import nn as tnn
from .agreement import compare, float64_copy
from . import calibration
from .calibration import Data, activation_maxima, event_safe_widths, read
from .fold import AffineStep, fold
from .mappings import alpha1_layer, build_b1, rescale_alpha1
from .report import ConversionReport, SpikingLayerInfo

__all__ = ["convert"]


def convert(model: nn.Module, calibration_data: Data, input_range: Optional[tuple[float, float]] = None,
            zeta: float = 0.5, mapping: str = "b1", windows: str = "activation",
            dtype: Optional[torch.dtype] = None) -> tnn.TTFSSequential:
    """Convert a trained ReLU network into an exact TTFS network, returned in the model's dtype
    and on its device (the conversion and its check run in float64 on the CPU).

    calibration_data: a tensor of model inputs, or an iterable of tensors or (input, ...)
    batches (a DataLoader), read once; the windows are sized on it and the agreement is
    measured on it.
    input_range: (low, high), the range of the model's inputs, encoded as spike times
    1 - (x - low)/(high - low) in [0, 1]; inputs outside it would be clipped, so the
    calibration data must lie inside. Default: the calibration data's min and max.
    zeta: safety margin, each window is (1 + zeta) x its layer's largest activation.
    mapping: "b1" (W = w, slope 1; Stanojevic et al. 2024) or "alpha1" (alpha = 1, J = B w;
    Stanojevic et al. 2022).
    windows: "activation" (the papers' rule: (1 + zeta) x the largest activation) or "event"
    ((1 + zeta) x the smallest width at which no neuron's potential reaches its threshold
    before its window opens, on the calibration data: the event-driven network is then exact
    there too, at the cost of latency). The closed form is exact with either; with
    "activation", a neuron whose inputs drive its potential over the threshold while they
    still arrive fires early in the true dynamics (ttfs_ext.simulate counts such spikes).
    dtype: of the returned network (default: the model's floating-point dtype, float32 for a
    float32 model; torch.float64 keeps the conversion's own precision, for exactness checks).

    Returns a TTFSSequential whose attribute `conversion` (a ConversionReport) lists the
    windows, the spikes per neuron and the agreement on the calibration data. Raises
    ConversionError, naming the layer, for a model that cannot be mapped exactly.
    """
    if mapping not in ("b1", "alpha1"):
        raise ValueError(f"ttfs_ext.convert: mapping must be 'b1' or 'alpha1', got {mapping!r}")
    if not (isinstance(zeta, (int, float)) and math.isfinite(zeta) and zeta > -1):
        raise ValueError(f"ttfs_ext.convert: zeta must be a number > -1, got {zeta!r}")
    if windows not in ("activation", "event"):
        raise ValueError(f"ttfs_ext.convert: windows must be 'activation' or 'event', got {windows!r}")
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"ttfs_ext.convert: dtype must be torch.float32 or torch.float64, got {dtype!r}")
    source = next((p for p in model.parameters() if p.is_floating_point()), None)
    out_dtype = dtype or (source.dtype if source is not None and source.dtype in (torch.float32, torch.float64)
                          else torch.float32)
    out_device = source.device if source is not None else torch.device("cpu")
    model = float64_copy(model)
    held, data_range = read(calibration_data)  # the only pass over calibration_data
    low, high = calibration.input_range(data_range, input_range)

    steps = fold(model, held[0], low, high)
    if mapping == "alpha1":
        rescale_alpha1(steps)
    net = build_b1(steps, low, high)
    spiking_steps = [s for s in steps if isinstance(s, AffineStep) and s.relu]

    max_act = activation_maxima(net, held)
    net.set_widths([(1.0 + zeta) * a if a > 0 else 1.0 for a in max_act])
    if windows == "event":
        event_safe_widths(net, spiking_steps, held, zeta, mapping)

    if mapping == "alpha1":
        affines = iter(s for s in steps if isinstance(s, AffineStep))
        for i, m in enumerate(net):
            if isinstance(m, (tnn.TTFSLinear, tnn.TTFSConv2d)):
                net[i] = alpha1_layer(next(affines), m.in_width, m.width)  # takes m's place in the windows
            elif isinstance(m, tnn.TTFSReadout):
                next(affines)

    report = ConversionReport(mapping, float(zeta), (low, high), latency=net.latency)
    report.calibration, spikes = compare(model, net, held, spike_rates=True)
    layers = [(i, m) for i, m in enumerate(net) if isinstance(m, tnn.SpikingLayer)]
    for (i, m), step, a, rate in zip(layers, spiking_steps, max_act, spikes):
        report.layers.append(SpikingLayerInfo(i, " + ".join(step.source), m.t_min, m.t_max, a, rate))
    report.dtype, report.device = str(out_dtype).replace("torch.", ""), str(out_device)
    net = net.to(device=out_device, dtype=out_dtype)
    net.conversion = report
    return net
