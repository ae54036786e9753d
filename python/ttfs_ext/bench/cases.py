"""What the benchmarks measure: the case types (a layer, a network, the event path, an
event-driven network, a time-stepped layer), their cost model and what their measurements share.
layers.py times layers and networks, events.py the event path and the time-stepped simulation,
report.py runs a list of cases into a report.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from ttfs_ext import train
from ttfs_ext.nn.neurons import alpha_and_threshold, inside_sum

from .timing import MODES, paired_ratio

__all__ = ["LayerCase", "NetworkCase", "EventCase", "SteppedCase", "SimulateCase", "Case", "layer_costs",
           "reference_bytes", "default_cases", "b1_neurons", "rel_error", "max_rel_error", "layer_tensors",
           "paired_ratios", "Upstream", "snntorch_version", "LAYER_IMPLS", "NETWORK_IMPLS", "COMPILED"]

T_START, T_MIN, WIDTH = 0.0, 1.0, 10.0   # layer windows: inputs in [0, 1], the layer fires in [1, 11]
T_MAX = T_MIN + WIDTH
LAYER_IMPLS = ("kernel", "reference", "reference_compiled", "twin", "twin_compiled")
NETWORK_IMPLS = ("kernel", "kernel_compiled", "reference", "reference_compiled", "twin", "twin_compiled")
COMPILED = ("kernel_compiled", "reference_compiled", "twin_compiled")
REFERENCE_BYTES_PER_ELEMENT = 9  # sort-and-gather reference, fwd+bwd: ~9 tensors of batch x inputs x outputs


# --- cases ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerCase:
    """One dense (in_features -> out_features) or 3x3 'same' conv layer (C_in -> C_out on
    size x size) at a batch size; `count` is how often the shape occurs in its network."""
    group: str
    kind: str                 # "linear" or "conv2d"
    batch: int
    in_features: int          # conv: C_in
    out_features: int         # conv: C_out
    size: int = 0             # conv: H = W
    kernel: int = 3
    padding: int = 1
    count: int = 1

    @property
    def name(self) -> str:
        if self.kind == "linear":
            return f"{self.group} {self.in_features}-{self.out_features} b{self.batch}"
        return f"{self.group} {self.in_features}-{self.out_features} {self.size}x{self.size} b{self.batch}"

    def t_shape(self, batch: Optional[int] = None) -> tuple[int, ...]:
        b = self.batch if batch is None else batch
        if self.kind == "linear":
            return (b, self.in_features)
        return (b, self.in_features, self.size, self.size)

    def w_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (self.out_features, self.in_features)
        return (self.out_features, self.in_features, self.kernel, self.kernel)

    def out_size(self) -> int:
        return self.size + 2 * self.padding - self.kernel + 1

    def gemm(self, batch: Optional[int] = None) -> tuple[int, int, int]:
        """(M, N, K) of the equivalent GEMM (im2col for conv2d)."""
        b = self.batch if batch is None else batch
        if self.kind == "linear":
            return b, self.out_features, self.in_features
        return b * self.out_size() ** 2, self.out_features, self.in_features * self.kernel ** 2


@dataclass(frozen=True)
class NetworkCase:
    """A whole network of ttfs_ext.train: "fc2" (dims = (in, hidden, classes), input image
    shape) or "vgg" (config of train.vgg, channels, image size)."""
    name: str
    model: str
    batch: int
    dims: tuple = (784, 340, 10)
    input_shape: tuple = (1, 28, 28)
    config: Any = None
    classes: int = 10

    @property
    def label(self) -> str:
        return f"{self.name} b{self.batch}"

    def build(self) -> tuple[Any, tuple]:
        if self.model == "fc2":
            return train.fc2(*self.dims, input_shape=self.input_shape), self.input_shape
        channels, size = self.input_shape[0], self.input_shape[1]
        return train.vgg(self.config, channels, size, self.classes), self.input_shape


@dataclass(frozen=True)
class EventCase:
    """The event-exact general neuron (first_spike ops) on B1 neurons of a dense or 3x3 conv
    layer; the reference runs at the largest power-of-two batch <= batch that fits the memory
    budget."""
    group: str
    kind: str
    batch: int
    in_features: int
    out_features: int
    size: int = 0
    padding: int = 1

    def layer(self, batch: Optional[int] = None) -> LayerCase:
        return LayerCase(self.group, self.kind, self.batch if batch is None else batch, self.in_features,
                         self.out_features, self.size, 3, self.padding)

    @property
    def name(self) -> str:
        return self.layer().name


@dataclass(frozen=True)
class SteppedCase:
    """A dense B1 layer (glorot weights as in train.fc2) simulated clock-driven."""
    group: str
    batch: int
    in_features: int
    out_features: int
    target_error: float = 1e-3
    dt0: float = 0.1
    max_halvings: int = 14

    @property
    def name(self) -> str:
        return f"{self.group} {self.in_features}-{self.out_features} b{self.batch}"


@dataclass(frozen=True)
class SimulateCase:
    """ttfs_ext.simulate (every layer event-driven) of a train.vgg network."""
    name: str
    batch: int
    config: Any = train.VGG_CIFAR
    channels: int = 3
    size: int = 32
    repeats: int = 1

    @property
    def label(self) -> str:
        return f"{self.name} b{self.batch}"

# --- cost model ---------------------------------------------------------------------------------

def layer_costs(case: LayerCase, element_size: int = 4) -> dict[str, Any]:
    """FLOPs of the GEMM part and bytes of the element-wise passes (each tensor read or
    written once; float32 unless element_size says otherwise)."""
    m, n, k = case.gemm()
    inputs = math.prod(case.t_shape())
    outputs = m * n
    e = element_size
    return {
        "gemm_mnk": [m, n, k],
        "flops": {"fwd": 2 * m * n * k, "bwd": 4 * m * n * k, "fwd+bwd": 6 * m * n * k},
        "bytes": {
            "weight": e * n * k,
            "input": e * inputs,
            "output": e * outputs,
            "prologue": 2 * e * inputs,            # read t_in, write x = t_min - t_in (fwd; again in bwd for dW)
            "epilogue": 2 * e * outputs,           # read u, write t_out (in place): as the twin's relu
            "gate": 3 * e * outputs,               # bwd: read grad, read t_out, write the gated grad (= relu bwd)
            "kernel_extra_fwd+bwd": 4 * e * inputs,  # the two prologue passes the twin does not have
        },
    }


def reference_bytes(case: LayerCase, batch: int, element_size: int = 4) -> int:
    """Estimated memory of the sort-and-gather reference, fwd+bwd: ~9 tensors of
    rows x inputs x outputs (rows = batch x output positions)."""
    m, n, k = case.gemm(batch)
    return REFERENCE_BYTES_PER_ELEMENT * element_size * m * n * (k + 1)


# --- what the measurements share -------------------------------------------------------------------

def snntorch_version() -> Optional[str]:
    """The installed snnTorch's version (the time-stepped case names the simulator it stands for)."""
    if importlib.util.find_spec("snntorch") is None:
        return None
    try:
        import snntorch  # noqa: F401
        return getattr(snntorch, "__version__", "installed")
    except Exception as err:  # a broken install counts as absent
        return f"import failed: {type(err).__name__}"


class Upstream:
    """All-ones upstream gradients for outputs of `numel` elements, one per shape and dtype
    (made once, outside the timed calls)."""

    def __init__(self, numel: int, device: str) -> None:
        self.numel, self.device = numel, device
        self.cache: dict[tuple, torch.Tensor] = {}

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        key = (tuple(out.shape), out.dtype)
        if key not in self.cache:
            self.cache[key] = torch.ones(out.shape, dtype=out.dtype, device=self.device)
        return self.cache[key]


def paired_ratios(samples: dict[str, dict[str, list[float]]],
                  impls: Sequence[str]) -> dict[str, dict[str, Optional[float]]]:
    """Per mode, paired per cycle (paired_ratio): kernel/twin, kernel/twin_compiled, kernel/best
    twin, reference/kernel, ..."""
    out: dict[str, dict[str, Optional[float]]] = {}
    twins, refs = ("twin", "twin_compiled"), ("reference", "reference_compiled")
    for mode in MODES:
        s = samples.get(mode, {})
        row = {"kernel/twin": paired_ratio(s, ["kernel"], ["twin"]),
               "kernel/twin_compiled": paired_ratio(s, ["kernel"], ["twin_compiled"]),
               "kernel/best_twin": paired_ratio(s, ["kernel"], twins),
               "reference/kernel": paired_ratio(s, ["reference"], ["kernel"]),
               "reference_compiled/kernel": paired_ratio(s, ["reference_compiled"], ["kernel"]),
               "best_reference/kernel": paired_ratio(s, refs, ["kernel"])}
        if "kernel_compiled" in impls:
            row["kernel_compiled/best_twin"] = paired_ratio(s, ["kernel_compiled"], twins)
        out[mode] = row
    return out

def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 for empty; the absolute error if expected is 0)."""
    if expected.numel() == 0:
        return 0.0
    diff = float((actual.detach().double() - expected.detach().double()).abs().max())
    scale = float(expected.detach().double().abs().max())
    return diff / scale if scale > 0 else diff


def max_rel_error(actuals: Sequence[torch.Tensor], expecteds: Sequence[torch.Tensor]) -> float:
    return max(rel_error(a, e) for a, e in zip(actuals, expecteds))


def layer_tensors(case: LayerCase, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spike times in [0, 1], weights randn / sqrt(fan_in), biases 0.1 randn (about half the
    neurons fire in the window [1, 11])."""
    gen = torch.Generator(device=device).manual_seed(0)
    fan_in = case.gemm()[2]
    t_in = torch.rand(case.t_shape(), generator=gen, device=device)
    w = torch.randn(case.w_shape(), generator=gen, device=device) / fan_in ** 0.5
    b = 0.1 * torch.randn(case.out_features, generator=gen, device=device)
    return t_in, w, b


def b1_neurons(case: LayerCase, w: torch.Tensor, b: torch.Tensor, t_start: float, t_min: float, t_max: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, threshold) of the B1 neurons of a case's layer, integrating from t_start
    (ttfs_ext.nn.neurons; conv: the taps inside the image, per output position)."""
    s_in = w.sum(dim=1) if case.kind == "linear" else inside_sum(w, case.t_shape(1)[1:], 1, case.padding)
    return alpha_and_threshold(s_in, b, t_min - t_start, t_max - t_start)


Case = Union[LayerCase, NetworkCase, EventCase, SimulateCase, SteppedCase]


def default_cases(device: str) -> list[Case]:
    """What `ttfs bench` runs without shapes: FC2's hidden layer and a VGG16 convolution, the
    FC2 training step, the FC2 layer through the event path and time-stepped."""
    conv_batch = 128 if device == "cuda" else 8
    return [LayerCase("fc2", "linear", 256, 784, 340),
            LayerCase("vgg16-cifar", "conv2d", conv_batch, 64, 64, 32),
            NetworkCase("fc2", "fc2", 256),
            EventCase("fc2", "linear", 256, 784, 340),
            SteppedCase("fc2", 32, 784, 340)]
