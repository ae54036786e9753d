"""The event-driven path: the first_spike kernels against the sort-and-gather reference (run
at a smaller batch, or skipped, where it would not fit the memory budget), ttfs_ext.simulate of
a whole VGG, and a time-stepped (clock-driven) simulation of a layer at the largest step size
whose spike-time error reaches the target."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

import ttfs_ext
from ttfs_ext import functional as TF
from ttfs_ext import train

from .cases import (REFERENCE_BYTES_PER_ELEMENT, T_MAX, T_MIN, T_START, EventCase, LayerCase, SimulateCase,
                    SteppedCase, Upstream, b1_neurons, layer_tensors, reference_bytes, snntorch_version)
from .timing import (MODES, Backward, Context, Forward, measure, no_grad, paired_ratio, release_memory,
                     time_interleaved, time_runs, unavailable)

__all__ = ["bench_event", "bench_simulate", "bench_stepped", "clock_driven_first_spikes", "event_function"]

EVENT_TOLERANCE = (1e-9, 1e-6)  # float64 event kernel vs float64 reference: values, gradients


# --- the event kernels --------------------------------------------------------------------------------

def event_function(case: LayerCase, backend: str) -> Callable[..., torch.Tensor]:
    if case.kind == "linear":
        return lambda t, w, a, th: TF.first_spike_linear(t, w, a, th, T_START, T_MAX, backend=backend)
    return lambda t, w, a, th: TF.first_spike_conv2d(t, w, a, th, T_START, T_MAX, 1, case.padding, backend=backend)


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
    t_in, w, b = layer_tensors(case, device)
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
            upstream = Upstream(case.gemm(batch)[0] * case.out_features, device)

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


