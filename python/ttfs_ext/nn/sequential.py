"""TTFSSequential: a TTFS network whose spiking layers' windows are chained."""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .. import reference
from ..robust import Robustness, fake_quantize, quantize_weight
from .layers import TTFSEncoder, TTFSReadout
from .stats import LayerReport, TTFSReport, run_with_stats
from .window import SpikingLayer

__all__ = ["TTFSSequential"]


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
            if isinstance(m, (SpikingLayer, TTFSReadout)):
                m.set_mode(mode)

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
            if isinstance(m, (SpikingLayer, TTFSReadout)):
                if r.time_bits:  # input times lie in the window before: [0, in_width] in local time
                    out = fake_quantize(out, *m.input_window(), r.time_bits)
                if r.weight_bits:
                    weight = quantize_weight(m.weight, r.weight_bits, r.weight_range)
                    out = torch.func.functional_call(m, {"weight": weight}, (out,), strict=False)
                else:
                    out = m(out)
                if isinstance(m, SpikingLayer) and r.noise:
                    out = out + r.noise * torch.randn_like(out)
            elif isinstance(m, TTFSEncoder):
                out = m(out)
                if r.input_sigma:
                    out = reference.clamp(out + r.input_sigma * torch.randn_like(out), low=0.0)
            else:
                out = m(out)
        return out

    def spiking_layers(self) -> list[SpikingLayer]:
        return [m for m in self if isinstance(m, SpikingLayer)]

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
        windowed = (SpikingLayer, TTFSReadout)
        same_kind = (isinstance(module, SpikingLayer) and isinstance(old, SpikingLayer)) or \
            (isinstance(module, TTFSReadout) and isinstance(old, TTFSReadout))
        if (isinstance(module, windowed) or isinstance(old, windowed)) and not same_kind:
            raise TypeError("TTFSSequential: a spiking layer or readout can only replace one of its kind "
                            "(to change the layers, build a new TTFSSequential)")
        super().__setitem__(idx, module)
        if isinstance(module, SpikingLayer):
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
        missing = [type(m).__name__ for m in modules if isinstance(m, SpikingLayer) and m.width is None]
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
            if isinstance(m, SpikingLayer):
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
            if isinstance(m, SpikingLayer):
                layers.append((i, m, m.absolute(out) if absolute else out))
        return layers

    @torch.no_grad()
    def report(self, x: torch.Tensor, warn: bool = True) -> tuple[torch.Tensor, TTFSReport]:
        """Run the network on x and return (output, TTFSReport): per spiking layer the window,
        spikes per neuron (fraction with t < t_max) and margin min(t_out) - t_min. A negative
        margin means a spike before the window opens, where the closed form is no longer the
        true dynamics; it warns (widen that layer's window)."""
        out, stats = run_with_stats(self, x)
        report = TTFSReport()
        for s in stats.layers:
            m, i = s.layer, s.index
            t_min, t_max = m.window()
            report.layers.append(LayerReport(i, type(m).__name__, t_min, t_max, s.neurons, s.fraction, s.margin))
            if warn and s.margin < 0:
                warnings.warn(f"TTFSSequential: layer {i} ({type(m).__name__}) fires at t={t_min + s.margin:.6g}, "
                              f"before its window opens at t_min={t_min:.6g}; the closed form is not the true "
                              f"neuron dynamics there. Widen that layer's window (width now {t_max - t_min:.6g}).",
                              RuntimeWarning, stacklevel=2)
        for m in self:
            if isinstance(m, TTFSReadout):
                report.latency = m.t_min
        return out, report
