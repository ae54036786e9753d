"""Op registration: opcheck on every op, gradcheck through every op, torch.compile and export."""
import pytest
import torch
from torch.library import opcheck

from ttfs_ext import functional as TF
from ttfs_ext import nn as tnn

from _utils import DEVICES, conv_case, dense_case, generator

ops = torch.ops.ttfs_ext


def _dense_args(device, requires_grad, bias=True):
    t_in, w, b, t_min, t_max = dense_case(31, (5,), 7, 4, bias)
    tensors = [None if x is None else x.to(device).requires_grad_(requires_grad) for x in (t_in, w, b)]
    return tensors, t_min, t_max


def _conv_args(device, requires_grad, per_position=False):
    t_in, w, t_min, t_max, gen = conv_case(32, n=2, c_in=2, c_out=4, size=(5, 6))
    b = torch.randn((4, 5, 6) if per_position else (4,), generator=gen, dtype=torch.float64)
    return [x.to(device).requires_grad_(requires_grad) for x in (t_in, w, b)], t_min, t_max


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward_ops(device, requires_grad):
    for bias in (True, False):
        (t_in, w, b), t_min, t_max = _dense_args(device, requires_grad, bias)
        opcheck(ops.linear.default, (t_in, w, b, t_min, t_max))
        opcheck(ops.readout.default, (t_in, w, b, t_max))
    for per_position in (False, True):
        (t_in, w, b), t_min, t_max = _conv_args(device, requires_grad, per_position)
        opcheck(ops.conv2d.default, (t_in, w, b, t_min, t_max, [1, 1], [1, 1], [1, 1], 1))
        opcheck(ops.conv2d.default, (t_in, w[:, :1], None, t_min, t_max, [2, 1], [0, 1], [1, 1], 2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", [[True, True, True], [False, True, False], [True, False, True]])
def test_opcheck_backward_ops(device, mask):
    (t_in, w, b), t_min, t_max = _dense_args(device, False)
    t_out = ops.linear(t_in, w, b, t_min, t_max)
    g = _upstream(t_out, 33)
    opcheck(ops._linear_backward.default, (g, t_in, w, t_out, t_min, t_max, mask))
    opcheck(ops._readout_backward.default, (g, t_in, w, t_max, mask))
    for per_position in (False, True):
        (t_in, w, b), t_min, t_max = _conv_args(device, False, per_position)
        t_out = ops.conv2d(t_in, w, b, t_min, t_max, [1, 1], [1, 1], [1, 1], 1)
        opcheck(ops._conv2d_backward.default,
                (_upstream(t_out, 34), t_in, w, t_out, t_min, t_max, [1, 1], [1, 1], [1, 1], 1, per_position, mask))


def _upstream(t_out: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed random upstream gradient like t_out."""
    return torch.randn(t_out.shape, generator=generator(seed), dtype=torch.float64).to(t_out)


def _away_from_clamp(potential, margin=1e-4):
    """Finite differences must stay on one side of the clamp: no potential near 0."""
    return bool((potential.abs() > margin).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [40, 41, 42])
def test_gradcheck_linear_and_readout(device, seed):
    t_in, w, b, t_min, t_max = dense_case(seed, (6,), 5, 4)
    args = [x.to(device).requires_grad_() for x in (t_in, w, b)]
    assert _away_from_clamp(TF.readout(*args, t_min))
    assert torch.autograd.gradcheck(lambda t, w_, b_: TF.linear(t, w_, b_, t_min, t_max), args)
    assert torch.autograd.gradcheck(lambda t, w_, b_: TF.readout(t, w_, b_, t_min), args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [43, 44])
@pytest.mark.parametrize("per_position", [False, True])
def test_gradcheck_conv2d(device, seed, per_position):
    t_in, w, t_min, t_max, gen = conv_case(seed, n=1, c_in=2, c_out=3, size=(5, 4))
    b = 0.3 * torch.randn((3, 3, 2) if per_position else (3,), generator=gen, dtype=torch.float64)
    args = [x.to(device).requires_grad_() for x in (t_in, w, b)]
    fn = lambda t, w_, b_: TF.conv2d(t, w_, b_, t_min, t_max, stride=2, padding=1)  # noqa: E731
    u = torch.nn.functional.conv2d(t_min - args[0], args[1], stride=2, padding=1)
    assert _away_from_clamp(u + (args[2] if per_position else args[2].view(-1, 1, 1)))
    assert torch.autograd.gradcheck(fn, args)


def test_double_backward_raises():
    (t_in, w, b), t_min, t_max = _dense_args("cpu", True)
    out = TF.linear(t_in, w, b, t_min, t_max)
    (g,) = torch.autograd.grad(out.sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def _small_net(dtype):
    torch.manual_seed(0)
    return tnn.TTFSSequential(
        tnn.TTFSEncoder(),
        tnn.TTFSConv2d(1, 4, 3, padding=1),
        tnn.TTFSMaxPool2d(2),
        tnn.TTFSConv2d(4, 4, 3, stride=2, padding=1),
        torch.nn.Flatten(),
        tnn.TTFSLinear(4 * 2 * 2, 10),
        tnn.TTFSReadout(10, 3),
        widths=[3.0, 4.0, 5.0],
    ).to(dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_parity(device):
    net = _small_net(torch.float64).to(device)
    x = torch.rand(4, 1, 8, 8, generator=generator(50), dtype=torch.float64).to(device)
    eager = net(x)
    eager_grads = torch.autograd.grad(eager.square().sum(), list(net.parameters()))
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), list(net.parameters()))
    torch.testing.assert_close(out, eager, rtol=1e-12, atol=1e-12)
    for g, eg in zip(grads, eager_grads):
        torch.testing.assert_close(g, eg, rtol=1e-12, atol=1e-12)


def test_compiled_cpu_graph_checks_spike_times():
    """Python skips its data checks inside compiled graphs; the CPU kernels check t_in themselves."""
    (t_in, w, b), t_min, t_max = _dense_args("cpu", False)
    layer = torch.compile(lambda t: TF.linear(t, w, b, t_min, t_max), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(layer(t_in), TF.linear(t_in, w, b, t_min, t_max), rtol=0, atol=0)
    t_in = t_in.clone()
    t_in.view(-1)[-1] = float("nan")
    with pytest.raises(ValueError, match="t_in contains NaN or inf"):
        layer(t_in)


@pytest.mark.needs_cuda
def test_compile_reduce_overhead_cuda():
    """CUDA graphs replay on the capture stream: the kernels must launch on the current stream."""
    net = _small_net(torch.float32).cuda()
    x = torch.rand(4, 1, 8, 8, generator=generator(35)).cuda()
    compiled = torch.compile(net, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):
        out = compiled(x)
    torch.testing.assert_close(out, net(x), rtol=1e-5, atol=1e-5)


def test_export_round_trip():
    net = _small_net(torch.float64)
    x = torch.rand(2, 1, 8, 8, generator=generator(51), dtype=torch.float64)
    exported = torch.export.export(net, (x,))
    names = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any("ttfs_ext.conv2d" in n for n in names) and any("ttfs_ext.linear" in n for n in names)
    torch.testing.assert_close(exported.module()(x), net(x), rtol=0, atol=0)


OPS = ["linear", "_linear_backward", "readout", "_readout_backward", "conv2d", "_conv2d_backward", "first_spike_linear",
       "_first_spike_linear_backward", "first_spike_conv2d", "_first_spike_conv2d_backward",
       "fs_activation", "_fs_activation_backward",
       "spide_forward_step", "spide_backward_step", "spike_conv2d"]
# Each op's check-only twin: the op's argument checks, one function for every device.
CHECKS = ["_" + name.lstrip("_") + "_check" for name in OPS]


def test_every_op_has_a_kernel_on_every_kernel_device():
    """Every schema of the namespace is one of the ops or its check-only twin, and each op
    has a kernel (and a fake) for every device type this build has kernels for: a CUDA build
    registers all of them for CUDA (spike_conv2d's CUDA kernel raises: it is a CPU kernel)."""
    import ttfs_ext

    names = sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("ttfs_ext::"))
    assert names == sorted(OPS + CHECKS)
    for name in CHECKS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ttfs_ext::{name}", "CompositeImplicitAutograd"), name
    keys = {"cpu": "CPU", "cuda": "CUDA"}
    assert ("cuda" in ttfs_ext.kernel_devices()) == ttfs_ext.status()["with_cuda"]
    for name in OPS:
        for device in ttfs_ext.kernel_devices():
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ttfs_ext::{name}", keys[device]), (name, device)
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ttfs_ext::{name}", "Meta"), name
