"""conv2d and max_pool2d: kernels against the float64 reference, values and all gradients."""
import itertools

import pytest
import torch

from ttfs_ext import functional as TF
from ttfs_ext import reference as R

from _utils import DEVICES, assert_close_scaled, conv_case, forward_backward, generator, input_times

# Every CPU test runs with the CPU kernels' own profile and driven as CUDA drives its kernels
# (no NaN/inf check fused in the prologue).
pytestmark = pytest.mark.usefixtures("kernel_profile")

# (stride, padding, dilation, groups, kernel)
GEOMETRIES = [
    (1, 0, 1, 1, (3, 3)),
    (1, 1, 1, 1, (3, 3)),
    (2, 1, 1, 1, (3, 3)),
    (1, (1, 2), 1, 2, (3, 5)),
    ((2, 1), 2, 2, 1, (3, 3)),
    (2, 0, 1, 2, (1, 1)),
    (1, 1, 1, 4, (3, 3)),   # depthwise
]


def _bias(kind, c_out, out_hw, gen):
    if kind is None:
        return None
    shape = (c_out,) if kind == "channel" else (c_out, *out_hw)
    return 0.3 * torch.randn(shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("stride, padding, dilation, groups, kernel", GEOMETRIES)
@pytest.mark.parametrize("bias_kind", [None, "channel", "position"])
@pytest.mark.parametrize("seed", [0, 1])
def test_conv2d_matches_reference(device, dtype, stride, padding, dilation, groups, kernel, bias_kind, seed):
    t_in, w, t_min, t_max, gen = conv_case(seed, c_in=4, c_out=8, kernel=kernel, groups=groups)
    geometry = (stride, padding, dilation, groups)
    with torch.no_grad():
        out_hw = R.conv2d(t_in, w, None, t_min, t_max, *geometry).shape[2:]
    b = _bias(bias_kind, 8, out_hw, gen)
    out, grads = forward_backward(lambda t, w_, b_: TF.conv2d(t, w_, b_, t_min, t_max, *geometry, backend=device),
                                  (t_in, w, b), device, dtype)
    ref_out, ref_grads = forward_backward(lambda t, w_, b_: R.conv2d(t, w_, b_, t_min, t_max, *geometry),
                                          (t_in, w, b), "cpu", torch.float64)
    assert out.dtype == dtype and out.shape == ref_out.shape
    assert_close_scaled(out, ref_out, dtype, "output")
    for name, g, rg in zip(("t_in", "weight", "bias"), grads, ref_grads):
        assert g.shape == rg.shape
        assert_close_scaled(g, rg, dtype, f"grad {name}")
    spiking = (ref_out < t_max).double().mean()
    assert 0.05 < spiking < 0.95


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", [(1, 3), (4, 4), (71, 67)])
def test_conv2d_bias_gradient_over_spans(device, dtype, size):
    # The CPU kernel sums the bias gradient per (image, channel) span inside the gating pass,
    # 16 lanes at a time: spans shorter than, equal to and far longer than that, with a tail.
    t_in, w, t_min, t_max, gen = conv_case(70, n=3, c_in=2, c_out=5, size=size, kernel=(1, 1))
    b = 0.3 * torch.randn(5, generator=gen, dtype=torch.float64)
    upstream = torch.randn(3, 5, *size, generator=gen, dtype=torch.float64)
    def bias_grad(fn, device, dtype):
        leaves = [x.to(device, dtype).requires_grad_() for x in (t_in, w, b)]
        out = fn(*leaves)
        return torch.autograd.grad(out, leaves[2], upstream.to(device, dtype))[0]
    g = bias_grad(lambda t, w_, b_: TF.conv2d(t, w_, b_, t_min, t_max, backend=device), device, dtype)
    ref = bias_grad(lambda t, w_, b_: R.conv2d(t, w_, b_, t_min, t_max), "cpu", torch.float64)
    assert (ref != 0).any()
    assert_close_scaled(g, ref, dtype, "grad bias")


@pytest.mark.parametrize("device", DEVICES)
def test_conv2d_padding_is_t_min(device):
    """Padding with t_min equals explicit padding of the spike times with t_min."""
    t_in, w, t_min, t_max, _ = conv_case(3)
    padded = torch.nn.functional.pad(t_in, (1, 1, 1, 1), value=t_min)
    a = TF.conv2d(t_in.to(device), w.to(device), None, t_min, t_max, padding=1)
    b = TF.conv2d(padded.to(device), w.to(device), None, t_min, t_max, padding=0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_conv2d_non_contiguous_and_unbatched(device):
    t_in, w, t_min, t_max, gen = conv_case(4)
    b = 0.3 * torch.randn(6, generator=gen, dtype=torch.float64)
    t_cl = t_in.to(device).to(memory_format=torch.channels_last)
    w_nc = w.to(device).transpose(2, 3).contiguous().transpose(2, 3)
    assert not t_cl.is_contiguous() and not w_nc.is_contiguous()
    out = TF.conv2d(t_cl, w_nc, b.to(device), t_min, t_max, padding=1)
    ref = R.conv2d(t_in, w, b, t_min, t_max, padding=1)
    assert_close_scaled(out, ref, torch.float64, "channels_last")
    single = TF.conv2d(t_in[1].to(device), w.to(device), b.to(device), t_min, t_max, padding=1)
    assert_close_scaled(single, ref[1], torch.float64, "unbatched")


@pytest.mark.parametrize("device", DEVICES)
def test_conv2d_empty_batch(device):
    t_in, w, t_min, t_max, gen = conv_case(5, n=0)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    out, grads = forward_backward(lambda *a: TF.conv2d(*a, t_min, t_max, padding=1), (t_in, w, b),
                                  device, torch.float64)
    assert out.shape == (0, 6, 9, 8)
    assert grads[0].shape == t_in.shape and float(grads[1].abs().sum()) == 0 and float(grads[2].abs().sum()) == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size, stride, padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1))])
def test_max_pool2d_is_earliest_spike(device, kernel_size, stride, padding):
    gen = generator(21)
    t = input_times((2, 3, 7, 8), 1.0, 4.0, gen).to(device).requires_grad_()
    out = TF.max_pool2d(t, kernel_size, stride, padding)
    # Brute force: the minimum over each window, padding excluded.
    k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    s = k if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    p = (padding, padding) if isinstance(padding, int) else padding
    tp = torch.nn.functional.pad(t.detach().cpu(), (p[1], p[1], p[0], p[0]), value=float("inf"))
    expected = torch.empty(out.shape, dtype=torch.float64)
    for i, j in itertools.product(range(out.shape[2]), range(out.shape[3])):
        window = tp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
        expected[:, :, i, j] = window.amin(dim=(2, 3))
    torch.testing.assert_close(out.detach().cpu(), expected, rtol=0, atol=0)
    # The gradient reaches exactly the earliest spike of each window.
    out.sum().backward()
    assert float(t.grad.sum()) == out.numel()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_max_pool2d_keeps_only_the_indices_for_backward(layout):
    """The reference's autograd keeps -t, a copy of the input; the op keeps the winners' indices
    only (as much as the ReLU twin's pool adds to what its ReLU keeps), with the same values and
    gradients, in the input's layout, and gradcheck holds."""
    gen = generator(22)
    t = input_times((2, 3, 6, 8), 1.0, 4.0, gen).contiguous(memory_format=layout).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        out = TF.max_pool2d(t, 3, 2, 1)
    assert [x.dtype for x in saved] == [torch.int64]
    ref = R.max_pool2d(t, 3, 2, 1)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    grad, = torch.autograd.grad(out, t, g)
    ref_grad, = torch.autograd.grad(ref, t, g)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)
    assert out.is_contiguous(memory_format=layout) and grad.stride() == t.stride()
    assert torch.autograd.gradcheck(lambda x: TF.max_pool2d(x, 3, 2, 1), (t,))
