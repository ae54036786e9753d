"""What the CUDA device does, checked where it can be: on the CPU, with the CPU kernels driven as
CUDA drives its own (the C++ profile "cuda"), and on a GPU.

- NaN and inf with the data checks off: every op gives the same outputs and gradients under the
  CPU kernels' own profile and under the "cuda" profile, and the same as the reference
  (test_nan_inf_with_checks_off_*). A failure lists each element that differs.
- No host synchronisation in the ops on CUDA: a TTFS VGG16 training step (bfloat16 autocast,
  channels_last), fs_activation forward and backward, the SPIDE neuron steps and a FeedbackSNN
  training iteration under torch.cuda.set_sync_debug_mode("error") after a warm-up, and the same
  ops captured as CUDA graphs (test_cuda_no_host_sync_*, test_cuda_graph_capture_*).
- Aliasing that the SPIDE step kernels assume away (every pointer is __restrict__): u and rate
  are written in place, so no other argument may share memory with them, nor they with each
  other (test_spide_step_aliasing_*).
"""
from __future__ import annotations

import contextlib
import math
import re
from typing import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F

import ttfs_ext
from ttfs_ext import fs
from ttfs_ext import functional as TF

from _utils import (TOL, assert_close_scaled, conv_case, cpu_kernel_profile, dense_case, generator,
                    has_kernel_profiles, input_checks, input_checks_state)

F64, F32 = torch.float64, torch.float32
NAN, INF = float("nan"), float("inf")
needs_kernels = pytest.mark.skipif("cpu" not in ttfs_ext.kernel_devices(), reason="no compiled CPU kernels")
needs_profiles = pytest.mark.skipif(not ("cpu" in ttfs_ext.kernel_devices() and has_kernel_profiles()),
                                    reason="this build of ttfs_ext has no CPU kernel profiles "
                                           "(ttfs_ext._C._set_cpu_kernel_profile)")


@contextlib.contextmanager
def data_checks_off() -> Iterator[None]:
    """No NaN/inf data checks anywhere (CPU and CUDA)."""
    if input_checks_state()[1] is None:  # a build with one switch
        with input_checks(False):
            yield
    else:
        with input_checks(False, cuda=False):
            yield


# --- 5a: NaN and inf with the data checks off ----------------------------------------------------
#
# Each case: the op's float64 inputs, one element of one of them replaced by NaN or +-inf, and a
# call op(tensors, backend) -> output. The kernels run with backend "cpu"; the reference with
# backend "reference" (ttfs_ext.functional's, or ttfs_ext.fs's). Gradients: autograd with a
# fixed upstream gradient, for the differentiable ops.

def _times(shape, lo, hi, gen):
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=F64)


def _linear():
    t_in, w, b, t_min, t_max = dense_case(501, (6,), 7, 5)
    return dict(t_in=t_in, weight=w, bias=b), lambda a, backend: TF.linear(a["t_in"], a["weight"], a["bias"], t_min,
                                                                           t_max, backend=backend)


def _readout():
    t_in, w, b, t_min, _ = dense_case(502, (6,), 7, 5)
    return dict(t_in=t_in, weight=w, bias=b), lambda a, backend: TF.readout(a["t_in"], a["weight"], a["bias"], t_min,
                                                                            backend=backend)


def _conv2d():
    t_in, w, t_min, t_max, gen = conv_case(503, n=2, c_in=3, c_out=4, size=(6, 5))
    b = 0.3 * torch.randn(4, generator=gen, dtype=F64)
    return dict(t_in=t_in, weight=w, bias=b), lambda a, backend: TF.conv2d(a["t_in"], a["weight"], a["bias"], t_min,
                                                                           t_max, padding=1, backend=backend)


def _neurons(n_out, gen):
    return 0.2 + 0.4 * torch.randn(n_out, generator=gen, dtype=F64), 1.6 * torch.rand(n_out, generator=gen,
                                                                                      dtype=F64) - 0.2


def _first_spike_linear():
    gen = generator(504)
    t_in = _times((6, 7), 0.0, 5.0, gen)  # some before t_start (1), some after t_max (4)
    w = torch.randn(5, 7, generator=gen, dtype=F64) / 7 ** 0.5
    alpha, threshold = _neurons(5, gen)
    return dict(t_in=t_in, weight=w, alpha=alpha, threshold=threshold), (
        lambda a, backend: TF.first_spike_linear(a["t_in"], a["weight"], a["alpha"], a["threshold"], 1.0, 4.0,
                                                 backend=backend))


def _first_spike_conv2d():
    gen = generator(505)
    t_in = _times((2, 3, 6, 5), 0.0, 5.0, gen)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=F64) / 27 ** 0.5
    alpha, threshold = _neurons(4, gen)
    return dict(t_in=t_in, weight=w, alpha=alpha, threshold=threshold), (
        lambda a, backend: TF.first_spike_conv2d(a["t_in"], a["weight"], a["alpha"], a["threshold"], 1.0, 4.0,
                                                 padding=1, backend=backend))


def _fs_activation():
    gen = generator(506)
    h, d, T = (torch.randn(8, generator=gen, dtype=F64) for _ in range(3))
    x = 2.0 * torch.randn(3, 40, generator=gen, dtype=F64)
    return dict(x=x, h=h, d=d, T=T), lambda a, backend: fs.fs_activation(a["x"], a["h"], a["d"], a["T"],
                                                                         backend=backend)


def _spide_state(seed, n):
    gen = generator(seed)
    r = lambda lo, hi: _times((4, 9), lo, hi, gen)  # noqa: E731
    tensors = dict(u=r(-1, 1), rate=r(0, 5), current=r(-1.5, 2.5))
    tensors.update({name: r(-0.5, 0.5) for name in n})
    return tensors


def _spide_forward():
    tensors = _spide_state(507, ["extra", "gate"])
    tensors["gate"] = (tensors["gate"] > -0.2).double() * 1.25
    return tensors, lambda a, backend: TF.spide_forward_step(a["u"], a["rate"], a["current"], a["extra"], a["gate"],
                                                             v_th=1.0, reset=2.0, leak=0.9, backend=backend)


def _spide_backward():
    tensors = _spide_state(508, ["current_gate", "inject", "gate"])
    tensors["gate"] = (tensors["gate"] > -0.2).double()
    return tensors, lambda a, backend: TF.spide_backward_step(a["u"], a["rate"], a["current"], a["current_gate"],
                                                              a["inject"], a["gate"], v_th=0.5, reset=1.0,
                                                              amplitude=1.0, leak=0.95, backend=backend)


OPS: dict[str, tuple[Callable, bool]] = {  # name: (case, differentiable)
    "linear": (_linear, True),
    "readout": (_readout, True),
    "conv2d": (_conv2d, True),
    "first_spike_linear": (_first_spike_linear, True),
    "first_spike_conv2d": (_first_spike_conv2d, True),
    "fs_activation": (_fs_activation, True),
    "spide_forward_step": (_spide_forward, False),
    "spide_backward_step": (_spide_backward, False),
}
_B1 = [("t_in", (1, 2), NAN), ("t_in", (3, 0), INF), ("t_in", (4, 6), -INF), ("weight", (2, 3), NAN),
       ("weight", (0, 1), INF), ("bias", (3,), NAN), ("bias", (1,), -INF)]
_CONV = [("t_in", (1, 2, 3, 1), NAN), ("t_in", (0, 0, 0, 0), INF), ("t_in", (1, 1, 5, 4), -INF),
         ("weight", (2, 1, 0, 2), NAN), ("weight", (3, 0, 1, 1), -INF), ("bias", (1,), NAN), ("bias", (2,), INF)]
_NEURON = [("alpha", (2,), NAN), ("alpha", (0,), INF), ("threshold", (3,), NAN), ("threshold", (1,), -INF)]
POISON = {
    "linear": _B1,
    "readout": _B1,
    "conv2d": _CONV,
    "first_spike_linear": _B1[:5] + _NEURON,
    "first_spike_conv2d": _CONV[:5] + _NEURON,
    "fs_activation": [("x", (0, 3), NAN), ("x", (1, 7), INF), ("x", (2, 11), -INF), ("h", (2,), NAN),
                      ("d", (5,), INF), ("T", (0,), NAN), ("T", (4,), -INF), ("T", (6,), INF)],
    "spide_forward_step": [("u", (0, 1), NAN), ("u", (1, 2), INF), ("rate", (2, 3), NAN), ("rate", (3, 8), -INF),
                           ("current", (0, 4), NAN), ("current", (1, 5), -INF), ("extra", (2, 6), INF),
                           ("gate", (3, 7), NAN)],
    "spide_backward_step": [("u", (0, 1), NAN), ("u", (1, 2), -INF), ("rate", (2, 3), INF), ("current", (0, 4), NAN),
                            ("current", (1, 5), INF), ("current_gate", (2, 6), NAN), ("inject", (3, 7), -INF),
                            ("gate", (3, 0), INF)],
}
CASES = [pytest.param(op, arg, index, value, id=f"{op}-{arg}{list(index)}={value}")
         for op, poisons in POISON.items() for arg, index, value in poisons]


def _run(op: str, arg: str, index: tuple, value: float, dtype: torch.dtype, backend: str) -> dict[str, torch.Tensor]:
    """The op on the poisoned inputs: {"output": ..., "grad <name>": ... (differentiable ops),
    "<name> after" (the steps' in-place state)}, with the data checks off."""
    case, differentiable = OPS[op]
    tensors, call = case()
    tensors[arg] = tensors[arg].clone()
    tensors[arg][index] = value
    leaves = {k: v.to(dtype).requires_grad_(differentiable) for k, v in tensors.items()}
    with data_checks_off():
        out = call(leaves, backend)
        result = {"output": out.detach()}
        if differentiable:
            names = list(leaves)
            upstream = torch.randn(out.shape, generator=generator(509), dtype=F64).to(out)
            grads = torch.autograd.grad(out, [leaves[k] for k in names], upstream, allow_unused=True)
            result.update({f"grad {k}": g for k, g in zip(names, grads) if g is not None})
    if op.startswith("spide"):
        result.update({"u after": leaves["u"], "rate after": leaves["rate"]})
    return result


def _differences(actual: torch.Tensor, expected: torch.Tensor, tol) -> torch.Tensor:
    """Where they disagree: NaN in one only, an infinity in one only or of the other sign, or
    finite values beyond tol (rtol, atol scaled by the largest finite |expected|; None: bitwise)."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    nan_a, nan_e = a.isnan(), e.isnan()
    inf = (a.isinf() | e.isinf()) & ~(nan_a | nan_e)
    finite = ~(nan_a | nan_e | inf)
    bad = (nan_a != nan_e) | (inf & (a != e))
    if tol is None:
        return bad | (finite & (a != e))
    scale = max(1.0, float(e[finite].abs().max())) if bool(finite.any()) else 1.0
    return bad | (finite & ((a - e).abs() > tol["atol"] * scale + tol["rtol"] * e.abs()))


def _assert_same(got: dict, want: dict, tol, label: str) -> None:
    """Every entry of got equals want's (see _differences); the message lists the elements."""
    problems = []
    assert set(got) == set(want), f"{label}: {sorted(got)} vs {sorted(want)}"
    for what in got:
        a, e = got[what], want[what]
        assert a.shape == e.shape, f"{label}: {what} has shape {tuple(a.shape)} vs {tuple(e.shape)}"
        bad = _differences(a, e, tol)
        if bool(bad.any()):
            where = bad.nonzero().tolist()
            listed = "; ".join(f"{tuple(i)}: {float(a[tuple(i)])!r} vs {float(e[tuple(i)])!r}" for i in where[:12])
            problems.append(f"{what}: {len(where)} of {bad.numel()} elements differ: {listed}"
                            + (" ..." if len(where) > 12 else ""))
    assert not problems, f"{label}:\n  " + "\n  ".join(problems)


def _tol(op: str, dtype: torch.dtype):
    """The neuron steps are elementwise: bitwise, as their own tests ask; the rest per dtype
    (TOL, scaled by the largest finite expected value)."""
    return None if op.startswith("spide") else TOL[dtype]


@needs_profiles
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("op, arg, index, value", CASES)
def test_nan_inf_with_checks_off_same_under_cpu_and_cuda_profiles(op, arg, index, value, dtype):
    """With the data checks off, NaN or inf in an input or a parameter gives the same outputs
    and gradients with the CPU kernels' own profile as driven as on CUDA."""
    with cpu_kernel_profile("cpu"):
        own = _run(op, arg, index, value, dtype, "cpu")
    with cpu_kernel_profile("cuda"):
        cuda = _run(op, arg, index, value, dtype, "cpu")
    _assert_same(cuda, own, _tol(op, dtype), f"{op}, {arg}{list(index)} = {value}, {dtype}: profile 'cuda' vs 'cpu'")


@needs_kernels
@pytest.mark.usefixtures("kernel_profile")
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("op, arg, index, value", CASES)
def test_nan_inf_with_checks_off_kernels_match_reference(op, arg, index, value, dtype):
    """With the data checks off, NaN or inf in an input or a parameter gives the kernels the
    reference's outputs (NaN where it has NaN, the same infinities) and the steps' state.

    What is specified is the forward: gradients through non-finite values are only specified to
    be the same on every device (the test above). The kernels gate the upstream gradient by the
    spike mask, so a NaN spike time passes none, where the reference's where() passes it; and
    they skip a silent neuron's terms (gradient 0) where the reference multiplies them by 0 (NaN
    from inf * 0). fs_activation's steps select (y + d if z else y), as the reference does up to
    the sign of a zero with finite tables, but a NaN h or an infinite d in the table gives NaN in
    the reference's y + d z even where z is 0: a table must be finite (FSActivation and the
    data checks refuse one that is not)."""
    got, want = _run(op, arg, index, value, dtype, "cpu"), _run(op, arg, index, value, dtype, "reference")
    keep = [k for k in got if not k.startswith("grad ")]
    if op == "fs_activation" and arg in ("h", "d"):
        keep = []
    _assert_same({k: got[k] for k in keep}, {k: want[k] for k in keep}, _tol(op, dtype),
                 f"{op}, {arg}{list(index)} = {value}, {dtype}: kernel vs reference")


# --- 5b: no host synchronisation in the ops on CUDA ----------------------------------------------

@contextlib.contextmanager
def cuda_data_checks_off() -> Iterator[None]:
    """The data checks that read data back (and so synchronise) off on CUDA; the CPU's as they
    were. (A build with one switch: off everywhere.)"""
    cpu, cuda = input_checks_state()
    if cuda is None:
        with input_checks(False):
            yield
    else:
        with input_checks(cpu, cuda=False):
            yield


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Any synchronising CUDA call raises (torch.cuda.set_sync_debug_mode("error"))."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def _warm_then_check(step: Callable[[], object]) -> object:
    """One warm-up call (handles, workspaces, the allocator), then one that may not synchronise."""
    with cuda_data_checks_off():
        step()
        torch.cuda.synchronize()
        with no_host_sync():
            result = step()
        torch.cuda.synchronize()
    return result


def _vgg16(seed: int = 0):
    """A TTFS VGG16 (torchvision's thirteen convolutions, 32x32 images: 1x1 features, two
    hidden layers of 64), float32 on CUDA, channels_last."""
    from ttfs_ext.train.vgg16 import VGG16_CONFIG, ttfs_vgg_scratch

    torch.manual_seed(seed)
    net = ttfs_vgg_scratch(VGG16_CONFIG, num_classes=10, image_size=32, input_range=(0.0, 1.0), pool_size=1,
                           hidden=64)
    return net.cuda().to(memory_format=torch.channels_last)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=generator(seed)).cuda().contiguous(memory_format=torch.channels_last)


@pytest.mark.needs_cuda
def test_cuda_no_host_sync_vgg16_training_step():
    """A TTFS VGG16 training step (bfloat16 autocast, channels_last, batch 2, SGD with
    momentum) makes no host synchronisation after its warm-up."""
    net = _vgg16()
    x, y = _images(2, 1), torch.tensor([1, 7], device="cuda")
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    loss = _warm_then_check(step)
    assert math.isfinite(float(loss))
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in net.parameters())


def _fs_case(device="cuda"):
    gen = generator(510)
    h, d, T = (torch.randn(12, generator=gen).to(device).requires_grad_() for _ in range(3))
    x = (2.0 * torch.randn(4, 3000, generator=gen)).to(device).requires_grad_()
    g = torch.randn(4, 3000, generator=gen).to(device)
    greg = torch.randn(12, generator=gen).to(device)
    return x, h, d, T, g, greg


@pytest.mark.needs_cuda
def test_cuda_no_host_sync_fs_activation():
    """fs_activation forward (values, spike counts, the regulariser) and backward (x, h, d, T)."""
    x, h, d, T, g, greg = _fs_case()
    ops = torch.ops.ttfs_ext

    def step():
        for p in (x, h, d, T):
            p.grad = None
        y, spikes, reg = ops.fs_activation(x, h, d, T, 1, True)
        ((y * g).sum() + (reg * greg).sum()).backward()
        y2 = fs.fs_activation(x.detach().to(torch.bfloat16), h.detach(), d.detach(), T.detach())  # low precision x
        return y.detach(), spikes, y2

    y, spikes, y2 = _warm_then_check(step)
    assert spikes.dtype == torch.uint8 and y2.dtype == torch.bfloat16
    assert all(bool(torch.isfinite(p.grad).all()) for p in (x, h, d, T))


@pytest.mark.needs_cuda
def test_cuda_no_host_sync_b1_and_first_spike_ops():
    """linear, readout, conv2d (float32, and conv2d under bfloat16 autocast), first_spike_linear
    and first_spike_conv2d (rows sorted on the device), forward and backward."""
    t_in, w, b, t_min, t_max = dense_case(521, (64,), 96, 48)
    t4, w4, t_min4, t_max4, gen = conv_case(522, n=4, c_in=8, c_out=16, size=(12, 12))
    b4 = 0.3 * torch.randn(16, generator=gen, dtype=F64)
    alpha, threshold = _neurons(48, gen)
    alpha4, threshold4 = _neurons(16, gen)
    leaves = [x.float().cuda().requires_grad_() for x in (t_in, w, b, t4, w4, b4, alpha, threshold, alpha4, threshold4)]
    t_in, w, b, t4, w4, b4, alpha, threshold, alpha4, threshold4 = leaves

    def step():
        for x in leaves:
            x.grad = None
        outs = [TF.linear(t_in, w, b, t_min, t_max), TF.readout(t_in, w, b, t_min),
                TF.conv2d(t4, w4, b4, t_min4, t_max4, padding=1),
                TF.first_spike_linear(t_in, w, alpha, threshold, t_min, t_max),
                TF.first_spike_conv2d(t4, w4, alpha4, threshold4, t_min4, t_max4, padding=1)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs.append(TF.conv2d(t4, w4, b4, t_min4, t_max4, padding=1))
        sum(o.float().sum() for o in outs).backward()
        return outs

    outs = _warm_then_check(step)
    assert all(o.dtype == torch.float32 for o in outs)
    assert all(x.grad is not None and bool(torch.isfinite(x.grad).all()) for x in leaves)


def _spide_tensors(shape=(8, 4, 6, 6), seed=511, device="cuda"):
    gen = generator(seed)
    r = lambda lo, hi: (lo + (hi - lo) * torch.rand(shape, generator=gen)).to(device)  # noqa: E731
    return r(-1, 1), r(0, 3), r(-1.5, 2.5), r(-0.5, 0.5), (r(0, 1) < 0.8).float()


@pytest.mark.needs_cuda
def test_cuda_no_host_sync_spide_steps():
    """spide_forward_step and spide_backward_step, with and without their optional arguments."""
    u, rate, cur, extra, gate = _spide_tensors()
    u2, rate2 = u.clone(), rate.clone()

    def step():
        s = TF.spide_forward_step(u, rate, cur, extra, gate, v_th=1.0, reset=2.0, leak=0.9)
        s = TF.spide_forward_step(u, rate, s, None, None)
        k = TF.spide_backward_step(u2, rate2, cur, gate, extra, gate, v_th=0.5, reset=1.0, leak=0.95)
        return s, TF.spide_backward_step(u2, rate2, k, None, None, None)

    s, k = _warm_then_check(step)
    assert s.is_cuda and k.is_cuda


def _feedback_snn(seed=512):
    from ttfs_ext import spide

    torch.manual_seed(seed)
    return spide.convnet_f(size=12, channels=8, T=6, T_b=8, dropout=0.2).cuda().train()


def _spide_iteration(net, x, y, opt):
    """A FeedbackSNN SPIDE training iteration through its parts that run on the device: the
    T-step forward simulation, the readout's loss, the T_b-step ternary loop, the weight
    gradients, the optimiser step. (net(x) / backward() add host reads of their statistics,
    net.last_stats, and the feedback-norm restriction: those synchronise by design.)"""
    drops = net._drops(x)
    with torch.no_grad():
        rates = net._simulate(x, drops)
    a_last = rates[-1].detach().requires_grad_()
    out = net.readout(a_last.flatten(1))
    loss = F.cross_entropy(out, y)
    opt.zero_grad(set_to_none=True)
    (g,) = torch.autograd.grad(loss, a_last, retain_graph=True)
    loss.backward(inputs=list(net.readout.parameters()))
    with torch.no_grad():
        betas, masks = net._spide_loop(g, rates, drops)
        norm = net._rate_norm(net.T_b) / net.loss_scale
        betas = [b.mul_(norm) for b in betas]
    grads = net._weight_grads(x, rates, masks, betas, drops, need_x=False)
    for p, gp in zip(net.snn_parameters(), grads[1:]):
        p.grad = gp
    opt.step()
    return loss.detach()


@pytest.mark.needs_cuda
def test_cuda_no_host_sync_feedback_snn_iteration():
    """A FeedbackSNN (ConvNet-F, dropout) SPIDE training iteration: the neuron steps, the dense
    products, the weight gradients and the optimiser step make no host synchronisation."""
    net = _feedback_snn()
    x = torch.rand(4, 1, 12, 12, generator=generator(513)).cuda()
    y = torch.tensor([0, 3, 5, 9], device="cuda")
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    loss = _warm_then_check(lambda: _spide_iteration(net, x, y, opt))
    assert math.isfinite(float(loss))
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in net.snn_parameters())


def _capture(fn: Callable[[], object]):
    """fn warmed up on a side stream, then captured as a CUDA graph: (graph, fn's static outputs)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


@pytest.mark.needs_cuda
def test_cuda_graph_capture_vgg16_forward():
    """The TTFS VGG16's forward (float32, channels_last) captured and replayed on new images
    gives the eager logits."""
    net = _vgg16().eval()
    static_x = _images(2, 2)
    with cuda_data_checks_off(), torch.no_grad():
        graph, static_out = _capture(lambda: net(static_x))
        static_x.copy_(_images(2, 3))
        graph.replay()
        torch.cuda.synchronize()
        eager = net(static_x)
    # (cuBLAS and cuDNN may run the products with another workspace on the capturing stream)
    assert_close_scaled(static_out, eager, F32, "replayed logits")


@pytest.mark.needs_cuda
def test_cuda_graph_capture_fs_activation_and_spide_steps():
    """fs_activation and both neuron steps captured and replayed on new data give the eager
    results (the kernels launch on the capturing stream)."""
    x, h, d, T, _, _ = _fs_case()
    x, h, d, T = (t.detach() for t in (x, h, d, T))
    u, rate, cur, extra, gate = _spide_tensors(seed=514)
    start = (u.clone(), rate.clone())

    def run():
        y = fs.fs_activation(x, h, d, T)
        s = TF.spide_forward_step(u, rate, cur, extra, gate, v_th=1.0, reset=2.0, leak=0.9)
        k = TF.spide_backward_step(u, rate, s, gate, extra, None, v_th=0.5, reset=1.0)
        return y, s, k

    with cuda_data_checks_off():
        graph, static = _capture(run)
        x.copy_(2.0 * torch.randn(x.shape, generator=generator(515)).cuda())
        u.copy_(start[0])
        rate.copy_(start[1])
        graph.replay()
        torch.cuda.synchronize()
        replayed = [t.clone() for t in static] + [u.clone(), rate.clone()]
        u.copy_(start[0])
        rate.copy_(start[1])
        eager = list(run()) + [u, rate]
    for name, a, b in zip(("y", "s", "k", "u", "rate"), replayed, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")


@pytest.mark.needs_cuda
def test_cuda_graph_capture_feedback_snn_loops():
    """A FeedbackSNN's T-step simulation and T_b-step ternary loop captured and replayed give
    the eager rates and betas (as benchmarks/bench_spide.py --cuda-graphs times them)."""
    net = _feedback_snn(516).eval()
    static_x = torch.rand(4, 1, 12, 12, generator=generator(517)).cuda()
    with cuda_data_checks_off(), torch.no_grad():
        graph, static_rates = _capture(lambda: net._simulate(static_x, None))
        static_x.copy_(torch.rand(4, 1, 12, 12, generator=generator(518)).cuda())
        graph.replay()
        torch.cuda.synchronize()
        rates = net._simulate(static_x, None)
        _assert_spike_counts_agree(static_rates, rates, 1.0 / net.T, "rates")
        g = 1e-3 * torch.randn(rates[-1].shape, generator=generator(519)).cuda()
        bgraph, (static_betas, _) = _capture(lambda: net._spide_loop(g, static_rates, None))
        bgraph.replay()
        torch.cuda.synchronize()
        betas, _ = net._spide_loop(g, static_rates, None)
        _assert_spike_counts_agree(static_betas, betas, 1.0, "betas")


def _assert_spike_counts_agree(replayed, eager, one_spike: float, what: str) -> None:
    """Replayed and eager spike counts: equal but for a rare neuron one spike apart (a product
    rounded otherwise on the capturing stream can move a potential across the threshold); a
    graph that replayed stale inputs would differ in many."""
    for a, b in zip(replayed, eager):
        diff = (a - b).abs()
        assert float(diff.max()) <= one_spike * (1 + 1e-6), f"{what}: {float(diff.max())}"
        assert float((diff > 0).double().mean()) <= 0.01, f"{what}: {float((diff > 0).double().mean())} differ"


# --- 5c: the SPIDE steps refuse aliasing their kernels assume away --------------------------------
#
# The kernels take u, rate, current, extra/inject, current_gate, gate and the result as
# __restrict__ pointers, and write u and rate in place: no argument may share memory with u or
# rate (the same tensor, or overlapping views of one storage), nor u with rate. Read-only
# arguments may alias each other (nothing writes them), and views of one storage that do not
# overlap are distinct memory.

STEP_ARGS = {"spide_forward_step": ["u", "rate", "current", "extra", "gate"],
             "spide_backward_step": ["u", "rate", "current", "current_gate", "inject", "gate"]}


def _step_call(op: str, a: dict, backend):
    if op == "spide_forward_step":
        return TF.spide_forward_step(a["u"], a["rate"], a["current"], a.get("extra"), a.get("gate"), v_th=1.0,
                                     reset=2.0, backend=backend)
    return TF.spide_backward_step(a["u"], a["rate"], a["current"], a.get("current_gate"), a.get("inject"),
                                  a.get("gate"), v_th=0.5, reset=1.0, backend=backend)


def _step_args(op: str, device: str, shared: bool = False) -> dict:
    """Every argument of the op, (4, 5) float64, each its own memory; shared: each a disjoint
    contiguous view of one storage (slots of 40 elements, the last 20 of each unused)."""
    gen = generator(520)
    names = STEP_ARGS[op]
    if not shared:
        return {n: torch.rand(4, 5, generator=gen, dtype=F64).to(device) for n in names}
    buffer = torch.zeros(40 * len(names), dtype=F64, device=device)
    for i, n in enumerate(names):
        buffer[40 * i:40 * i + 20] = torch.rand(20, generator=gen, dtype=F64).to(device)
    return {n: buffer[40 * i:40 * i + 20].view(4, 5) for i, n in enumerate(names)}


def _aliasing_cases(op: str):
    """(first, second, how): `second` made to share memory with `first`, the in-place u or rate."""
    cases = [("u", "rate", "same tensor"), ("u", "rate", "overlapping view"), ("u", "rate", "same storage, a view")]
    cases += [(written, other, how) for written in ("u", "rate") for other in STEP_ARGS[op][2:]
              for how in ("same tensor", "overlapping view")]
    return cases


ALIASING = [pytest.param(op, first, second, how, id=f"{op}-{second}-{first}-{how.replace(' ', '_')}")
            for op in STEP_ARGS for first, second, how in _aliasing_cases(op)]


@needs_kernels
@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)])
@pytest.mark.parametrize("op, first, second, how", ALIASING)
def test_spide_step_aliasing_is_refused(op, first, second, how, device, backend):
    """An argument sharing memory with u or rate (which the step writes in place), or u with
    rate: a ValueError naming both ("... must not overlap ..."), on every backend, before any
    write (u and rate keep their values)."""
    if how == "same storage, a view":  # the whole of u again, as a view (not the same tensor object)
        args = _step_args(op, device)
        args[second] = args[first].view(4, 5)
    elif how == "same tensor":
        args = _step_args(op, device)
        args[second] = args[first]
    else:  # a view of the same storage one row on: the last three rows of `first` are its first three
        args = _step_args(op, device, shared=True)
        offset = args[first].storage_offset()
        args[second] = args[first].as_strided((4, 5), (5, 1), offset + 5)
    before = {n: args[n].clone() for n in ("u", "rate")}
    with pytest.raises(ValueError) as err:
        _step_call(op, args, backend)
    message = str(err.value).split("\n")[0]
    assert f"ttfs_ext.{op}" in message and "must not overlap" in message, message
    for name in (first, second):
        assert re.search(rf"\b{name}\b", message), f"{name} is not named: {message}"
    if how != "overlapping view":  # (overlapping views: u and rate share elements, compared via the clones)
        for n in ("u", "rate"):
            assert torch.equal(args[n], before[n]), f"{n} was written before the check"


@needs_kernels
@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)])
@pytest.mark.parametrize("op", list(STEP_ARGS))
def test_spide_step_aliasing_allowed(op, device, backend):
    """Disjoint views of one storage are distinct memory, and read-only arguments may share
    memory with each other: the step runs and equals the reference on separate copies."""
    from ttfs_ext import reference as R

    args = _step_args(op, device, shared=True)
    read_only = STEP_ARGS[op][2:]
    for name in read_only[1:]:  # every read-only argument is the current (gate: 0/1 would do too)
        args[name] = args[read_only[0]]
    copies = {n: t.clone() for n, t in args.items()}
    out = _step_call(op, args, backend)
    ref_fn = getattr(R, op)
    if op == "spide_forward_step":
        want = ref_fn(copies["u"], copies["rate"], copies["current"], copies["extra"], copies["gate"], 1.0, 2.0, 1.0)
    else:
        want = ref_fn(copies["u"], copies["rate"], copies["current"], copies["current_gate"], copies["inject"],
                      copies["gate"], 0.5, 1.0, 1.0, 1.0)
    for name, a, b in (("out", out, want), ("u", args["u"], copies["u"]), ("rate", args["rate"], copies["rate"])):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")
