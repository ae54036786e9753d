"""`ttfs check`: the compiled kernels against the float64 reference (values and gradients)
against an event-by-event simulation of the neuron ODE, on random layers, networks and
general neurons, on every device with kernels."""
from __future__ import annotations

import argparse
from typing import Callable, Optional

import torch

import ttfs_ext
from ttfs_ext import events
from ttfs_ext import functional as TF
from ttfs_ext import nn as tnn
from ttfs_ext import reference as R

__all__ = ["add_arguments", "run"]


def _max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.detach().double().cpu()
    actual = actual.detach().double().cpu()
    if not expected.numel():
        return 0.0
    return float((actual - expected).abs().max()) / max(1.0, float(expected.abs().max()))


def _random_layer(kind: str, gen: torch.Generator):
    """A random layer with inputs in [0, 1] (window of the first hidden layer: [1, 1 + width])."""
    if kind == "linear":
        t_in = torch.rand(32, 50, generator=gen, dtype=torch.float64)
        w = torch.randn(40, 50, generator=gen, dtype=torch.float64) / 50 ** 0.5
        b = 0.3 * torch.randn(40, generator=gen, dtype=torch.float64)
        geometry: tuple = ()
    else:
        t_in = torch.rand(4, 3, 10, 10, generator=gen, dtype=torch.float64)
        w = torch.randn(8, 3, 3, 3, generator=gen, dtype=torch.float64) / 27 ** 0.5
        b = 0.3 * torch.randn(8, generator=gen, dtype=torch.float64)
        geometry = (2, 1, 1, 1)  # stride, padding, dilation, groups
    with torch.no_grad():
        u = R.readout(t_in, w, b, 1.0) if kind == "linear" else R.conv2d(t_in, w, b, 1.0, 1e9, *geometry)
        x_max = float((u if kind == "linear" else 1e9 - u).max())
    return t_in, w, b, 1.0, 1.0 + 1.5 * x_max + 0.5, geometry


def _op(kind: str, backend: Optional[str]) -> Callable:
    if kind == "linear":
        return lambda t, w, b, lo, hi, geometry: TF.linear(t, w, b, lo, hi, backend=backend)
    return lambda t, w, b, lo, hi, geometry: TF.conv2d(t, w, b, lo, hi, *geometry, backend=backend)


def _run(fn, tensors, window, geometry, device, dtype, g):
    leaves = [x.to(device=device, dtype=dtype).requires_grad_() for x in tensors]
    out = fn(*leaves, *window, geometry)
    grads = torch.autograd.grad(out, leaves, g.to(out))
    return out, grads


def _random_network(seed: int) -> tnn.TTFSSequential:
    torch.manual_seed(seed)
    net = tnn.TTFSSequential(
        tnn.TTFSEncoder(),
        tnn.TTFSConv2d(1, 4, 3, padding=1), tnn.TTFSMaxPool2d(2),
        tnn.TTFSConv2d(4, 6, 3, stride=2, padding=1, groups=2),
        torch.nn.Flatten(), tnn.TTFSLinear(6 * 2 * 2, 12), tnn.TTFSReadout(12, 5),
    ).double()
    net.set_widths(_safe_widths(net))
    return net


def _safe_widths(net: tnn.TTFSSequential) -> list[float]:
    """Windows wide enough that no neuron crosses its threshold before its window opens, for
    any input: before t_min the potential is at most (max(-alpha, 0) + sum of positive weights)
    times the previous width above its threshold's floor (alpha = 1 - sum of weights)."""
    widths, previous = [], 1.0  # the input window [0, 1]
    for layer in net.spiking_layers():
        w = layer.weight.detach().flatten(1)
        bound = ((w.sum(1) - 1).clamp_min(0) + w.clamp_min(0).sum(1)) * previous
        if layer.bias is not None:
            bound = bound + layer.bias.detach()
        previous = 1.1 * float(bound.max().clamp_min(0)) + 0.1
        widths.append(previous)
    return widths


def _check_network(seed: int, devices: list[str], rows: list) -> bool:
    """A random conv/pool/dense network: kernels vs reference vs event simulation."""
    net = _random_network(seed)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ttfs_ext.set_backend("reference")
    try:
        ref = net(x)
        ref_grads = torch.autograd.grad(ref.square().sum(), list(net.parameters()))
    finally:
        ttfs_ext.set_backend(None)
    sim_err = _max_rel_err(events.simulate(net, x).logits, ref)
    ok = sim_err <= 1e-9
    rows.append((seed, "network", "reference", "float64", 0.0, 0.0, sim_err, ok))
    for device in devices:
        net_d, x_d = net.to(device), x.to(device)
        out = net_d(x_d)
        grads = torch.autograd.grad(out.square().sum(), list(net_d.parameters()))
        err = _max_rel_err(out, ref)
        gerr = max(_max_rel_err(g, rg) for g, rg in zip(grads, ref_grads))
        row_ok = err <= 1e-12 and gerr <= 1e-12
        ok &= row_ok
        rows.append((seed, "network", device, "float64", err, gerr, float("nan"), row_ok))
    net.cpu()
    return ok


def _random_neurons(kind: str, gen: torch.Generator):
    """General neurons (first_spike ops) with a mix of early, late and no spikes."""
    f64 = torch.float64
    if kind == "event_linear":
        t_in = 1.2 * torch.rand(16, 30, generator=gen, dtype=f64)
        w = 1.5 * torch.randn(20, 30, generator=gen, dtype=f64) / 30 ** 0.5
        alpha, theta = torch.randn(20, generator=gen, dtype=f64), 0.2 + torch.rand(20, generator=gen, dtype=f64)
        return (t_in, w, alpha, theta), ()
    t_in = 1.2 * torch.rand(2, 4, 7, 6, generator=gen, dtype=f64)
    w = torch.randn(6, 2, 3, 3, generator=gen, dtype=f64) / 3.0
    alpha = torch.randn(6, 4, 3, generator=gen, dtype=f64)  # per output position
    theta = 0.2 + torch.rand(6, generator=gen, dtype=f64)
    return (t_in, w, alpha, theta), (2, 1, 1, 2)  # stride, padding, dilation, groups


def _event_op(kind: str, backend: Optional[str]) -> Callable:
    if kind == "event_linear":
        return lambda t, w, a, th, geometry: TF.first_spike_linear(t, w, a, th, 0.0, 2.5, backend=backend)
    return lambda t, w, a, th, geometry: TF.first_spike_conv2d(t, w, a, th, 0.0, 2.5, *geometry, backend=backend)


def _check_event_ops(seed: int, devices: list[str], tolerance: dict, rows: list) -> bool:
    """The event-exact general neuron: kernels vs the reference (values and the gradients of
    t_in, weight, alpha and threshold)."""
    ok = True
    for kind in ("event_linear", "event_conv2d"):
        gen = torch.Generator().manual_seed(seed)
        tensors, geometry = _random_neurons(kind, gen)
        reference = _event_op(kind, "reference")
        with torch.no_grad():
            shape = reference(*tensors, geometry).shape
        g = torch.randn(shape, generator=gen, dtype=torch.float64)

        def run(fn, device, dtype):
            leaves = [x.to(device=device, dtype=dtype).requires_grad_() for x in tensors]
            out = fn(*leaves, geometry)
            return out, torch.autograd.grad(out, leaves, g.to(out))

        ref, ref_grads = run(reference, "cpu", torch.float64)
        for device in devices:
            for dtype in (torch.float64, torch.float32):
                out, grads = run(_event_op(kind, device), device, dtype)
                err = _max_rel_err(out, ref)
                gerr = max(_max_rel_err(a, e) for a, e in zip(grads, ref_grads))
                row_ok = err <= tolerance[dtype] and gerr <= 100 * tolerance[dtype]
                ok &= row_ok
                rows.append((seed, kind, device, str(dtype).replace("torch.", ""), err, gerr, float("nan"), row_ok))
    return ok


def run(args: argparse.Namespace) -> int:
    devices = [d for d in ("cpu", "cuda") if d in ttfs_ext.kernel_devices()
               and (d != "cuda" or torch.cuda.is_available())]
    tolerance = {torch.float64: 1e-12, torch.float32: 2e-5}
    rows, ok = [], True
    print(f"ttfs_ext {ttfs_ext.__version__} self-test: compiled kernels vs the float64 reference "
          f"(values and gradients) vs an event-by-event simulation of the neuron ODE")
    if not devices:
        print("no compiled kernels: only the reference runs (see `ttfs info`)")
    for seed in range(args.seeds):
        for kind in ("linear", "conv2d"):
            gen = torch.Generator().manual_seed(seed)
            t_in, w, b, lo, hi, geometry = _random_layer(kind, gen)
            reference = _op(kind, "reference")
            with torch.no_grad():
                shape = reference(t_in, w, b, lo, hi, geometry).shape
            g = torch.randn(shape, generator=gen, dtype=torch.float64)
            ref, ref_grads = _run(reference, (t_in, w, b), (lo, hi), geometry, "cpu", torch.float64, g)
            if kind == "linear":
                sim = events.first_spike_times(t_in, w, b, 0.0, lo, hi)
            else:
                sim = events.conv2d_first_spike_times(t_in, w, b, 0.0, lo, hi, *geometry)
            sim_err = _max_rel_err(ref, sim)
            row_ok = sim_err <= 1e-9
            rows.append((seed, kind, "reference", "float64", 0.0, 0.0, sim_err, row_ok))
            ok &= row_ok
            for device in devices:
                for dtype in (torch.float64, torch.float32):
                    out, grads = _run(_op(kind, device), (t_in, w, b), (lo, hi), geometry, device, dtype, g)
                    err = _max_rel_err(out, ref)
                    gerr = max(_max_rel_err(a, e) for a, e in zip(grads, ref_grads))
                    row_ok = err <= tolerance[dtype] and gerr <= tolerance[dtype]
                    ok &= row_ok
                    rows.append((seed, kind, device, str(dtype).replace("torch.", ""), err, gerr, float("nan"), row_ok))
        ok &= _check_network(seed, devices, rows)
        ok &= _check_event_ops(seed, devices, tolerance, rows)
    _print_table(rows, ok)
    return 0 if ok else 1


def _print_table(rows: list, ok: bool) -> None:
    print(f"{'seed':>4}  {'op':<13} {'backend':<10}{'dtype':<9}{'value err':>11}{'grad err':>11}{'event err':>11}  result")
    for seed, kind, backend, dtype, err, gerr, sim_err, row_ok in rows:
        sim_col = "" if sim_err != sim_err else f"{sim_err:.1e}"
        errs = f"{'':>22}" if backend == "reference" else f"{err:>11.1e}{gerr:>11.1e}"
        print(f"{seed:>4}  {kind:<13} {backend:<10}{dtype:<9}{errs}{sim_col:>11}  {'ok' if row_ok else 'FAIL'}")
    print("errors: max |x - reference| / max(1, max |reference|); event err: closed form vs simulated "
          "first threshold crossings; event_*: the event-exact general neuron (first_spike ops)")
    print("PASS" if ok else "FAIL")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .args import POSITIVE_INT
    parser.add_argument("--seeds", type=POSITIVE_INT, default=3, help="random layers and networks per op (default 3)")
