"""ttfs_ext.convert: exact conversion of ReLU networks (float64) for both mappings, the
folding of batch norms and input ranges, windows, and the errors for what cannot be mapped."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ttfs_ext
from ttfs_ext import nn as tnn
from ttfs_ext.convert import ConversionError

F64 = torch.float64


def convert64(*args, **kwargs):
    """ttfs_ext.convert returning float64 (default: the model's dtype): the exactness checks here
    compare float64 networks."""
    return ttfs_ext.convert(*args, dtype=torch.float64, **kwargs)


def randomise_bn(m: nn.Module, g: torch.Generator) -> nn.Module:
    """Non-trivial statistics and affine parameters, with some negative scales."""
    n = m.num_features
    m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
    m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
    m.weight.data.copy_(3.0 * torch.rand(n, generator=g) - 1.0)
    m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return m


def seeded(build):
    """The builder's layer initialisations drawn from g's seed rather than from the global RNG,
    so a model is the same whichever tests ran before (and the global RNG is left as it was)."""
    @functools.wraps(build)
    def wrapper(g):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(g.initial_seed())
            return build(g)
    return wrapper


@seeded
def mlp(g):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(48, 32), randomise_bn(nn.BatchNorm1d(32), g), nn.ReLU(),      # BN before ReLU
        randomise_bn(nn.BatchNorm1d(32), g), nn.Linear(32, 10))                  # BN after ReLU


@seeded
def vgg_bn_after(g):
    """BN after ReLU (the VGG models of the papers): 'same' and 'valid' padding, stride 2,
    a max-pool under negative BN scales."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), randomise_bn(nn.BatchNorm2d(8), g),
        nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU(), randomise_bn(nn.BatchNorm2d(8), g), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(), randomise_bn(nn.BatchNorm2d(12), g),
        nn.Conv2d(12, 12, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(48, 16), nn.ReLU(), randomise_bn(nn.BatchNorm1d(16), g), nn.Dropout(0.3), nn.Linear(16, 10))


@seeded
def vgg_bn_before(g):
    """BN before ReLU (LeNet-style): kernels 3, 5 and 2, stride 2, a max-pool before the ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), randomise_bn(nn.BatchNorm2d(6), g), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 5, padding=2), nn.MaxPool2d(2), randomise_bn(nn.BatchNorm2d(8), g), nn.ReLU(),
        nn.Conv2d(8, 10, 2, stride=2), randomise_bn(nn.BatchNorm2d(10), g), nn.ReLU(), nn.Identity(),
        nn.Flatten(), nn.Linear(40, 10))


class Functional(nn.Module):
    """A hand-written forward: functional ReLU, average and max pooling, view-flatten,
    a dilated and a grouped convolution."""

    def __init__(self, g):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5, padding=2)
        self.bn = randomise_bn(nn.BatchNorm2d(6), g)
        self.c2 = nn.Conv2d(6, 8, 3, padding=2, dilation=2, groups=2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.bn(F.relu(self.c1(x)))
        x = F.avg_pool2d(x, 2)
        x = F.max_pool2d(self.c2(x).relu(), 3, stride=2, padding=1)
        return self.fc(x.view(x.size(0), -1))


MODELS = {"mlp": (mlp, (1, 8, 8)), "vgg_bn_after": (vgg_bn_after, (1, 16, 16)),
          "vgg_bn_before": (vgg_bn_before, (1, 16, 16)), "functional": (seeded(Functional), (1, 16, 16))}


def data(shape, n: int, seed: int, low: float = 0.0, high: float = 1.0):
    """Inputs in [low, high] with 10 classes: each class brightens its own band of rows."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = 0.6 * torch.rand(n, *shape, generator=g)
    rows = shape[1]
    for c in range(10):
        start = c * rows // 10
        band = slice(start, min(rows, start + rows // 10 + 1))
        x[y == c, :, band] += 0.4 * torch.rand(int((y == c).sum()), shape[0], band.stop - band.start, shape[2],
                                               generator=g)
    return low + (high - low) * x.clamp(0, 1), y


def train_briefly(model: nn.Module, x, y, steps: int = 30) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 32, (i + 1) * 32) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def assert_exact(model, net, x):
    with torch.no_grad():
        ref = model.double().eval()(x.double())
        out = net(x.double())
    assert float((out - ref).abs().max()) <= 1e-9 * max(1.0, float(ref.abs().max()))
    assert bool((out.argmax(1) == ref.argmax(1)).all())


@pytest.mark.parametrize("mapping", ["b1", "alpha1"])
@pytest.mark.parametrize("trained", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_conversion_is_exact(name, trained, mapping):
    build, shape = MODELS[name]
    torch.manual_seed(len(name) + 2 * trained)
    low, high = (-1.0, 2.0) if name in ("vgg_bn_after", "functional") else (0.0, 1.0)  # an input range to fold
    model = build(torch.Generator().manual_seed(3))
    calib, y = data(shape, 96, seed=1, low=low, high=high)
    if trained:
        train_briefly(model, calib, y)
    net = convert64(model, calib, input_range=(low, high), mapping=mapping)
    report = net.conversion
    assert report.calibration.agreement == 1.0 and report.calibration.max_logit_diff <= 1e-9
    test_x, _ = data(shape, 64, seed=2, low=low, high=high)
    assert_exact(model, net, test_x)
    assert ttfs_ext.agreement(model, net, test_x).agreement == 1.0
    spiking = (tnn.TTFSAlphaLinear, tnn.TTFSAlphaConv2d) if mapping == "alpha1" else (tnn.TTFSLinear, tnn.TTFSConv2d)
    assert all(isinstance(m, spiking) for m in net.spiking_layers())
    assert isinstance(net[0], tnn.TTFSEncoder) and isinstance(net[-1], tnn.TTFSReadout)


def relu_maxima(model: nn.Module, x: torch.Tensor) -> list[tuple[float, float]]:
    """(max, fraction > 0) of every ReLU output of the model: the activations of its spiking layers."""
    stats = []
    hooks = [m.register_forward_hook(lambda m, i, o: stats.append((float(o.max()), float((o > 0).double().mean()))))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model.double().eval()(x.double())
    for h in hooks:
        h.remove()
    return stats


@pytest.mark.parametrize("zeta", [0.5, 0.0, 2.0])
def test_windows_from_calibration(zeta):
    model = vgg_bn_after(torch.Generator().manual_seed(4))
    x, _ = data((1, 16, 16), 50, seed=5)
    net = convert64(model, x, input_range=(0, 1), zeta=zeta)
    stats = relu_maxima(model, x)
    assert len(stats) == len(net.spiking_layers()) == 5
    for (x_max, rate), layer, info in zip(stats, net.spiking_layers(), net.conversion.layers):
        assert layer.t_max - layer.t_min == pytest.approx((1 + zeta) * x_max, rel=1e-12)
        assert info.max_activation == pytest.approx(x_max, rel=1e-12)
        assert info.spikes_per_neuron == pytest.approx(rate, abs=1e-12)
    assert net.latency == pytest.approx(1 + (1 + zeta) * sum(s[0] for s in stats), rel=1e-12)
    assert net.conversion.latency == net.latency
    assert "latency" in str(net.conversion) and "agreement" in str(net.conversion)


def test_per_position_biases_are_needed():
    """A batch norm after a ReLU, folded into a padded convolution, gives each border
    position its own bias; a per-channel bias would be wrong there."""
    model = vgg_bn_after(torch.Generator().manual_seed(6))
    x, _ = data((1, 16, 16), 40, seed=7)
    net = convert64(model, x, input_range=(0, 1))
    conv2 = net.spiking_layers()[1]
    assert conv2.bias.shape == (8, 16, 16)
    interior = conv2.bias[:, 1:-1, 1:-1]
    assert bool((interior == interior[:, :1, :1]).all()) and not bool((conv2.bias == conv2.bias[:, :1, :1]).all())
    assert_exact(model, net, x)
    with torch.no_grad():
        conv2.bias = nn.Parameter(interior[:, 0, 0].clone())
    with torch.no_grad():
        assert float((net(x.double()) - model.double()(x.double())).abs().max()) > 1e-6


def test_negative_bn_scale_flips_max_pool():
    model = vgg_bn_after(torch.Generator().manual_seed(8))
    bn = model[5]
    assert bool((bn.weight < 0).any())
    x, _ = data((1, 16, 16), 40, seed=9)
    net = convert64(model, x, input_range=(0, 1))
    pool = next(m for m in net if isinstance(m, tnn.TTFSMaxPool2d))
    assert torch.equal(pool.channel_sign, torch.where(bn.weight < 0, -1.0, 1.0).double())
    assert_exact(model, net, x)
    pool.channel_sign = None  # earliest spike everywhere: wrong for the negative channels
    with torch.no_grad():
        assert float((net(x.double()) - model.double()(x.double())).abs().max()) > 1e-6


def test_alpha1_neurons():
    """alpha = 1 (interior), slope B = alpha + sum J > 0, thresholds for the window, and, with
    event-safe windows, the event-driven network equals the closed form."""
    model = vgg_bn_before(torch.Generator().manual_seed(10))
    with torch.no_grad():
        model[4].weight.mul_(3.0)  # weight sums above 1: the mapping must rescale
    x, _ = data((1, 16, 16), 40, seed=11)
    net = convert64(model, x, input_range=(0, 1), mapping="alpha1", windows="event")
    assert_exact(model, net, x)
    for layer in net.spiking_layers():
        weight_sum = layer.weight.detach().flatten(1).sum(dim=1)
        interior = layer.alpha if layer.alpha.dim() == 1 else layer.alpha[:, 2:-2, 2:-2]
        torch.testing.assert_close(interior, torch.ones_like(interior), rtol=0, atol=1e-12)
        assert bool((1.0 + weight_sum > 0).all())  # the slope once every input has arrived
    sim = ttfs_ext.simulate(net, x)
    assert sim.exact and all(layer.early_spikes == 0 for layer in sim.layers)
    torch.testing.assert_close(sim.logits, net(x.double()), rtol=0, atol=1e-9)


@pytest.mark.parametrize("mapping", ["b1", "alpha1"])
@pytest.mark.parametrize("name", ["mlp", "vgg_bn_before"])
def test_event_windows_make_the_event_simulation_exact(name, mapping):
    """windows="event": no neuron reaches its threshold before its window opens, so the
    event-driven network equals the closed form (and the ReLU network) on the calibration
    data. The papers' activation rule can leave early spikes (strong batch norms here)."""
    build, shape = MODELS[name]
    model = build(torch.Generator().manual_seed(12))
    x, y = data(shape, 48, seed=13)
    train_briefly(model, x, y)
    net = convert64(model, x, input_range=(0, 1), mapping=mapping, windows="event")
    result = ttfs_ext.agreement(model, net, x, event=True)
    assert result.max_logit_diff <= 1e-9
    assert result.event_agreement == 1.0 and result.event_max_logit_diff <= 1e-9
    assert set(result.early_spikes) == {0} and set(result.event_deviating) == {0}
    assert "event-driven" in str(result)
    plain = convert64(model, x, input_range=(0, 1), mapping=mapping)
    assert all(a <= b * (1 + 1e-12) for a, b in zip(plain.widths, net.widths))


def test_activation_windows_can_leave_early_spikes():
    """The papers' rule (windows hold every activation) with strong batch norms before the
    ReLU: large weight sums make alpha = 1 - sum W very negative, the threshold
    T - b + alpha T_prev small, and neurons fire while inputs still arrive. The closed form is
    exact; the event simulation sees, counts and propagates the early spikes."""
    model = mlp(torch.Generator().manual_seed(12))
    x, y = data((1, 8, 8), 48, seed=13)
    train_briefly(model, x, y)
    net = convert64(model, x, input_range=(0, 1))
    result = ttfs_ext.agreement(model, net, x, event=True)
    assert result.max_logit_diff <= 1e-9 and result.agreement == 1.0
    assert result.early_spikes[1] > 0 and result.event_deviating[1] > 0


def test_narrow_windows_give_early_spikes():
    """zeta < 0 (the robustness sweeps of the 2022 paper): windows narrower than the
    activations. The B1 closed form still computes the ReLU network, the true dynamics do not."""
    model = mlp(torch.Generator().manual_seed(14))
    x, _ = data((1, 8, 8), 64, seed=15)
    net = convert64(model, x, input_range=(0, 1), zeta=-0.5)
    result = ttfs_ext.agreement(model, net, x, event=True)
    assert result.max_logit_diff <= 1e-9
    assert sum(result.early_spikes) > 0 and sum(result.event_deviating) > 0
    assert result.event_max_logit_diff > 1e-6


def test_calibration_data_forms():
    """A tensor, a list of tensors and a DataLoader of (x, y) give the same network."""
    model = mlp(torch.Generator().manual_seed(16))
    x, y = data((1, 8, 8), 40, seed=17)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    nets = [convert64(model, d, input_range=(0, 1)) for d in (x, list(x.split(7)), loader)]
    assert nets[0].widths == nets[1].widths == nets[2].widths
    assert nets[2].conversion.calibration.samples == 40


def test_model_is_left_alone():
    model = mlp(torch.Generator().manual_seed(18)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convert64(model, data((1, 8, 8), 20, seed=19)[0], input_range=(0, 1))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32


def test_input_range():
    model = mlp(torch.Generator().manual_seed(20))
    x, _ = data((1, 8, 8), 20, seed=21, low=-0.5, high=0.5)
    net = convert64(model, x)  # default: the data's range
    assert net[0].low == float(x.min()) and net[0].high == float(x.max())
    assert_exact(model, net, x)
    with pytest.raises(ValueError, match="outside input_range"):
        convert64(model, x, input_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="low < high"):
        convert64(model, x, input_range=(1.0, 1.0))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)) + x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return -self.a(x)


@pytest.mark.parametrize("model, shape, match", [
    (nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3)), (8,), r"layer '1' \(Sigmoid\).*not one of"),
    (nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3)), (8,), "no ReLU between 0 and it"),
    (Residual(), (8,), "not a single chain|feeds several layers"),
    (Branchy(), (8,), "could not trace"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 3)), (1, 6, 6), "readout must be a Linear"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.Flatten(),
                   nn.Linear(32, 3)), (1, 4, 4), "padding_mode='reflect'"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2, padding=1, count_include_pad=False), nn.Flatten(),
                   nn.Linear(18, 3)), (1, 6, 6), "count_include_pad=False"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(8, 3)),
     (1, 6, 6), "ceil_mode"),
    (nn.Sequential(nn.Linear(8, 8), nn.ReLU(), randomise_bn(nn.BatchNorm1d(8), torch.Generator().manual_seed(0)),
                   nn.ReLU(), nn.Linear(8, 3)), (8,), "ReLU of a batch-normalised ReLU output"),
    (nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=1)), (8,), "Softmax"),
    (nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3), nn.LogSoftmax(dim=1)), (8,), "LogSoftmax"),
    (tnn.TTFSSequential(tnn.TTFSLinear(8, 3), tnn.TTFSReadout(3, 2)), (8,), "already a TTFS layer"),
])
def test_unsupported_models_are_refused(model, shape, match):
    x = torch.rand(4, *shape)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.eval()
    with pytest.raises(ConversionError, match=match):
        convert64(model, x, input_range=(0, 1))


def test_bad_arguments():
    model = mlp(torch.Generator().manual_seed(22))
    x = data((1, 8, 8), 8, seed=23)[0]
    with pytest.raises(ValueError, match="mapping must be"):
        convert64(model, x, input_range=(0, 1), mapping="alpha2")
    with pytest.raises(ValueError, match="windows must be"):
        convert64(model, x, input_range=(0, 1), windows="data")
    with pytest.raises(ValueError, match="zeta must be a number > -1"):
        convert64(model, x, input_range=(0, 1), zeta=-1.0)
    with pytest.raises(ValueError, match="fails on the calibration data"):
        convert64(model, torch.rand(4, 1, 5, 5), input_range=(0, 1))
    with pytest.raises(ValueError, match="NaN or inf"):
        convert64(model, torch.full((4, 1, 8, 8), float("nan")), input_range=(0, 1))
    for bad in (float("nan"), float("inf"), -float("inf")):
        one_bad = torch.rand(4, 1, 8, 8)
        one_bad[2, 0, 3, 5] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            convert64(model, one_bad, input_range=(0, 1))
    with pytest.raises(ValueError, match="empty"):
        convert64(model, torch.rand(0, 1, 8, 8), input_range=(0, 1))


def test_network_ending_with_relu_and_batch_norm():
    """An identity readout reads the last ReLU layer out, with the pending batch norm."""
    g = torch.Generator().manual_seed(24)
    torch.manual_seed(24)  # the Linear layers' initialisation
    model = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 5), nn.ReLU(), randomise_bn(nn.BatchNorm1d(5), g))
    x = torch.rand(30, 6, generator=g)
    net = convert64(model, x, input_range=(0, 1))
    assert_exact(model, net, x)
    assert len(net.spiking_layers()) == 2


def test_converted_network_round_trips_state_dict():
    model = vgg_bn_after(torch.Generator().manual_seed(25))
    x = data((1, 16, 16), 20, seed=26)[0]
    for mapping in ("b1", "alpha1"):
        net = convert64(model, x, input_range=(0, 1), mapping=mapping)
        copy = convert64(model, x[:5], input_range=(0, 1), mapping=mapping)
        copy.load_state_dict(net.state_dict())
        assert copy.widths == net.widths
        torch.testing.assert_close(copy(x.double()), net(x.double()), rtol=0, atol=0)


class CountingData:
    """Calibration batches that count how often they are read."""

    def __init__(self, x: torch.Tensor, batch: int) -> None:
        self.batches, self.reads = list(x.split(batch)), 0

    def __iter__(self):
        self.reads += 1
        return iter(self.batches)


@pytest.mark.parametrize("windows", ["activation", "event"])
@pytest.mark.parametrize("mapping", ["b1", "alpha1"])
def test_calibration_passes_do_not_grow_with_depth(mapping, windows, monkeypatch):
    """convert reads the calibration data once and applies each spiking layer a fixed number of
    times per batch, whatever the depth: the activation windows take one pass, the event-safe
    ones one loop over the layers (all but the last), the report and agreement one more."""
    calls = [0]
    for cls in (tnn.TTFSLinear, tnn.TTFSAlphaLinear):
        def counted(self, t, original=cls.closed_forward):
            calls[0] += 1
            return original(self, t)
        monkeypatch.setattr(cls, "closed_forward", counted)
    x, _ = data((1, 8, 8), 30, seed=27)
    for depth in (2, 6):
        hidden = [m for _ in range(depth - 1) for m in (nn.Linear(16, 16), nn.ReLU())]
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), *hidden, nn.Linear(16, 10))
        loader = CountingData(x, 10)
        calls[0] = 0
        net = convert64(model, loader, input_range=(0, 1), mapping=mapping, windows=windows)
        assert loader.reads == 1
        assert len(net.spiking_layers()) == depth
        per_batch = 2 * depth + (depth - 1 if windows == "event" else 0)
        assert calls[0] == per_batch * len(loader.batches)


def test_the_network_comes_back_in_the_models_dtype():
    """A float32 model gives a float32 network that runs float32 images (the conversion and its
    report stay float64); dtype=torch.float64 keeps the conversion's precision."""
    model = mlp(torch.Generator().manual_seed(40)).eval()
    x, _ = data((1, 8, 8), 40, 41)
    net = ttfs_ext.convert(model, x, input_range=(0.0, 1.0))
    assert all(p.dtype == torch.float32 for p in net.parameters()) and net.conversion.dtype == "float32"
    out = net(x)
    assert out.dtype == torch.float32
    exact = ttfs_ext.convert(model, x, input_range=(0.0, 1.0), dtype=torch.float64)
    assert exact.conversion.dtype == "float64"
    ref = exact(x.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)  # float32 rounding of the same network
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        ttfs_ext.convert(model, x, input_range=(0.0, 1.0), dtype=torch.float16)
