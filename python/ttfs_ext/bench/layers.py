"""Layers and whole networks: the ttfs_ext kernel against the pure-PyTorch reference and the
ReLU twin (F.linear / F.conv2d + relu on x = t_min - t_in, the floor), eager and compiled, after
a check against float64; a network is one training step (forward, cross-entropy, backward)."""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ttfs_ext import functional as TF
from ttfs_ext import reference as R
from ttfs_ext import train

from .cases import (COMPILED, LAYER_IMPLS, NETWORK_IMPLS, T_MAX, T_MIN, LayerCase, NetworkCase, Upstream, layer_costs,
                    layer_tensors, max_rel_error, paired_ratios, rel_error)
from .timing import (MODES, Backward, Context, Forward, Precision, autocast, compile_fresh, precision_context,
                     time_interleaved, use_backend)

__all__ = ["bench_layer", "bench_network", "layer_function"]

CHECK_TOLERANCE = 1e-4          # float32 kernel vs float64 reference, relative to the largest value
NETWORK_CHECK_TOLERANCE = 1e-7  # whole networks, float64 kernel vs float64 reference


# --- layers -----------------------------------------------------------------------------------------

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
            "kernel": {"out": out_k, "grad": max_rel_error(g_ker, g_ref)},
            "twin": {"out": out_t, "grad": max_rel_error(g_twin, g_twin64)}}


def bench_layer(case: LayerCase, p: Precision, ctx: Context) -> dict[str, Any]:
    device = ctx.device
    costs = layer_costs(case)
    record: dict[str, Any] = {
        "section": "layer", "name": case.name, "group": case.group, "kind": case.kind, "precision": p.name,
        "batch": case.batch, "t_in_shape": list(case.t_shape()), "weight_shape": list(case.w_shape()),
        "padding": case.padding if case.kind == "conv2d" else None, "count_in_network": case.count, **costs,
    }
    t_in, w, b = layer_tensors(case, device)
    if ctx.channels_last and case.kind == "conv2d":  # the twin's input (t_min - t_in) keeps the layout
        t_in, w = (x.contiguous(memory_format=torch.channels_last) for x in (t_in, w))
        record["memory_format"] = "channels_last"
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
        upstream = Upstream(case.gemm()[0] * case.out_features, device)
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
                      ratios=paired_ratios(samples, LAYER_IMPLS),
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
        return {"out": rel_error(logits, ref_logits), "grad": max_rel_error(grads, ref_grads),
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
        record.update(times_ms=times, bwd_method=methods, peak_mem_bytes=memory,
                      ratios=paired_ratios(samples, NETWORK_IMPLS),
                      gflops={impl: {mode: record["flops"][mode] / times[mode][impl]["median_ms"] / 1e6
                                     for mode in MODES if "median_ms" in times[mode].get(impl, {})}
                              for impl in NETWORK_IMPLS})
    return record


