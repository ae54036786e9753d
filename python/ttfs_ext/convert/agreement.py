"""agreement: a ReLU network and its TTFS network compared on data."""
from __future__ import annotations

import copy
from typing import Iterable, Optional

import torch
from torch import nn

from .. import nn as tnn
from .calibration import Data, float64_batches
from .fold import F64
from .report import Agreement

__all__ = ["agreement", "compare", "float64_copy"]


def float64_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(device="cpu", dtype=F64).eval()


def agreement(model: nn.Module, net: nn.Module, data: Data, event: bool = False) -> Agreement:
    """Compare a ReLU network with its TTFS network on `data` (a tensor or an iterable of
    batches), both in float64: the fraction of samples with the same predicted class and the
    largest logit difference. event=True also runs the exact event-driven simulation
    (ttfs_ext.simulate) and reports its agreement, early spikes and neurons that differ from
    the closed form. A float32 network is compared through a float64 copy (on its device)."""
    if any(p.dtype != F64 for p in net.parameters()):
        net = copy.deepcopy(net).to(dtype=F64)
    return compare(float64_copy(model), net, float64_batches(data), event)[0]


@torch.no_grad()
def compare(model: nn.Module, net: nn.Module, held: Iterable[torch.Tensor], event: bool = False,
            spike_rates: bool = False) -> tuple[Agreement, Optional[list[float]]]:
    """agreement() of a float64 model on non-empty float64 CPU batches; with spike_rates, also
    the fraction of neurons that fire per spiking layer (net then runs module by module,
    without its robustness options)."""
    from ..events import simulate

    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    samples, agree, diff, scale = 0, 0, 0.0, 0.0
    ev_agree, ev_diff, early, deviating = 0, 0.0, None, None
    fired: Optional[list[float]] = None
    for x in held:
        ref = model(x)
        if spike_rates:
            out, stats = tnn.run_with_stats(net, x.to(device))
            rates = [s.fraction * x.shape[0] for s in stats.layers]
            fired = rates if fired is None else [a + b for a, b in zip(fired, rates)]
        else:
            out = net(x.to(device))
        out = out.cpu()
        samples += x.shape[0]
        agree += int((out.argmax(dim=1) == ref.argmax(dim=1)).sum())
        diff = max(diff, float((out - ref).abs().max()))
        scale = max(scale, float(ref.abs().max()))
        if event:
            sim = simulate(net, x.to(device))
            sim.logits = sim.logits.cpu()
            ev_agree += int((sim.logits.argmax(dim=1) == ref.argmax(dim=1)).sum())
            ev_diff = max(ev_diff, float((sim.logits - ref).abs().max()))
            counts = [layer.early_spikes for layer in sim.layers]
            devs = [layer.deviating for layer in sim.layers]
            early = counts if early is None else [a + b for a, b in zip(early, counts)]
            deviating = devs if deviating is None else [a + b for a, b in zip(deviating, devs)]
    if samples == 0:
        raise ValueError("ttfs_ext.agreement: data is empty")
    result = Agreement(samples, agree / samples, diff, scale)
    if event:
        result.event_agreement, result.event_max_logit_diff = ev_agree / samples, ev_diff
        result.early_spikes, result.event_deviating = early, deviating
    return result, None if fired is None else [f / samples for f in fired]
