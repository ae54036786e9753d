"""Train a small ReLU network on scikit-learn's digits, convert it to an exact TTFS network and
check it, in closed form and event by event.

    python examples/convert_relu.py [--quick]
"""
import argparse

import torch
import torch.nn.functional as F

import ttfs_ext
from ttfs_ext import data

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="one epoch on fewer images")
args = parser.parse_args()

torch.manual_seed(0)
ds = data.load_digits()
if args.quick:
    ds = data.subset(ds, n_train=256, n_test=128)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
for epoch in range(1 if args.quick else 10):
    for xb, yb in data.iterate_batches(ds.x_train, ds.y_train, 64, generator=torch.Generator().manual_seed(epoch)):
        optimizer.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        optimizer.step()
model.eval()

# The training images calibrate the windows; "event" windows keep every spike inside its window.
net = ttfs_ext.convert(model, ds.x_train, input_range=(0.0, 1.0), windows="event")
print(net.conversion)
check = ttfs_ext.agreement(model, net, ds.x_test, event=True)
print(check)
