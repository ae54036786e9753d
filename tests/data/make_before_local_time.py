"""Writes before_local_time.pt: state_dicts, inputs and outputs of networks made by ttfs_ext
before local time (commit 2d42b26, where every network carried absolute times), for
tests/test_nn.py::test_state_dicts_from_before_local_time_load. Run with that version of the
package importable:

    git worktree add /tmp/old 2d42b26
    pip install --no-build-isolation --no-deps --target /tmp/oldpkg /tmp/old
    PYTHONPATH=/tmp/oldpkg python tests/data/make_before_local_time.py
"""
from pathlib import Path

import torch
from torch import nn

import ttfs_ext
from ttfs_ext import nn as tnn


def hand_built() -> tnn.TTFSSequential:
    torch.manual_seed(7)
    net = tnn.TTFSSequential(
        tnn.TTFSEncoder(), tnn.TTFSConv2d(1, 4, 3, padding=1), tnn.TTFSMaxPool2d(2),
        tnn.TTFSConv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.Flatten(), tnn.TTFSLinear(24, 12),
        tnn.TTFSReadout(12, 5), widths=[2.0, 3.5, 1.25]).double()
    net[3].bias = nn.Parameter(0.2 * torch.randn(6, 2, 2, dtype=torch.float64))  # per position
    return net


def relu_model() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3)).double().eval()


def record(net: nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        sim = ttfs_ext.simulate(net, x)
        return {"state_dict": net.state_dict(), "logits": net(x), "event_logits": sim.logits,
                "spike_times": [layer.spike_times for layer in sim.layers]}


if __name__ == "__main__":
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model = relu_model()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2), model[1].running_var.uniform_(0.5, 2.0)
    out = {"version": ttfs_ext.__version__, "x": x, "model": model.state_dict(), "hand_built": record(hand_built(), x)}
    for mapping in ("b1", "alpha1"):
        out[mapping] = record(ttfs_ext.convert(model, x, input_range=(0.0, 1.0), mapping=mapping), x)
    torch.save(out, Path(__file__).with_name("before_local_time.pt"))
    print("wrote", Path(__file__).with_name("before_local_time.pt"))
