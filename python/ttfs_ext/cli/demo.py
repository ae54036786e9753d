"""`ttfs convert`: train a small ReLU network on scikit-learn's bundled digits, convert it to
a TTFS network, and show that the spiking network is exact: accuracy of both, agreement,
largest logit difference, spikes per neuron, latency, and the event-driven check."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import ttfs_ext
from ttfs_ext import data
from .args import NONNEGATIVE_FLOAT, POSITIVE_INT, SEED, count


def load_digits(seed: int = 0, test_fraction: float = 0.2):
    """(x_train, y_train, x_test, y_test) of ttfs_ext.data.load_digits, or an exit message
    naming the missing package."""
    try:
        ds = data.load_digits(test_fraction, seed)
    except ImportError as err:
        raise SystemExit(f"ttfs convert: {err}") from err
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def build_model(kind: str) -> nn.Module:
    """mlp: 64-128-64-10 with a batch norm before a ReLU; cnn: a small VGG-like net with batch
    norms before and after ReLUs, 'same' and 'valid' padding and a max-pool."""
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1),
                             nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(32), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.1), nn.Linear(32 * 2 * 2, 10))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, quiet: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for idx in order.split(64):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if not quiet:
            print(f"  epoch {epoch + 1:>3}/{epochs}  loss {total / len(x):.4f}")
    model.eval()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).double().mean())


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits(args.seed)
    model = build_model(args.model)
    say = (lambda *a: None) if args.json else print
    say(f"training a ReLU {args.model} on digits ({len(x_train)} train / {len(x_test)} test images, "
        f"{count(args.epochs, 'epoch')})")
    start = time.perf_counter()
    train(model, x_train, y_train, args.epochs, args.seed, quiet=args.json)
    say(f"converting (mapping={args.mapping}, windows={args.windows}, zeta={args.zeta}) "
        f"with the training images as calibration data")
    net = ttfs_ext.convert(model, x_train, input_range=(0.0, 1.0), zeta=args.zeta, mapping=args.mapping,
                           windows=args.windows, dtype=torch.float64)  # the exactness check runs in float64
    say(str(net.conversion))
    with torch.no_grad():
        relu_logits = model.double()(x_test.double())
        ttfs_logits, report = net.report(x_test.double(), warn=False)
    check = ttfs_ext.agreement(model, net, x_test, event=True)
    sim = ttfs_ext.simulate(net, x_test)
    result = {
        "model": args.model, "mapping": args.mapping, "windows": args.windows, "zeta": args.zeta,
        "epochs": args.epochs, "seed": args.seed, "test_images": len(x_test),
        "relu_test_accuracy": accuracy(relu_logits, y_test),
        "ttfs_test_accuracy": accuracy(ttfs_logits, y_test),
        "event_test_accuracy": accuracy(sim.logits, y_test),
        "agreement": check.agreement, "max_logit_diff": check.max_logit_diff,
        "event_agreement": check.event_agreement, "event_max_logit_diff": check.event_max_logit_diff,
        "early_spikes_per_layer": check.early_spikes, "event_off_closed_form_per_layer": check.event_deviating,
        "spikes_per_neuron": report.spikes_per_neuron,
        "spikes_per_neuron_per_layer": [r.spikes_per_neuron for r in report.layers],
        "latency": net.latency, "seconds": time.perf_counter() - start,
    }
    if not args.json:
        print(f"\ntest set ({len(x_test)} images)")
        print(f"  accuracy   ReLU {result['relu_test_accuracy']:.2%}   TTFS {result['ttfs_test_accuracy']:.2%}   "
              f"TTFS event-driven {result['event_test_accuracy']:.2%}")
        print(f"  closed form: {check}".replace("\nevent-driven", "\n  event-driven"))
        print(f"  spikes per neuron {report.spikes_per_neuron:.3f} "
              f"(per layer {', '.join(f'{r.spikes_per_neuron:.3f}' for r in report.layers)}), "
              f"latency {net.latency:.4g} (input window [0, 1])")
        print("  event-driven simulation per layer:")
        print("    " + str(sim).replace("\n", "\n    "))
        exact = check.event_deviating is not None and not any(check.event_deviating)
        print(f"\n{'EXACT' if exact else 'CLOSED FORM EXACT; EVENT-DRIVEN DIFFERS'}: the TTFS network "
              f"{'reproduces' if exact else 'reproduces in closed form'} the ReLU network"
              + ("" if exact else "; early spikes in the true dynamics (try --windows event)"))
    else:
        print(json.dumps(result, indent=2))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn", help="ReLU network to train (default cnn)")
    parser.add_argument("--mapping", choices=("b1", "alpha1"), default="b1", help="TTFS mapping (default b1)")
    parser.add_argument("--windows", choices=("activation", "event"), default="event",
                        help="window rule: the papers' (1+zeta) x largest activation, or event-safe (default)")
    parser.add_argument("--zeta", type=NONNEGATIVE_FLOAT, default=0.5, help="window safety margin (default 0.5)")
    parser.add_argument("--epochs", type=POSITIVE_INT, default=15, help="training epochs (default 15)")
    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
