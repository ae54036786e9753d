"""Bad input gets a clear error that names the argument, on every backend."""
import pytest
import torch

from ttfs_ext import functional as TF
from ttfs_ext import reference as R
import ttfs_ext

from _utils import assert_close_scaled, conv_case, dense_case, generator, input_checks

# Every test runs with the CPU kernels' own profile and driven as CUDA drives its kernels (with
# CUDA's data checks on): the same errors either way.
pytestmark = pytest.mark.usefixtures("kernel_profile")

BACKENDS = ["cpu", "reference"]


@pytest.fixture
def dense():
    t_in, w, b, t_min, t_max = dense_case(60, (4,), 5, 3)
    return t_in, w, b, t_min, t_max


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_bad_shapes(dense, backend):
    t_in, w, b, t_min, t_max = dense
    with pytest.raises(ValueError, match=r"t_in must have shape \(\.\.\., 5\)"):
        TF.linear(t_in[:, :4], w, b, t_min, t_max, backend=backend)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        TF.linear(t_in, w[None], b, t_min, t_max, backend=backend)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        TF.linear(t_in, w, b[:2], t_min, t_max, backend=backend)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        TF.readout(t_in, w, b[:2], t_min, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_dtypes(dense, backend, kernel_profile):
    t_in, w, b, t_min, t_max = dense
    with pytest.raises(TypeError, match=r"t_in \(spike times\) must be float32 or float64"):
        TF.linear(t_in.half(), w, b, t_min, t_max, backend=backend)
    with pytest.raises(TypeError, match=r"t_in \(spike times\) must be float32 or float64"):
        TF.linear(t_in.long(), w, b, t_min, t_max, backend=backend)
    with pytest.raises(TypeError, match="weight must have the dtype of t_in"):
        TF.linear(t_in, w.float(), b, t_min, t_max, backend=backend)
    # a float16/bfloat16 matrix with float32 spike times (autocast's operands), on every device
    assert TF.linear(t_in.float(), w.bfloat16(), b, t_min, t_max, backend=backend).dtype == torch.float32
    with pytest.raises(TypeError, match="weight must have the dtype of t_in"):  # ... with float32 spike times only
        TF.linear(t_in, w.bfloat16(), b, t_min, t_max, backend=backend)
    with pytest.raises(TypeError, match="bias must be a floating-point tensor"):
        TF.linear(t_in, w, b.long(), t_min, t_max, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_spike_times(dense, backend):
    t_in, w, b, t_min, t_max = dense
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = t_in.clone()
        t[1, 2] = bad
        with pytest.raises(ValueError, match="t_in contains NaN or inf"):
            TF.linear(t, w, b, t_min, t_max, backend=backend)
        with pytest.raises(ValueError, match="t_in contains NaN or inf"):
            TF.readout(t, w, b, t_min, backend=backend)
        with pytest.raises(ValueError, match="t_in contains NaN or inf"):
            TF.max_pool2d(t.view(1, 1, 4, 5), 2)
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            TF.encode(t)


def test_finiteness_check_is_exact_when_the_sum_overflows():
    # The check proves finiteness by a finite sum of squares (or sum); one that overflows must
    # fall back to the exact test, not reject large finite times.
    from ttfs_ext.functional import _all_finite
    big = torch.full((4, 5), 3e38)  # float32: finite elements, infinite sum
    assert not torch.isfinite(big.sum())
    assert _all_finite(big)
    TF.encode(big)  # no error
    squares = torch.full((3, 7), 2e19, dtype=torch.float32)  # finite sum, infinite sum of squares
    assert torch.isfinite(squares.sum()) and _all_finite(squares)
    assert _all_finite(big.t())  # not contiguous: the sum path
    both = torch.tensor([float("inf"), -float("inf"), 1.0])  # sum NaN
    assert not _all_finite(both)
    assert not _all_finite(torch.tensor([[float("nan"), 1.0], [2.0, 3.0]]).t())
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = big.clone()
        t[2, 3] = bad
        assert not _all_finite(t)


def test_input_checks_can_be_turned_off(dense):
    t_in, w, b, t_min, t_max = dense
    t = t_in.clone()
    t[0, 0] = float("nan")
    with input_checks(False):
        assert not ttfs_ext.input_checks_enabled()
        assert torch.isnan(TF.linear(t, w, b, t_min, t_max)[0]).all()
    assert ttfs_ext.input_checks_enabled()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_windows(dense, backend):
    t_in, w, b, t_min, t_max = dense
    with pytest.raises(ValueError, match="t_min < t_max"):
        TF.linear(t_in, w, b, 3.0, 3.0, backend=backend)
    with pytest.raises(ValueError, match="t_min < t_max"):
        TF.linear(t_in, w, b, 3.0, 2.0, backend=backend)
    with pytest.raises(ValueError, match="t_max must be finite"):
        TF.linear(t_in, w, b, 1.0, float("inf"), backend=backend)
    with pytest.raises(ValueError, match="t_min must be finite"):
        TF.readout(t_in, w, b, float("nan"), backend=backend)
    with pytest.raises(ValueError, match="t_min must be a float or a 0-dim tensor"):
        TF.linear(t_in, w, b, torch.ones(2), t_max, backend=backend)
    with pytest.raises(TypeError, match="t_max must be a float or a 0-dim tensor"):
        TF.linear(t_in, w, b, t_min, "2", backend=backend)
    # local time: two positive widths, and one form per call
    with pytest.raises(ValueError, match="in_width must be positive"):
        TF.linear(t_in, w, b, in_width=0.0, width=2.0, backend=backend)
    with pytest.raises(ValueError, match="width must be positive"):
        TF.conv2d(t_in.view(4, 5, 1, 1), w.view(3, 5, 1, 1), b, in_width=1.0, width=-2.0, backend=backend)
    with pytest.raises(TypeError, match=r"pass t_min and t_max \(absolute time\) or in_width and width"):
        TF.linear(t_in, w, b, t_min, t_max, width=2.0, backend=backend)
    with pytest.raises(TypeError, match="missing width"):
        TF.linear(t_in, w, b, in_width=2.0, backend=backend)
    with pytest.raises(TypeError, match="missing t_max"):
        TF.linear(t_in, w, b, t_min, backend=backend)
    with pytest.raises(ValueError, match="in_width must be positive"):
        TF.readout(t_in, w, b, in_width=-1.0, backend=backend)
    with pytest.raises(ValueError, match="width must be positive"):
        TF.first_spike_linear(t_in, w, torch.ones_like(b), torch.ones_like(b), in_width=1.0, width=0.0,
                              backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_bad_input(backend):
    t_in, w, t_min, t_max, _ = conv_case(61)
    with pytest.raises(ValueError, match="t_in has 3 channels"):
        TF.conv2d(t_in[:, :3], w, None, t_min, t_max, backend=backend)
    with pytest.raises(ValueError, match=r"t_in must be \(N, C, H, W\)"):
        TF.conv2d(t_in[0, 0], w, None, t_min, t_max, backend=backend)
    with pytest.raises(ValueError, match="weight must be 4-D"):
        TF.conv2d(t_in, w[0], None, t_min, t_max, backend=backend)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\) or \(6, 9, 8\)"):
        TF.conv2d(t_in, w, torch.zeros(6, 9, 9, dtype=torch.float64), t_min, t_max, padding=1, backend=backend)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        TF.conv2d(t_in, w, None, t_min, t_max, stride=0, backend=backend)
    with pytest.raises(ValueError, match="groups must be a positive int"):
        TF.conv2d(t_in, w, None, t_min, t_max, groups=0, backend=backend)
    with pytest.raises(ValueError, match="does not fit"):
        TF.conv2d(t_in[:, :, :2], w, None, t_min, t_max, backend=backend)


def test_max_pool_and_encode_bad_input():
    t = torch.rand(1, 2, 4, 4, generator=generator(66), dtype=torch.float64)
    with pytest.raises(ValueError, match="padding"):
        TF.max_pool2d(t, 2, padding=2)
    with pytest.raises(ValueError, match="kernel_size"):
        TF.max_pool2d(t, 0)
    with pytest.raises(ValueError, match=r"t_in must be \(N, C, H, W\)"):
        TF.max_pool2d(t[0, 0], 2)
    with pytest.raises(ValueError, match="low < high"):
        TF.encode(t, 1.0, 1.0)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        TF.encode(torch.ones(3, dtype=torch.uint8))


def test_meta_device_mismatch():
    t_in, w, b, t_min, t_max = dense_case(62, (4,), 5, 3)
    with pytest.raises(ValueError, match="weight is on meta but t_in is on cpu"):
        TF.linear(t_in, w.to("meta"), b, t_min, t_max)
    with pytest.raises(ValueError, match="bias is on meta but t_in is on cpu"):
        TF.linear(t_in, w, b.to("meta"), t_min, t_max)


@pytest.mark.needs_cuda
def test_mixed_devices_cuda():
    t_in, w, b, t_min, t_max = dense_case(63, (4,), 5, 3)
    with pytest.raises(ValueError, match="weight is on cuda:0 but t_in is on cpu"):
        TF.linear(t_in, w.cuda(), b, t_min, t_max)
    with pytest.raises(ValueError, match="bias is on cpu but t_in is on cuda:0"):
        TF.linear(t_in.cuda(), w.cuda(), b, t_min, t_max)


def test_compiled_ops_check_their_arguments(kernel_profile):
    """Direct calls of torch.ops.ttfs_ext.* (bypassing the Python checks) still get clear errors."""
    t_in, w, b, t_min, t_max = dense_case(64, (4,), 5, 3)
    ops = torch.ops.ttfs_ext
    with pytest.raises(ValueError, match="t_in must have shape"):
        ops.linear(t_in[:, :4], w, b, t_min, t_max)
    # The op's scalars are the input window's end on the inputs' axis and the layer window's end
    # on the outputs' (local time: two widths), so any finite pair is a layer; the window order
    # of absolute time is the Python API's check (test_bad_windows).
    with pytest.raises(ValueError, match="t_min must be finite"):
        ops.linear(t_in, w, b, float("nan"), 1.0)
    assert_close_scaled(ops.linear(t_in, w, b, 2.0, 1.0), R.linear(t_in, w, b, 2.0, 1.0), torch.float64, "output")
    with pytest.raises(TypeError, match="bias must have the dtype of t_in"):
        ops.linear(t_in, w, b.float(), t_min, t_max)
    with pytest.raises(TypeError, match="weight must have the dtype of t_in"):
        ops.readout(t_in, w.float(), b, t_min)
    # a float16/bfloat16 matrix with float32 spike times (autocast's operands), on every device
    assert ops.linear(t_in.float(), w.half(), None, t_min, t_max).dtype == torch.float32
    with pytest.raises(TypeError, match="weight must have the dtype of t_in"):
        ops.linear(t_in, w.half(), None, t_min, t_max)
    t4, w4, t_min, t_max, _ = conv_case(65)
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d(t4[:, :3], w4, None, t_min, t_max, [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.conv2d(t4, w4, torch.zeros(5, dtype=torch.float64), t_min, t_max, [1, 1], [0, 0], [1, 1], 1)


# --- the event-exact general neuron ---------------------------------------------------------

def _neurons(dtype=torch.float64):
    gen = generator(67)
    t = torch.rand(4, 5, generator=gen, dtype=dtype)
    return t, torch.randn(3, 5, generator=gen, dtype=dtype), torch.ones(3, dtype=dtype), torch.ones(3, dtype=dtype)


@pytest.mark.parametrize("change, match", [
    (lambda a: {**a, "t_start": 2.0, "t_max": 1.0}, "t_start < t_max"),
    (lambda a: {**a, "t_start": float("nan")}, "t_start must be finite"),
    (lambda a: {**a, "alpha": torch.ones(4, dtype=torch.float64)}, r"alpha must have shape \(3,\)"),
    (lambda a: {**a, "threshold": torch.ones(3, 1, dtype=torch.float64)}, r"threshold must have shape \(3,\)"),
    (lambda a: {**a, "alpha": torch.ones(3)}, "alpha must have the dtype of t_in"),
    (lambda a: {**a, "weight": a["weight"].float()}, "weight must have the dtype of t_in"),
    (lambda a: {**a, "weight": torch.randn(3, 4, dtype=torch.float64)}, r"t_in must have shape \(\.\.\., 4\)"),
    (lambda a: {**a, "threshold": torch.tensor([1.0, float("inf"), 1.0], dtype=torch.float64)},
     "threshold contains NaN or inf"),
    (lambda a: {**a, "t_in": torch.full((4, 5), float("nan"), dtype=torch.float64)}, "t_in contains NaN"),
    (lambda a: {**a, "t_in": a["t_in"].half()}, "must be float32 or float64"),
])
def test_first_spike_linear_errors(change, match):
    t, w, alpha, theta = _neurons()
    args = change(dict(t_in=t, weight=w, alpha=alpha, threshold=theta, t_start=0.0, t_max=3.0))
    with pytest.raises((ValueError, TypeError), match=match):
        TF.first_spike_linear(**args)


def test_first_spike_conv2d_errors():
    gen = generator(68)
    t = torch.rand(2, 4, 6, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64)
    one = torch.ones(6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"alpha must have shape \(6,\) or \(6, 4, 4\)"):
        TF.first_spike_conv2d(t, w, torch.ones(6, 5, 5, dtype=torch.float64), one, 0.0, 3.0, groups=2)
    with pytest.raises(ValueError, match="groups=1 expects 2"):
        TF.first_spike_conv2d(t, w, one, one, 0.0, 3.0)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        TF.first_spike_conv2d(t, w, one, one, 0.0, 3.0, stride=0, groups=2)
    with pytest.raises(ValueError, match="t_start < t_max"):
        TF.first_spike_conv2d(t, w, one, one, 3.0, 3.0, groups=2)
    with pytest.raises(ValueError, match="backend 'cuda' was requested"):
        TF.first_spike_conv2d(t, w, one, one, 0.0, 3.0, groups=2, backend="cuda")


def _bad_kernel_calls():
    """Calls that the functional API rejects, made on the CPU kernel itself: every one must
    raise there, never return (the kernel's checks are the only ones)."""
    t_in, w, b, t_min, t_max = dense_case(63, (4,), 5, 3)
    nan_t = t_in.clone()
    nan_t[3, 4] = float("nan")
    inf_t = t_in.clone()
    inf_t[0, 0] = -float("inf")
    dense = torch.ops.ttfs_ext.linear
    calls = {
        "in_features": lambda: dense(t_in[:, :4], w, b, t_min, t_max),
        "weight 3-D": lambda: dense(t_in, w[None], b, t_min, t_max),
        "bias shape": lambda: dense(t_in, w, b[:2], t_min, t_max),
        "t_in half": lambda: dense(t_in.half(), w.half(), None, t_min, t_max),
        "weight dtype": lambda: dense(t_in, w.float(), b, t_min, t_max),
        "inf t_max": lambda: dense(t_in, w, b, 1.0, float("inf")),
        "nan t_min": lambda: dense(t_in, w, b, float("nan"), 2.0),
        "nan t_in": lambda: dense(nan_t, w, b, t_min, t_max),
        "-inf t_in": lambda: dense(inf_t, w, b, t_min, t_max),
        "weight on meta": lambda: dense(t_in, w.to("meta"), b, t_min, t_max),
        "bias on meta": lambda: dense(t_in, w, b.to("meta"), t_min, t_max),
        "readout bias shape": lambda: torch.ops.ttfs_ext.readout(t_in, w, b[:2], t_min),
        "readout nan t_min": lambda: torch.ops.ttfs_ext.readout(t_in, w, b, float("nan")),
        "readout nan t_in": lambda: torch.ops.ttfs_ext.readout(nan_t, w, b, t_min),
    }
    t4, w4, t_min4, t_max4, _ = conv_case(64)
    nan4 = t4.clone()
    nan4[1, 2, 3, 4] = float("nan")
    conv = torch.ops.ttfs_ext.conv2d

    def conv2d(t=t4, w=w4, b=None, stride=1, padding=0, dilation=1, groups=1):
        return lambda: conv(t, w, b, t_min4, t_max4, stride, padding, dilation, groups)
    calls.update({
        "conv channels": conv2d(t=t4[:, :3]),
        "conv weight 3-D": conv2d(w=w4[0]),
        "conv bias shape": conv2d(b=torch.zeros(6, 9, 9, dtype=t4.dtype), padding=1),
        "conv stride 0": conv2d(stride=0),
        "conv negative padding": conv2d(padding=-1),
        "conv dilation 0": conv2d(dilation=0),
        "conv groups 0": conv2d(groups=0),
        "conv kernel does not fit": conv2d(t=t4[:, :, :2]),
        "conv nan t_in": conv2d(t=nan4),
        "conv weight on meta": conv2d(w=w4.to("meta")),
    })
    return calls


@pytest.mark.skipif("cpu" not in ttfs_ext.kernel_devices(), reason="no compiled CPU kernels")
@pytest.mark.parametrize("case", sorted(_bad_kernel_calls()))
def test_kernel_rejects_what_the_python_checks_reject(case, kernel_profile):
    with pytest.raises((ValueError, TypeError)):
        _bad_kernel_calls()[case]()


@pytest.mark.skipif("cpu" not in ttfs_ext.kernel_devices(), reason="no compiled CPU kernels")
def test_cpu_kernels_check_spike_times_in_their_first_pass():
    # The CPU forward ops check t_in for NaN/inf inside their prologue: anywhere in a tensor
    # large enough for several parallel spans, and not when the checks are off.
    from ttfs_ext import _backend
    gen = torch.Generator().manual_seed(65)
    t = torch.rand(64, 2048, generator=gen) * 2.0
    w = torch.randn(3, 2048, generator=gen)
    for index in (0, 40_000, t.numel() - 1):
        for bad in (float("nan"), float("inf"), -float("inf")):
            tb = t.clone()
            tb.view(-1)[index] = bad
            with pytest.raises(ValueError, match="t_in contains NaN or inf"):
                torch.ops.ttfs_ext.linear(tb, w, None, 0.0, 2.0)
            with pytest.raises(ValueError, match="t_in contains NaN or inf"):
                torch.ops.ttfs_ext.conv2d(tb.view(64, 2, 32, 32), w.view(3, 2, 32, 32), None, 0.0, 2.0,
                                          1, 0, 1, 1)
    big = torch.full((4, 5), 3e38)  # finite, though t_min - t overflows
    torch.ops.ttfs_ext.linear(big, torch.ones(2, 5), None, 0.0, 1.0)
    tb.view(-1)[-1] = float("nan")
    ttfs_ext.set_input_checks(False)
    try:
        assert not _backend._C._input_checks_enabled()
        assert torch.isnan(torch.ops.ttfs_ext.linear(tb, w, None, 0.0, 2.0)[-1]).all()
    finally:
        ttfs_ext.set_input_checks(True)
    assert _backend._C._input_checks_enabled()
