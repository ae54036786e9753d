"""The closed form of the B1 model against the exact event-driven simulation of its ODE
(ttfs_ext.events, on the first_spike ops): hand-computed neurons, dense and conv layers, a deep
layer, a too-narrow window, whole networks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ttfs_ext
from ttfs_ext import events, reference
from ttfs_ext import functional as TF
from ttfs_ext.nn import TTFSConv2d, TTFSEncoder, TTFSLinear, TTFSMaxPool2d, TTFSReadout, TTFSSequential

# Every test runs with the CPU kernels' own profile and driven as CUDA drives its kernels (the
# simulation runs on the first_spike kernels; the closed form on linear / conv2d).
pytestmark = pytest.mark.usefixtures("kernel_profile")

F64 = torch.float64
# The event-driven simulation against the closed form, in float64: not TOL's kernel-against-
# reference bound, as the simulation finds each crossing on its own path (a sum over the
# inputs that have arrived, a division by the slope), which rounds differently.
ATOL = 1e-9
HAS_KERNEL = "cpu" in ttfs_ext.kernel_devices()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def wide_window(u: torch.Tensor) -> float:
    """A width that holds every activation: no spike before t_min (non-negative margin)."""
    return 1.5 * max(float(u.max()), 0.0) + 0.5


def input_times(g: torch.Generator, shape: tuple[int, ...], t_min_prev: float, t_min: float) -> torch.Tensor:
    """Uniform in [t_min_prev, t_min], with some inputs exactly at either end and some ties."""
    t = t_min_prev + (t_min - t_min_prev) * torch.rand(shape, generator=g, dtype=F64)
    u = torch.rand(shape, generator=g, dtype=F64)
    t = torch.where(u < 0.1, t_min_prev, torch.where(u > 0.85, t_min, t))
    return torch.where((u > 0.4) & (u < 0.5), t_min_prev + 0.5 * (t_min - t_min_prev), t)  # ties


def assert_spike_mix(t: torch.Tensor, t_max: float) -> None:
    frac = float((t < t_max).double().mean())
    assert 0.0 < frac < 1.0, f"the test should exercise both firing and silent neurons, got {frac}"


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0.0)


# --- hand-computed single neurons ----------------------------------------------------------

@pytest.mark.parametrize("t_in, w, b, t_max, expected", [
    # alpha = 0, theta = 0.5: flat until 0.2, then slope 2 -> 0.45 (closed form says 0.3)
    ([0.2, 0.6], [2.0, -1.0], 0.0, 1.5, 0.45),
    # alpha = 1, theta = 3: slope 4 to V(0.5) = 2, then slope 1 -> 1.5 (= closed form)
    ([0.0, 0.5], [3.0, -3.0], 0.0, 3.0, 1.5),
    # theta = 1.8: slope 4 from t = 0 crosses at 0.45, before V turns (closed form says 0.3)
    ([0.0, 0.5], [3.0, -3.0], 0.0, 1.8, 0.45),
    # an input before t_min_prev acts from t_min_prev: slope 2 from 0, crossing at 0.25
    ([-0.5, 0.5], [2.0, -1.0], 0.0, 1.5, 0.25),
    # theta = 0 exactly: V(0) = 0 >= theta, fires at t_min_prev although V is flat there
    ([0.3, 0.7], [0.5, 0.5], 0.8, 1.8, 0.0),
    # theta <= 0: fires as integration starts
    ([0.3, 0.7], [0.5, 0.5], 5.0, 1.8, 0.0),
    # theta = 2.5, V(0.7) = 0.2, then slope 1: crossing at 3.0 >= t_max, no spike
    ([0.3, 0.7], [0.5, 0.5], -1.5, 2.0, 2.0),
])
def test_hand_computed_neurons(t_in, w, b, t_max, expected):
    t = events.first_spike_times(torch.tensor([t_in], dtype=F64), torch.tensor([w], dtype=F64),
                                 torch.tensor([b], dtype=F64), 0.0, 1.0, t_max)
    assert t.shape == (1, 1) and t.dtype == F64
    assert abs(float(t) - expected) < 1e-12


# --- dense layers ------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_in, n_out", [(5, 7), (40, 30)])
def test_dense_matches_closed_form(seed, n_in, n_out):
    g = gen(1000 * seed + n_in + n_out)
    t_in = input_times(g, (16, n_in), 0.0, 1.0)
    w = torch.randn(n_out, n_in, generator=g, dtype=F64) / n_in ** 0.5
    b = 0.3 * torch.randn(n_out, generator=g, dtype=F64)
    t_max = 1.0 + wide_window(reference.readout(t_in, w, b, 1.0))
    t_ev = events.first_spike_times(t_in, w, b, 0.0, 1.0, t_max)
    assert t_ev.shape == (16, n_out)
    assert_close(t_ev, reference.linear(t_in, w, b, 1.0, t_max))
    if HAS_KERNEL:
        assert_close(t_ev, TF.linear(t_in, w, b, 1.0, t_max, backend="cpu"))
    assert_spike_mix(t_ev, t_max)
    assert float(t_ev.min()) >= 1.0  # a wide window: no spike before t_min


def test_dense_without_bias_and_leading_dims():
    g = gen(7)
    t_in = input_times(g, (3, 4, 9), 0.0, 1.0)
    w = torch.randn(6, 9, generator=g, dtype=F64) / 3.0
    t_max = 1.0 + wide_window(reference.readout(t_in, w, None, 1.0))
    t_ev = events.first_spike_times(t_in, w, None, 0.0, 1.0, t_max)
    assert t_ev.shape == (3, 4, 6)
    assert_close(t_ev, reference.linear(t_in, w, None, 1.0, t_max))


def safe_width(u: torch.Tensor, w: torch.Tensor, b, span: float) -> float:
    """A width with no crossing before t_min either. Over the input span D = t_min - t_min_prev,
    V <= D max(alpha + sum W+, 0) while theta = width - b + alpha D; a non-negative margin
    alone is not enough when alpha D is very negative (deep layers, long input windows)."""
    w = w.flatten(1)
    alpha = 1.0 - w.sum(1)
    b_max = torch.zeros_like(alpha) if b is None else b.reshape(len(alpha), -1).amax(1)
    need = b_max - alpha * span + span * (alpha + w.clamp_min(0).sum(1)).clamp_min(0)
    return max(wide_window(u), float(need.max()) + 0.5)


def test_deep_layer():
    """Layer 2 integrates from t_min_prev = 1 (layer 1's t_min) on layer 1's spikes, which
    include silent neurons at t_max_1 = t_min_2."""
    g = gen(11)
    t0 = input_times(g, (16, 12), 0.0, 1.0)
    w1, b1 = torch.randn(20, 12, generator=g, dtype=F64) / 12 ** 0.5, 0.3 * torch.randn(20, generator=g, dtype=F64)
    w2, b2 = torch.randn(15, 20, generator=g, dtype=F64) / 20 ** 0.5, 0.3 * torch.randn(15, generator=g, dtype=F64)
    t_max1 = 1.0 + safe_width(reference.readout(t0, w1, b1, 1.0), w1, b1, 1.0)
    t1 = events.first_spike_times(t0, w1, b1, 0.0, 1.0, t_max1)
    assert_spike_mix(t1, t_max1)
    assert_close(t1, reference.linear(t0, w1, b1, 1.0, t_max1))
    u2 = reference.readout(t1, w2, b2, t_max1)

    # Margin >= 0 but a window just wider than the activations: neurons with very negative
    # alpha cross while layer 1 is still firing, before t_min_2, where the closed form misses.
    t_max2 = t_max1 + wide_window(u2)
    t2 = events.first_spike_times(t1, w2, b2, 1.0, t_max1, t_max2)
    t2_cf = reference.linear(t1, w2, b2, t_max1, t_max2)
    assert float(t2_cf.min()) >= t_max1
    early = t2 < t_max1
    assert bool(early.any())
    assert_close(t2[~early], t2_cf[~early])

    # Wide enough for the true dynamics: the closed form is exact.
    t_max2 = t_max1 + safe_width(u2, w2, b2, t_max1 - 1.0)
    t2 = events.first_spike_times(t1, w2, b2, 1.0, t_max1, t_max2)
    assert_spike_mix(t2, t_max2)
    assert_close(t2, reference.linear(reference.linear(t0, w1, b1, 1.0, t_max1), w2, b2, t_max1, t_max2))
    if HAS_KERNEL:
        assert_close(t2, TF.linear(t1, w2, b2, t_max1, t_max2, backend="cpu"))


@pytest.mark.parametrize("seed", range(3))
def test_narrow_window_differs_before_t_min(seed):
    """With a window narrower than the activations the closed form puts spikes before t_min,
    where inputs are still arriving: the true crossing is elsewhere. Weights are non-negative
    with sum < 1, so V is convex and increasing and lies above the line of its last piece
    (slope 1, through the closed-form time): the true spike is strictly earlier where the
    closed form is in [t_min_prev, t_min) (silent inputs at t_min keep the last piece after
    t_min), at t_min_prev where it is before that, and equal where it is >= t_min."""
    g = gen(500 + seed)
    n_in = 30
    t_in = input_times(g, (32, n_in), 0.0, 1.0)
    t_in[:, :3] = 1.0  # silent inputs
    w = 1.6 / n_in * torch.rand(20, n_in, generator=g, dtype=F64)
    assert float(w.sum(1).max()) < 1.0
    b = 0.5 * torch.randn(20, generator=g, dtype=F64)
    u = reference.readout(t_in, w, b, 1.0)
    t_max = 1.0 + 0.5 * float(u.max())
    t_cf = reference.linear(t_in, w, b, 1.0, t_max)
    t_ev = events.first_spike_times(t_in, w, b, 0.0, 1.0, t_max)
    early = t_cf < 1.0
    inside = early & (t_cf >= 0.0)
    assert int(inside.sum()) > 0 and int((~early).sum()) > 0
    assert bool((t_ev[inside] < t_cf[inside] - 1e-12).all() and (t_ev[inside] >= 0.0).all())
    assert bool((t_ev[early & ~inside] == 0.0).all())
    assert_close(t_ev[~early], t_cf[~early])
    assert_spike_mix(t_ev, t_max)


# --- conv layers -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("stride, padding, groups, per_position", [
    (1, 0, 1, False), (2, 1, 1, False), (2, 1, 1, True), (1, 1, 2, False), (2, 1, 2, True),
])
def test_conv2d_matches_closed_form(seed, stride, padding, groups, per_position):
    g = gen(100 * seed + 10 * stride + 3 * padding + groups + 5 * per_position)
    c_in, c_out, k = 4, 6, 3
    t_in = input_times(g, (4, c_in, 8, 8), 0.0, 1.0)
    w = torch.randn(c_out, c_in // groups, k, k, generator=g, dtype=F64) / (c_in // groups * k * k) ** 0.5
    h_out = (8 + 2 * padding - k) // stride + 1
    b_shape = (c_out, h_out, h_out) if per_position else (c_out,)
    b = 0.3 * torch.randn(b_shape, generator=g, dtype=F64)
    u = F.conv2d(1.0 - t_in, w, None, stride, padding, 1, groups) + (b if per_position else b.view(-1, 1, 1))
    t_max = 1.0 + wide_window(u)
    args = (1.0, t_max, stride, padding, 1, groups)
    t_ev = events.conv2d_first_spike_times(t_in, w, b, 0.0, *args)
    assert t_ev.shape == (4, c_out, h_out, h_out)
    assert_close(t_ev, reference.conv2d(t_in, w, b, *args))
    if HAS_KERNEL:
        assert_close(t_ev, TF.conv2d(t_in, w, b, *args, backend="cpu"))
    assert_spike_mix(t_ev, t_max)


def test_conv2d_dilation_unbatched():
    g = gen(3)
    t_in = input_times(g, (2, 9, 9), 0.0, 1.0)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=F64) / 18 ** 0.5
    t_max = 1.0 + wide_window(F.conv2d(1.0 - t_in, w, padding=2, dilation=2))
    args = (1.0, t_max, 1, 2, 2, 1)
    t_ev = events.conv2d_first_spike_times(t_in, w, None, 0.0, *args)
    assert t_ev.shape == (3, 9, 9)
    assert_close(t_ev, reference.conv2d(t_in.unsqueeze(0), w, None, *args).squeeze(0))


# --- whole networks ----------------------------------------------------------------------

def fit_widths(model: TTFSSequential, x: torch.Tensor) -> None:
    """Safe widths layer by layer. Activations do not depend on the widths, so one pass gives
    max activation = width - margin; the input span of a layer is the width before it."""
    _, rep = model.report(x, warn=False)
    widths, span = [], 1.0
    for r, m in zip(rep.layers, model.spiking_layers()):
        u_max = torch.tensor(r.t_max - r.t_min - r.margin)
        widths.append(safe_width(u_max, m.weight.detach(), None if m.bias is None else m.bias.detach(), span))
        span = widths[-1]
    model.set_widths(widths)
    _, rep = model.report(x, warn=False)
    assert all(r.margin >= 0 and 0 < r.spikes_per_neuron < 1 for r in rep.layers)


@pytest.mark.parametrize("seed", range(3))
def test_simulate_dense_network(seed):
    torch.manual_seed(seed)
    model = TTFSSequential(TTFSEncoder(), nn.Flatten(), TTFSLinear(16, 24), TTFSLinear(24, 12),
                           TTFSReadout(12, 5), widths=[4.0, 4.0]).double()
    x = torch.rand(8, 1, 4, 4, dtype=F64)
    fit_widths(model, x)
    out = events.simulate(model, x).logits
    assert out.shape == (8, 5) and out.dtype == F64
    assert_close(out, model(x).detach())


def test_simulate_conv_network():
    torch.manual_seed(21)
    model = TTFSSequential(TTFSEncoder(), TTFSConv2d(1, 4, 3, padding=1), TTFSMaxPool2d(2),
                           TTFSConv2d(4, 4, 3, stride=2, padding=1, groups=2), nn.Flatten(),
                           TTFSLinear(16, 10), TTFSReadout(10, 3), widths=4.0).double()
    x = torch.rand(4, 1, 8, 8, dtype=F64)
    fit_widths(model, x)
    assert_close(events.simulate(model, x).logits, model(x).detach())


def test_simulate_sees_narrow_windows():
    """Too narrow windows: the simulation departs from the closed form, and each layer
    integrates from the t_min of the spiking layer before it."""
    torch.manual_seed(5)
    model = TTFSSequential(TTFSEncoder(), nn.Flatten(), TTFSLinear(16, 24), TTFSLinear(24, 12),
                           TTFSReadout(12, 5), widths=1.0).double()
    x = torch.rand(8, 1, 4, 4, dtype=F64)
    fit_widths(model, x)
    assert_close(events.simulate(model, x).logits, model(x).detach())
    model.set_widths([0.3, 0.2])
    with torch.no_grad():
        out, rep = model.report(x, warn=False)
    assert rep.layers[0].margin < 0 and rep.layers[1].margin < 0
    result = events.simulate(model, x)
    sim = result.logits
    assert float((sim - out).abs().max()) > 1e-3
    assert result.layers[0].early_spikes > 0 and all(layer.deviating > 0 for layer in result.layers)
    assert not result.exact
    l1, l2, ro = model[2], model[3], model[4]
    assert (l1.t_min, l2.t_min) == (1.0, l1.t_max)
    t1 = events.first_spike_times(1.0 - x.flatten(1), l1.weight, l1.bias, 0.0, l1.t_min, l1.t_max)
    t2 = events.first_spike_times(t1, l2.weight, l2.bias, l1.t_min, l2.t_min, l2.t_max)
    assert_close(sim, reference.readout(t2, ro.weight.detach(), ro.bias.detach(), ro.t_min))
