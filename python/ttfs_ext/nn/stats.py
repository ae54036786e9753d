"""Spike statistics of spiking layers: one implementation for TTFSSequential.report, the
training metrics (ttfs_ext.train.forward_with_stats) and the calibration of ttfs_ext.convert."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
from torch import nn

from .window import SpikingLayer

__all__ = ["LayerStats", "SpikeStats", "layer_stats", "run_with_stats", "LayerReport", "TTFSReport"]


@dataclass
class LayerStats:
    """Statistics of one spiking layer's output times over a batch, on the outputs' axis."""
    index: int                  # position in the network
    layer: nn.Module
    outputs: int                # output times in the batch
    first: float                # the earliest of them (inf for an empty batch)
    spikes: float               # neurons that fired (t < the window's end), over the batch
    neurons: int                # per sample
    window: tuple[float, float]  # the layer's output window (its start, its end: no spike)

    @property
    def fraction(self) -> float:
        """The fraction of the batch's outputs that are spikes (0 for an empty batch)."""
        return self.spikes / self.outputs if self.outputs else 0.0

    @property
    def activation_max(self) -> float:
        """The largest activation, the window's end - the earliest time (0 for an empty batch)."""
        return self.window[1] - self.first if self.outputs else 0.0

    @property
    def margin(self) -> float:
        """The earliest time - the window's start; negative: a spike before the window opens."""
        return self.first - self.window[0]


def layer_stats(index: int, layer: SpikingLayer, t: torch.Tensor) -> LayerStats:
    t = t.detach()
    window = layer.output_window()
    return LayerStats(index, layer, t.numel(), float(t.min()) if t.numel() else math.inf,
                      float((t < window[1]).sum()), t[0].numel() if t.dim() > 1 else t.numel(), window)


@dataclass
class SpikeStats:
    """Per spiking layer of a network, its LayerStats on one batch."""
    layers: list[LayerStats] = field(default_factory=list)

    @property
    def activation_max(self) -> list[float]:
        return [s.activation_max for s in self.layers]

    @property
    def spikes(self) -> list[float]:
        return [s.spikes for s in self.layers]

    @property
    def neurons(self) -> list[int]:
        return [s.neurons for s in self.layers]

    @property
    def margin(self) -> list[float]:
        return [s.margin for s in self.layers]


def run_with_stats(modules: Iterable[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, SpikeStats]:
    """Apply the modules in order (autograd as the caller has it) and gather the statistics of
    every spiking layer's output on the way."""
    out, stats = x, SpikeStats()
    for i, m in enumerate(modules):
        out = m(out)
        if isinstance(m, SpikingLayer):
            stats.layers.append(layer_stats(i, m, out))
    return out, stats


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
