"""Metrics: the forward pass with spike statistics, evaluation, per-epoch records."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as tnn

__all__ = ["forward_with_stats", "evaluate", "EpochMetrics", "History"]


def forward_with_stats(net: Sequence[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, tnn.SpikeStats]:
    """net(x) (with gradients), plus per spiking layer the largest activation, the number of
    spikes and the margin to the window start (ttfs_ext.nn.SpikeStats), read from the spike
    times on the way."""
    robust = getattr(net, "robustness", None)
    if robust is not None and robust.active:
        # The perturbed forward is the network's own; statistics come from a clean pass.
        with torch.no_grad():
            _, stats = tnn.run_with_stats(net, x)
        return net(x), stats
    return tnn.run_with_stats(net, x)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: Optional[float] = None
    test_accuracy: Optional[float] = None
    spikes_per_neuron: Optional[float] = None           # overall, on the evaluation data
    spikes_per_neuron_layers: Optional[list[float]] = None
    latency: Optional[float] = None                     # t_min of the readout
    widths: Optional[list[float]] = None
    min_margin: Optional[float] = None                  # min over layers of min t - t_min (evaluation)
    margins: Optional[list[float]] = None               # per spiking layer: min t - t_min (evaluation)
    twin_train_loss: Optional[float] = None
    twin_train_accuracy: Optional[float] = None
    twin_test_loss: Optional[float] = None
    twin_test_accuracy: Optional[float] = None
    seconds: float = 0.0


@dataclass
class History:
    epochs: list[EpochMetrics] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)        # SNN, every step
    twin_step_losses: list[float] = field(default_factory=list)   # ReLU twin, every step

    def as_dict(self) -> dict:
        return {"epochs": [asdict(e) for e in self.epochs], "step_losses": self.step_losses,
                "twin_step_losses": self.twin_step_losses}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls([EpochMetrics(**e) for e in d["epochs"]], list(d["step_losses"]), list(d["twin_step_losses"]))


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Loss, accuracy and (for a TTFS network) spikes per neuron per layer and overall, and
    the smallest margin, on (x, y)."""
    was_training = net.training
    net.eval()
    loss, correct, spikes, neurons, margins = 0.0, 0, None, None, None
    dtype = next(net.parameters()).dtype
    device = next(net.parameters()).device
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].to(device, dtype), y[start:start + batch_size].to(device)
        if isinstance(net, tnn.TTFSSequential):
            out, st = forward_with_stats(net, xb)
            spikes = st.spikes if spikes is None else [a + b for a, b in zip(spikes, st.spikes)]
            neurons = st.neurons
            margins = st.margin if margins is None else [min(a, b) for a, b in zip(margins, st.margin)]
        else:
            out = net(xb)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(dim=1) == yb).sum())
    net.train(was_training)
    result: dict[str, Any] = {"loss": loss / len(x), "accuracy": correct / len(x)}
    if spikes is not None:
        per_layer = [s / (n * len(x)) for s, n in zip(spikes, neurons)]
        result.update(spikes_per_neuron_layers=per_layer,
                      spikes_per_neuron=sum(spikes) / (sum(neurons) * len(x)), margins=margins,
                      min_margin=min(margins) if margins else math.inf)
    return result
