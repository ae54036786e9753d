"""Memory formats: every convolutional op keeps its input's layout (a channels_last network runs
NHWC throughout, as its ReLU twin does), gives the same values and gradients in both layouts,
and its fake kernel returns the strides the kernel returns (torch.compile relies on it);
TTFSSequential.to(memory_format=torch.channels_last) and a converted network keep the layout."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import ttfs_ext
from ttfs_ext import functional as TF
from ttfs_ext import nn as tnn

from _utils import conv_case, generator, input_times

F64 = torch.float64
CL = torch.channels_last
LAYOUTS = [torch.contiguous_format, CL]
ops = torch.ops.ttfs_ext


def _laid_out(tensors, fmt):
    return [None if t is None else t.detach().clone().contiguous(memory_format=fmt if t.dim() == 4 else
                                                                 torch.contiguous_format).requires_grad_()
            for t in tensors]


def _conv2d_case(per_position: bool):
    t_in, weight, t_min, t_max, gen = conv_case(31 + per_position, n=3, c_in=4, c_out=5, size=(7, 6))
    bias = 0.3 * torch.randn((5, 7, 6) if per_position else (5,), generator=gen, dtype=F64)
    call = lambda t, w, b: ops.conv2d(t, w, b, t_min, t_max, [1, 1], [1, 1], [1, 1], 1)  # noqa: E731
    back = lambda g, t, w, y, b: ops._conv2d_backward(g, t, w, y, t_min, t_max, [1, 1], [1, 1], [1, 1], 1,  # noqa
                                                     per_position, [True] * 3)
    return (t_in, weight, bias), call, back


def _first_spike_case(per_position: bool):
    gen = generator(41 + per_position)
    t_in = input_times((3, 4, 7, 6), 0.0, 1.0, gen)
    weight = torch.randn(6, 2, 3, 3, generator=gen, dtype=F64) / 18 ** 0.5
    shape = (6, 7, 6) if per_position else (6,)
    alpha = 0.5 + torch.rand(shape, generator=gen, dtype=F64)
    threshold = 0.2 + 0.5 * torch.rand(shape, generator=gen, dtype=F64)
    args = (0.5, 4.0, [1, 1], [1, 1], [1, 1], 2)
    call = lambda t, w, a, th: ops.first_spike_conv2d(t, w, a, th, *args)[0]  # noqa: E731

    def back(g, t, w, y, a, th):
        t_out, slope = ops.first_spike_conv2d(t, w, a, th, *args)
        return ops._first_spike_conv2d_backward(g, t, w, t_out, slope, 0.5, 0.0, [1, 1], [1, 1], [1, 1], 2,
                                                per_position, per_position, [True] * 4)
    return (t_in, weight, alpha, threshold), call, back


CASES = {"conv2d": _conv2d_case, "first_spike_conv2d": _first_spike_case}


@pytest.mark.usefixtures("kernel_profile")
@pytest.mark.parametrize("per_position", [False, True])
@pytest.mark.parametrize("op", sorted(CASES))
def test_conv_ops_keep_the_layout_and_their_fakes_say_so(op, per_position):
    tensors, call, back = CASES[op](per_position)
    results = {}
    for fmt in LAYOUTS:
        leaves = _laid_out(tensors, fmt)
        out = call(*leaves)
        assert out.is_contiguous(memory_format=fmt), (fmt, out.stride())
        g = torch.randn(out.shape, generator=generator(5), dtype=F64).contiguous(memory_format=fmt)
        grads = torch.autograd.grad(out, leaves, g)
        for leaf, grad in zip(leaves, grads):  # each gradient in its tensor's layout
            assert grad.stride() == leaf.stride(), (fmt, grad.stride(), leaf.stride())
        # The fakes: the strides of the kernels, forward and backward.
        mode = FakeTensorMode()
        fakes = [mode.from_tensor(t.detach()) for t in leaves]
        fake_g, fake_out = mode.from_tensor(g), mode.from_tensor(out.detach())
        with mode:
            fake = call(*fakes)
            fake_grads = back(fake_g, fakes[0], fakes[1], fake_out, *fakes[2:])
        assert fake.stride() == out.stride()
        real_grads = back(g, leaves[0].detach(), leaves[1].detach(), out.detach(), *[t.detach() for t in leaves[2:]])
        assert [f.stride() for f in fake_grads] == [r.stride() for r in real_grads]
        results[fmt] = [out] + list(grads)
    for a, b in zip(*results.values()):  # the same numbers in both layouts
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _network() -> tnn.TTFSSequential:
    torch.manual_seed(3)
    return tnn.TTFSSequential(
        tnn.TTFSEncoder(), tnn.TTFSConv2d(3, 6, 3, padding=1), tnn.TTFSMaxPool2d(2),
        tnn.TTFSConv2d(6, 8, 3, padding=1), nn.Flatten(), tnn.TTFSReadout(8 * 4 * 4, 5), widths=[2.0, 2.0]).double()


def test_a_channels_last_network_runs_nhwc_throughout():
    net = _network()
    x = torch.rand(4, 3, 8, 8, generator=generator(7), dtype=F64)
    nchw = net(x)
    cl = _network().to(memory_format=CL)
    assert all(m.weight.is_contiguous(memory_format=CL) for m in cl.modules() if isinstance(m, tnn.TTFSConv2d))
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, o)))
             for m in cl if not isinstance(m, (nn.Flatten, tnn.TTFSReadout))]
    out = cl(x.contiguous(memory_format=CL))
    for h in hooks:
        h.remove()
    assert len(seen) == 4
    for name, t in seen:
        assert t.is_contiguous(memory_format=CL) and not t.is_contiguous(), name
    torch.testing.assert_close(out, nchw, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert cl[1].weight.grad.is_contiguous(memory_format=CL)


def test_conversion_keeps_a_channels_last_model_in_channels_last():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).double().to(memory_format=CL)
    x = torch.rand(6, 3, 8, 8, generator=generator(8), dtype=F64).contiguous(memory_format=CL)
    net = ttfs_ext.convert(model, x, input_range=(0.0, 1.0))
    convs = [m for m in net.modules() if isinstance(m, tnn.TTFSConv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=CL) for m in convs)
    torch.testing.assert_close(net(x), model(x), rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile")
def test_compiled_channels_last_training_step_matches_eager():
    """Inductor checks every op's output strides against its fake's (assert_size_stride)."""
    net = _network().float().to(memory_format=CL)
    x = torch.rand(4, 3, 8, 8, generator=generator(9)).contiguous(memory_format=CL)
    eager = net(x)
    eager_grads = torch.autograd.grad(eager.square().sum(), list(net.parameters()))
    compiled = torch.compile(net, fullgraph=True)(x)
    grads = torch.autograd.grad(compiled.square().sum(), list(net.parameters()))
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
