"""spike_conv2d (event-driven conv2d / conv_transpose2d of spike tensors) against the dense
ATen convolutions in float64, on every CPU ISA and thread count; opcheck; errors; and the
feedback SNNs (ttfs_ext.spide) with event-driven products against dense ones."""
import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import ttfs_ext
from ttfs_ext import _backend
from ttfs_ext import functional as TF
from ttfs_ext import spide

from _utils import TOL, generator

ops = torch.ops.ttfs_ext
F64 = torch.float64
# float32 products against ATen's float32 convolution of the same operands (not against the
# float64 reference, as TOL[float32] is): rounding of the same sums in another order only.
F32_VS_ATEN = dict(rtol=1e-5, atol=1e-5)
needs_kernels = pytest.mark.skipif("cpu" not in ttfs_ext.kernel_devices(), reason="no compiled CPU kernels")

# (kernel, stride, padding, dilation, output padding of the transposed form)
GEOMETRIES = [((3, 3), (1, 1), (1, 1), (1, 1), (0, 0)), ((5, 5), (2, 2), (2, 2), (1, 1), (1, 1)),
              ((3, 2), (2, 1), (0, 1), (2, 1), (1, 0)), ((1, 1), (1, 1), (0, 0), (1, 1), (0, 0)),
              ((4, 4), (3, 3), (1, 0), (1, 1), (2, 1))]


def _spikes(shape, density, seed, dtype=F64):
    """Ternary values times a random gate, density nonzero: what the SNNs' steps emit."""
    gen = generator(seed)
    keep = torch.rand(shape, generator=gen, dtype=F64) < density
    sign = torch.where(torch.rand(shape, generator=gen, dtype=F64) < 0.5, -1.0, 1.0)
    gate = 0.5 + torch.rand(shape, generator=gen, dtype=F64)
    return (keep * sign * gate).to(dtype)


def _case(seed, geometry, transposed, density, bias=True, dtype=F64, n=3, c_in=5, c_out=7, size=(9, 8)):
    k, s, p, d, op = geometry
    gen = generator(seed + 1)
    x = _spikes((n, c_in, *size), density, seed, dtype)
    w = torch.randn((c_in, c_out, *k) if transposed else (c_out, c_in, *k), generator=gen, dtype=F64).to(dtype)
    b = torch.randn(c_out, generator=gen, dtype=F64).to(dtype) if bias else None
    if transposed:
        dense = F.conv_transpose2d(x, w, b, s, p, op, 1, d)
    else:
        dense = F.conv2d(x, w, b, s, p, d)
    return x, TF.spike_conv_weight(w, transposed), b, dict(stride=s, padding=p, dilation=d), dense


@needs_kernels
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("density", [0.02, 0.3, 1.0])
def test_matches_dense_convolution(transposed, geometry, density):
    seed = 100 * GEOMETRIES.index(geometry) + int(density * 10) + transposed
    x, w, b, kw, dense = _case(seed, geometry, transposed, density, bias=density < 1)
    out = TF.spike_conv2d(x, w, b, transposed=transposed, output_size=dense.shape[2:], **kw)
    assert out.shape == dense.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, dense, **TOL[F64])
    ref = TF.spike_conv2d(x, w, b, transposed=transposed, output_size=dense.shape[2:], backend="reference", **kw)
    torch.testing.assert_close(ref, dense, **TOL[F64])
    # a channels-last input (the layout the networks keep) gives the same bits
    cl = TF.spike_conv2d(x.contiguous(memory_format=torch.channels_last), w, b, transposed=transposed,
                         output_size=dense.shape[2:], **kw)
    assert torch.equal(cl, out)


@needs_kernels
@pytest.mark.parametrize("dtype,c_out", [(F64, 70), (torch.float32, 100)])
def test_every_tile_width(dtype, c_out):
    """Output channels in tiles of four vectors, then of one, then one by one (64-byte vectors:
    8 doubles or 16 floats): 70 doubles = 2 x 32 + 6, 100 floats = 64 + 2 x 16 + 4."""
    for transposed in (False, True):
        x, w, b, kw, dense = _case(14 + transposed, GEOMETRIES[1], transposed, 0.2, dtype=dtype, c_in=6, c_out=c_out)
        out = TF.spike_conv2d(x, w, b, transposed=transposed, output_size=dense.shape[2:], **kw)
        torch.testing.assert_close(out, dense, **(TOL[F64] if dtype == F64 else F32_VS_ATEN))


@needs_kernels
def test_default_output_size_and_float32():
    geometry = GEOMETRIES[1]
    x, w, b, kw, dense = _case(7, geometry, False, 0.1, dtype=torch.float32)
    out = TF.spike_conv2d(x, w, b, **kw)
    torch.testing.assert_close(out, dense, **F32_VS_ATEN)
    x, w, b, kw, dense = _case(8, (geometry[0], *geometry[1:4], (0, 0)), True, 0.1)
    torch.testing.assert_close(TF.spike_conv2d(x, w, b, transposed=True, **kw), dense, **TOL[F64])


@needs_kernels
def test_zeros_give_the_bias_and_nan_propagates():
    x, w, b, kw, dense = _case(9, GEOMETRIES[0], False, 0.0)
    out = TF.spike_conv2d(x, w, b, **kw)
    assert torch.equal(out, b.view(1, -1, 1, 1).expand_as(out).contiguous())
    x[0, 1, 2, 3] = float("nan")
    out = TF.spike_conv2d(x, w, b, **kw)
    assert out[0].isnan().any() and not out[1:].isnan().any()


ISAS = ["baseline", "x86-64-v3", "x86-64-v4"]


@needs_kernels
def test_same_bits_on_every_isa_and_thread_count():
    """No fused multiply-adds and a fixed order per sample: the ISA and the thread count
    change nothing (float32, where they would show)."""
    x, w, b, kw, _ = _case(11, GEOMETRIES[1], True, 0.2, dtype=torch.float32, n=5, c_in=16, c_out=40)
    detected = ttfs_ext.status()["cpu_isa_detected"]
    outs = {}
    threads = torch.get_num_threads()
    try:
        for isa in ISAS[:ISAS.index(detected) + 1]:
            _backend._C._set_cpu_isa(isa)
            for t in (1, 2):
                torch.set_num_threads(t)
                outs[isa, t] = TF.spike_conv2d(x, w, b, transposed=True, **kw)
    finally:
        torch.set_num_threads(threads)
        _backend.apply_cpu_isa_env()
    first = next(iter(outs.values()))
    assert all(torch.equal(o, first) for o in outs.values()), list(outs)


@needs_kernels
def test_opcheck():
    x, w, b, kw, dense = _case(12, GEOMETRIES[2], True, 0.2)
    args = (x, w, b, list(kw["stride"]), list(kw["padding"]), list(kw["dilation"]), True, list(dense.shape[2:]))
    opcheck(ops.spike_conv2d.default, args)
    opcheck(ops.spike_conv2d.default, (x, w, None, *args[3:]))


@needs_kernels
def test_bad_input_names_the_argument():
    x, w, b, kw, dense = _case(13, GEOMETRIES[0], False, 0.2)
    with pytest.raises(ValueError, match="weight must be packed"):
        TF.spike_conv2d(x, w.permute(3, 0, 1, 2).contiguous(), b, **kw)  # conv2d's layout, not packed
    with pytest.raises(TypeError, match="weight must have the dtype of input"):
        TF.spike_conv2d(x, w.float(), b, **kw)
    with pytest.raises(ValueError, match="bias must have shape"):
        TF.spike_conv2d(x, w, b[:-1], **kw)
    with pytest.raises(ValueError, match="output_size"):
        TF.spike_conv2d(x, w, b, output_size=(4, 4), **kw)
    with pytest.raises(ValueError, match="stride"):
        TF.spike_conv2d(x, w, b, stride=0)
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        TF.spike_conv2d(x.to(torch.int32), w, b, **kw)
    with pytest.raises(ValueError, match="spike_conv_weight: weight must be 4-D"):
        TF.spike_conv_weight(w[0])
    with pytest.raises(ValueError, match="dilation must be >= 1 \\(and fit int32\\)"):
        TF.spike_conv2d(x, w, b, dilation=1 << 40)
    if torch.cuda.is_available():  # (the degenerate cases below follow)
        with pytest.raises(NotImplementedError, match="CPU kernel"):
            TF.spike_conv2d(x.cuda(), w.cuda(), b.cuda(), backend="cuda", **kw)
        # automatic: the dense convolution
        torch.testing.assert_close(TF.spike_conv2d(x.cuda(), w.cuda(), b.cuda(), **kw).cpu(), dense, **TOL[F64])


@needs_kernels
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_degenerate_weights_and_strides_are_refused(backend):
    """What the dense convolution refuses is refused on every path, with its wording where it has
    one: an empty kernel, an input without channels (which the dense convolution does not
    refuse but answers with a shape of no meaning), a stride that is not an int."""
    x, w, b, kw, dense = _case(14, GEOMETRIES[0], False, 0.2)
    with pytest.raises(ValueError, match="kernel size should be greater than zero"):
        TF.spike_conv2d(x, w[:, :0].contiguous(), b, output_size=(x.shape[2] + 1, x.shape[3]), backend=backend)
    with pytest.raises(ValueError, match="input must have at least one channel"):
        TF.spike_conv2d(x[:, :0], w[:0].contiguous(), b, backend=backend)
    with pytest.raises(ValueError, match="stride must be an int >= 1 or a pair of them, got 1.5"):
        TF.spike_conv2d(x, w, b, stride=1.5, backend=backend)
    with pytest.raises(ValueError, match="stride must be an int >= 1 or a pair of them, got True"):
        TF.spike_conv2d(x, w, b, stride=True, backend=backend)


# --- the feedback SNNs with event-driven products ---------------------------------------------

def _nets(builder, products, **kw):
    torch.manual_seed(0)
    net = builder(products=products, **kw).double()
    return net


@needs_kernels
@pytest.mark.parametrize("builder,shape", [(spide.convnet_f, (1, 12, 12)), (spide.f400, (1, 6, 6)),
                                           (spide.alexnet_f, (3, 8, 8)), (spide.lenet5_f, (1, 8, 8))])
def test_feedback_snn_events_equal_dense(builder, shape):
    """The same spikes (float64 sums in another order flip no threshold here), so the same rates
    and SPIDE gradients, events or dense, with dropout (its masks scale the connections' currents)."""
    kw = dict(in_channels=shape[0], size=shape[1], T=12, T_b=20, loss_scale=10.0)
    if builder is spide.convnet_f:
        kw["channels"] = 8
    if builder is spide.f400:
        kw["hidden"] = 30
    x = torch.rand((4, *shape), generator=generator(21), dtype=F64)
    y = torch.randint(0, 10, (4,), generator=generator(22))
    grads, rates = {}, {}
    for products in ("dense", "events", "auto"):
        net = _nets(builder, products, dropout=0.2, **kw)
        net.train()
        torch.manual_seed(5)  # the same dropout masks
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        grads[products] = [p.grad.clone() for p in net.parameters()]
        rates[products] = (net.last_stats["forward_rate"], net.last_stats["backward_rate"])
        assert "products='" + products + "'" in repr(net)
    for products in ("events", "auto"):  # (LeNet: pooling stays dense, a Linear reads a conv map)
        # the mean rates are float sums over another memory layout: equal to rounding
        assert rates[products] == pytest.approx(rates["dense"], rel=1e-12)
        for g, gd in zip(grads[products], grads["dense"]):
            torch.testing.assert_close(g, gd, rtol=1e-10, atol=1e-12)
    assert rates["dense"][0] > 0 and rates["dense"][1] > 0  # something fired, forward and backward


@needs_kernels
def test_auto_uses_events_only_for_sparse_spikes(monkeypatch):
    calls = []
    real = TF.spike_conv2d

    def counting(s, *a, **k):
        calls.append(float((s != 0).double().mean()))
        return real(s, *a, **k)
    monkeypatch.setattr(TF, "spike_conv2d", counting)
    net = _nets(spide.convnet_f, "auto", in_channels=1, size=12, channels=8, T=10, T_b=10)
    x = torch.rand(4, 1, 12, 12, generator=generator(23), dtype=F64)
    F.cross_entropy(net(x), torch.zeros(4, dtype=torch.long)).backward()
    assert calls and max(calls) <= 2 * spide.network.EVENT_DENSITY  # (density estimated from a sample)
    calls.clear()
    dense = _nets(spide.convnet_f, "dense", in_channels=1, size=12, channels=8, T=10, T_b=10)
    F.cross_entropy(dense(x), torch.zeros(4, dtype=torch.long)).backward()
    assert not calls
    ref = _nets(spide.convnet_f, "auto", in_channels=1, size=12, channels=8, T=10, T_b=10, backend="reference")
    F.cross_entropy(ref(x), torch.zeros(4, dtype=torch.long)).backward()
    assert not calls  # the reference backend is dense, ATen only


def test_products_argument_is_checked():
    with pytest.raises(ValueError, match="products must be 'auto', 'events' or 'dense'"):
        spide.f400(products="sparse")
    if torch.cuda.is_available():
        net = spide.f400(products="events").cuda()
        with pytest.raises(ValueError, match="CPU only"):
            net(torch.rand(2, 1, 28, 28, device="cuda"))


@needs_kernels
@pytest.mark.usefixtures("kernel_profile")
def test_steps_accept_channels_last_state():
    """The neuron steps run over memory in u's layout: channels-last state, any input layout."""
    gen = generator(24)
    shape = (2, 3, 4, 5)
    r = lambda: torch.rand(shape, generator=gen, dtype=F64) * 2 - 0.5  # noqa: E731
    u, rate, cur, gate = r(), r(), r(), r()
    cl = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    u2, rate2 = cl(u), cl(rate)
    s1 = TF.spide_forward_step(u, rate, cur, None, gate)
    s2 = TF.spide_forward_step(u2, rate2, cur, None, cl(gate))
    assert s2.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(s1, s2) and torch.equal(u, u2) and torch.equal(rate, rate2)
    opcheck(ops.spide_backward_step.default, (cl(r()), cl(r()), r(), cl(r()), None, r(), 0.5, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="rate .* must have the memory layout of u"):
        TF.spide_forward_step(cl(r()), r(), cur)
