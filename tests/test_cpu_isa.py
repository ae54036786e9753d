"""Every ISA's code of the CPU loops (AVX-512, AVX2, baseline SSE2), forced in turn, against the
float64 reference: the suite never depends on the CPU it runs on. The CPU runs the best ISA it
supports (status()["cpu_isa_detected"]); each test here forces one it can run, so an AVX-512
machine checks all three, an AVX2 machine two, any x86-64 machine the baseline."""
import pytest
import torch

import ttfs_ext
from ttfs_ext import _backend
from ttfs_ext import functional as TF
from ttfs_ext import reference as R

from _utils import assert_close_scaled, conv_case, dense_case, expected_cpu_isa, forward_backward, generator

ISAS = ["x86-64-v4", "x86-64-v3", "baseline"]  # best first: each runs the ones after it
DTYPES = [torch.float64, torch.float32]


def runnable(isa: str) -> bool:
    detected = ttfs_ext.status()["cpu_isa_detected"]
    return ISAS.index(isa) >= ISAS.index(detected)


@pytest.fixture(params=ISAS)
def cpu_isa(request):
    """Runs every CPU loop in one ISA's code, then restores the automatic choice."""
    if not runnable(request.param):
        pytest.skip(f"this CPU cannot run {request.param} code")
    _backend._C._set_cpu_isa(request.param)
    yield request.param
    _backend.apply_cpu_isa_env()


def _compare(fn, ref, tensors, dtype, names):
    out, grads = forward_backward(fn, tensors, "cpu", dtype)
    ref_out, ref_grads = forward_backward(ref, tensors, "cpu", torch.float64)
    assert_close_scaled(out, ref_out, dtype, "output")
    for name, g, rg in zip(names, grads, ref_grads):
        assert_close_scaled(g, rg, dtype, f"grad {name}")
    return ref_out


def test_status_follows_the_forced_isa(cpu_isa):
    info = ttfs_ext.status()
    assert info["cpu_isa"] == cpu_isa
    policy = info["cpu_dense_one_pass"]  # the one-pass kernels follow the CPU loops' ISA
    assert policy["isa"] == cpu_isa
    assert policy["enabled"] == (cpu_isa != "baseline")  # AVX-512 and AVX2 code; not SSE2
    assert policy["forward_max_rows"] == (16 if cpu_isa == "x86-64-v4" else 8)


def test_forcing_an_isa_is_checked():
    with pytest.raises(ValueError, match="unknown ISA"):
        _backend._C._set_cpu_isa("avx9")
    for isa in ISAS:
        if not runnable(isa):
            with pytest.raises(ValueError, match="this CPU cannot run"):
                _backend._C._set_cpu_isa(isa)
    assert ttfs_ext.status()["cpu_isa"] == expected_cpu_isa()


def test_the_environment_forces_an_isa(monkeypatch):
    monkeypatch.setenv("TTFS_EXT_CPU_ISA", "baseline")
    try:
        _backend.apply_cpu_isa_env()
        assert ttfs_ext.status()["cpu_isa"] == "baseline"
        monkeypatch.setenv("TTFS_EXT_CPU_ISA", "avx9")
        with pytest.raises(ValueError, match="TTFS_EXT_CPU_ISA='avx9': ttfs_ext: unknown ISA"):
            _backend.apply_cpu_isa_env()
    finally:
        monkeypatch.undo()
        _backend.apply_cpu_isa_env()
    assert ttfs_ext.status()["cpu_isa"] == expected_cpu_isa()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["linear", "readout"])
def test_dense(cpu_isa, dtype, op):
    # 37 inputs and 1000 rows: whole vectors, a partial one and several parallel spans.
    t_in, w, b, t_min, t_max = dense_case(5, (1000,), 37, 19)
    window = (t_min, t_max) if op == "linear" else (t_min,)
    ref_out = _compare(lambda t, w_, b_: getattr(TF, op)(t, w_, b_, *window),
                       lambda t, w_, b_: getattr(R, op)(t, w_, b_, *window), (t_in, w, b), dtype,
                       ("t_in", "weight", "bias"))
    if op == "linear":
        assert 0.1 < float((ref_out < t_max).double().mean()) < 0.9


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias_kind", ["channel", "position"])
@pytest.mark.parametrize("size", [(3, 1), (4, 4), (67, 71)])  # spans of 3, 16 and 4757 positions
def test_conv2d(cpu_isa, dtype, bias_kind, size):
    t_in, w, t_min, t_max, gen = conv_case(6, size=size, kernel=(1, 1))
    shape = (w.shape[0],) if bias_kind == "channel" else (w.shape[0], *size)
    b = 0.3 * torch.randn(shape, generator=gen, dtype=torch.float64)
    _compare(lambda t, w_, b_: TF.conv2d(t, w_, b_, t_min, t_max),
             lambda t, w_, b_: R.conv2d(t, w_, b_, t_min, t_max), (t_in, w, b), dtype, ("t_in", "weight", "bias"))


@pytest.mark.parametrize("where", [0, 517, -1])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_check_in_the_prologue(cpu_isa, where, bad):
    t_in, w, b, t_min, t_max = dense_case(7, (40,), 37, 5)
    t_in = t_in.float()
    t_in.view(-1)[where] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        torch.ops.ttfs_ext.linear(t_in, w.float(), b.float(), t_min, t_max)


def _neuron_case(seed, shape, n_in):
    gen = generator(seed)
    t_start, t_max = 1.0, 4.5
    t_in = t_start - 1.0 + 5.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    t_in = torch.where(torch.rand(shape, generator=gen) < 0.1, torch.full_like(t_in, t_start), t_in)
    return t_in, gen, t_start, t_max


@pytest.mark.parametrize("dtype", DTYPES)
def test_first_spike_linear(cpu_isa, dtype):
    t_in, gen, t_start, t_max = _neuron_case(8, (50, 23), 23)
    w = torch.randn(13, 23, generator=gen, dtype=torch.float64) / 23 ** 0.5
    alpha = 0.2 + 0.4 * torch.randn(13, generator=gen, dtype=torch.float64)
    theta = 1.6 * torch.rand(13, generator=gen, dtype=torch.float64) - 0.2
    _compare(lambda *a: TF.first_spike_linear(*a, t_start, t_max),
             lambda *a: R.first_spike_linear(*a, t_start, t_max), (t_in, w, alpha, theta), dtype,
             ("t_in", "weight", "alpha", "threshold"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_first_spike_conv2d(cpu_isa, dtype):
    t_in, gen, t_start, t_max = _neuron_case(9, (2, 3, 7, 6), 27)
    w = torch.randn(5, 3, 3, 3, generator=gen, dtype=torch.float64) / 27 ** 0.5
    alpha = 0.2 + 0.4 * torch.randn(5, generator=gen, dtype=torch.float64)
    theta = 1.6 * torch.rand(5, generator=gen, dtype=torch.float64) - 0.2
    _compare(lambda *a: TF.first_spike_conv2d(*a, t_start, t_max, padding=1),
             lambda *a: R.first_spike_conv2d(*a, t_start, t_max, padding=1), (t_in, w, alpha, theta), dtype,
             ("t_in", "weight", "alpha", "threshold"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fs_activation(cpu_isa, dtype):
    """The few-spikes neuron: the forward (y, spike counts and masks, the regulariser) equals
    the reference loop bitwise; the surrogate backward equals the baseline code's bitwise (the
    same operations in the same fixed order on every ISA) and the reference's to rounding."""
    from ttfs_ext.fs import reference as fs_ref
    ops = torch.ops.ttfs_ext
    gen = generator(10)
    K, n = 12, 2 * 16384 + 77  # two parallel chunks and a tail that is not a whole vector
    h, d = (torch.randn(K, generator=gen, dtype=torch.float64).to(dtype) for _ in range(2))
    T = (torch.randn(K, generator=gen, dtype=torch.float64) * 1.5).to(dtype)
    x = (torch.randn(n, generator=gen, dtype=torch.float64) * 2).to(dtype)
    for mode in (0, 1, 2):
        got, want = ops.fs_activation(x, h, d, T, mode, False), fs_ref.fs_activation_full(x, h, d, T, mode, False)
        for a, b in zip(got[:2], want[:2]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    reg = ops.fs_activation(x, h, d, T, 0, True)[2]
    torch.testing.assert_close(reg, fs_ref.fs_activation_full(x, h, d, T, 0, True)[2],
                               rtol=1e-12 if dtype == torch.float64 else 1e-5, atol=0)
    gy = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
    greg = torch.randn(K, generator=gen, dtype=torch.float64).to(dtype)
    grads = ops._fs_activation_backward(gy, greg, x, h, d, T, [True] * 4)
    _backend._C._set_cpu_isa("baseline")
    baseline = ops._fs_activation_backward(gy, greg, x, h, d, T, [True] * 4)
    for name, a, b in zip("xhdT", grads, baseline):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"grad {name} vs baseline: {m}")
    leaves = [t.double().requires_grad_() for t in (x, h, d, T)]
    y, _, r = fs_ref.fs_activation_full(*leaves, 0, True)
    want = torch.autograd.grad((y * gy.double()).sum() + (r * greg.double()).sum(), leaves)
    for name, a, b in zip("xhdT", grads, want):
        assert_close_scaled(a, b, dtype, f"grad {name}")
