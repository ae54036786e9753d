"""Drop-in modules: checkpoint compatibility with nn.Linear/nn.Conv2d, window chaining,
equality with the ReLU twin (outputs and gradients), reports."""
import copy

import pytest
import torch
from torch import nn

import ttfs_ext
from ttfs_ext import nn as tnn

from _utils import DEVICES, generator


def _relu_net():
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 20), nn.ReLU(), nn.Linear(20, 5),
    ).double()


def _ttfs_twin(relu: nn.Sequential, widths):
    twin = tnn.TTFSSequential(
        tnn.TTFSEncoder(),
        tnn.TTFSConv2d(1, 6, 3, padding=1), tnn.TTFSMaxPool2d(2),
        tnn.TTFSConv2d(6, 8, 3, stride=2, padding=1, groups=2),
        nn.Flatten(), tnn.TTFSLinear(8 * 2 * 2, 20), tnn.TTFSReadout(20, 5),
        widths=widths,
    ).double()
    pairs = [(1, 0), (3, 3), (5, 6), (6, 8)]  # (twin index, ReLU index)
    for i, j in pairs:
        twin[i].load_state_dict(relu[j].state_dict(), strict=True)  # same keys and shapes
    return twin


def _relu_maxima(relu, x):
    maxima, out = [], x
    for m in relu:
        out = m(out)
        if isinstance(m, nn.ReLU):
            maxima.append(float(out.detach().max()))
    return maxima


def test_state_dict_keys_match_torch_modules():
    assert tnn.TTFSLinear(3, 4).state_dict().keys() == nn.Linear(3, 4).state_dict().keys()
    assert tnn.TTFSLinear(3, 4, bias=False).state_dict().keys() == nn.Linear(3, 4, bias=False).state_dict().keys()
    assert tnn.TTFSReadout(3, 4).state_dict().keys() == nn.Linear(3, 4).state_dict().keys()
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)
    twin = tnn.TTFSConv2d(2, 4, 3, stride=2, padding=1, groups=2)
    assert twin.state_dict().keys() == conv.state_dict().keys()
    twin.load_state_dict(conv.state_dict(), strict=True)
    assert torch.equal(twin.weight, conv.weight)


@pytest.mark.parametrize("device", DEVICES)
def test_twin_equals_relu_network(device):
    """Exact mapping: same logits as the ReLU network, and every gradient equal too."""
    relu = _relu_net().to(device)
    x = torch.rand(8, 1, 8, 8, generator=generator(70), dtype=torch.float64).to(device)
    widths = [1.5 * m + 0.1 for m in _relu_maxima(relu, x)]
    twin = _ttfs_twin(relu, widths).to(device)
    logits, twin_logits = relu(x), twin(x)
    torch.testing.assert_close(twin_logits, logits, rtol=1e-12, atol=1e-12)
    labels = torch.arange(8, device=device) % 5
    grads = torch.autograd.grad(nn.functional.cross_entropy(logits, labels), list(relu.parameters()))
    twin_grads = torch.autograd.grad(nn.functional.cross_entropy(twin_logits, labels), list(twin.parameters()))
    assert len(grads) == len(twin_grads) == 8
    for g, tg in zip(grads, twin_grads):
        torch.testing.assert_close(tg, g, rtol=1e-10, atol=1e-12)
    # Hidden spike times are the window's end - ReLU activations: local times from the window's
    # start (width - activation), absolute ones t_max - activation.
    t_hidden = twin[:6](x)
    torch.testing.assert_close(twin[5].width - t_hidden, relu[:8](x), rtol=0, atol=1e-12)
    torch.testing.assert_close(twin[5].t_max - twin[5].absolute(t_hidden), relu[:8](x), rtol=0, atol=1e-12)


def test_windows_are_chained():
    net = tnn.TTFSSequential(tnn.TTFSEncoder(), nn.Flatten(), tnn.TTFSLinear(4, 3), tnn.TTFSLinear(3, 3),
                             tnn.TTFSReadout(3, 2), widths=[2.0, 0.5])
    assert (net[2].t_min, net[2].t_max) == (1.0, 3.0)
    assert (net[3].t_min, net[3].t_max) == (3.0, 3.5)
    assert net[4].t_min == 3.5 == net.latency
    net.set_widths(1.0)
    assert net.widths == [1.0, 1.0] and net[4].t_min == 3.0
    with pytest.raises(ValueError, match="got 3 widths for 2 spiking layers"):
        net.set_widths([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="positive"):
        net.set_widths([1.0, -2.0])


def test_windows_saved_in_state_dict():
    make = lambda w: tnn.TTFSSequential(tnn.TTFSLinear(4, 3), tnn.TTFSReadout(3, 2), widths=w)  # noqa: E731
    net = make([2.5])
    other = make([9.0])
    other.load_state_dict(net.state_dict())
    assert other.widths == [2.5] and other[1].t_min == 3.5
    x = torch.rand(5, 4, generator=generator(71))
    torch.testing.assert_close(other(x), net(x), rtol=0, atol=0)


def test_report_spikes_latency_and_margin():
    relu = _relu_net()
    x = torch.rand(16, 1, 8, 8, generator=generator(72), dtype=torch.float64)
    widths = [1.5 * m for m in _relu_maxima(relu, x)]
    twin = _ttfs_twin(relu, widths)
    out, report = twin.report(x)
    torch.testing.assert_close(out, relu(x), rtol=1e-12, atol=1e-12)
    assert report.latency == twin.latency == pytest.approx(1 + sum(widths))
    assert [r.index for r in report.layers] == [1, 3, 5]
    with torch.no_grad():
        activations = [relu[:2](x), relu[:5](x), relu[:8](x)]
    for r, a in zip(report.layers, activations):
        assert r.spikes_per_neuron == pytest.approx(float((a > 0).double().mean()), abs=1e-12)
        assert r.neurons == a[0].numel()
        # margin = min(t) - t_min = width - max activation = width / 3 here
        assert r.margin == pytest.approx((r.t_max - r.t_min) - float(a.max()), abs=1e-9) and r.margin > 0
    assert 0 < report.spikes_per_neuron < 1
    assert "latency" in str(report)


def test_report_warns_when_a_spike_precedes_its_window():
    relu = _relu_net()
    x = torch.rand(16, 1, 8, 8, generator=generator(73), dtype=torch.float64)
    widths = [1.5 * m for m in _relu_maxima(relu, x)]
    widths[1] = 0.5 * _relu_maxima(relu, x)[1]  # too narrow for the second layer's activations
    twin = _ttfs_twin(relu, widths)
    with pytest.warns(RuntimeWarning, match="layer 3 .*before its window opens"):
        _, report = twin.report(x)
    assert report.layers[1].margin < 0 and report.layers[0].margin > 0


def test_unset_window_and_bad_modules():
    with pytest.raises(RuntimeError, match="window \\[t_min, t_max\\] is not set"):
        tnn.TTFSLinear(3, 2)(torch.rand(1, 3))
    with pytest.raises(RuntimeError, match="t_min is not set"):
        tnn.TTFSReadout(3, 2)(torch.rand(1, 3))
    with pytest.raises(ValueError, match="padding_mode must be 'zeros'"):
        tnn.TTFSConv2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="t_min < t_max"):
        tnn.TTFSLinear(3, 2, t_min=2.0, t_max=1.0)
    with pytest.raises(ValueError, match="kernel_size, stride and padding only"):
        tnn.TTFSMaxPool2d(2, ceil_mode=True)


def test_conv_same_padding_and_standalone_window():
    conv = tnn.TTFSConv2d(2, 3, 5, padding="same", t_min=1.0, t_max=4.0).double()
    t = torch.rand(1, 2, 6, 7, generator=generator(74), dtype=torch.float64)
    out = conv(t)
    assert out.shape == (1, 3, 6, 7)
    explicit = tnn.TTFSConv2d(2, 3, 5, padding=2, t_min=1.0, t_max=4.0).double()
    explicit.load_state_dict(conv.state_dict())
    torch.testing.assert_close(explicit(t), out, rtol=0, atol=0)
    assert "window=[1.0, 4.0]" in repr(conv)


# --- general (alpha-model) layers and the signed max-pool ---------------------------------------

def _alpha1_net(seed: int):
    torch.manual_seed(seed)
    relu = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(12, 1, 8, 8, generator=generator(seed), dtype=torch.float64)
    return relu, ttfs_ext.convert(relu, x, input_range=(0, 1), mapping="alpha1", windows="event",
                                  dtype=torch.float64), x


def test_alpha_layers_event_mode_equals_closed_form_with_gradients():
    """On a network whose neurons fire after all their inputs, the exact event-driven layers
    give the closed form's spike times and the same gradients for weights and thresholds."""
    relu, net, x = _alpha1_net(80)
    labels = torch.arange(12) % 3
    out_closed = net(x)
    grads_closed = torch.autograd.grad(nn.functional.cross_entropy(out_closed, labels), list(net.parameters()))
    for m in net.spiking_layers():
        m.mode = "event"
    out_event = net(x)
    grads_event = torch.autograd.grad(nn.functional.cross_entropy(out_event, labels), list(net.parameters()))
    torch.testing.assert_close(out_event, out_closed, rtol=0, atol=1e-12)
    torch.testing.assert_close(out_event, relu.double()(x), rtol=0, atol=1e-12)
    for ge, gc in zip(grads_event, grads_closed):
        torch.testing.assert_close(ge, gc, rtol=1e-9, atol=1e-12)
    sim = ttfs_ext.simulate(net, x)  # compares with the closed form even in event mode
    assert sim.exact and all(layer.max_deviation < 1e-12 for layer in sim.layers)
    assert [m.mode for m in net.spiking_layers()] == ["event"] * 3


def test_alpha_layer_arguments():
    with pytest.raises(ValueError, match="mode must be 'closed' or 'event'"):
        tnn.TTFSAlphaLinear(3, 2, mode="exact")
    with pytest.raises(ValueError, match="t_start <= t_min"):
        tnn.TTFSAlphaLinear(3, 2, t_min=1.0, t_max=2.0, t_start=1.5)
    layer = tnn.TTFSAlphaConv2d(2, 3, 3, t_min=1.0, t_max=2.0)
    with pytest.raises(RuntimeError, match="t_start .* is not set"):
        layer(torch.rand(1, 2, 5, 5))
    layer.set_window(1.0, 2.0, 0.0)
    assert layer(torch.rand(1, 2, 5, 5)).shape == (1, 3, 3, 3)
    assert layer(torch.rand(2, 5, 5)).shape == (3, 3, 3)


def test_signed_max_pool():
    t = torch.rand(2, 3, 4, 4, generator=generator(81))
    pool = tnn.TTFSMaxPool2d(2, channel_sign=torch.tensor([1.0, -1.0, 1.0]))
    out = pool(t)
    torch.testing.assert_close(out[:, 0::2], -nn.functional.max_pool2d(-t[:, 0::2], 2), rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1], nn.functional.max_pool2d(t[:, 1:2], 2)[:, 0], rtol=0, atol=0)
    assert "latest-spike channels=1" in repr(pool)
    with pytest.raises(ValueError, match="channel_sign must be a 1-D tensor of \\+1 and -1"):
        tnn.TTFSMaxPool2d(2, channel_sign=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="channel_sign has 3 entries but t_in has 2 channels"):
        pool(torch.rand(1, 2, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_unit_range_shortcut_is_bitwise_the_general_formula(dtype):
    # low = 0, high = 1 skips the subtraction and division (exact there); values and
    # gradients must equal the general formula bit for bit, the twin's input activation too.
    from ttfs_ext import reference, train
    x = torch.randn(257, generator=generator(11), dtype=torch.float64).to(dtype) * 1.5 + 0.5
    x[:4] = torch.tensor([-0.0, 0.0, 1.0, float("nan")], dtype=dtype)
    x.requires_grad_(True)
    general = 1.0 - reference.clamp((x - 0.0) / (1.0 - 0.0), 0.0, 1.0)
    fast = reference.encode(x, 0.0, 1.0)
    assert torch.equal(fast[4:], general[4:]) and fast[3].isnan()
    assert torch.equal(fast[:3], general[:3])
    g = torch.randn(257, generator=generator(12), dtype=torch.float64).to(dtype)
    grads = [torch.autograd.grad(y, x, g)[0] for y in (fast, general)]
    assert torch.equal(*grads)
    assert torch.equal(grads[0][:3], -g[:3])  # the limits pass the gradient (reference.clamp), on every torch
    from ttfs_ext.train.twin import _InputActivation
    act = _InputActivation(0.0, 1.0)(x)
    assert torch.equal(act[4:], x.detach().clamp(0.0, 1.0)[4:])


def test_state_dicts_from_before_local_time_load():
    """Networks saved before local time, when every spike time lay on one absolute axis
    (tests/data/make_before_local_time.py wrote them with commit 2d42b26): their state_dicts
    (windows stored as widths, then as now) load into the same architectures and give the same
    network: logits and absolute spike times to 1e-12, for a hand-built net (per-position bias,
    grouped strided conv, pooling) and for converted ones of both mappings."""
    import sys
    from pathlib import Path

    import ttfs_ext

    data = Path(__file__).with_name("data")
    sys.path.insert(0, str(data))
    try:
        import make_before_local_time as made
    finally:
        sys.path.remove(str(data))
    saved = torch.load(data / "before_local_time.pt", weights_only=True)
    x = saved["x"]
    model = made.relu_model()
    model.load_state_dict(saved["model"])
    nets = {"hand_built": made.hand_built()}
    for mapping in ("b1", "alpha1"):
        nets[mapping] = ttfs_ext.convert(model, x, input_range=(0.0, 1.0), mapping=mapping)
    compared = 0
    for name, net in nets.items():
        for p in net.parameters():  # nothing may survive from the fresh network
            p.data.normal_()
        net.set_widths([7.0] * len(net.spiking_layers()))
        net.load_state_dict(saved[name]["state_dict"])
        with torch.no_grad():
            torch.testing.assert_close(net(x), saved[name]["logits"], rtol=1e-12, atol=1e-12, msg=name)
            sim = ttfs_ext.simulate(net, x)
        for layer, old in zip(sim.layers, saved[name]["spike_times"]):
            torch.testing.assert_close(layer.spike_times, old, rtol=1e-12, atol=1e-12, msg=name)
        if sim.layers[-1].early_spikes == 0:  # the readout integrates from its t_start now
            torch.testing.assert_close(sim.logits, saved[name]["event_logits"], rtol=1e-12, atol=1e-12, msg=name)
            compared += 1
    assert compared >= 2


def test_the_chain_of_windows_stays_consistent():
    """Every way of changing a TTFSSequential keeps one chain of windows in local time, or
    refuses: replacing a layer, appending, deleting, slicing, set_window on a chained layer."""
    net = tnn.TTFSSequential(tnn.TTFSEncoder(), nn.Flatten(), tnn.TTFSLinear(4, 3), tnn.TTFSLinear(3, 3),
                             tnn.TTFSReadout(3, 2), widths=[2.0, 0.5]).double()
    x = torch.rand(5, 4, generator=generator(21), dtype=torch.float64)
    before = net(x)
    with pytest.raises(TypeError, match="can only replace one of its kind"):
        net[3] = nn.Identity()
    assert isinstance(net[3], tnn.TTFSLinear) and torch.equal(net(x), before)  # refused: unchanged
    with pytest.raises(RuntimeError, match="chained in a TTFSSequential"):
        net[2].set_window(1.0, 5.0, 0.0)
    head = net[:3]
    with pytest.raises(RuntimeError, match="slice of a network"):
        head.set_widths([4.0])
    assert net.widths == [2.0, 0.5] and torch.equal(head(x), net[2](net[1](net[0](x))))
    extra = tnn.TTFSLinear(3, 3, dtype=torch.float64, t_min=0.0, t_max=1.5)  # a window of its own: width 1.5
    del net[4]
    net.append(extra)
    net.append(tnn.TTFSReadout(3, 2, dtype=torch.float64))
    assert net.widths == [2.0, 0.5, 1.5] and all(m.local for m in net.spiking_layers())
    assert (extra.in_width, extra.t_min, net[5].in_width, net[5].t_min) == (0.5, 3.5, 1.5, 5.0)
    with pytest.raises(ValueError, match="without a window"):
        net.insert(2, tnn.TTFSLinear(4, 4))
    assert len(net) == 6  # refused: unchanged


def test_absolute_times_of_silent_neurons_are_t_max_exactly():
    # Widths whose sums round (0.1 + 0.2 != 0.3): a silent neuron is still t_max, not t_min + width.
    net = tnn.TTFSSequential(tnn.TTFSEncoder(), tnn.TTFSLinear(3, 40), tnn.TTFSLinear(40, 40),
                             widths=[0.1, 0.2]).double()
    x = torch.rand(64, 3, generator=generator(22), dtype=torch.float64)
    import ttfs_ext
    sim = ttfs_ext.simulate(net, x)
    for (_, m, t), (_, _, tau), layer in zip(net.spike_times(x), net.spike_times(x, absolute=False), sim.layers):
        silent = t == m.t_max
        assert 0 < int(silent.sum()) < t.numel()  # silent and firing neurons
        assert torch.equal(silent, tau >= m.width) and bool((t[~silent] < m.t_max).all())
        event_silent = layer.spike_times == m.t_max  # the event-driven ones alike
        assert torch.equal(event_silent, layer.local_spike_times >= m.width) and int(event_silent.sum()) > 0


def test_simulate_a_readout_outside_a_ttfs_sequential():
    """A hand-made nn.Sequential in absolute time: the readout integrates from the t_min of the
    spiking layer before, as in a TTFSSequential."""
    import ttfs_ext
    torch.manual_seed(23)
    layer = tnn.TTFSLinear(3, 4, dtype=torch.float64, t_min=1.0, t_max=3.0)
    layer.set_window(1.0, 3.0, 0.0)
    readout = tnn.TTFSReadout(4, 2, dtype=torch.float64, t_min=3.0)
    net = nn.Sequential(tnn.TTFSEncoder(), layer, readout)
    x = torch.rand(8, 3, generator=generator(24), dtype=torch.float64)
    chained = tnn.TTFSSequential(tnn.TTFSEncoder(), copy.deepcopy(layer), copy.deepcopy(readout), widths=[2.0])
    torch.testing.assert_close(ttfs_ext.simulate(net, x).logits, ttfs_ext.simulate(chained, x).logits,
                               rtol=1e-12, atol=1e-12)
