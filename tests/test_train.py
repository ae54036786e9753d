"""Training: the B1 network follows its ReLU twin's trajectory exactly (float64, real data),
the alpha1 parametrisation does not; window rules; checkpoints and exact resume; hardware
fine-tuning options (noise, quantisation, event-driven latency)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ttfs_ext
from ttfs_ext import nn as tnn
from ttfs_ext import train as T
from ttfs_ext.robust import fake_quantize, quantize_weight

F64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    from ttfs_ext.cli.demo import load_digits
    return load_digits(0)


def small_fc(seed: int = 0, hidden: int = 64) -> tnn.TTFSSequential:
    torch.manual_seed(seed)
    return T.fc2(64, hidden, 10, input_shape=(1, 8, 8)).double()


@pytest.mark.parametrize("rule", [T.PaperWindows(), T.CalibratedWindows(zeta=0.5)])
def test_b1_trajectory_equals_relu_twin(digits, rule):
    """The central claim: same initialisation, data order and optimiser, float64, 360 steps of
    Adam on the digits: the losses at every step and the final weights agree to 1e-9."""
    net = T.fc2(64, 340, 10, input_shape=(1, 8, 8)).double()
    twin = T.relu_twin(copy.deepcopy(net))
    history = T.fit(net, digits, epochs=8, batch_size=32, lr=1e-3, windows=rule, twin=twin, progress=False)
    assert len(history.step_losses) == len(history.twin_step_losses) >= 300
    snn, relu = torch.tensor(history.step_losses, dtype=F64), torch.tensor(history.twin_step_losses, dtype=F64)
    assert float(((snn - relu).abs() / relu.abs()).max()) < 1e-9
    assert relu[-1] < 0.5 * relu[0]  # it did learn
    for p, q in zip(net.parameters(), twin.parameters()):
        assert float((p - q).abs().max().detach() / q.abs().max().detach()) < 1e-9
    last = history.epochs[-1]
    assert last.test_accuracy == last.twin_test_accuracy > 0.9
    assert 0 < last.spikes_per_neuron < 1 and last.min_margin >= 0
    assert last.latency == pytest.approx(1 + sum(last.widths))


def test_alpha1_trains_on_a_different_trajectory(digits):
    """The alpha1 network starts as the same function (conversion of the same ReLU
    initialisation) but gradient descent on (J, threshold) is not gradient descent on w."""
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(1)
    relu = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).double()
    alpha1 = ttfs_ext.convert(relu, x_train, input_range=(0, 1), mapping="alpha1")
    b1 = ttfs_ext.convert(relu, x_train, input_range=(0, 1), mapping="b1")
    data = (x_train, y_train, x_test[:0], y_test[:0])
    h_alpha = T.fit(alpha1, data, epochs=2, batch_size=32, lr=1e-3, progress=False)
    h_b1 = T.fit(b1, data, epochs=2, batch_size=32, lr=1e-3, twin=relu, progress=False)
    a, b, r = (torch.tensor(h) for h in (h_alpha.step_losses, h_b1.step_losses, h_b1.twin_step_losses))
    assert abs(float(a[0] - r[0])) < 1e-12  # the same function at the start
    assert float(((b - r).abs() / r).max()) < 1e-9  # B1 = ReLU twin
    assert float(((a - r).abs() / r).max()) > 1e-2  # alpha1 departs


def test_window_rules():
    net = small_fc()
    T.PaperWindows().update(net, [0.5])
    assert net.widths == [5.0]
    T.PaperWindows().update(net, [0.1])
    assert net.widths == [5.0]  # only grows
    rule = T.CalibratedWindows(zeta=0.5, decay=0.5)
    rule.update(net, [2.0])
    assert net.widths == [3.0]
    rule.update(net, [0.4])
    assert net.widths == [1.5] and rule.state_dict() == {"running": [1.0]}
    with pytest.raises(ValueError, match="zeta > -1"):
        T.CalibratedWindows(zeta=-2)


def test_narrow_windows_warn(digits):
    net = small_fc()
    with pytest.warns(RuntimeWarning, match="precedes its window"):
        T.fit(net, digits, epochs=1, batch_size=64, windows=T.CalibratedWindows(zeta=-0.5), progress=False,
              max_steps_per_epoch=3)


def test_checkpoint_resume_is_exact(digits, tmp_path):
    ckpt = tmp_path / "run" / "ckpt.pt"
    straight, twin = small_fc(3), None
    h1 = T.fit(straight, digits, epochs=2, batch_size=64, windows=T.CalibratedWindows(), progress=False,
               max_steps_per_epoch=5, twin=T.relu_twin(copy.deepcopy(straight)))
    resumed = small_fc(3)
    twin = T.relu_twin(copy.deepcopy(resumed))
    T.fit(resumed, digits, epochs=1, batch_size=64, windows=T.CalibratedWindows(), progress=False,
          max_steps_per_epoch=5, checkpoint=ckpt, twin=twin)
    fresh = small_fc(99)  # different init: everything must come from the checkpoint
    twin = T.relu_twin(copy.deepcopy(fresh))
    h2 = T.fit(fresh, digits, epochs=2, batch_size=64, windows=T.CalibratedWindows(), progress=False,
               max_steps_per_epoch=5, checkpoint=ckpt, resume=True, twin=twin)
    assert h2.step_losses == h1.step_losses and h2.twin_step_losses == h1.twin_step_losses
    assert fresh.widths == straight.widths
    for p, q in zip(fresh.parameters(), straight.parameters()):
        assert torch.equal(p, q)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt.pt"]  # no temporary files left


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    T.save_checkpoint(path, {"a": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint(path, {"a": 2})
    monkeypatch.undo()
    assert T.load_checkpoint(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    # A save killed before its rename leaves its temporary file: the next save removes it (and
    # only the files of this checkpoint).
    for name in ("ckpt.pt.k1ll3d.tmp", "ckpt.pt.x.tmp", "other.pt.x.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"partial")
    T.save_checkpoint(path, {"a": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "notes.txt", "other.pt.x.tmp"]
    assert T.load_checkpoint(path) == {"a": 3}


@pytest.mark.filterwarnings("ignore:epoch 1. a spike precedes its window")  # fixed windows of width 1: expected
def test_fit_never_replaces_a_checkpoint_unless_told(digits, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(FileNotFoundError, match="no checkpoint .* to continue"):
        T.fit(small_fc(1), digits, epochs=1, checkpoint=ckpt, resume=True, progress=False)
    T.fit(small_fc(1), digits, epochs=1, checkpoint=ckpt, progress=False, max_steps_per_epoch=2)
    before = ckpt.read_bytes()
    with pytest.raises(FileExistsError, match="resume=True continues it, overwrite=True replaces it"):
        T.fit(small_fc(1), digits, epochs=1, checkpoint=ckpt, progress=False)
    assert ckpt.read_bytes() == before
    T.fit(small_fc(2), digits, epochs=1, checkpoint=ckpt, overwrite=True, progress=False, max_steps_per_epoch=2)
    assert ckpt.read_bytes() != before
    for bad in (dict(epochs=0), dict(epochs=1, batch_size=0), dict(epochs=1, lr=-1.0)):
        with pytest.raises(ValueError, match="must be a positive|must be positive"):
            T.fit(small_fc(1), digits, progress=False, **bad)


def test_relu_twin_shares_parameters():
    torch.manual_seed(5)
    net = T.vgg(([4, "P", 6], [8]), in_channels=1, image_size=8, classes=3).double()
    net.set_widths([5.0, 5.0, 5.0])
    twin = T.relu_twin(net)
    assert {id(p) for p in twin.parameters()} == {id(p) for p in net.parameters()}
    x = torch.rand(5, 1, 8, 8, dtype=F64)
    torch.testing.assert_close(net(x), twin(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("config, layers", [(T.VGG_MNIST, 16), (T.VGG_CIFAR, 15)])
def test_vgg_architectures(config, layers):
    net = T.vgg(config, in_channels=1 if config is T.VGG_MNIST else 3, image_size=28 if config is T.VGG_MNIST
                else 32)
    weighted = [m for m in net if isinstance(m, (tnn.TTFSLinear, tnn.TTFSConv2d, tnn.TTFSReadout))]
    assert len(weighted) == layers


# --- hardware fine-tuning ---------------------------------------------------------------------------

def test_fake_quantize_levels_and_straight_through_gradient():
    x = torch.linspace(-0.5, 1.5, 101, dtype=F64, requires_grad=True)
    q = fake_quantize(x, 0.0, 1.0, 2)
    assert set(q.detach().tolist()) == {0.0, 1 / 3, 2 / 3, 1.0}
    q.sum().backward()
    assert torch.equal(x.grad, ((x >= 0) & (x <= 1)).double())
    w = torch.randn(20, 30, generator=torch.Generator().manual_seed(6))
    assert quantize_weight(w, 3).unique().numel() <= 8
    with pytest.raises(ValueError, match="bits"):
        fake_quantize(x, 0.0, 1.0, 0)


def test_time_quantisation_is_relative_to_each_window():
    """Every spiking layer (and the readout) sees input times on the 2^k-level grid of the
    window they lie in, [t_start, t_min]: [0, in_width] in the local time the network carries."""
    torch.manual_seed(7)
    net = tnn.TTFSSequential(tnn.TTFSEncoder(), tnn.TTFSLinear(6, 5), tnn.TTFSLinear(5, 4), tnn.TTFSReadout(4, 3),
                             widths=[2.0, 3.0]).double()
    seen = []
    for m in list(net)[1:]:
        m.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    net.set_robustness(time_bits=2)
    net(torch.rand(7, 6, dtype=F64))
    for t, (lo, hi) in zip(seen, [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]):
        levels = torch.tensor([lo + i * (hi - lo) / 3 for i in range(4)], dtype=F64)
        assert bool(((t.unsqueeze(-1) - levels).abs().min(-1).values < 1e-12).all())


def test_noise_and_weight_bits(digits):
    net = small_fc()
    x = digits[0][:16].double()
    clean = net(x)
    net.set_robustness(noise=0.05)
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(0)
    assert torch.equal(a, net(x)) and not torch.equal(a, clean) and not torch.equal(a, net(x))
    net.set_robustness(weight_bits=2)
    w_used = []
    net[2].register_forward_pre_hook(lambda m, args: w_used.append(m.weight.detach().clone()))
    net(x)
    assert w_used[0].unique().numel() <= 4
    net.set_robustness(None)
    assert torch.equal(net(x), clean)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        net.set_robustness(noise=-1.0)


def test_fine_tuning_with_noise_and_quantisation_trains(digits):
    net = small_fc(5)
    T.fit(net, digits, epochs=2, batch_size=32, lr=2e-3, windows=T.CalibratedWindows(), progress=False)
    net.set_robustness(noise=0.1, time_bits=3, weight_bits=4)
    before = T.evaluate(net, digits[2], digits[3])["accuracy"]
    history = T.fit(net, digits, epochs=2, batch_size=32, lr=1e-3, progress=False)
    assert history.epochs[-1].test_accuracy > 0.5 and history.epochs[-1].test_accuracy >= before - 0.05


def test_event_mode_equals_closed_form_where_valid_and_trains_latency(digits):
    """B1 layers in mode="event" run the exact event-driven neurons, with gradients through
    alpha and the threshold: equal to the closed form where every neuron fires after its
    inputs; with shrunken windows (lower latency) they fire early, and fine-tuning through
    the event-driven forward improves the true network."""
    x_train, y_train, x_test, y_test = digits
    relu = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10)).double()
    torch.manual_seed(2)
    net = ttfs_ext.convert(relu, x_train, input_range=(0, 1), windows="event")
    x = x_test[:64].double()
    closed = net(x)
    net.set_mode("event")
    torch.testing.assert_close(net(x), closed, rtol=0, atol=1e-9)
    g_event = torch.autograd.grad(net(x).square().sum(), list(net.parameters()))
    net.set_mode("closed")
    g_closed = torch.autograd.grad(net(x).square().sum(), list(net.parameters()))
    for a, b in zip(g_event, g_closed):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_latency_fine_tuning_through_event_mode(digits):
    """Quarter the windows of a trained network (a quarter of the latency): in the true
    dynamics some neurons now fire while inputs still arrive, and accuracy drops. Fine-tuning
    through the event-driven forward (exact gradients) recovers much of it, and the exact
    simulator agrees. (Half the latency costs this network only a point since the readout
    integrates from its t_start like every neuron, as simulate() does.)"""
    torch.manual_seed(4)
    net = small_fc(4, hidden=48)
    T.fit(net, digits, epochs=3, batch_size=32, lr=2e-3, windows=T.CalibratedWindows(), progress=False)
    closed = T.evaluate(net, digits[2], digits[3])["accuracy"]
    net.set_widths([w / 4 for w in net.widths])
    net.set_mode("event")
    before = T.evaluate(net, digits[2], digits[3])["accuracy"]
    sim_before = ttfs_ext.simulate(net, digits[2].double())
    assert sum(layer.early_spikes for layer in sim_before.layers) > 0 and before < closed - 0.02
    T.fit(net, digits, epochs=1, batch_size=32, lr=3e-4, progress=False)
    after = T.evaluate(net, digits[2], digits[3])["accuracy"]
    sim = ttfs_ext.simulate(net, digits[2].double())
    assert float((sim.logits.argmax(1) == digits[3]).double().mean()) == pytest.approx(after, abs=1e-12)
    assert after > before + 0.03


def test_checkpoints_name_no_class_of_the_library(digits, tmp_path):
    """A fit checkpoint holds tensors and plain data only: no pickled class of ttfs_ext whose
    module path could move (the files load with weights_only=True)."""
    import zipfile

    ckpt = tmp_path / "ckpt.pt"
    net = small_fc(4)
    T.fit(net, digits, epochs=1, batch_size=64, windows=T.CalibratedWindows(), progress=False,
          max_steps_per_epoch=2, checkpoint=ckpt, twin=T.relu_twin(copy.deepcopy(net)))
    with zipfile.ZipFile(ckpt) as z:
        pickled = b"".join(z.read(n) for n in z.namelist() if n.endswith(".pkl"))
    assert pickled and b"ttfs_ext" not in pickled
    assert set(T.load_checkpoint(ckpt)) >= {"model", "optimizer", "windows", "history"}
