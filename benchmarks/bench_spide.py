"""One training iteration of a feedback SNN (ttfs_ext.spide): the fused neuron-step kernels
against the pure-PyTorch reference loop, forward (T steps) and backward (SPIDE's T_b ternary
steps and the weight gradients) timed separately, in paired, alternated runs.

Two pure-PyTorch baselines: the same network with backend="reference" (each population's
step is ttfs_ext.reference's sequence of ATen ops, 7-10 element-wise launches, instead of one
fused pass), and a port of the authors' time loops written from the description in
../shared/docs/fs_spide.md (B1, B4: the masks, the 1/q and the injected gradient as separate
ops, IF neurons, no dropout). The connections (ATen convolutions) and the weight gradients are
the same calls in all three. Before timing, all must give the same gradients. The neuron steps
alone (T steps on the populations' shapes) are timed too.

    python benchmarks/bench_spide.py                    # CPU: ConvNet-F (MNIST) and AlexNet-F (CIFAR)
    python benchmarks/bench_spide.py --state convnet_f-mnist=run.pt   # a trained ConvNet-F
    python benchmarks/bench_spide.py --device cuda --cuda-graphs   # on a GPU (benchmarks/gpu_verify.py --part spide)

JSON: benchmarks/results/spide_<device>.json (host, versions, commit).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite.host import git_state, tune_cpu_allocator  # noqa: E402

import ttfs_ext  # noqa: E402
from ttfs_ext import functional as TF  # noqa: E402
from ttfs_ext import spide  # noqa: E402

CASES = {
    # name: (builder, input shape without batch, default batch, T, T_b)
    "convnet_f-mnist": (spide.convnet_f, (1, 28, 28), 16, 30, 100),
    "alexnet_f-cifar10": (spide.alexnet_f, (3, 32, 32), 4, 30, 250),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# The variants timed side by side: (neuron-step backend, products); "port" is the authors' loop.
VARIANTS = {"kernels": (None, "auto"), "dense_products": (None, "dense"), "reference": ("reference", "dense"),
            "port": (None, "dense")}


# --state CASE=FILE: a `ttfs spide --checkpoint` of that case's model, timed on test images
# of the dataset it was trained on (a trained network fires at its own rates, not at init's).
STATES: dict = {}


def _build(case, batch, device, backend, T=None, T_b=None, products="auto"):
    builder, shape, _, T0, Tb0 = CASES[case]
    torch.manual_seed(0)
    net = builder(T=T or T0, T_b=T_b or Tb0, dropout=0.0, backend=backend, products=products).to(device)
    net.count_backward_spikes = False  # as spide.fit's iterations but one in ten: the iteration itself
    net.train()
    if case in STATES:
        state, data = STATES[case]
        net.load_state_dict(state["model"])
        x, y = data.x_test[:batch].to(device), data.y_test[:batch].to(device)
        return net, x, y
    x = torch.rand((batch, *shape), generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(2)).to(device)
    return net, x, y


def _load_state(spec: str) -> None:
    from ttfs_ext import data
    from ttfs_ext.train.checkpoints import load_checkpoint
    case, path = spec.split("=", 1)
    if case not in CASES:
        raise SystemExit(f"--state: unknown case {case!r}; one of {', '.join(CASES)}")
    state = load_checkpoint(path)
    STATES[case] = (state, data.load_dataset(state["config"]["dataset"]))


# --- a port of the authors' time loops (written from ../shared/docs/fs_spide.md B1 and B4, not
# copied): per population and step u = u + I; s = (u >= V_th).float(); u = u - q s; a = a + s,
# and in the backward I = (1/q) W^T (m * s_b) [+ g]; u_b = u_b + I; s_b = (u_b >= V_b).float() -
# (u_b <= -V_b).float(); u_b = u_b - 2 V_b s_b; beta = beta + s_b. IF neurons, no dropout.

def _port_forward(net, x):
    n = net.num_populations
    c = net.input(x)
    u, a, s_last = [None] * n, [None] * n, None
    for t in range(net.T):
        s = None
        for l in range(n):
            if l == 0:
                current = c if t == 0 or net.feedback is None else c + net.feedback(s_last)
            else:
                current = net.layers[l - 1](s)
            u[l] = current if t == 0 else u[l] + current
            s = (u[l] >= net.v_th).float()
            u[l] = u[l] - net.q * s
            a[l] = s if t == 0 else a[l] + s
        s_last = s
    return [r / net.T for r in a]


def _port_backward(net, g, rates):
    n = net.num_populations
    masks = [((r > 0) & (r < 1)).float() for r in rates]
    g = g * net.loss_scale
    u, beta, out = [torch.zeros_like(r) for r in rates], [torch.zeros_like(r) for r in rates], [None] * n
    for t in range(net.T_b):
        for l in reversed(range(n)):
            if l == n - 1:
                current = g if t == 0 or net.feedback is None else (
                    g + net.feedback.adjoint(masks[0] * out[0], rates[-1].shape) * (1 / net.q))
            else:
                current = net.layers[l].adjoint(masks[l + 1] * out[l + 1], rates[l].shape) * (1 / net.q)
            u[l] = u[l] + current
            out[l] = (u[l] >= net.v_th_b).float() - (u[l] <= -net.v_th_b).float()
            u[l] = u[l] - net.q_b * out[l]
            beta[l] = beta[l] + out[l]
    return [b / (net.T_b * net.loss_scale) for b in beta], masks


class _Port(torch.autograd.Function):
    @staticmethod
    def forward(ctx, net, x, *params):
        rates = _port_forward(net, x)
        ctx.net = net
        ctx.save_for_backward(x, *rates)
        return rates[-1].clone()

    @staticmethod
    def backward(ctx, g):
        x, *rates = ctx.saved_tensors
        with torch.no_grad():
            betas, masks = _port_backward(ctx.net, g, rates)
        grads = ctx.net._weight_grads(x, rates, masks, betas, None, need_x=False)
        return (None, None, *grads[1:])


def _port_net_forward(net, x):
    if net.fb_norm is not None and net.feedback is not None:
        net.restrict_feedback_norm(x)
    return net.readout(_Port.apply(net, x, *net.snn_parameters()).flatten(1))


def _iteration(net, x, y, device, port=False):
    """(forward seconds, backward seconds) of one training iteration."""
    net.zero_grad(set_to_none=True)
    _sync(device)
    t0 = time.perf_counter()
    out = _port_net_forward(net, x) if port else net(x)
    loss = F.cross_entropy(out, y)
    _sync(device)
    t1 = time.perf_counter()
    loss.backward()
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def _check(case, batch, device, T, T_b):
    grads = {}
    for name, (backend, products) in VARIANTS.items():
        net, x, y = _build(case, batch, device, backend, T, T_b, products)
        F.cross_entropy(_port_net_forward(net, x) if name == "port" else net(x), y).backward()
        grads[name] = torch.cat([p.grad.flatten() for p in net.parameters()])
    # the same ATen products in the same order: equal to rounding
    diff = float((grads["dense_products"] - grads["reference"]).abs().max())
    scale = float(grads["reference"].abs().max())
    # the port scales by 1/q after the transposed products (the kernels fold it into the mask),
    # and the event-driven products sum in another order: float32 rounding may flip a rare spike
    rel = {name: float((grads["kernels"] - grads[name]).norm() / grads["kernels"].norm())
           for name in ("port", "reference")}
    return diff, scale, rel


def _step_densities(net, x, y) -> dict:
    """The fraction of nonzero spikes per step that each population hands to the products,
    averaged over one iteration's steps: forward (binary) and backward (ternary)."""
    seen = {"forward": [], "backward": []}
    real = {"forward": TF.spide_forward_step, "backward": TF.spide_backward_step}

    def counting(kind):
        def step(*args, **kwargs):
            s = real[kind](*args, **kwargs)
            seen[kind].append(float((s != 0).double().mean()))
            return s
        return step
    TF.spide_forward_step, TF.spide_backward_step = counting("forward"), counting("backward")
    try:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
    finally:
        TF.spide_forward_step, TF.spide_backward_step = real["forward"], real["backward"]
    n = net.num_populations
    out = {}
    for kind, values in seen.items():
        # forward: population 1..N each step; backward: N..1 each step
        per = [statistics.mean(values[i::n]) for i in range(n)] if values else []
        out[kind] = per if kind == "forward" else per[::-1]
    return out


def _products_sweep(net, x, densities=(0.005, 0.02, 0.05, 0.1, 0.2, 0.3), repeats=5):
    """Milliseconds of each connection's event-driven and dense product (forward and adjoint)
    on random spikes of the given densities: where the events stop paying (EVENT_DENSITY)."""
    shapes = net._batch_shapes(x)
    conns = [(f"layer{l}", c, shapes[l], shapes[l + 1]) for l, c in enumerate(net.layers)]
    if net.feedback is not None:
        conns.append(("feedback", net.feedback, shapes[-1], shapes[0]))
    rows = []
    gen = torch.Generator().manual_seed(3)
    for name, conn, in_shape, out_shape in conns:
        for adjoint in (False, True):
            product = conn.spike_product(adjoint, in_shape, out_shape, True, None, None)
            if product.form is None:
                continue
            src = out_shape if adjoint else in_shape
            for density in densities:
                s = (torch.rand(src, generator=gen) < density).float().to(x.device)
                if len(src) == 4:
                    s = s.contiguous(memory_format=torch.channels_last)
                times = {}
                for kind, fn in (("events", product), ("dense", product.dense)):
                    fn(s)
                    t0 = time.perf_counter()
                    for _ in range(repeats):
                        fn(s)
                    times[kind] = (time.perf_counter() - t0) / repeats * 1e3
                rows.append(dict(connection=name, adjoint=adjoint, density=density, events_ms=times["events"],
                                 dense_ms=times["dense"], dense_over_events=times["dense"] / times["events"]))
    return rows


def _neuron_steps(net, x, steps, repeats):
    """Seconds of `steps` forward neuron steps and of `steps` ternary steps on the populations'
    shapes, kernel vs reference (median of repeats)."""
    shapes = [(x.shape[0], *s[1:]) for s in net._population_shapes(x)]
    out = {}
    for kind in ("forward", "backward"):
        for backend in (None, "reference"):
            times = []
            for _ in range(repeats):
                state = [(torch.zeros(s, device=x.device), torch.zeros(s, device=x.device),
                          torch.randn(s, device=x.device)) for s in shapes]
                gates = [torch.ones(s, device=x.device) for s in shapes]
                _sync(x.device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    for (u, r, c), g in zip(state, gates):
                        if kind == "forward":
                            TF.spide_forward_step(u, r, c, None, g, v_th=1.0, reset=2.0, backend=backend)
                        else:
                            TF.spide_backward_step(u, r, c, None, None, g, v_th=0.5, reset=1.0, backend=backend)
                _sync(x.device)
                times.append(time.perf_counter() - t0)
            out[f"{kind}_{'kernel' if backend is None else 'reference'}_s"] = statistics.median(times)
        out[f"{kind}_speedup"] = out[f"{kind}_reference_s"] / out[f"{kind}_kernel_s"]
    return out


def run_case(case, batch, device, repeats, T=None, T_b=None, sweep=True):
    diff, scale, rel = _check(case, min(batch, 2), device, T, T_b)
    if not diff <= 1e-5 * max(scale, 1.0):
        raise SystemExit(f"{case}: the kernel and reference gradients differ by {diff:g} (scale {scale:g})")
    if not max(rel.values()) <= 0.05:
        raise SystemExit(f"{case}: the kernel and port/reference gradients differ by {rel} (relative)")
    nets = {name: _build(case, batch, device, backend, T, T_b, products)
            for name, (backend, products) in VARIANTS.items()}
    for name in nets:  # warm-up
        _iteration(*nets[name], device, port=name == "port")
    times = {name: {"forward": [], "backward": []} for name in nets}
    for rep in range(repeats):
        order = list(nets) if rep % 2 == 0 else list(nets)[::-1]
        for name in order:
            f, bw = _iteration(*nets[name], device, port=name == "port")
            times[name]["forward"].append(f)
            times[name]["backward"].append(bw)
    med = {name: {k: statistics.median(v) for k, v in times[name].items()} for name in times}
    k = med["kernels"]
    net, x, y = nets["kernels"]
    net.count_backward_spikes = True  # the rates of one more, untimed iteration
    _iteration(net, x, y, device)
    row = dict(case=case, batch=batch, T=net.T, T_b=net.T_b, repeats=repeats,
               weights="initial (uniform random inputs)" if case not in STATES else dict(
                   source="checkpoint (its dataset's first test images)", config=STATES[case][0]["config"],
                   last_epoch=STATES[case][0]["history"][-1]),
               kernel_forward_s=k["forward"], kernel_backward_s=k["backward"])
    for name in ("reference", "port", "dense_products"):
        m = med[name]
        row.update({f"{name}_forward_s": m["forward"], f"{name}_backward_s": m["backward"],
                    f"{name}_forward_speedup": m["forward"] / k["forward"],
                    f"{name}_backward_speedup": m["backward"] / k["backward"],
                    f"{name}_iteration_speedup": (m["forward"] + m["backward"]) / (k["forward"] + k["backward"])})
    row.update(check_max_grad_diff=diff, check_grad_scale=scale, check_relative_grad_diff=rel,
               forward_rate=net.last_stats.get("forward_rate"), backward_rate=net.last_stats.get("backward_rate"),
               step_densities=_step_densities(net, x, nets["kernels"][2]),
               neuron_steps=_neuron_steps(net, x, net.T, max(3, repeats)),
               products_sweep=_products_sweep(net, x) if sweep and device.type == "cpu" else [],
               all_forward_s=times["kernels"]["forward"], all_reference_forward_s=times["reference"]["forward"])
    print(f"{case} (batch {batch}, T {net.T}, T_b {net.T_b}): forward {k['forward']*1e3:.1f} ms vs reference "
          f"{med['reference']['forward']*1e3:.1f} ms ({row['reference_forward_speedup']:.2f}x); backward "
          f"{k['backward']*1e3:.1f} ms vs {med['reference']['backward']*1e3:.1f} ms "
          f"({row['reference_backward_speedup']:.2f}x); iteration {row['reference_iteration_speedup']:.2f}x; "
          f"against the port of the authors' loop {row['port_iteration_speedup']:.2f}x; the same kernels with "
          f"dense products {row['dense_products_iteration_speedup']:.2f}x; neuron steps alone: forward "
          f"{row['neuron_steps']['forward_speedup']:.2f}x, backward {row['neuron_steps']['backward_speedup']:.2f}x; "
          f"rates forward {row['forward_rate']:.4f}, backward {row['backward_rate']:.4f}", flush=True)
    return row


def run_cuda_graphs(case, batch, repeats):
    """GPU: the T-step forward simulation and the T_b-step ternary loop, each captured once as
    a CUDA graph and replayed, against eager launches (the kernel path both times)."""
    net, x, _ = _build(case, batch, torch.device("cuda"), None)  # products: dense on CUDA
    net.eval()
    static_x = x.clone()
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                net._simulate(static_x, None)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_rates = net._simulate(static_x, None)
        eager, replay = [], []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            rates = net._simulate(x, None)
            torch.cuda.synchronize()
            eager.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            graph.replay()
            torch.cuda.synchronize()
            replay.append(time.perf_counter() - t0)
        diff = max(float((a - b).abs().max()) for a, b in zip(rates, static_rates))
        # the T_b-step ternary loop (net._spide_loop: no synchronisation inside)
        g = torch.randn_like(rates[-1]) * 1e-3
        with torch.cuda.stream(s):
            for _ in range(2):
                net._spide_loop(g, static_rates, None)
        torch.cuda.current_stream().wait_stream(s)
        bgraph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(bgraph):
            static_beta, _ = net._spide_loop(g, static_rates, None)
        beager, breplay = [], []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            beta, _ = net._spide_loop(g, static_rates, None)
            torch.cuda.synchronize()
            beager.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bgraph.replay()
            torch.cuda.synchronize()
            breplay.append(time.perf_counter() - t0)
        bdiff = max(float((a - b).abs().max()) for a, b in zip(beta, static_beta))
    return dict(case=case, batch=batch, eager_forward_s=statistics.median(eager),
                graph_forward_s=statistics.median(replay),
                graph_speedup=statistics.median(eager) / statistics.median(replay), max_rate_diff=diff,
                eager_backward_loop_s=statistics.median(beager), graph_backward_loop_s=statistics.median(breplay),
                backward_graph_speedup=statistics.median(beager) / statistics.median(breplay),
                max_beta_diff=bdiff)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--batch", type=int, help="default: each case's (CPU) or 128 (CUDA)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--T", type=int)
    ap.add_argument("--T-b", type=int)
    ap.add_argument("--cuda-graphs", action="store_true", help="also time the forward captured as a CUDA graph")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the shared 2-core machine)")
    ap.add_argument("--state", action="append", default=[], metavar="CASE=FILE",
                    help="time that case with the weights of a `ttfs spide --checkpoint` file, on its test images")
    ap.add_argument("--out", help="JSON file (default benchmarks/results/spide_<device>.json)")
    args = ap.parse_args()
    for spec in args.state:
        _load_state(spec)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = tune_cpu_allocator() if device.type == "cpu" else None
    rows = [run_case(c, args.batch or (CASES[c][2] if device.type == "cpu" else 128), device, args.repeats, args.T,
                     args.T_b) for c in args.cases]
    graphs = [run_cuda_graphs(c, args.batch or 128, args.repeats) for c in args.cases] if args.cuda_graphs else []
    status = ttfs_ext.status()
    result = dict(benchmark="bench_spide", device=str(device), cases=rows, cuda_graphs=graphs,
                  host=dict(platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count(),
                            torch_threads=torch.get_num_threads(), load_average=os.getloadavg(),
                            gpu=status["gpu"], cpu_allocator=allocator),
                  versions=dict(python=platform.python_version(), torch=torch.__version__,
                                ttfs_ext=status["version"], build=status["build"], cpu_isa=status["cpu_isa"]),
                  **git_state(), command="python benchmarks/bench_spide.py " + " ".join(sys.argv[1:]),
                  time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"spide_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
