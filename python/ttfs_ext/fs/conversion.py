"""FS-conversion (Stöckl & Maass): a trained ANN with every ReLU / SiLU / Sigmoid replaced by
few-spikes neurons, everything else unchanged. The next layer receives the decoded value
y = sum_t d(t) z(t), which equals spike-by-spike transmission with weights w d(t) (the layer
waits for all spikes of the one before). Latency: a layer needs all its input before its K
steps, so an image takes the sum of K over the FS layers on the longest path through the
graph (parallel branches run at the same time); pipelined, a new image enters every K steps
(the largest K of the network)."""
from __future__ import annotations

import copy
from typing import Callable, Optional, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .modules import FSActivation

__all__ = ["convert", "FSNetwork", "DEFAULT_ACTIVATIONS"]

Factory = Union[FSActivation, Callable[[], FSActivation], None]

# Which modules and functional forms each activation name covers.
_MODULES = {"relu": (nn.ReLU,), "silu": (nn.SiLU,), "sigmoid": (nn.Sigmoid,)}
_FUNCTIONS = {
    "relu": (F.relu, torch.relu, F.relu_, torch.relu_),
    "silu": (F.silu,),
    "sigmoid": (torch.sigmoid, F.sigmoid, torch.sigmoid_),
}
_METHODS = {"relu": ("relu", "relu_"), "sigmoid": ("sigmoid", "sigmoid_")}
_INPLACE_FUNCTIONS = (F.relu_, torch.relu_, torch.sigmoid_)
DEFAULT_ACTIVATIONS = {"relu": FSActivation.relu, "silu": FSActivation.silu, "sigmoid": FSActivation.sigmoid}


def _factory(name: str, spec: Factory) -> Optional[Callable[[], FSActivation]]:
    if spec is None:
        return None
    if isinstance(spec, FSActivation):
        return lambda: copy.deepcopy(spec)
    if callable(spec):
        return spec
    raise TypeError(f"ttfs_ext.fs.convert: activations[{name!r}] must be an FSActivation, a callable returning "
                    f"one, or None, got {type(spec).__name__}")


def _kind(node: torch.fx.Node, modules: dict) -> Optional[str]:
    if node.op == "call_module":
        mod = modules[node.target]
        for name, types in _MODULES.items():
            if type(mod) in types:
                return name
    elif node.op == "call_function":
        for name, fns in _FUNCTIONS.items():
            if node.target in fns:
                return name
    elif node.op == "call_method":
        for name, methods in _METHODS.items():
            if node.target in methods:
                return name
    return None


def _input(node: torch.fx.Node) -> torch.fx.Node:
    """The activation's input: the first argument, or `input=` (F.relu(input=x))."""
    return node.args[0] if node.args else node.kwargs["input"]


def _inplace(node: torch.fx.Node, modules: dict) -> bool:
    """Whether the activation overwrites its input (nn.ReLU(inplace=True), F.relu(x, inplace=True),
    x.relu_(), torch.relu_(x), ...)."""
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_")
    if node.target in _INPLACE_FUNCTIONS:
        return True
    return bool(node.kwargs.get("inplace", node.args[1] if len(node.args) > 1 else False))


class FSNetwork(nn.Module):
    """A converted network: `graph` (a torch.fx.GraphModule) with FSActivation modules
    `fs_<n>` in execution order. Spike counting is on by default; stats() reports it."""

    def __init__(self, graph: torch.fx.GraphModule, layers: list[str]):
        super().__init__()
        self.graph_module = graph
        self.fs_layer_names = layers

    def forward(self, *args, **kwargs):
        return self.graph_module(*args, **kwargs)

    def fs_layers(self) -> list[tuple[str, FSActivation]]:
        return [(n, getattr(self.graph_module, n)) for n in self.fs_layer_names]

    def count_spikes(self, enabled: bool = True) -> "FSNetwork":
        for _, m in self.fs_layers():
            m.count_spikes = enabled
        return self

    def reset_stats(self) -> None:
        for _, m in self.fs_layers():
            m.reset_spike_counts()

    def _longest_path(self, steps: Callable[[FSActivation], int]) -> int:
        """The most steps(m), summed over the FS layers m of one path from input to output."""
        fs = dict(self.fs_layers())
        depth: dict = {}
        for node in self.graph_module.graph.nodes:  # in topological order
            before = max((depth[n] for n in node.all_input_nodes), default=0)
            depth[node] = before + (steps(fs[node.target]) if node.op == "call_module" and node.target in fs else 0)
        return max(depth.values(), default=0)

    def stats(self) -> dict:
        """Spikes per neuron per layer and overall (total spikes / (FS-neurons x images), as
        the paper counts), the FS-neurons per image, latency and pipelined throughput in time
        steps (along the longest path through the graph), and the rate-coding steps for the same
        resolution (2^K levels need 2^K - 1 steps of spike counting per layer: the resolution of
        the binary code of FS-ReLU; a fitted table has at most 2^K output levels)."""
        layers, spikes, neurons, per_image = [], 0, 0, 0
        for name, m in self.fs_layers():
            s, n = int(m.spike_total), int(m.neuron_total)
            layers.append({"name": name, "activation": m.name, "K": m.K, "neurons_per_image": m.neurons_per_image,
                           "spikes_per_neuron": s / n if n else None})
            spikes, neurons, per_image = spikes + s, neurons + n, per_image + m.neurons_per_image
        ks = [m.K for _, m in self.fs_layers()]
        latency = self._longest_path(lambda m: m.K)
        rate = self._longest_path(lambda m: 2 ** m.K - 1)
        return {
            "fs_layers": len(ks),
            "fs_neurons_per_image": per_image,
            "spikes_per_neuron": spikes / neurons if neurons else None,
            "images": neurons // per_image if per_image else 0,
            "latency_steps": latency,
            "throughput_steps_per_image": max(ks) if ks else 0,
            "rate_coding_latency_steps": rate,
            "rate_coding_throughput_steps_per_image": max((2 ** k - 1 for k in ks), default=0),
            "layers": layers,
        }


def convert(model: nn.Module, activations: Optional[dict[str, Factory]] = None, *,
            count_spikes: bool = True) -> FSNetwork:
    """FS-conversion of `model` (unchanged; the result holds a copy): every nn.ReLU, nn.SiLU and
    nn.Sigmoid module and their functional forms (F.relu, torch.relu, x.relu(), F.silu,
    torch.sigmoid, x.sigmoid(), and the in-place ones: F.relu_, x.relu_(), ...) become
    FSActivation modules, traced with torch.fx. An in-place activation, assigned or not
    (`y.relu_()` or `nn.ReLU(inplace=True)` as a statement), is kept: every later reader of its
    input reads its output, as in the original.

    activations: name ('relu', 'silu', 'sigmoid') -> an FSActivation (copied for each
    occurrence), a callable returning one, or None to keep that activation as it is; names not
    given take DEFAULT_ACTIVATIONS (FSActivation.relu(K=10, alpha=25), .silu(), .sigmoid())."""
    specs = dict(DEFAULT_ACTIVATIONS)
    if activations is not None:
        unknown = set(activations) - set(specs)
        if unknown:
            raise ValueError(f"ttfs_ext.fs.convert: unknown activation names {sorted(unknown)}; known: {sorted(specs)}")
        specs.update(activations)
    factories = {name: _factory(name, spec) for name, spec in specs.items()}
    model = copy.deepcopy(model)
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # control flow on values, unsupported Python
        raise ValueError(f"ttfs_ext.fs.convert: torch.fx cannot trace the model ({type(err).__name__}: {err})") from err
    modules = dict(gm.named_modules())
    layers: list[str] = []
    for node in list(gm.graph.nodes):
        kind = _kind(node, modules)
        if kind is None or factories[kind] is None:
            continue
        fs = factories[kind]()
        if not isinstance(fs, FSActivation):
            raise TypeError(f"ttfs_ext.fs.convert: the factory of {kind!r} returned {type(fs).__name__}, "
                            f"not an FSActivation")
        fs.count_spikes = count_spikes
        name = f"fs_{len(layers)}"
        gm.add_submodule(name, fs)
        src = _input(node)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (src,))
        node.replace_all_uses_with(new)
        if _inplace(node, modules):
            # The in-place write, as data flow: every reader of src after the activation reads
            # its output instead, whether the activation's result is used or not (`y.relu_()` as
            # a statement). No copy_ node, which dead-code elimination would drop.
            after = False
            for later in list(gm.graph.nodes):  # topological order
                if later is new:
                    after = True
                elif after and later is not node and src in later.all_input_nodes:
                    later.replace_input_with(src, new)
        gm.graph.erase_node(node)
        layers.append(name)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    net = FSNetwork(gm, layers)
    param = next(model.parameters(), None)
    if param is not None:
        net.to(param.device)
    return net


