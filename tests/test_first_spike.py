"""The event-exact general neuron (first_spike_linear / first_spike_conv2d): kernels against
the float64 reference, values and the gradients of t_in, weight, alpha and threshold."""
import pytest
import torch
from torch.library import opcheck

from ttfs_ext import functional as TF
from ttfs_ext import reference as R

from _utils import DEVICES, TOL, assert_close_scaled, forward_backward, generator, input_checks

# Every CPU test runs with the CPU kernels' own profile and driven as CUDA drives its kernels
# (rows pre-sorted by at::sort, CUDA's data checks).
pytestmark = pytest.mark.usefixtures("kernel_profile")

F64 = torch.float64
ops = torch.ops.ttfs_ext
T_START = 1.0


def _window(gen):
    return T_START, T_START + 3.0 + 2.0 * float(torch.rand((), generator=gen))


def _times(shape, t_start, t_max, gen, ties=True):
    """Arrivals over [t_start - 1, t_max + 1]: some before t_start (they act from it), some after
    t_max; with ties, a tenth exactly at t_start and a tenth tied with their neighbour."""
    t = t_start - 1.0 + (t_max - t_start + 2.0) * torch.rand(shape, generator=gen, dtype=F64)
    if not ties:
        return t
    t = torch.where(torch.rand(shape, generator=gen) < 0.1, torch.full_like(t, t_start), t)
    return torch.where(torch.rand(shape, generator=gen) < 0.1, t.roll(1, -1), t)


def _neuron(shape, gen):
    """alpha of both signs; about one threshold in eight <= 0 (fires at t_start)."""
    alpha = 0.2 + 0.4 * torch.randn(shape, generator=gen, dtype=F64)
    threshold = 1.6 * torch.rand(shape, generator=gen, dtype=F64) - 0.2
    return alpha, threshold


def _linear_case(seed, batch_shape, n_in, n_out):
    gen = generator(seed)
    t_start, t_max = _window(gen)
    t_in = _times((*batch_shape, n_in), t_start, t_max, gen)
    weight = torch.randn(n_out, n_in, generator=gen, dtype=F64) / n_in ** 0.5
    return (t_in, weight, *_neuron(n_out, gen)), (t_start, t_max)


def _conv_case(seed, batch, c_in, c_out, size, kernel, groups, out_hw, per_position):
    """per_position: (alpha, threshold) flags, each (C_out,) or (C_out, H_out, W_out)."""
    gen = generator(seed)
    t_start, t_max = _window(gen)
    t_in = _times((batch, c_in, *size), t_start, t_max, gen)
    fan_in = c_in // groups * kernel[0] * kernel[1]
    weight = torch.randn(c_out, c_in // groups, *kernel, generator=gen, dtype=F64) / fan_in ** 0.5
    alpha, threshold = _neuron((c_out, *out_hw), gen)
    alpha = alpha if per_position[0] else alpha[:, 0, 0].contiguous()
    threshold = threshold if per_position[1] else threshold[:, 0, 0].contiguous()
    return (t_in, weight, alpha, threshold), (t_start, t_max)


def _compare(fn, ref, tensors, device, dtype):
    """fn on (device, dtype) against ref in float64 on the CPU: output and the four gradients."""
    out, grads = forward_backward(fn, tensors, device, dtype)
    ref_out, ref_grads = forward_backward(ref, tensors, "cpu", F64)
    assert out.dtype == dtype and out.device.type == device and out.shape == ref_out.shape
    assert_close_scaled(out, ref_out, dtype, "output")
    for name, g, rg in zip(("t_in", "weight", "alpha", "threshold"), grads, ref_grads):
        assert g.dtype == dtype and g.shape == rg.shape
        assert_close_scaled(g, rg, dtype, f"grad {name}")
    return ref_out


def _assert_mixed(ref_out, threshold, t_start, t_max):
    """Firing, silent and at-start neurons all occur."""
    fired = (ref_out < t_max).double().mean()
    assert 0.1 < fired < 0.95
    assert bool((threshold <= 0).any()) and bool((ref_out == t_start).any())


# --- dense -----------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
# n_in 70: rows longer than the CPU kernel's insertion sort (32) take its std::sort path
@pytest.mark.parametrize("batch_shape, n_in, n_out", [((1,), 9, 16), ((32,), 20, 12), ((3, 5), 7, 33), ((6,), 70, 9)])
@pytest.mark.parametrize("seed", [0, 1])
def test_linear_matches_reference(device, dtype, batch_shape, n_in, n_out, seed):
    tensors, (t_start, t_max) = _linear_case(100 + seed, batch_shape, n_in, n_out)
    ref_out = _compare(lambda *a: TF.first_spike_linear(*a, t_start, t_max, backend=device),
                       lambda *a: R.first_spike_linear(*a, t_start, t_max), tensors, device, dtype)
    if ref_out.numel() >= 100:
        _assert_mixed(ref_out, tensors[3], t_start, t_max)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_in", [7, 70])
def test_nan_arrivals_with_checks_off_sort_last_as_in_the_reference(device, n_in):
    # The CPU kernel sorts rows itself: NaN must sort last and ties keep input order, as
    # at::sort (CUDA) and the reference do; then outputs agree exactly, NaN rows included.
    (t_in, w, alpha, threshold), (t_start, t_max) = _linear_case(800 + n_in, (8,), n_in, 6)
    # Every arrival early in the window, so that neurons fire after the last one: a NaN sorted
    # anywhere but last (or taken for +inf padding) then changes outputs.
    t_in = t_start + 0.3 * (t_in - t_in.min()) / (t_in.max() - t_in.min())
    t_in[::2, 3] = float("nan")
    t_in[1::4, 1] = float("nan")
    with input_checks(False):
        out = TF.first_spike_linear(t_in.to(device), w.to(device), alpha.to(device), threshold.to(device),
                                    t_start, t_max, backend=device).cpu()
        ref = R.first_spike_linear(t_in, w, alpha, threshold, t_start, t_max)
    torch.testing.assert_close(out, ref, **TOL[F64], equal_nan=True)
    as_padding = R.first_spike_linear(torch.nan_to_num(t_in, nan=float("inf")), w, alpha, threshold, t_start, t_max)
    assert bool((ref != as_padding).any())  # the case tells the orders apart


@pytest.mark.parametrize("device", DEVICES)
def test_linear_hand_computed(device):
    """One input of weight w at t = 0.5 onto alpha = 1, threshold = 1, t_start = 0:
    w = 1 fires at 0.5 + 0.5 / 2 = 0.75 (slope 2); w = -2 turns back at V = 0.5 and never fires;
    threshold -1 fires at t_start."""
    t_in = torch.tensor([[0.5]], dtype=F64, device=device)
    weight = torch.tensor([[1.0], [-2.0], [1.0]], dtype=F64, device=device)
    alpha = torch.tensor([1.0, 1.0, 1.0], dtype=F64, device=device)
    threshold = torch.tensor([1.0, 1.0, -1.0], dtype=F64, device=device)
    t_out, slope = ops.first_spike_linear(t_in, weight, alpha, threshold, 0.0, 3.0)
    assert t_out.tolist() == [[0.75, 3.0, 0.0]] and slope.tolist() == [[2.0, 0.0, 0.0]]


@pytest.mark.parametrize("device", DEVICES)
def test_linear_non_contiguous(device):
    (t_in, w, alpha, threshold), window = _linear_case(7, (6,), 8, 5)
    t_nc = t_in.T.contiguous().T.to(device)
    w_nc = w.T.contiguous().T.to(device)
    assert not t_nc.is_contiguous() and not w_nc.is_contiguous()
    out = TF.first_spike_linear(t_nc, w_nc, alpha.to(device), threshold.to(device), *window, backend=device)
    assert_close_scaled(out, R.first_spike_linear(t_in, w, alpha, threshold, *window), F64, "non-contiguous")


# --- conv2d ----------------------------------------------------------------------------

# (stride, padding, dilation, groups, kernel)
GEOMETRIES = [
    (1, 1, 1, 1, (3, 3)),
    (2, 1, 1, 2, (3, 3)),
    ((2, 1), (1, 2), (2, 1), 1, (3, 2)),
    (1, 0, 1, 4, (1, 1)),   # pointwise, grouped
    (1, 2, 1, 4, (3, 3)),   # depthwise; wide padding
]
PARAM_KINDS = [(False, False), (True, False), (False, True), (True, True)]


def _conv_geometry_case(seed, batch, geometry, per_position, size=(7, 6)):
    stride, padding, dilation, groups, kernel = geometry
    with torch.no_grad():
        out_hw = torch.nn.functional.conv2d(torch.zeros(1, 4, *size), torch.zeros(8, 4 // groups, *kernel), None,
                                            stride, padding, dilation, groups).shape[2:]
    return _conv_case(seed, batch, 4, 8, size, kernel, groups, out_hw, per_position)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("per_position", PARAM_KINDS)
def test_conv2d_matches_reference(device, dtype, geometry, per_position):
    seed = 200 + 10 * GEOMETRIES.index(geometry) + PARAM_KINDS.index(per_position)
    batch = 1 if seed % 2 else 3
    tensors, (t_start, t_max) = _conv_geometry_case(seed, batch, geometry, per_position)
    args = (t_start, t_max, *geometry[:4])
    ref_out = _compare(lambda *a: TF.first_spike_conv2d(*a, *args, backend=device),
                       lambda *a: R.first_spike_conv2d(*a, *args), tensors, device, dtype)
    if ref_out.numel() >= 100:
        fired = (ref_out < t_max).double().mean()
        assert 0.1 < fired < 0.95


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_position", [(False, True), (True, False)])
def test_conv2d_chunks_match_whole_batch(device, per_position):
    """Chunked over the batch (1, 2 or 3 samples a chunk, a short last chunk), values and
    gradients equal those of the batch in one chunk, and the reference."""
    geometry = GEOMETRIES[1]
    tensors, (t_start, t_max) = _conv_geometry_case(300, 7, geometry, per_position)
    args = (t_start, t_max, *geometry[:4])
    per_sample = 4 * 9 * 4 * 3  # C_in * kH * kW * positions
    results = []
    for workspace in (1 << 23, 1, 2 * per_sample, 3 * per_sample + 1):
        leaves = [t.to(device).requires_grad_() for t in tensors]
        out, _ = ops.first_spike_conv2d(*leaves, *args, workspace)
        g = torch.randn(out.shape, generator=generator(301), dtype=F64).to(device)
        results.append((out, torch.autograd.grad(out, leaves, g)))
    whole_out, whole_grads = results[0]
    for out, grads in results[1:]:
        torch.testing.assert_close(out, whole_out, rtol=0, atol=0)
        for grad, whole in zip(grads, whole_grads):
            assert_close_scaled(grad, whole, F64, "chunked grad")
    _compare(lambda *a: ops.first_spike_conv2d(*a, *args, 50)[0], lambda *a: R.first_spike_conv2d(*a, *args),
             tensors, device, F64)


@pytest.mark.parametrize("device", DEVICES)
def test_conv2d_padding_never_arrives(device):
    """A kernel of ones over a silent image: only alpha drives the neurons, wherever the patch
    lies (padding does not add current)."""
    t_in = torch.full((1, 1, 4, 4), 10.0, dtype=F64, device=device)  # after t_max: never arrive
    weight = torch.ones(1, 1, 3, 3, dtype=F64, device=device)
    alpha, threshold = torch.tensor([0.5], dtype=F64, device=device), torch.tensor([1.0], dtype=F64, device=device)
    out = TF.first_spike_conv2d(t_in, weight, alpha, threshold, 0.0, 5.0, padding=2, backend=device)
    torch.testing.assert_close(out, torch.full((1, 1, 6, 6), 2.0, dtype=F64, device=device), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_conv2d_non_contiguous_and_unbatched(device):
    tensors, (t_start, t_max) = _conv_geometry_case(8, 2, GEOMETRIES[0], (True, False))
    t_in, w, alpha, threshold = tensors
    t_cl = t_in.to(device).to(memory_format=torch.channels_last)
    w_nc = w.to(device).transpose(2, 3).contiguous().transpose(2, 3)
    assert not t_cl.is_contiguous() and not w_nc.is_contiguous()
    ref = R.first_spike_conv2d(t_in, w, alpha, threshold, t_start, t_max, padding=1)
    out = TF.first_spike_conv2d(t_cl, w_nc, alpha.to(device), threshold.to(device), t_start, t_max, padding=1,
                                backend=device)
    assert_close_scaled(out, ref, F64, "channels_last")
    single = TF.first_spike_conv2d(t_in[1].to(device), w.to(device), alpha.to(device), threshold.to(device),
                                   t_start, t_max, padding=1, backend=device)
    assert_close_scaled(single, ref[1], F64, "unbatched")


# --- empty batch ------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    (t_in, w, alpha, threshold), window = _linear_case(9, (0,), 5, 3)
    out, grads = forward_backward(lambda *a: TF.first_spike_linear(*a, *window, backend=device),
                                  (t_in, w, alpha, threshold), device, F64)
    assert out.shape == (0, 3) and grads[0].shape == (0, 5)
    assert all(g.shape == x.shape and float(g.abs().sum()) == 0 for g, x in zip(grads[1:], (w, alpha, threshold)))

    tensors, window = _conv_geometry_case(10, 0, GEOMETRIES[1], (True, False))
    out, grads = forward_backward(lambda *a: TF.first_spike_conv2d(*a, *window, *GEOMETRIES[1][:4], backend=device),
                                  tensors, device, F64)
    assert out.shape == (0, 8, 4, 3) and grads[0].shape == tensors[0].shape
    assert all(g.shape == x.shape and float(g.abs().sum()) == 0 for g, x in zip(grads[1:], tensors[1:]))


# --- gradcheck, opcheck ------------------------------------------------------------------

def _assert_smooth(fn, args, patch_rows, t_start, t_max, margin=1e-4):
    """Finite differences must not cross a kink: no input near t_start or near the spike time
    of a neuron it feeds, no spike near t_max, no threshold near 0. fn(*args, t_max) -> times;
    patch_rows(t) -> (rows, K) arrivals of each row of neurons (padding +inf)."""
    with torch.no_grad():
        out = fn(*args, t_max)
        wider = fn(*args, t_max + margin)
        rows = patch_rows(args[0]).clamp_min(t_start)                          # (R, K)
        t_rows = out.movedim(1, -1).reshape(rows.shape[0], -1) if out.dim() == 4 else out.reshape(len(rows), -1)
        firing = (t_rows > t_start) & (t_rows < t_max)                          # (R, O)
        gaps = (rows.unsqueeze(1) - t_rows.unsqueeze(2)).abs().amin(dim=2)      # (R, O)
        assert bool((gaps[firing] > margin).all()), "an input arrives at a spike time"
        assert bool(((wider < t_max - margin) | (wider == t_max + margin)).all()), "a spike near t_max"
        assert bool(((args[0] - t_start).abs() > margin).all()), "an input at t_start"
        assert bool((args[3].abs() > margin).all()), "a threshold near 0"
        assert 0 < int(firing.sum()) < firing.numel()


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_linear(seed):
    gen = generator(400 + seed)
    t_start, t_max = _window(gen)
    t_in = _times((3, 5), t_start, t_max, gen, ties=False)
    weight = torch.randn(4, 5, generator=gen, dtype=F64) / 5 ** 0.5
    args = [x.requires_grad_() for x in (t_in, weight, *_neuron(4, gen))]
    fn = lambda *a: TF.first_spike_linear(*a[:4], t_start, a[4] if len(a) > 4 else t_max, backend="cpu")  # noqa: E731
    _assert_smooth(fn, args, lambda t: t, t_start, t_max)
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("per_position", [(False, True), (True, False)])
def test_gradcheck_conv2d(per_position):
    gen = generator(410 + sum(per_position))
    t_start, t_max = _window(gen)
    t_in = _times((1, 2, 4, 3), t_start, t_max, gen, ties=False)
    weight = torch.randn(4, 1, 3, 3, generator=gen, dtype=F64) / 3.0
    alpha, threshold = _neuron((4, 2, 2), gen)
    alpha = alpha if per_position[0] else alpha[:, 0, 0].contiguous()
    threshold = threshold if per_position[1] else threshold[:, 0, 0].contiguous()
    args = [x.requires_grad_() for x in (t_in, weight, alpha, threshold)]
    geometry = (2, 1, 1, 2)  # stride, padding, dilation, groups
    fn = lambda *a: TF.first_spike_conv2d(*a[:4], t_start, a[4] if len(a) > 4 else t_max, *geometry,  # noqa: E731
                                          backend="cpu")

    def patch_rows(t):  # rows (position, output channel of the group) share a patch: repeat per group
        padded = torch.nn.functional.pad(t, (1, 1, 1, 1), value=float("inf"))
        cols = torch.nn.functional.unfold(padded, (3, 3), stride=2).transpose(1, 2).reshape(-1, 2, 9)
        return cols.repeat_interleave(2, dim=1).reshape(-1, 9)  # (positions * C_out, K) per (l, o)

    out = fn(*args)
    # Each (position, channel) is a row of one neuron: compare per neuron.
    flat = lambda *a: fn(*a).permute(0, 2, 3, 1).reshape(-1, 1)  # noqa: E731
    _assert_smooth(flat, args, patch_rows, t_start, t_max)
    assert out.shape == (1, 4, 2, 2)
    assert torch.autograd.gradcheck(fn, args)


def _opcheck_cases(device):
    (t_in, w, alpha, threshold), window = _linear_case(500, (5,), 6, 4)
    dense = [x.to(device) for x in (t_in, w, alpha, threshold)], window
    tensors, window_c = _conv_geometry_case(501, 2, GEOMETRIES[1], (True, False))
    conv = [x.to(device) for x in tensors], window_c
    return dense, conv


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward_ops(device, requires_grad):
    (dense, window), (conv, window_c) = _opcheck_cases(device)
    dense = [x.requires_grad_(requires_grad) for x in dense]
    opcheck(ops.first_spike_linear.default, (*dense, *window))
    opcheck(ops.first_spike_linear.default, (*dense, *window, 1.25))  # outputs on their own axis
    geometry = [[2, 2], [1, 1], [1, 1], 2]
    conv = [x.requires_grad_(requires_grad) for x in conv]
    opcheck(ops.first_spike_conv2d.default, (*conv, *window_c, *geometry))
    opcheck(ops.first_spike_conv2d.default, (*conv, *window_c, *geometry, 1))  # a sample per chunk
    opcheck(ops.first_spike_conv2d.default, (*conv, *window_c, *geometry, 1 << 23, 1.25))
    per_channel = [conv[0], conv[1], conv[2][:, 0, 0].contiguous(), conv[3]]
    opcheck(ops.first_spike_conv2d.default, (*per_channel, *window_c, *geometry))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", [[True, True, True, True], [False, True, False, True], [True, False, True, False]])
def test_opcheck_backward_ops(device, mask):
    (dense, window), (conv, window_c) = _opcheck_cases(device)
    for origin in (0.0, 1.25):
        t_out, slope = ops.first_spike_linear(*dense, *window, origin)
        opcheck(ops._first_spike_linear_backward.default,
                (_upstream(t_out, 502), dense[0], dense[1], t_out, slope, window[0], origin, mask))
    geometry = [[2, 2], [1, 1], [1, 1], 2]
    for origin, workspace in ((0.0, 1 << 23), (0.0, 1), (1.25, 1 << 23)):
        t_out, slope = ops.first_spike_conv2d(*conv, *window_c, *geometry, workspace, origin)
        opcheck(ops._first_spike_conv2d_backward.default,
                (_upstream(t_out, 503), conv[0], conv[1], t_out, slope, window_c[0], origin, *geometry, True, False,
                 mask, workspace))


def _upstream(t_out: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed random upstream gradient like t_out."""
    return torch.randn(t_out.shape, generator=generator(seed), dtype=F64).to(t_out)


def test_double_backward_raises():
    tensors, window = _linear_case(600, (3,), 4, 2)
    args = [x.requires_grad_() for x in tensors]
    out = TF.first_spike_linear(*args, *window, backend="cpu")
    (g,) = torch.autograd.grad(out.sum(), args[1], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_op_argument_errors():
    (t_in, w, alpha, threshold), (t_start, t_max) = _linear_case(700, (3,), 4, 2)
    with pytest.raises(ValueError, match="t_start < t_max"):
        ops.first_spike_linear(t_in, w, alpha, threshold, t_max, t_start)
    with pytest.raises(ValueError, match="alpha must have shape"):
        ops.first_spike_linear(t_in, w, alpha[:1], threshold, t_start, t_max)
    with pytest.raises(TypeError, match="threshold must have the dtype"):
        ops.first_spike_linear(t_in, w, alpha, threshold.float(), t_start, t_max)
    conv = torch.zeros(1, 2, 4, 4, dtype=F64), torch.zeros(4, 1, 3, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"alpha must have shape \(4,\) or \(4, 2, 2\)"):
        ops.first_spike_conv2d(*conv, torch.zeros(4, 3, 3, dtype=F64), torch.zeros(4, dtype=F64), 0.0, 1.0,
                               [1, 1], [0, 0], [1, 1], 2)
