"""What the benchmarks measure: the cases and how each is run.

Each case first checks the compiled kernel against the float64 reference on a small slice
(values and gradients; a failed check aborts the case), then times the forward pass, the
backward pass and forward+backward of every implementation side by side (timing.time_interleaved):

- LayerCase (linear, conv2d): the ttfs_ext kernel; the pure-PyTorch reference, eager and under
  torch.compile; the ReLU twin (F.linear / F.conv2d + relu on x = t_min - t_in), eager and
  compiled: the floor. float32 everywhere; on CUDA also TF32 and bfloat16 (torch.autocast),
  with each one's error against float64.
- NetworkCase: FC2 or a VGG of ttfs_ext.train, one training step (forward, cross-entropy,
  backward) of the TTFS network (kernel, reference) and of its ReLU twin.
- EventCase: ttfs_ext.functional.first_spike_linear / first_spike_conv2d (kernel) against the
  sort-and-gather reference (memory batch x inputs x outputs: run at a smaller batch, or
  skipped, where it would not fit the memory budget); SimulateCase: ttfs_ext.simulate of a VGG.
- SteppedCase: a time-stepped (clock-driven) simulation of a layer at the largest step size
  whose spike-time error reaches the target, against the kernel.

run_cases runs a list of them into one report (the JSON schema of benchmarks/bench_suite.py).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

import ttfs_ext
from ttfs_ext import functional as TF
from ttfs_ext import reference as R
from ttfs_ext import train

from .timing import (MODES, Backward, Context, Forward, Precision, autocast, compile_fresh, measure, no_grad,
                     paired_ratio, precision_context, release_memory, time_interleaved, time_runs, unavailable,
                     use_backend)

__all__ = ["LayerCase", "NetworkCase", "EventCase", "SteppedCase", "SimulateCase", "Case", "layer_costs",
           "bench_layer", "bench_network", "bench_event", "bench_simulate", "bench_stepped", "run_cases",
           "default_cases", "clock_driven_first_spikes", "b1_neurons", "reference_bytes", "rel_error",
           "LAYER_IMPLS", "NETWORK_IMPLS", "COMPILED"]

T_START, T_MIN, WIDTH = 0.0, 1.0, 10.0   # layer windows: inputs in [0, 1], the layer fires in [1, 11]
T_MAX = T_MIN + WIDTH
LAYER_IMPLS = ("kernel", "reference", "reference_compiled", "twin", "twin_compiled")
NETWORK_IMPLS = ("kernel", "kernel_compiled", "reference", "reference_compiled", "twin", "twin_compiled")
COMPILED = ("kernel_compiled", "reference_compiled", "twin_compiled")
CHECK_TOLERANCE = 1e-4          # float32 kernel vs float64 reference, relative to the largest value
NETWORK_CHECK_TOLERANCE = 1e-7  # whole networks, float64 kernel vs float64 reference
EVENT_TOLERANCE = (1e-9, 1e-6)  # float64 event kernel vs float64 reference: values, gradients
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


# --- helpers ------------------------------------------------------------------------------------

def snntorch_version() -> Optional[str]:
    """The installed snnTorch's version (the time-stepped case names the simulator it stands for)."""
    if importlib.util.find_spec("snntorch") is None:
        return None
    try:
        import snntorch  # noqa: F401
        return getattr(snntorch, "__version__", "installed")
    except Exception as err:  # a broken install counts as absent
        return f"import failed: {type(err).__name__}"


class _Upstream:
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


def _ratios(samples: dict[str, dict[str, list[float]]], impls: Sequence[str]) -> dict[str, dict[str, Optional[float]]]:
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


# --- errors ---------------------------------------------------------------------------------------

def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 for empty; the absolute error if expected is 0)."""
    if expected.numel() == 0:
        return 0.0
    diff = float((actual.detach().double() - expected.detach().double()).abs().max())
    scale = float(expected.detach().double().abs().max())
    return diff / scale if scale > 0 else diff


def _max_rel(actuals: Sequence[torch.Tensor], expecteds: Sequence[torch.Tensor]) -> float:
    return max(rel_error(a, e) for a, e in zip(actuals, expecteds))


# --- layers -----------------------------------------------------------------------------------------

def _layer_tensors(case: LayerCase, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spike times in [0, 1], weights randn / sqrt(fan_in), biases 0.1 randn (about half the
    neurons fire in the window [1, 11])."""
    gen = torch.Generator(device=device).manual_seed(0)
    fan_in = case.gemm()[2]
    t_in = torch.rand(case.t_shape(), generator=gen, device=device)
    w = torch.randn(case.w_shape(), generator=gen, device=device) / fan_in ** 0.5
    b = 0.1 * torch.randn(case.out_features, generator=gen, device=device)
    return t_in, w, b


def layer_function(case: LayerCase, impl: str, device: str) -> Callable[..., torch.Tensor]:
    """fn(input, weight, bias) of an implementation; the twin's input is x = t_min - t_in."""
    base = impl.replace("_compiled", "")
    p = case.padding
    if case.kind == "linear":
        fns = {"kernel": lambda t, w, b: TF.linear(t, w, b, T_MIN, T_MAX, backend=device),
               "reference": lambda t, w, b: R.linear(t, w, b, T_MIN, T_MAX),
               "twin": lambda x, w, b: F.relu(F.linear(x, w, b))}
    else:
        fns = {"kernel": lambda t, w, b: TF.conv2d(t, w, b, T_MIN, T_MAX, 1, p, backend=device),
               "reference": lambda t, w, b: R.conv2d(t, w, b, T_MIN, T_MAX, 1, p),
               "twin": lambda x, w, b: F.relu(F.conv2d(x, w, b, 1, p))}
    fn = fns[base]
    return compile_fresh(fn) if impl.endswith("_compiled") else fn


def _layer_errors(case: LayerCase, device: str, p: Precision, t_in: torch.Tensor, w: torch.Tensor,
                  b: torch.Tensor) -> dict[str, Any]:
    """Kernel and twin at precision p against float64 on the check slice, both in activation
    space (kernel: t_max - t), values and gradients (input, weight, bias). Neurons on the
    spike/no-spike boundary (masks differ from float64) get no upstream gradient and are
    counted; they must lie within the value error of the boundary."""
    cb = min(case.batch, 8 if case.kind == "linear" else 2)
    t = t_in[:cb].contiguous()
    kernel, reference, twin = (layer_function(case, impl, device) for impl in ("kernel", "reference", "twin"))
    t64, w64, b64 = t.double(), w.double(), b.double()
    with torch.no_grad():
        ref_t = reference(t64, w64, b64)
        with autocast(p, device):
            k_t = kernel(t, w, b)
            tw = twin(T_MIN - t, w, b)
    act64 = T_MAX - ref_t
    fired = ref_t < T_MAX
    flip_k, flip_t = (k_t < T_MAX) != fired, (tw > 0) != fired
    flips = flip_k | flip_t
    out_k, out_t = rel_error(T_MAX - k_t.double(), act64), rel_error(tw.double(), act64)
    scale = float(act64.abs().max()) or 1.0
    boundary = float(act64[flips].abs().max()) / scale if bool(flips.any()) else 0.0
    gen = torch.Generator(device=device).manual_seed(1)
    g = torch.randn(act64.shape, generator=gen, device=device, dtype=torch.float64).masked_fill(flips, 0.0)

    def grads(fn, inputs, upstream, use_autocast):
        leaves = [x.detach().clone().requires_grad_() for x in inputs]
        with autocast(p, device) if use_autocast else contextlib.nullcontext():
            out = fn(*leaves)
        return torch.autograd.grad(out, leaves, upstream.to(out.dtype))

    # d(sum g * activation) = d(sum -g * t) for the spike-time ops
    g_ref = grads(reference, (t64, w64, b64), -g, False)
    g_ker = grads(kernel, (t, w, b), -g, True)
    g_twin64 = grads(twin, (T_MIN - t64, w64, b64), g, False)
    g_twin = grads(twin, (T_MIN - t, w, b), g, True)
    return {"slice_batch": cb, "boundary_neurons": int(flips.sum()), "boundary_max_activation": boundary,
            "kernel": {"out": out_k, "grad": _max_rel(g_ker, g_ref)},
            "twin": {"out": out_t, "grad": _max_rel(g_twin, g_twin64)}}


def bench_layer(case: LayerCase, p: Precision, ctx: Context) -> dict[str, Any]:
    device = ctx.device
    costs = layer_costs(case)
    record: dict[str, Any] = {
        "section": "layer", "name": case.name, "group": case.group, "kind": case.kind, "precision": p.name,
        "batch": case.batch, "t_in_shape": list(case.t_shape()), "weight_shape": list(case.w_shape()),
        "padding": case.padding if case.kind == "conv2d" else None, "count_in_network": case.count, **costs,
    }
    t_in, w, b = _layer_tensors(case, device)
    with precision_context(p, device):
        errors = _layer_errors(case, device, p, t_in, w, b)
        record["errors_vs_float64"] = errors
        if p.name == "float32":
            ok = (errors["kernel"]["out"] <= CHECK_TOLERANCE and errors["kernel"]["grad"] <= CHECK_TOLERANCE
                  and errors["boundary_max_activation"] <= CHECK_TOLERANCE)
            record["check"] = {"passed": ok, "tolerance": CHECK_TOLERANCE,
                               "what": "float32 kernel vs float64 reference on the slice: values and gradients"}
            if not ok:
                record["check"]["reason"] = "kernel disagrees with the float64 reference: case aborted"
                return record
        inputs = {"kernel": t_in, "reference": t_in, "twin": T_MIN - t_in}
        upstream = _Upstream(case.gemm()[0] * case.out_features, device)
        def builder(impl: str) -> Callable[[], tuple[Forward, Backward]]:
            def build() -> tuple[Forward, Backward]:
                fn = layer_function(case, impl, device)
                leaves = [x.detach().clone().requires_grad_() for x in (inputs[impl.replace("_compiled", "")], w, b)]

                def fwd() -> torch.Tensor:
                    with autocast(p, device):
                        return fn(*leaves)

                def grad(out: torch.Tensor, retain: bool) -> Any:
                    return torch.autograd.grad(out, leaves, upstream(out), retain_graph=retain)
                return fwd, grad
            return build

        impls = [impl for impl in LAYER_IMPLS if ctx.compile or impl not in COMPILED]
        times, methods, memory, samples = time_interleaved({impl: builder(impl) for impl in impls}, ctx)
        for impl in LAYER_IMPLS:
            if impl not in impls:
                for mode in MODES:
                    times[mode][impl] = {"na": "torch.compile off (--no-compile)"}
                memory[impl] = None
        record.update(times_ms=times, bwd_method=methods, peak_mem_bytes=memory,
                      ratios=_ratios(samples, LAYER_IMPLS),
                      gflops={impl: {mode: costs["flops"][mode] / times[mode][impl]["median_ms"] / 1e6
                                     for mode in MODES if "median_ms" in times[mode].get(impl, {})}
                              for impl in LAYER_IMPLS})
    return record


# --- whole networks ---------------------------------------------------------------------------------

def _network_flops(twin: torch.nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs of the Linear/Conv2d layers (2 per multiply-add), from one pass of the twin."""
    total = 0

    def hook(module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Linear):
            total += 2 * output.numel() * module.in_features
        elif isinstance(module, torch.nn.Conv2d):
            total += 2 * output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    handles = [m.register_forward_hook(hook) for m in twin.modules() if isinstance(m, (torch.nn.Linear,
                                                                                          torch.nn.Conv2d))]
    try:
        with torch.no_grad():
            twin(x)
    finally:
        for h in handles:
            h.remove()
    return total


def rel_l2_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| (Frobenius): less dominated than the max by the few
    neurons whose spike/no-spike decision flips with rounding."""
    norm = float(expected.detach().double().norm())
    diff = float((actual.detach().double() - expected.detach().double()).norm())
    return diff / norm if norm > 0 else diff


def _network_errors(case: NetworkCase, net, twin, x: torch.Tensor, y: torch.Tensor, p: Precision,
                    device: str) -> dict[str, Any]:
    """On a slice of the batch: the float64 kernel network against the float64 reference
    network (the correctness check), and the logits and parameter gradients (of the
    cross-entropy) of the kernel network and of the twin at precision p against float64."""
    cb = min(case.batch, 4)
    xs, ys = x[:cb], y[:cb]
    net64 = copy.deepcopy(net).double()

    def run(model, backend, inputs, precision=None):
        with use_backend(backend), autocast(precision, device) if precision else contextlib.nullcontext():
            logits = model(inputs)
            loss = F.cross_entropy(logits.float() if logits.dtype != torch.float64 else logits, ys)
        return logits, torch.autograd.grad(loss, list(model.parameters()))

    ref_logits, ref_grads = run(net64, "reference", xs.double())
    k64_logits, k64_grads = run(net64, device, xs.double())
    k_logits, k_grads = run(net, device, xs, p)
    t_logits, t_grads = run(twin, None, xs, p)

    def errors(logits, grads):
        return {"out": rel_error(logits, ref_logits), "grad": _max_rel(grads, ref_grads),
                "grad_l2": max(rel_l2_error(g, e) for g, e in zip(grads, ref_grads))}

    return {"slice_batch": cb,
            "float64_kernel_vs_reference": errors(k64_logits, k64_grads),
            "kernel": errors(k_logits, k_grads), "twin": errors(t_logits, t_grads),
            "kernel_vs_twin_logits": rel_error(k_logits, t_logits.double())}


def bench_network(case: NetworkCase, p: Precision, ctx: Context) -> dict[str, Any]:
    device = ctx.device
    torch.manual_seed(0)
    net, in_shape = case.build()
    net = net.to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((case.batch, *in_shape), generator=gen, device=device)
    y = torch.randint(0, case.classes, (case.batch,), generator=gen, device=device)
    with torch.no_grad():  # windows as training leaves them: (1 + 0.5) x each layer's largest activation
        _, stats = train.forward_with_stats(net, x)
    train.CalibratedWindows(zeta=0.5).update(net, stats.activation_max)
    twin = train.relu_twin(copy.deepcopy(net))
    flops = _network_flops(twin, x)
    record: dict[str, Any] = {
        "section": "network", "name": case.label, "model": case.name, "precision": p.name, "batch": case.batch,
        "input_shape": list(in_shape), "parameters": sum(q.numel() for q in net.parameters()),
        "flops": {"fwd": flops, "bwd": 2 * flops, "fwd+bwd": 3 * flops},
        "step": "forward, cross-entropy, backward (torch.autograd.grad of all parameters); no optimizer step",
        "widths": net.widths, "latency": net.latency,
    }
    with precision_context(p, device):
        errors = _network_errors(case, net, twin, x, y, p, device)
        record["errors_vs_float64"] = errors
        if p.name == "float32":
            check = errors["float64_kernel_vs_reference"]
            ok = check["out"] <= NETWORK_CHECK_TOLERANCE and check["grad"] <= NETWORK_CHECK_TOLERANCE
            record["check"] = {"passed": ok, "tolerance": NETWORK_CHECK_TOLERANCE,
                               "what": "float64 kernel network vs float64 reference network: logits and gradients "
                                       "(float32 spike times carry an absolute rounding of ~1e-7 x t, large against "
                                       "the small activations of deep layers: see errors_vs_float64)"}
            if not ok:
                record["check"]["reason"] = "kernel network disagrees with the float64 reference: case aborted"
                return record
        def builder(impl: str) -> Callable[[], tuple[Forward, Backward]]:
            base = impl.replace("_compiled", "")
            model = twin if base == "twin" else net
            backend = {"kernel": device, "reference": "reference", "twin": None}[base]
            params = list(model.parameters())

            def build() -> tuple[Forward, Backward]:
                module = compile_fresh(model) if impl in COMPILED else model

                def fwd() -> torch.Tensor:
                    with use_backend(backend), autocast(p, device):
                        return F.cross_entropy(module(x).float(), y)

                def grad(loss: torch.Tensor, retain: bool) -> Any:
                    with use_backend(backend):
                        return torch.autograd.grad(loss, params, retain_graph=retain)
                return fwd, grad
            return build

        impls = [impl for impl in NETWORK_IMPLS if ctx.compile or impl not in COMPILED]
        if any(impl in COMPILED for impl in impls):
            torch._dynamo.reset()  # each compiled implementation's graphs stay cached for the rounds
        try:
            times, methods, memory, samples = time_interleaved({impl: builder(impl) for impl in impls}, ctx)
        finally:
            torch._dynamo.reset()
        for impl in NETWORK_IMPLS:
            if impl not in impls:
                for mode in MODES:
                    times[mode][impl] = {"na": "torch.compile off (--no-compile)"}
                memory[impl] = None
        record.update(times_ms=times, bwd_method=methods, peak_mem_bytes=memory, ratios=_ratios(samples, NETWORK_IMPLS),
                      gflops={impl: {mode: record["flops"][mode] / times[mode][impl]["median_ms"] / 1e6
                                     for mode in MODES if "median_ms" in times[mode].get(impl, {})}
                              for impl in NETWORK_IMPLS})
    return record


# --- the event-driven path -----------------------------------------------------------------------------

def b1_neurons(case: LayerCase, w: torch.Tensor, b: torch.Tensor, t_start: float, t_min: float, t_max: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, threshold) of B1 neurons (see ttfs_ext.events): alpha = 1 - S_in,
    theta = (t_max - t_start - b) - S_in (t_min - t_start), S_in the sum of a neuron's weights
    (conv: of the taps inside the image, per output position)."""
    if case.kind == "linear":
        s_in, bias = w.sum(dim=1), b
    else:
        ones = torch.ones((1, *case.t_shape(1)[1:]), dtype=w.dtype, device=w.device)
        s_in, bias = F.conv2d(ones, w, None, 1, case.padding)[0], b.view(-1, 1, 1)
    return 1.0 - s_in, (t_max - t_start - bias) - s_in * (t_min - t_start)


def event_function(case: LayerCase, backend: str) -> Callable[..., torch.Tensor]:
    if case.kind == "linear":
        return lambda t, w, a, th: TF.first_spike_linear(t, w, a, th, T_START, T_MAX, backend=backend)
    return lambda t, w, a, th: TF.first_spike_conv2d(t, w, a, th, T_START, T_MAX, 1, case.padding, backend=backend)


def reference_bytes(case: LayerCase, batch: int, element_size: int = 4) -> int:
    """Estimated memory of the sort-and-gather reference, fwd+bwd: ~9 tensors of
    rows x inputs x outputs (rows = batch x output positions)."""
    m, n, k = case.gemm(batch)
    return REFERENCE_BYTES_PER_ELEMENT * element_size * m * n * (k + 1)


def _reference_batch(case: LayerCase, budget: int) -> Optional[int]:
    if reference_bytes(case, case.batch) <= budget:
        return case.batch
    b = 1 << (case.batch.bit_length() - 1)
    while b >= 1:
        if b < case.batch and reference_bytes(case, b) <= budget:
            return b
        b //= 2
    return None


def _event_check(case: LayerCase, device: str, t_in, w, alpha, theta) -> dict[str, Any]:
    """float64 kernel vs float64 reference (values; gradients of t_in, weight, alpha,
    threshold) on a slice small enough for the reference (batch and output channels), and
    the float32 kernel's spike-time error."""
    cb = min(case.batch, 8 if case.kind == "linear" else 1)
    rows, k = case.gemm(cb)[0], case.gemm()[2]
    outs = max(1, min(case.out_features, (512 << 20) // (REFERENCE_BYTES_PER_ELEMENT * 8 * rows * (k + 1))))
    args = [t_in[:cb], w[:outs], alpha[:outs], theta[:outs]]
    args64 = [a.double() for a in args]
    gen = torch.Generator(device=device).manual_seed(2)

    def run(backend, tensors):
        leaves = [a.detach().clone().requires_grad_() for a in tensors]
        out = event_function(case, backend)(*leaves)
        g = torch.randn(out.shape, generator=gen.manual_seed(2), device=device, dtype=out.dtype)
        return out, torch.autograd.grad(out, leaves, g)

    def err(a, e):  # relative to max(1, max |e|), as ttfs check
        a, e = a.detach().double(), e.detach().double()
        return float((a - e).abs().max()) / max(1.0, float(e.abs().max())) if e.numel() else 0.0

    ref, ref_grads = run("reference", args64)
    ker, ker_grads = run(device, args64)
    ref, ker = ref.detach(), ker.detach()
    with torch.no_grad():
        k32 = event_function(case, device)(*args)
    value, gradient = err(ker, ref), max(err(a, e) for a, e in zip(ker_grads, ref_grads))
    diff32 = (k32.double() - ref).abs()
    return {"slice_batch": cb, "slice_out_channels": outs, "tolerance": list(EVENT_TOLERANCE),
            "float64_value_error": value, "float64_grad_error": gradient,
            "passed": value <= EVENT_TOLERANCE[0] and gradient <= EVENT_TOLERANCE[1],
            "float32_max_abs_error": float(diff32.max()) if diff32.numel() else 0.0,
            "float32_fraction_above_1e-4": float((diff32 > 1e-4).double().mean()) if diff32.numel() else 0.0,
            "spikes": float((ref < T_MAX).double().mean()) if ref.numel() else 0.0,
            "early_spikes": float((ref < T_MIN).double().mean()) if ref.numel() else 0.0}


def bench_event(ev: EventCase, ctx: Context) -> dict[str, Any]:
    device = ctx.device
    case = ev.layer()
    ref_batch = _reference_batch(case, ctx.reference_budget)
    record: dict[str, Any] = {
        "section": "event", "name": case.name, "kind": case.kind, "batch": case.batch,
        "t_in_shape": list(case.t_shape()), "weight_shape": list(case.w_shape()),
        "window": {"t_start": T_START, "t_min": T_MIN, "t_max": T_MAX},
        "reference_batch": ref_batch,
        "reference_memory_estimate_bytes": {"batch": reference_bytes(case, case.batch),
                                            "reference_batch": reference_bytes(case, ref_batch) if ref_batch else None,
                                            "budget": ctx.reference_budget},
    }
    if ref_batch is None:
        record["reference_note"] = (f"reference skipped: ~{reference_bytes(case, 1) / 2**30:.1f} GiB at batch 1 > "
                                    f"budget {ctx.reference_budget / 2**30:.1f} GiB")
    elif ref_batch != case.batch:
        record["reference_note"] = (f"reference at batch {ref_batch}: ~{reference_bytes(case, case.batch) / 2**30:.1f}"
                                    f" GiB at batch {case.batch} > budget {ctx.reference_budget / 2**30:.1f} GiB")
    t_in, w, b = _layer_tensors(case, device)
    alpha, theta = b1_neurons(case, w, b, T_START, T_MIN, T_MAX)
    check = _event_check(case, device, t_in, w, alpha, theta)
    record["check"] = check
    if not check["passed"]:
        record["check"]["reason"] = "event kernel disagrees with the reference in float64: case aborted"
        return record
    runs = [("kernel", device, case.batch)]
    if ref_batch is not None:
        if ref_batch != case.batch:
            runs.append(("kernel_at_reference_batch", device, ref_batch))
        runs.append(("reference", "reference", ref_batch))
    def builder(backend: str, batch: int) -> Callable[[], tuple[Forward, Backward]]:
        def build() -> tuple[Forward, Backward]:
            fn = event_function(case, backend)
            leaves = [x[:batch].detach().clone().requires_grad_() if i == 0 else x.detach().clone().requires_grad_()
                      for i, x in enumerate((t_in, w, alpha, theta))]
            upstream = _Upstream(case.gemm(batch)[0] * case.out_features, device)

            def fwd() -> torch.Tensor:
                return fn(*leaves)

            def grad(out: torch.Tensor, retain: bool) -> Any:
                return torch.autograd.grad(out, leaves, upstream(out), retain_graph=retain)
            return fwd, grad
        return build

    times, _, memory, samples = time_interleaved({impl: builder(backend, batch) for impl, backend, batch in runs},
                                                 ctx)
    kernel_same = "kernel_at_reference_batch" if ref_batch not in (None, case.batch) else "kernel"
    ratios = {mode: {"reference/kernel": paired_ratio(samples[mode], ["reference"], [kernel_same])} for mode in MODES}
    record.update(times_ms=times, peak_mem_bytes=memory, ratios=ratios)
    return record


def bench_simulate(case: SimulateCase, ctx: Context) -> dict[str, Any]:
    """ttfs_ext.simulate of a whole VGG (every spiking layer event-driven), and its closed
    form (the network's forward), on random images."""
    device = ctx.device
    torch.manual_seed(0)
    net = train.vgg(case.config, case.channels, case.size, 10).to(device)
    x = torch.rand(case.batch, case.channels, case.size, case.size, device=device,
                   generator=torch.Generator(device=device).manual_seed(0))
    record: dict[str, Any] = {"section": "simulate", "name": case.label, "model": case.name, "batch": case.batch,
                              "input_shape": [case.channels, case.size, case.size]}
    try:
        with torch.no_grad():
            ttfs_ext.simulate(net, x[:1])  # warm-up on one image
            result: dict[str, Any] = {}

            def run() -> None:
                result["sim"] = ttfs_ext.simulate(net, x)

            timing = time_runs(run, ctx, case.repeats)
        closed = measure(no_grad(lambda: net(x)), ctx)
        sim = result["sim"]
        record.update(ok=True, time_ms=timing, closed_form_ms=closed,
                      neurons=sum(layer.neurons for layer in sim.layers),
                      spikes=sum(layer.spikes for layer in sim.layers),
                      early_spikes=sum(layer.early_spikes for layer in sim.layers),
                      deviating=sum(layer.deviating for layer in sim.layers),
                      spiking_layers=len(sim.layers))
    except Exception as err:
        record.update(ok=False, error=unavailable(err)["na"])
    finally:
        release_memory(device)
    return record


# --- the time-stepped simulation ---------------------------------------------------------------------

@torch.no_grad()
def clock_driven_first_spikes(t_in: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor,
                              threshold: torch.Tensor, t_start: float, t_max: float, dt: float) -> torch.Tensor:
    """First spike times of the general neuron of ttfs_ext.functional.first_spike_linear,
    simulated clock-driven: the network state advances in steps of dt from t_start (forward
    Euler), as snnTorch's Synaptic neuron with alpha = beta = 1 and no reset does. An input
    spike is binned into the step in which it arrives (its step current switches on at the
    first grid time t_start + k dt >= t_j); every step runs one GEMM of the inputs' spike
    vector; a neuron's spike time is the first grid time at which V >= threshold (t_max if
    none before t_max). The currents are summed and integrated in float64 (float32 rounding
    over ~10^4 steps would exceed 1e-3); the GEMMs run in the weight's dtype.

    t_in (B, N), weight (O, N), alpha and threshold (O,). Returns (B, O) in float64."""
    steps = math.ceil((t_max - t_start) / dt - 1e-9)
    onset = ((t_in - t_start) / dt).ceil().clamp_(min=0).to(torch.int64)   # step whose current the input joins
    batch, outputs = t_in.shape[0], weight.shape[0]
    current = alpha.double().expand(batch, outputs).clone()
    v = torch.zeros(batch, outputs, dtype=torch.float64, device=t_in.device)
    theta = threshold.double()
    done = (theta <= 0).expand(batch, outputs).clone()
    out = torch.where(done, torch.full_like(v, t_start), torch.full_like(v, t_max))
    for k in range(steps):
        spikes = (onset == k).to(weight.dtype)
        current += F.linear(spikes, weight).double()
        v.add_(current, alpha=dt)
        crossed = (v >= theta) & ~done
        out.masked_fill_(crossed, t_start + (k + 1) * dt)
        done |= crossed
    return out.clamp_(max=t_max)


def bench_stepped(case: SteppedCase, ctx: Context) -> dict[str, Any]:
    device = ctx.device
    torch.manual_seed(0)
    layer = train.fc2(case.in_features, case.out_features, 10, input_shape=None)[1].to(device)
    w, b = layer.weight.detach(), layer.bias.detach()
    t_in = torch.rand(case.batch, case.in_features, device=device,
                      generator=torch.Generator(device=device).manual_seed(0))
    with torch.no_grad():
        u = F.linear(T_MIN - t_in, w, b)
    width = 1.5 * max(float(u.max()), 1e-3)    # the calibrated window rule, zeta = 0.5
    t_max = T_MIN + width
    lc = LayerCase(case.group, "linear", case.batch, case.in_features, case.out_features)
    alpha, theta = b1_neurons(lc, w, b, T_START, T_MIN, t_max)
    exact = TF.first_spike_linear(t_in.double(), w.double(), alpha.double(), theta.double(), T_START, t_max,
                                  backend=device)
    closed = TF.linear(t_in.double(), w.double(), b.double(), T_MIN, t_max, backend=device)
    record: dict[str, Any] = {
        "section": "timestepped", "name": case.name, "batch": case.batch,
        "shape": [case.in_features, case.out_features], "window": {"t_start": T_START, "t_min": T_MIN, "t_max": t_max},
        "method": ("clock-driven PyTorch loop: forward Euler from t_start to t_max, one GEMM of the input spike vector "
                   "per step, spike = first grid time with V >= threshold (snnTorch Synaptic with alpha = beta = 1, "
                   "written out); float32 GEMMs, float64 state"),
        "snntorch": snntorch_version() or "not installed: the equivalent PyTorch loop is used",
        "target_error": case.target_error,
        "event_vs_closed_form_max": float((exact - closed).abs().max()),
        "fired": float((exact < t_max).double().mean()),
    }
    search = []
    dt, accepted = case.dt0, None
    for _ in range(case.max_halvings + 1):
        ctx.sync()
        start = time.perf_counter()
        stepped = clock_driven_first_spikes(t_in, w, alpha, theta, T_START, t_max, dt)
        ctx.sync()
        seconds = time.perf_counter() - start
        error = float((stepped - exact).abs().max())
        entry = {"dt": dt, "steps": math.ceil((t_max - T_START) / dt - 1e-9), "max_error": error, "ms": seconds * 1e3}
        search.append(entry)
        ctx.log(f"    dt {dt:.3g}: {entry['steps']} steps, max error {error:.3g}, {seconds:.2f} s")
        if error <= case.target_error:
            accepted = entry
            break
        dt /= 2
    record["search"] = search
    final = accepted or search[-1]
    kernel = measure(no_grad(lambda: TF.linear(t_in, w, b, T_MIN, t_max, backend=device)), ctx)
    event = measure(no_grad(lambda: TF.first_spike_linear(t_in, w, alpha, theta, T_START, t_max, backend=device)), ctx)
    record.update(reached=accepted is not None, dt=final["dt"], steps=final["steps"], max_error=final["max_error"],
                  stepped_ms=final["ms"], kernel_fwd_ms=kernel, event_kernel_fwd_ms=event,
                  ratio_vs_kernel=final["ms"] / kernel["median_ms"],
                  ratio_vs_event_kernel=final["ms"] / event["median_ms"])
    release_memory(device)
    return record



# --- running a list of cases ---------------------------------------------------------------------------

Case = Union[LayerCase, NetworkCase, EventCase, SimulateCase, SteppedCase]
SECTIONS = ("layers", "networks", "events", "simulate", "timestepped")


def _jobs(cases: Sequence[Case], ctx: Context) -> list[tuple[str, str, Callable[[], dict[str, Any]]]]:
    """(report section, label, run) per case and precision, in the order of SECTIONS."""
    jobs: dict[str, list] = {section: [] for section in SECTIONS}
    for case in cases:
        if isinstance(case, LayerCase):
            for q in ctx.precisions:
                jobs["layers"].append(("layers", f"layer/{case.name} {q.name}",
                                       lambda case=case, q=q: bench_layer(case, q, ctx)))
        elif isinstance(case, NetworkCase):
            for q in ctx.precisions:
                jobs["networks"].append(("networks", f"network/{case.label} {q.name}",
                                         lambda case=case, q=q: bench_network(case, q, ctx)))
        elif isinstance(case, EventCase):
            jobs["events"].append(("events", f"event/{case.name}", lambda case=case: bench_event(case, ctx)))
        elif isinstance(case, SimulateCase):
            jobs["simulate"].append(("simulate", f"simulate/{case.label}", lambda case=case: bench_simulate(case, ctx)))
        elif isinstance(case, SteppedCase):
            jobs["timestepped"].append(("timestepped", f"timestepped/{case.name}",
                                        lambda case=case: bench_stepped(case, ctx)))
        else:
            raise TypeError(f"not a benchmark case: {case!r}")
    return [j for section in SECTIONS for j in jobs[section] if ctx.selected(*j[1].split("/", 1))]


def run_cases(cases: Sequence[Case], ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """Run every case selected by ctx.only, each at every precision of ctx: the records per
    report section, and the failures (a crashed case or a failed check; the others still run).
    The NaN/inf data check of ttfs_ext is off meanwhile: it reads the data (and syncs on a GPU)."""
    results: dict[str, list[dict[str, Any]]] = {section: [] for section in SECTIONS}
    results["failures"] = []
    jobs = _jobs(cases, ctx)
    checks = ttfs_ext.input_checks_enabled()
    ttfs_ext.set_input_checks(False)
    try:
        for i, (section, label, job) in enumerate(jobs, 1):
            t0 = time.perf_counter()
            ctx.log(f"[{i}/{len(jobs)}] {label} ...")
            try:
                record = job()
            except Exception as err:
                record = {"section": section, "name": label, "crashed": unavailable(err)["na"]}
                results["failures"].append({"case": label, "error": record["crashed"]})
            else:
                check = record.get("check", {})
                if check and not check.get("passed", True):
                    results["failures"].append({"case": label, "error": check.get("reason", "check failed")})
            results[section].append(record)
            ctx.log(f"    {time.perf_counter() - t0:.1f} s")
    finally:
        ttfs_ext.set_input_checks(checks)
    return results


def default_cases(device: str) -> list[Case]:
    """What `ttfs bench` runs without shapes: FC2's hidden layer and a VGG16 convolution, the
    FC2 training step, the FC2 layer through the event path and time-stepped."""
    conv_batch = 128 if device == "cuda" else 8
    return [LayerCase("fc2", "linear", 256, 784, 340),
            LayerCase("vgg16-cifar", "conv2d", conv_batch, 64, 64, 32),
            NetworkCase("fc2", "fc2", 256),
            EventCase("fc2", "linear", 256, 784, 340),
            SteppedCase("fc2", 32, 784, 340)]
