"""Dense and readout ops: kernels against the float64 reference, values and all gradients."""
import pytest
import torch

import ttfs_ext
from ttfs_ext import functional as TF
from ttfs_ext import reference as R

from _utils import DEVICES, assert_close_scaled, conv_case, dense_case, forward_backward, generator

# Every CPU test runs with the CPU kernels' own profile and driven as CUDA drives its kernels.
pytestmark = pytest.mark.usefixtures("kernel_profile")

SHAPES = [((16,), 20, 12), ((3, 5), 7, 33), ((1,), 1, 1), ((64,), 128, 10)]


def _check_against_reference(op, ref, case, device, dtype, window):
    t_in, w, b = case
    out, grads = forward_backward(lambda t, w_, b_: op(t, w_, b_, *window, backend=device), (t_in, w, b),
                                  device, dtype)
    ref_out, ref_grads = forward_backward(lambda t, w_, b_: ref(t, w_, b_, *window), (t_in, w, b),
                                          "cpu", torch.float64)
    assert out.dtype == dtype and out.device.type == device
    assert_close_scaled(out, ref_out, dtype, "output")
    for name, g, rg in zip(("t_in", "weight", "bias"), grads, ref_grads):
        assert g.dtype == dtype
        assert_close_scaled(g, rg, dtype, f"grad {name}")
    return ref_out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch_shape, n_in, n_out", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_linear_matches_reference(device, dtype, batch_shape, n_in, n_out, bias, seed):
    t_in, w, b, t_min, t_max = dense_case(seed, batch_shape, n_in, n_out, bias)
    ref_out = _check_against_reference(TF.linear, R.linear, (t_in, w, b), device, dtype, (t_min, t_max))
    if ref_out.numel() >= 100:  # both spiking and silent neurons are exercised
        spiking = (ref_out < t_max).double().mean()
        assert 0.1 < spiking < 0.9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch_shape, n_in, n_out", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", [2, 3])
def test_readout_matches_reference(device, dtype, batch_shape, n_in, n_out, bias, seed):
    t_in, w, b, t_min, _ = dense_case(seed, batch_shape, n_in, n_out, bias)
    # The readout reads its potential at the end of the window its inputs fired in.
    _check_against_reference(TF.readout, R.readout, (t_in, w, b), device, dtype, (t_min,))


@pytest.mark.parametrize("device", DEVICES)
def test_linear_is_relu_of_activations(device):
    """t_max - t_out = ReLU(W x + b) with x = t_min - t_in: the ReLU twin, to 1e-12."""
    t_in, w, b, t_min, t_max = dense_case(7, (32,), 50, 40)
    out = TF.linear(t_in.to(device), w.to(device), b.to(device), t_min, t_max).cpu()
    relu = torch.relu(torch.nn.functional.linear(t_min - t_in, w, b))
    torch.testing.assert_close(t_max - out, relu, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["linear", "readout"])
def test_non_contiguous_inputs(device, op):
    t_in, w, b, t_min, t_max = dense_case(11, (12,), 9, 6)
    window = (t_min, t_max) if op == "linear" else (t_min,)
    fn, ref = getattr(TF, op), getattr(R, op)
    # t_in as a transposed view, weight as a transposed view, bias as a strided view.
    t_nc = t_in.t().contiguous().t().to(device)
    w_nc = w.t().contiguous().t().to(device)
    b_nc = torch.stack([b, b], 1)[:, 0].to(device)
    assert not (t_nc.is_contiguous() or w_nc.is_contiguous() or b_nc.is_contiguous())
    leaves = [x.detach().requires_grad_() for x in (t_nc, w_nc, b_nc)]
    out = fn(*leaves, *window)
    # An expanded (stride-0) upstream gradient, as from out.sum().
    out.sum().backward()
    ref_leaves = [x.detach().cpu().requires_grad_() for x in (t_in, w, b)]
    ref_out = ref(*ref_leaves, *window)
    ref_out.sum().backward()
    assert_close_scaled(out, ref_out, torch.float64, "output")
    for x, rx in zip(leaves, ref_leaves):
        assert_close_scaled(x.grad, rx.grad, torch.float64, "grad")


def _one_pass_case(dtype):
    """(policy, n_in, n_out): sizes where the CPU dense layers take their one-pass kernels
    (status()["cpu_dense_one_pass"]): a weight just over the size threshold, with odd sizes
    (a partial vector, a partial group)."""
    policy = ttfs_ext.status()["cpu_dense_one_pass"]
    n_in = 2051
    n_out = -(-policy["min_weight_bytes"] // (n_in * dtype.itemsize)) | 1
    return policy, n_in, n_out


ISAS = ["x86-64-v4", "x86-64-v3", "baseline"]


@pytest.fixture(params=["automatic"] + ISAS)
def one_pass_isa(request):
    """Runs the CPU one-pass kernels with each ISA's code this CPU can run (each has its own
    vector width and blocking), then restores the automatic choice."""
    from ttfs_ext import _backend

    isa = request.param
    if isa != "automatic":
        best = ttfs_ext.status()["cpu_isa_detected"]
        if ISAS.index(isa) < ISAS.index(best):
            pytest.skip(f"this CPU cannot run {isa} code (its best is {best})")
        _backend._C._set_one_pass_isa(isa)
    yield isa
    _backend._C._set_one_pass_isa("")


@pytest.mark.cpu_profile_only  # the one-pass kernels' own switch (the cuda-like profile runs none)
def test_one_pass_isa_override():
    from ttfs_ext import _backend

    with pytest.raises(ValueError, match="unknown ISA"):
        _backend._C._set_one_pass_isa("avx9")
    _backend._C._set_one_pass_isa("baseline")
    try:
        policy = ttfs_ext.status()["cpu_dense_one_pass"]
        assert policy["isa"] == "baseline" and policy["enabled"]  # forced: used even with SSE2 code
    finally:
        _backend._C._set_one_pass_isa("")
    assert ttfs_ext.status()["cpu_dense_one_pass"]["isa"] == ttfs_ext.status()["cpu_isa"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("op", ["linear", "readout"])
@pytest.mark.parametrize("rows", ["one", "min", "split", "forward_max", "forward_max+1", "max", "max+1"])
def test_few_rows_large_weight(device, dtype, op, rows, one_pass_isa, kernel_profile):
    """Few rows and a weight beyond the caches: on the CPU, one pass over the weight computes
    the forward GEMM (min_rows to forward_max_rows rows) and both weight-sized gradients
    (min_rows to max_rows); one row, rows in two batch dimensions, each limit and one row past
    it, with each ISA's code, all against the float64 reference. (Driven as on CUDA, the CPU
    runs no one-pass kernel: vendor GEMMs at every size, once.)"""
    if one_pass_isa != "automatic" and (rows in ("one", "max+1") or kernel_profile == "cuda-like"):
        pytest.skip("vendor GEMMs only: tested once, with the automatic ISA")
    policy, n_in, n_out = _one_pass_case(dtype)
    batch_shape = {"one": (1,), "min": (policy["min_rows"],), "split": (3, 5),
                   "forward_max": (policy["forward_max_rows"],), "forward_max+1": (policy["forward_max_rows"] + 1,),
                   "max": (policy["max_rows"],), "max+1": (policy["max_rows"] + 1,)}[rows]
    t_in, w, b, t_min, t_max = dense_case(40, batch_shape, n_in, n_out)
    window = (t_min, t_max) if op == "linear" else (t_min,)
    _check_against_reference(getattr(TF, op), getattr(R, op), (t_in, w, b), device, dtype, window)


def test_few_rows_large_weight_weight_gradient_only(one_pass_isa, kernel_profile):
    """The one-pass kernel without the input gradient (a first layer) gives the same weight
    gradient as with it (driven as on CUDA: the vendor GEMM's, once)."""
    if one_pass_isa != "automatic" and kernel_profile == "cuda-like":
        pytest.skip("vendor GEMMs only: tested once, with the automatic ISA")
    policy, n_in, n_out = _one_pass_case(torch.float32)
    rows = policy["max_rows"]
    t_in, w, b, t_min, t_max = (x.float() if isinstance(x, torch.Tensor) else x for x in dense_case(41, (rows,), n_in, n_out))
    g = torch.randn(rows, n_out, generator=torch.Generator().manual_seed(3))
    wr = w.clone().requires_grad_()
    (g_w,) = torch.autograd.grad(TF.linear(t_in, wr, b, t_min, t_max), wr, g)
    wr2, tr = w.clone().requires_grad_(), t_in.clone().requires_grad_()
    g_t, g_w2 = torch.autograd.grad(TF.linear(tr, wr2, b, t_min, t_max), (tr, wr2), g)
    torch.testing.assert_close(g_w, g_w2, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_shape", [(0,), (2, 0)])
@pytest.mark.parametrize("op", ["linear", "readout"])
def test_empty_batch(device, batch_shape, op):
    t_in, w, b, t_min, t_max = dense_case(5, batch_shape, 8, 3)
    window = (t_min, t_max) if op == "linear" else (t_min,)
    out, grads = forward_backward(lambda *a: getattr(TF, op)(*a, *window), (t_in, w, b), device, torch.float64)
    assert out.shape == (*batch_shape, 3)
    assert grads[0].shape == t_in.shape
    assert torch.equal(grads[1].cpu(), torch.zeros_like(w)) and torch.equal(grads[2].cpu(), torch.zeros_like(b))


@pytest.mark.parametrize("device", DEVICES)
def test_only_needed_gradients(device):
    """The backward computes just what autograd asks for; the others match the full run."""
    t_in, w, b, t_min, t_max = dense_case(13)
    t_in, w, b = (x.to(device) for x in (t_in, w, b))
    wr = w.clone().requires_grad_()
    (g_w,) = torch.autograd.grad(TF.linear(t_in, wr, b, t_min, t_max).sum(), wr)
    wr2, tr = w.clone().requires_grad_(), t_in.clone().requires_grad_()
    g_t, g_w2 = torch.autograd.grad(TF.linear(tr, wr2, b, t_min, t_max).sum(), (tr, wr2))
    torch.testing.assert_close(g_w, g_w2)


@pytest.mark.parametrize("device", DEVICES)
def test_window_as_tensors(device):
    t_in, w, b, t_min, t_max = dense_case(17)
    args = [x.to(device) for x in (t_in, w, b)]
    a = TF.linear(*args, torch.tensor(t_min, dtype=torch.float64), torch.tensor(t_max, dtype=torch.float64, device=device))
    torch.testing.assert_close(a, TF.linear(*args, t_min, t_max), rtol=0, atol=0)
    assert ttfs_ext.functional.readout(*args, torch.tensor(t_min)).shape == (16, 12)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", ["linear", "readout", "conv2d"])
def test_autocast_cuda(op, low):
    """Under autocast the matrices are low precision, spike times stay float32. Error rule:
    at most twice the error of the reference run with the same low-precision matrices."""
    if op == "conv2d":
        t_in, w, t_min, t_max, gen = conv_case(90)
        b = 0.3 * torch.randn(6, generator=gen, dtype=torch.float64)
        fn = lambda t, w_, b_, **kw: TF.conv2d(t, w_, b_, t_min, t_max, padding=1, **kw)  # noqa: E731
        ref = lambda t, w_, b_: R.conv2d(t, w_, b_, t_min, t_max, 1, 1)  # noqa: E731
    else:
        t_in, w, b, t_min, t_max = dense_case(91, (64,), 96, 48)
        window = (t_min, t_max) if op == "linear" else (t_min,)
        fn = lambda t, w_, b_, **kw: getattr(TF, op)(t, w_, b_, *window, **kw)  # noqa: E731
        ref = lambda t, w_, b_: getattr(R, op)(t, w_, b_, *window)  # noqa: E731
    _assert_autocast_error_rule(fn, ref, (t_in, w, b), "cuda", low)


def _assert_autocast_error_rule(fn, ref, tensors, device, low):
    """fn under autocast(device, low) against the float64 reference: float32 spike times, and
    errors at most twice those of the reference run with the same low-precision matrices. A
    convolution's bias gradient comes from the convolution's backward, which sums the gated
    gradient in the matrix dtype (as the ReLU twin's does under autocast): each term rounded once,
    so its error may add eps(low) times the sum of |upstream gradient| over the channel."""
    with torch.autocast(device, dtype=low):
        out, grads = forward_backward(fn, tensors, device, torch.float32)
    assert out.dtype == torch.float32 and grads[0].dtype == torch.float32
    exact, exact_grads = forward_backward(ref, tensors, "cpu", torch.float64)
    lowp, lowp_grads = forward_backward(lambda t, w_, b_: ref(t.float(), w_.to(low), b_.float()),
                                        tensors, device, torch.float64)
    rounding = {"bias": 0.0}
    if out.dim() == 4:  # the upstream gradient of forward_backward, summed per channel
        upstream = torch.randn(out.shape, generator=generator(1234), dtype=torch.float64)
        rounding["bias"] = torch.finfo(low).eps * float(upstream.abs().sum((0, 2, 3)).max())
    for what, a, lp, e in [("output", out, lowp, exact)] + list(zip(("t_in", "weight", "bias"), grads,
                                                                       lowp_grads, exact_grads)):
        a, lp, e = a.detach().double().cpu(), lp.detach().double().cpu(), e.detach()
        err, ref_err = float((a - e).abs().max()), float((lp - e).abs().max())
        bound = 2 * ref_err + 1e-5 * max(1.0, float(e.abs().max())) + rounding.get(what, 0.0)
        assert err <= bound, f"{what}: {err} vs {ref_err}"


def _upstream(out: torch.Tensor) -> torch.Tensor:
    """forward_backward's upstream gradient for an output like `out`."""
    return torch.randn(out.shape, generator=generator(1234), dtype=torch.float64).to(out)


@pytest.mark.parametrize("op", ["linear", "readout", "conv2d"])
def test_autocast_cpu_runs_the_matrices_in_bfloat16(op, kernel_profile):
    """CPU autocast takes CUDA's rule (test_autocast_cuda): the matrix operand is bfloat16, so the
    GEMM/convolution runs in bfloat16 as the ReLU twin's does, spike times stay float32, and the
    errors against float64 are at most twice those of the reference with the same bfloat16
    matrices; a bfloat16 input (from an autocast layer before) is cast up, not refused."""
    if op == "conv2d":
        t_in, w, t_min, t_max, gen = conv_case(93)
        b = 0.3 * torch.randn(6, generator=gen, dtype=torch.float64)
        fn = lambda t, w_, b_: TF.conv2d(t, w_, b_, t_min, t_max, padding=1)  # noqa: E731
        ref = lambda t, w_, b_: R.conv2d(t, w_, b_, t_min, t_max, 1, 1)  # noqa: E731
    else:
        t_in, w, b, t_min, t_max = dense_case(94, (32,), 48, 40)
        window = (t_min, t_max) if op == "linear" else (t_min,)
        fn = lambda t, w_, b_: getattr(TF, op)(t, w_, b_, *window)  # noqa: E731
        ref = lambda t, w_, b_: getattr(R, op)(t, w_, b_, *window)  # noqa: E731
    _assert_autocast_error_rule(fn, ref, (t_in, w, b), "cpu", torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fn(t_in.to(torch.bfloat16), w.float(), b.float())
    assert low.dtype == torch.float32


@pytest.mark.needs_cuda
def test_cpu_and_cuda_agree():
    t_in, w, b, t_min, t_max = dense_case(92, (128,), 200, 100)
    cpu, cpu_grads = forward_backward(lambda *a: TF.linear(*a, t_min, t_max), (t_in, w, b), "cpu", torch.float64)
    gpu, gpu_grads = forward_backward(lambda *a: TF.linear(*a, t_min, t_max), (t_in, w, b), "cuda", torch.float64)
    assert_close_scaled(gpu, cpu, torch.float64, "output")
    for g, c in zip(gpu_grads, cpu_grads):
        assert_close_scaled(g, c, torch.float64, "grad")
