"""Few-spikes neurons (ttfs_ext.fs): the fused op against the reference loop (values, spikes,
the surrogate gradients of y and of the regulariser), the closed-form FS-ReLU, the shipped
tables, registration (opcheck, compile), bad input, fitting, conversion and the CLI."""
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.library import opcheck

import ttfs_ext
from ttfs_ext import fs
from ttfs_ext.fs import reference as ref

from _utils import DEVICES, generator, input_checks

ROOT = __import__('pathlib').Path(__file__).resolve().parents[1]

ops = torch.ops.ttfs_ext
needs_kernels = pytest.mark.skipif("cpu" not in ttfs_ext.kernel_devices(), reason="no compiled CPU kernels")


def _params(K, gen, dtype=torch.float64):
    """A random table with spikes, resets of both signs, and thresholds spread over the inputs."""
    h = torch.randn(K, generator=gen, dtype=torch.float64)
    d = torch.randn(K, generator=gen, dtype=torch.float64)
    T = torch.randn(K, generator=gen, dtype=torch.float64) * 1.5
    return [p.to(dtype) for p in (h, d, T)]


def _x(shape, gen, dtype=torch.float64):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 2.0).to(dtype)


# --- forward ---------------------------------------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("K", [1, 5, 10, 16, 32])
@pytest.mark.usefixtures("kernel_profile")
def test_forward_matches_reference_bitwise(device, dtype, K):
    gen = generator(100 + K)
    h, d, T = [p.to(device) for p in _params(K, gen, dtype)]
    for shape in [(0,), (7,), (3, 5, 41), (20000,)]:
        x = _x(shape, gen, dtype).to(device)
        for mode in (0, 1, 2):
            y, s, reg = ops.fs_activation(x, h, d, T, mode, mode == 1)
            ry, rs, rreg = ref.fs_activation_full(x, h, d, T, mode, mode == 1)
            torch.testing.assert_close(y, ry, rtol=0, atol=0)  # same steps, same order: bitwise
            assert s.dtype == rs.dtype
            if mode:
                assert torch.equal(s, rs)
            if mode == 1 and x.numel():  # the regulariser: a sum over the neurons (another order)
                torch.testing.assert_close(reg, rreg, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-7)


@needs_kernels
@pytest.mark.usefixtures("kernel_profile")
def test_forward_non_contiguous_and_nan():
    gen = generator(3)
    h, d, T = _params(8, gen)
    x = _x((6, 9), gen).t()
    torch.testing.assert_close(fs.fs_activation(x, h, d, T), ref.fs_activation(x, h, d, T), rtol=0, atol=0)
    with input_checks(False):
        x = x.contiguous()
        x[1, 2] = float("nan")
        y = fs.fs_activation(x, h, d, T)
        assert torch.isnan(y[1, 2]) and torch.isnan(ref.fs_activation(x, h, d, T)[1, 2])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.usefixtures("kernel_profile")
def test_relu_closed_form_quantiser(device, dtype):
    """FS-ReLU (K=10, alpha=25) is alpha 2^-K floor(x 2^K / alpha), saturating at alpha (1 - 2^-K),
    0 for x <= 0: within one LSB on a dense grid, and CPU kernel = reference bitwise."""
    K, alpha = 10, 25.0
    act = fs.FSActivation.relu(K, alpha).to(device)
    x = torch.linspace(-5.0, 40.0, 400_001, dtype=dtype, device=device)
    y = act(x)
    lsb = alpha * 2.0 ** -K
    q = (lsb * torch.floor(x.double() * 2 ** K / alpha)).clamp(0.0, alpha * (1 - 2.0 ** -K))
    assert float((y.double() - q).abs().max()) <= lsb * (1 + 1e-6)
    assert bool((y[x <= 0] == 0).all()) and float(y.max()) == pytest.approx(alpha * (1 - 2.0 ** -K))
    torch.testing.assert_close(y, ref.fs_activation(x, *[p.to(dtype) for p in (act.h, act.d, act.T)]),
                               rtol=0, atol=0)
    _, spikes = fs.fs_activation(x, act.h, act.d, act.T, return_spikes=True)
    _, masks = fs.fs_activation(x, act.h, act.d, act.T, return_spikes="mask")
    bits = torch.stack([(masks >> t) & 1 for t in range(K)]).sum(0)
    assert torch.equal(bits.to(torch.uint8), spikes)


# --- backward --------------------------------------------------------------------------------

def _loss_grads(fn, x, params, g, greg):
    leaves = [t.detach().clone().requires_grad_() for t in (x, *params)]
    y, _, reg = fn(leaves[0], *leaves[1:], 0, greg is not None)
    loss = (g * y).sum() + ((greg * reg).sum() if greg is not None else 0)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)  # K = 1: h is unused
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]


@needs_kernels
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("K", [1, 4, 12, 16, 32])
@pytest.mark.parametrize("with_reg", [False, True])
@pytest.mark.usefixtures("kernel_profile")
def test_backward_matches_reference_autograd(device, K, with_reg):
    """The kernels' surrogate gradients (x, h, d, T; y and the regulariser) against autograd of
    the float64 reference loop."""
    gen = generator(200 + K + 50 * with_reg)
    params = [p.to(device) for p in _params(K, gen)]
    x = _x((3, 20011), gen).to(device)  # several partial rows
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device)
    greg = torch.randn(K, generator=gen, dtype=torch.float64).to(device) if with_reg else None
    got = _loss_grads(ops.fs_activation, x, params, g, greg)
    want = _loss_grads(ref.fs_activation_full, x, params, g, greg)
    # float64, not TOL's 1e-12: the gradients of h, d and T are sums over 60,033 neurons, which
    # the kernels add in another order than autograd of the reference loop
    for name, a, b in zip("xhdT", got, want):
        scale = max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * scale, msg=lambda m: f"grad {name}: {m}")


@needs_kernels
@pytest.mark.usefixtures("kernel_profile")
def test_backward_float32_and_masks():
    gen = generator(7)
    params = _params(10, gen)
    x = _x((5000,), gen)
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    want = _loss_grads(ref.fs_activation_full, x, params, g, None)
    got = _loss_grads(ops.fs_activation, x.float(), [p.float() for p in params], g.float(), None)
    for a, b in zip(got, want):
        assert float((a.double() - b).abs().max()) <= 1e-3 * max(1.0, float(b.abs().max()))
    for mask in ([True, False, False, False], [False, True, True, True], [False, False, True, False]):
        out = ops._fs_activation_backward(g, None, x, *params, mask)
        for o, m, w in zip(out, mask, want):
            assert (o is not None) == m  # what was not asked for is not computed
            if m:
                torch.testing.assert_close(o, w, rtol=1e-10, atol=1e-10)


@needs_kernels
@pytest.mark.usefixtures("kernel_profile")
def test_double_backward_raises():
    gen = generator(8)
    h, d, T = [p.requires_grad_() for p in _params(4, gen)]
    x = _x((10,), gen).requires_grad_()
    y = fs.fs_activation(x, h, d, T)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()


# --- registration ----------------------------------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.usefixtures("kernel_profile")
def test_opcheck(device):
    gen = generator(9)
    for requires_grad, mode, reg in ((False, 1, True), (True, 0, False), (True, 2, True)):
        h, d, T = [p.to(device).requires_grad_(requires_grad) for p in _params(6, gen)]
        x = _x((4, 33), gen).to(device).requires_grad_(requires_grad)
        opcheck(ops.fs_activation.default, (x, h, d, T, mode, reg))
    x, g = _x((4, 33), gen).to(device), _x((4, 33), gen).to(device)
    h, d, T = [p.to(device) for p in _params(6, gen)]
    for greg in (None, torch.randn(6, generator=gen, dtype=torch.float64).to(device)):
        for mask in ([True, True, True, True], [False, True, False, True]):
            opcheck(ops._fs_activation_backward.default, (g, greg, x, h, d, T, mask))


@needs_kernels
@pytest.mark.usefixtures("kernel_profile")
def test_compile_fullgraph_parity():
    gen = generator(10)
    act = fs.FSActivation.relu()
    lin = nn.Linear(12, 12).double()

    def f(x):
        return act(lin(x) * 10).sum(dim=1)

    x = _x((8, 12), gen)
    eager = f(x)
    eager_grads = torch.autograd.grad(eager.sum(), list(lin.parameters()))
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    grads = torch.autograd.grad(out.sum(), list(lin.parameters()))
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@needs_kernels
def test_compile_converted_network_counts_spikes():
    """A converted network under torch.compile(fullgraph=True): the same outputs and the same
    spike counts as in eager mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.SiLU(), nn.Linear(16, 4)).double().eval()
    net = fs.convert(model)
    x = _x((8, 12), generator(22)) * 1.5
    with torch.no_grad():
        eager = net(x)
    counted = net.stats()
    net.reset_stats()
    with torch.no_grad():
        out = torch.compile(net, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    assert net.stats()["layers"] == counted["layers"] and counted["spikes_per_neuron"] > 0


# --- bad input -------------------------------------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.usefixtures("kernel_profile")
def test_bad_input_raises_naming_the_argument(backend):
    gen = generator(11)
    h, d, T = _params(5, gen)
    x = _x((10,), gen)
    call = lambda *a, **k: fs.fs_activation(*a, backend=backend, **k)  # noqa: E731
    e = torch.empty(0, dtype=torch.float64)
    with pytest.raises(ValueError, match="K .* must be in 1..32"):
        call(x, e, e, e)
    with pytest.raises(ValueError, match="one length K"):
        call(x, h, d[:4], T)
    with pytest.raises(ValueError, match="K .* must be in 1..32"):
        call(x, *[torch.zeros(33, dtype=torch.float64)] * 3)
    with pytest.raises(ValueError, match="h must be 1-D"):
        call(x, h[None], d, T)
    bad = x.clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        call(bad, h, d, T)
    bad_T = T.clone()
    bad_T[0] = float("inf")
    with pytest.raises(ValueError, match="T contains NaN or inf"):
        call(x, h, d, bad_T)
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        call(torch.arange(4), h, d, T)
    with pytest.raises(ValueError, match="return_spikes"):
        call(x, h, d, T, return_spikes="bits")
    with pytest.raises(ValueError, match="spike_mode"):
        ops.fs_activation(x, h, d, T, 3, False)
    with pytest.raises(ValueError, match="grad_y has shape"):
        ops._fs_activation_backward(x[:3], None, x, h, d, T, [True] * 4)
    with pytest.raises(ValueError, match="grad_reg has shape"):
        ops._fs_activation_backward(x, h[:2], x, h, d, T, [True] * 4)
    with pytest.raises(ValueError, match="one length K"):
        fs.FSActivation(h, d, T[:2])


# --- the shipped tables ----------------------------------------------------------------------

@pytest.mark.parametrize("fit", ["normal", "interval"])
@pytest.mark.parametrize("name,f,rng,bound", [("sigmoid", torch.sigmoid, (-10.0, 10.0), 2e-4),
                                              ("silu", F.silu, (-8.0, 12.0), 4e-3)])
def test_shipped_tables(name, f, rng, bound, fit):
    act = getattr(fs.FSActivation, name)(fit=fit)
    assert act.K == {"sigmoid": 12, "silu": 16}[name]
    x = torch.linspace(*rng, 100_001, dtype=torch.float64)
    mse = float((act(x) - f(x)).square().mean())
    assert mse <= bound, (name, mse)
    g = torch.randn(200_000, generator=generator(12), dtype=torch.float64) * 1.5
    y, spikes = fs.fs_activation(g, act.h, act.d, act.T, return_spikes=True)
    per_neuron = float(spikes.double().mean())
    mse_normal = float((y - f(g)).square().mean())
    print(f"{name} ({fit}): MSE {mse:.3e} on {rng}, {mse_normal:.3e} on N(0, 1.5^2), {per_neuron:.3f} spikes/neuron")
    # the README's figures come from fs_tables.json: this sample agrees with them (a count has a
    # standard deviation under K, so the mean of 200,000 is within 0.03 of it)
    data = json.loads((ROOT / "benchmarks" / "results" / "fs_tables.json").read_text())
    recorded = data["functions"][name if fit == "interval" else f"{name}_normal"]
    assert recorded["mse"] == pytest.approx(mse, rel=1e-9)  # the same 100,001 points
    assert mse_normal == pytest.approx(recorded["mse_normal_0_1.5"], rel=0.05)  # 200,000 of its 1,000,000 draws
    assert abs(per_neuron - recorded["spikes_per_neuron_normal_0_1.5"]) < 0.03, (per_neuron, recorded)
    torch.testing.assert_close(spikes, ref.fs_activation_full(g, act.h, act.d, act.T, 1, False)[1], rtol=0, atol=0)
    if fit == "normal":  # the default: better where inputs live than the FS paper's table and the interval fit
        theirs = data["authors"]["tables"][name]["mse_normal_0_1.5"]
        assert mse_normal < 0.8 * theirs, (mse_normal, theirs)
        assert recorded["mse_normal_0_1.5"] < data["functions"][name]["mse_normal_0_1.5"]
        assert recorded["mse"] < data["authors"]["tables"][name]["mse"]  # and on the range too


# --- fitting ---------------------------------------------------------------------------------

def test_fit_coefficients_quick():
    r = fs.fit_coefficients(torch.sigmoid, 6, (-6.0, 6.0), n_points=2000, restarts=2, max_steps=150, patience=50)
    assert r.mse < 0.01 and r.restarts == 2 and r.h.shape == (6,)
    # the best restart wins and the polish never makes it worse
    assert r.loss <= min(loss for _, _, loss in r.history)
    # the reported errors are those of the returned table
    x = torch.linspace(-6.0, 6.0, 2000, dtype=torch.float64)
    err = fs.fs_activation(x, r.h, r.d, r.T) - torch.sigmoid(x)
    assert r.mse == pytest.approx(float(err.square().mean()), rel=1e-12)
    assert r.max_abs_error == pytest.approx(float(err.abs().max()), rel=1e-12)
    with pytest.raises(ValueError, match="K must be"):
        fs.fit_coefficients(torch.sigmoid, 0, (-1.0, 1.0))
    with pytest.raises(ValueError, match="quantize_bits"):
        fs.fit_coefficients(torch.sigmoid, 4, (-1.0, 1.0), quantize_bits=1)


def test_fit_patience():
    """A restart runs max_steps steps, longer while it improves (at most 4 max_steps)."""
    kw = dict(n_points=500, restarts=3, max_steps=40, polish_steps=0)
    none = fs.fit_coefficients(torch.sigmoid, 4, (-6.0, 6.0), patience=0, **kw)
    assert [steps for _, steps, _ in none.history] == [40, 40, 40]
    long = fs.fit_coefficients(torch.sigmoid, 4, (-6.0, 6.0), patience=1000, **kw)
    steps = [s for _, s, _ in long.history]
    assert all(40 <= s <= 160 for s in steps) and max(steps) > 40, steps
    assert long.steps == sum(steps)


def test_fit_importance_profile():
    """An importance profile trades error outside it for error inside it: weighted on [1.5, 2.5]
    (almost nothing elsewhere), the fit is far better there (0.04-0.11 of the unweighted fit's
    MSE over seeds 0, 3, 7 when written; 0.3 leaves room for another CPU's rounding)."""
    x = torch.linspace(-6.0, 6.0, 1000, dtype=torch.float64)
    inside = (x - 2.0).abs() <= 0.5
    kw = dict(n_points=1000, restarts=2, max_steps=300, patience=100, polish_steps=300, seed=3)
    plain = fs.fit_coefficients(torch.sigmoid, 4, (-6.0, 6.0), **kw)
    weighted = fs.fit_coefficients(torch.sigmoid, 4, (-6.0, 6.0),
                                   importance=lambda t: 1e-3 + ((t - 2.0).abs() <= 0.5).double(), **kw)

    def mse_inside(r):
        return float((fs.fs_activation(x, r.h, r.d, r.T) - torch.sigmoid(x))[inside].square().mean())
    assert mse_inside(weighted) < 0.3 * mse_inside(plain), (mse_inside(weighted), mse_inside(plain))


def test_quantize_is_tensorflows_fake_quant():
    """4 bits on [-8, 8]: 16 levels 16/15 apart, nudged so that 0 is one (TF fake_quant:
    zero point round(7.5) = 8, so the range is [-128/15, 112/15]); clamped; ties round up."""
    step = 16.0 / 15.0
    p = torch.tensor([0.0, -100.0, 100.0, 0.5 * step, -0.5 * step, 0.49 * step, 3.2], dtype=torch.float64)
    want = torch.tensor([0.0, -8 * step, 7 * step, step, 0.0, 0.0, 3 * step], dtype=torch.float64)
    torch.testing.assert_close(fs.quantize(p, 4), want, rtol=0, atol=1e-12)
    levels = fs.quantize(torch.linspace(-9, 9, 10_001, dtype=torch.float64), 4).unique()
    assert levels.numel() == 16 and bool((levels == 0).any())
    q = fs.fit_coefficients(torch.sigmoid, 4, (-6.0, 6.0), n_points=1000, restarts=1, max_steps=50,
                            quantize_bits=4, importance=lambda x: 1 + torch.exp(-x.square()))
    # (the fit quantises its float32 parameters: the levels to float32 rounding)
    assert all(bool(torch.isclose(v, levels, rtol=0, atol=1e-6).any()) for v in torch.cat([q.h, q.d, q.T]))
    with pytest.raises(ValueError, match="bits"):
        fs.quantize(p, 1)


def test_trainable_fine_tuning():
    """FSActivation(trainable=True): h, d, T are parameters with the surrogate gradient; a few
    Adam steps lower a regression loss through the activation."""
    gen = generator(21)
    act = fs.FSActivation(*fs.modules.relu_table(6, 4.0), trainable=True)
    assert {n for n, _ in act.named_parameters()} == {"h", "d", "T"}
    x = torch.rand(4000, generator=gen, dtype=torch.float64) * 4.0
    target = torch.sqrt(x)  # not what the ReLU table computes
    opt = torch.optim.Adam(act.parameters(), lr=0.02)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (act(x) - target).square().mean()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in act.parameters())
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


# --- conversion ------------------------------------------------------------------------------

class _Net(nn.Module):
    def __init__(self, act: str):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8 * 2 * 2, 10)
        self.act = act
        self.m = nn.ReLU() if act == "relu" else nn.SiLU()

    def forward(self, x):
        x = self.m(self.c1(x))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.c2(x)) if self.act == "relu" else F.silu(self.c2(x))
        return self.fc(torch.flatten(x, 1))


def _quantiser_twin(model: nn.Module, K=10, alpha=25.0) -> nn.Module:
    """The ANN with each ReLU replaced by the closed-form quantiser (ties aside, what FS-ReLU is)."""
    class Q(nn.Module):
        def forward(self, x):
            return (alpha * 2.0 ** -K * torch.floor(x * 2 ** K / alpha)).clamp(0, alpha * (1 - 2.0 ** -K))
    twin = torch.fx.symbolic_trace(model)
    for node in list(twin.graph.nodes):
        if (node.op == "call_module" and isinstance(twin.get_submodule(node.target), nn.ReLU)) or \
                node.target in (F.relu, torch.relu):
            twin.add_submodule(f"q_{node.name}", Q())
            with twin.graph.inserting_after(node):
                new = twin.graph.call_module(f"q_{node.name}", (node.args[0],))
            node.replace_all_uses_with(new)
            twin.graph.erase_node(node)
    twin.recompile()
    return twin


def _table_error(act: str, lo: float, hi: float) -> float:
    """The largest |FS(x) - f(x)| of the default table on [lo, hi] (a dense grid plus one LSB of
    margin for the points between: the tables are piecewise constant, f is continuous)."""
    table = fs.FSActivation.relu() if act == "relu" else fs.FSActivation.silu()
    f = torch.relu if act == "relu" else F.silu
    x = torch.linspace(lo, hi, 400_001, dtype=torch.float64)
    slope = 1.0 if act == "relu" else 1.1
    return float((table(x) - f(x)).abs().max()) + slope * (hi - lo) / 400_000


def _error_bound(model: "_Net", x: torch.Tensor, act: str) -> float:
    """A bound on |FS network - ANN| for _Net, from the activations' input ranges."""
    with torch.no_grad():
        a1 = model.c1(x)
        h1 = F.max_pool2d(model.m(a1), 2)
        a2 = model.c2(h1)
        slope = 1.0 if act == "relu" else 1.1
        e1 = torch.full_like(h1, _table_error(act, float(a1.min()), float(a1.max())))
        e2 = slope * F.conv2d(e1, model.c2.weight.abs()) + _table_error(act, float(a2.min()), float(a2.max()))
        return float((torch.flatten(e2, 1) @ model.fc.weight.abs().T).max())


@needs_kernels
@pytest.mark.parametrize("act", ["relu", "silu"])
def test_convert_random_cnn(act):
    torch.manual_seed(13)
    model = _Net(act).double().eval()
    x = torch.rand(16, 1, 8, 8, generator=generator(13), dtype=torch.float64) * 4
    net = fs.convert(model)
    assert net.stats()["fs_layers"] == 2 and not any(isinstance(m, (nn.ReLU, nn.SiLU)) for m in net.modules())
    with torch.no_grad():
        out = net(x)
        ann = model(x)
    if act == "relu":
        torch.testing.assert_close(out, _quantiser_twin(model)(x), rtol=1e-9, atol=1e-9)
    # within the quantiser's (the table's) error, carried through the layers: each activation
    # adds at most its table's max error on its input range, and the layers after it scale an
    # error by at most their |weights| (max pooling does not grow it; SiLU's slope is < 1.1)
    diff = float((out - ann).abs().max())
    assert diff <= _error_bound(model, x, act), diff
    assert diff < 1.0  # the worst case above adds every error up with one sign; they mostly cancel
    stats = net.stats()
    # spike counts equal those of the reference loop
    net.reset_stats()
    ttfs_ext.set_backend("reference")
    try:
        with torch.no_grad():
            torch.testing.assert_close(net(x), out, rtol=0, atol=0)
    finally:
        ttfs_ext.set_backend(None)
    assert net.stats()["spikes_per_neuron"] == stats["spikes_per_neuron"]
    K = 10 if act == "relu" else 16
    assert stats["latency_steps"] == 2 * K and stats["throughput_steps_per_image"] == K
    assert stats["fs_neurons_per_image"] == 6 * 8 * 8 + 8 * 2 * 2
    assert stats["images"] == 16 and 0 < stats["spikes_per_neuron"] < K
    # keeping an activation: activations={'silu': None}
    kept = fs.convert(model, activations={"relu": None, "silu": None})
    assert kept.stats()["fs_layers"] == 0
    with torch.no_grad():
        torch.testing.assert_close(kept(x), ann, rtol=0, atol=0)


class _Forms(nn.Module):
    """Every form of the activations, in-place ones whose input is read again, and two branches."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.sig, self.inplace = nn.Sigmoid(), nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.l1(x)
        b = self.inplace(a)              # overwrites a, which is read again below
        c = a + b                        # 2 relu(l1(x)) in the ANN
        left = torch.sigmoid(self.l2(c)) + self.sig(self.l2(c)) + self.l2(c).sigmoid()
        right = F.relu(input=self.l3(c)) + torch.relu_(self.l3(c)) + self.l3(c).relu_() + F.relu(self.l3(c), True)
        return left.sigmoid_() + right   # two branches: relu | sigmoid+sigmoid


@needs_kernels
def test_convert_every_form():
    torch.manual_seed(5)
    model = _Forms().double().eval()
    x = torch.randn(32, 5, generator=generator(5), dtype=torch.float64) * 3
    net = fs.convert(model)
    kinds = [m.name for _, m in net.fs_layers()]
    assert kinds.count("relu(K=10, alpha=25)") == 5 and kinds.count("sigmoid(K=12)") == 4, kinds
    assert not any(isinstance(m, (nn.ReLU, nn.Sigmoid)) for m in net.modules())
    # the FS network is its ANN with each activation replaced by its table, in-place writes included
    relu_fs, sig_fs = fs.FSActivation.relu(), fs.FSActivation.sigmoid()
    with torch.no_grad():
        a = model.l1(x)
        c = 2 * relu_fs(a)
        l2 = model.l2(c)
        left = 3 * sig_fs(l2)
        l3 = model.l3(c)
        want = sig_fs(left) + 4 * relu_fs(l3)
        torch.testing.assert_close(net(x), want, rtol=0, atol=1e-12)
    # latency: the longest path (relu, sigmoid, sigmoid), not the sum over all nine layers
    stats = net.stats()
    assert stats["latency_steps"] == 10 + 12 + 12 and stats["throughput_steps_per_image"] == 12
    assert stats["rate_coding_latency_steps"] == 1023 + 4095 + 4095


@needs_kernels
@pytest.mark.parametrize("act", ["relu", "silu"])
def test_convert_trained_cnn_agrees(act):
    """A briefly trained CNN (10 epochs on 600 digits): the FS network's accuracy within 2 points
    of the ANN's, 97 % of the predictions agree, every FS layer is the table's function of its
    own input, and the spike counts are the reference loop's."""
    from ttfs_ext.cli import fs as fs_cli
    from ttfs_ext import data
    torch.manual_seed(0)
    ds = data.load_digits()
    ds = data.subset(ds, 600, None)
    model = fs_cli.build_model(act, ds.input_shape, 10)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for epoch in range(10):
        for idx in torch.randperm(ds.n_train, generator=generator(epoch)).split(100):
            opt.zero_grad()
            F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx]).backward()
            opt.step()
    model.eval()
    net = fs.convert(model)
    with torch.no_grad():
        a, b = model(ds.x_test), net(ds.x_test)
    ann_acc, fs_acc = (float((o.argmax(1) == ds.y_test).double().mean()) for o in (a, b))
    assert ann_acc >= 0.5, ann_acc  # it learned (chance is 0.1); the trajectory is the CPU's own
    # layer by layer: each FSActivation's output is fs_activation of the input it received
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o)))
             for m in net.modules() if isinstance(m, fs.FSActivation)]
    with torch.no_grad():
        net(ds.x_test)
    for h in hooks:
        h.remove()
    assert len(seen) == net.stats()["fs_layers"] >= 2
    # The logits are as close as the tables' errors allow, on this machine's trajectory: a bound
    # derived from each FS layer's error on the inputs it saw, carried through the layers after
    # it by their infinity-norm gains (not a number tuned on one CPU's training run).
    f = torch.relu if act == "relu" else torch.nn.functional.silu
    bound = _logit_error_bound(model, [float((o - f(i)).abs().max()) for _, i, o in seen],
                               lipschitz=1.0 if act == "relu" else 1.1)
    assert float((a - b).abs().max()) <= bound
    # A prediction may change only where the ANN's two best logits lie within twice that bound,
    # so the accuracies differ by at most the share of such changes.
    top2 = a.topk(2, 1).values
    changed = a.argmax(1) != b.argmax(1)
    assert not bool((changed & (top2[:, 0] - top2[:, 1] > 2 * bound)).any())
    assert abs(fs_acc - ann_acc) <= float(changed.double().mean()) + 1e-12
    for m, inp, out in seen:
        K = 10 if act == "relu" else 16
        assert m.h.numel() == K
        torch.testing.assert_close(out, fs.fs_activation(inp, m.h, m.d, m.T), rtol=0, atol=0)
        assert float((out - f(inp)).abs().mean()) < (0.03 if act == "relu" else 0.1)
    # spike counts: the kernel's equal the reference loop's
    net.reset_stats()
    with torch.no_grad():
        out = net(ds.x_test[:64])
    stats = net.stats()
    net.reset_stats()
    ttfs_ext.set_backend("reference")
    try:
        with torch.no_grad():
            torch.testing.assert_close(net(ds.x_test[:64]), out, rtol=0, atol=0)
    finally:
        ttfs_ext.set_backend(None)
    assert net.stats()["spikes_per_neuron"] == stats["spikes_per_neuron"] > 0


def _logit_error_bound(model: torch.nn.Module, layer_errors: list[float], lipschitz: float) -> float:
    """An upper bound of max |ANN logits - FS logits| for a sequential CNN whose activations the FS
    network replaces: the deviation e (infinity norm) grows by each linear map's gain (max row
    sum of |W|; for a convolution over its in_channels x kernel), each eval BatchNorm's max
    |gamma / sigma|, each activation's Lipschitz constant, plus each FS layer's own error on the
    inputs it saw (layer_errors, in order); pooling and flattening do not increase it. A 1e-4
    relative slack covers the float32 rounding of the layers' sums."""
    e, errors = 0.0, iter(layer_errors)
    for m in model:
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            e *= float(m.weight.detach().abs().flatten(1).sum(1).max())
        elif isinstance(m, torch.nn.BatchNorm2d):
            e *= float((m.weight.detach() / (m.running_var + m.eps).sqrt()).abs().max())
        elif isinstance(m, (torch.nn.ReLU, torch.nn.SiLU)):
            e = lipschitz * e + next(errors)
    return e * (1 + 1e-4) + 1e-4


@pytest.mark.parametrize("act", ["relu", "silu"])
def test_cli_fs_json(act):
    cmd = [sys.executable, "-m", "ttfs_ext.cli", "fs", "--json", "--activation", act, "--epochs", "1",
           "--train-size", "300", "--test-size", "100"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("ann_accuracy", "fs_accuracy", "agreement", "spikes_per_neuron", "latency_steps"):
        assert key in result
    K = 10 if act == "relu" else 16
    assert result["latency_steps"] == 3 * K and result["throughput_steps_per_image"] == K
    assert 0 < result["spikes_per_neuron"] < K and 0 <= result["agreement"] <= 1


def test_cli_fs_data_dir_is_the_only_place_searched(tmp_path):
    cmd = [sys.executable, "-m", "ttfs_ext.cli", "fs", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert str(tmp_path) in out.stderr, out.stderr


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_and_autocast(dtype):
    """float16/bfloat16 x: the steps in float32 (float32 h, d, T), y in x's dtype; under autocast
    x keeps its dtype and a float64 table is cast."""
    _check_low_precision_x("cuda", dtype)


def _check_low_precision_x(device: str, dtype: torch.dtype) -> None:
    """float16/bfloat16 x with a float32 table on `device`: the steps in float32, y in x's dtype;
    under autocast x keeps its dtype and a float64 table is cast; the gradient is x's dtype."""
    gen = generator(14)
    h, d, T = [p.float().to(device) for p in _params(12, gen)]
    x = _x((3, 1000), gen).to(dtype).to(device)
    y = fs.fs_activation(x, h, d, T)
    assert y.dtype == dtype
    torch.testing.assert_close(y, ref.fs_activation(x, h, d, T), rtol=0, atol=0)
    torch.testing.assert_close(y, fs.fs_activation(x.float(), h, d, T).to(dtype), rtol=0, atol=0)
    with torch.autocast(device, dtype=dtype):
        y2, _, _ = ops.fs_activation(x, h.double(), d.double(), T.double(), 0, False)
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    xg = x.detach().requires_grad_()
    fs.fs_activation(xg, h, d, T).float().sum().backward()
    assert xg.grad.dtype == dtype and torch.isfinite(xg.grad.float()).all()


@needs_kernels
@pytest.mark.usefixtures("kernel_profile")
def test_cpu_autocast_bfloat16():
    """Under CPU autocast a bfloat16 x runs the float32 kernel and returns bfloat16."""
    gen = generator(15)
    h, d, T = [p.float() for p in _params(10, gen)]
    x = _x((2, 500), gen).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _, _ = ops.fs_activation(x, h.double(), d.double(), T.double(), 0, False)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref.fs_activation(x, h, d, T), rtol=0, atol=0)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_x_on_the_cpu(kernel_profile, dtype):
    """float16/bfloat16 x with a float32 table: the CPU kernels' own profile refuses it (naming
    CUDA's dtypes); driven as on CUDA (cuda-like) the CPU does what
    test_cuda_low_precision_and_autocast asks of CUDA: the steps in float32, y in x's dtype,
    under autocast x keeps its dtype and a float64 table is cast."""
    if kernel_profile == "cpu":
        gen = generator(14)
        h, d, T = [p.float() for p in _params(12, gen)]
        with pytest.raises(TypeError, match=r"x must be float32 or float64 \(or float16/bfloat16 on CUDA\)"):
            fs.fs_activation(_x((3, 1000), gen).to(dtype), h, d, T)
        return
    _check_low_precision_x("cpu", dtype)


class _InPlaceStatement(torch.nn.Module):
    """y = l(x), then an in-place activation of y whose result is not assigned, then y returned."""

    def __init__(self, form: str):
        super().__init__()
        self.l = torch.nn.Linear(6, 5)
        self.form = form
        self.act = torch.nn.ReLU(inplace=True) if form == "module-relu" else torch.nn.SiLU(inplace=True)

    def forward(self, x):
        y = self.l(x)
        if self.form == "method":
            y.relu_()
        elif self.form == "F.relu_":
            F.relu_(y)
        elif self.form == "torch.relu_":
            torch.relu_(y)
        elif self.form == "F.relu-inplace":
            F.relu(y, inplace=True)
        elif self.form == "F.silu-inplace":
            F.silu(y, inplace=True)
        else:
            self.act(y)
        return y * 2 + y  # read twice after the write


@pytest.mark.parametrize("form", ["method", "F.relu_", "torch.relu_", "F.relu-inplace", "module-relu", "F.silu-inplace",
                                  "module-silu"])
def test_convert_keeps_unassigned_in_place_activations(form):
    """fs.convert keeps an in-place activation used as a statement (its result never assigned):
    the FS network computes 3 fs(l(x)), bit for bit, and the ANN's 3 f(l(x)) to the table's error."""
    torch.manual_seed(0)
    model = _InPlaceStatement(form).eval()
    x = torch.randn(64, 6, generator=generator(91))
    net = fs.convert(model)
    assert net.stats()["fs_layers"] == 1
    (_, m), = net.fs_layers()
    with torch.no_grad():
        pre = model.l(x)
        expected = fs.fs_activation(pre, m.h, m.d, m.T)
        torch.testing.assert_close(net(x), expected * 2 + expected, rtol=0, atol=0)
        ann = model(x.clone())
    f = F.silu if "silu" in form else torch.relu
    torch.testing.assert_close(ann, 3 * f(pre))  # the ANN itself, for reference
    assert float((net(x) - ann).abs().max()) <= 3 * float((expected - f(pre)).abs().max()) + 1e-6


def test_fs_activation_module_small_refusals_and_empty_batch():
    """K=True is not a K, a complex table is not a table (its imaginary part would be dropped),
    and an empty batch with spike counting gives an empty output, not an IndexError."""
    with pytest.raises(ValueError, match="K"):
        fs.FSActivation.relu(K=True)
    h = torch.tensor([1.0, 0.5], dtype=torch.complex128)
    with pytest.raises(TypeError, match="complex"):
        fs.FSActivation(h, h.real, h.real)
    m = fs.FSActivation.relu(K=4)
    m.count_spikes = True
    out = m(torch.rand(0, 3, dtype=torch.float64))
    assert out.shape == (0, 3) and int(m.neuron_total) == 0
    m(torch.rand(2, 3, dtype=torch.float64))
    assert m.neurons_per_image == 3
