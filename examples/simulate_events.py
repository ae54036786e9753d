"""Run a TTFS network event by event (ttfs_ext.simulate) and compare it with its closed form.

    python examples/simulate_events.py [--quick]
"""
import argparse

import torch

import ttfs_ext
from ttfs_ext import nn as tnn

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="a smaller batch")
args = parser.parse_args()

torch.manual_seed(0)
net = tnn.TTFSSequential(
    tnn.TTFSEncoder(low=0.0, high=1.0),
    tnn.TTFSConv2d(1, 8, 3, padding=1), tnn.TTFSMaxPool2d(2),
    torch.nn.Flatten(), tnn.TTFSLinear(8 * 14 * 14, 64), tnn.TTFSReadout(64, 10),
    widths=[4.0, 8.0],
).double()
images = torch.rand(4 if args.quick else 64, 1, 28, 28, dtype=torch.float64)

with torch.no_grad():
    closed = net(images)                        # the closed form: one op per layer
sim = ttfs_ext.simulate(net, images)            # every spike as an event, in time order
print(sim)                                      # per layer: window, spikes, early spikes, off the closed form
print(f"max |logit difference| event-driven vs closed form: {float((sim.logits - closed).abs().max()):.2e}")
first = sim.layers[0].spike_times[0].flatten()  # absolute spike times of one image's first layer
print(f"first layer, image 0: {int((first < sim.layers[0].t_max).sum())} of {first.numel()} neurons fired, "
      f"the first at t = {float(first.min()):.4f}")
