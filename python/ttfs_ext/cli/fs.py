"""`ttfs fs`: train a small CNN with ReLU or SiLU on the bundled digits (or Fashion-MNIST),
convert it to few-spikes neurons (ttfs_ext.fs.convert) and report ANN vs FS accuracy,
agreement, spikes per neuron, latency and throughput in time steps."""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from ttfs_ext import data, fs

from .args import POSITIVE_INT, SEED, CommandError, count, deprecated_alias


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--activation", choices=("relu", "silu"), default="relu", help="the CNN's activation")
    p.add_argument("--dataset", choices=("digits", "fashion-mnist"), default="digits",
                   help="digits: scikit-learn's bundled 8x8 digits; fashion-mnist: the IDX files (ttfs_ext.data)")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files, the only one searched "
                                      "(default: ttfs_ext.data's search path)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help="training epochs (default 15 digits, 2 fashion)")
    p.add_argument("--train-size", type=POSITIVE_INT, default=None, help="use only the first N training images")
    p.add_argument("--test-size", type=POSITIVE_INT, default=None, help="use only the first N test images")
    deprecated_alias(p, "--n-train", "--train-size")
    deprecated_alias(p, "--n-test", "--test-size")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also with --json)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def build_model(activation: str, in_shape: tuple[int, int, int], classes: int) -> nn.Module:
    act = nn.ReLU if activation == "relu" else nn.SiLU
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.BatchNorm2d(16), act(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), act(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (h // 4) * (w // 4), 64), act(), nn.Linear(64, classes))


def _logits(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    try:
        ds = data.load_dataset(args.dataset, root=args.data_dir)
    except (ImportError, FileNotFoundError) as err:
        raise CommandError(f"ttfs fs: {err}") from err
    if args.train_size or args.test_size:
        ds = data.subset(ds, args.train_size, args.test_size)
    epochs = args.epochs or (15 if args.dataset == "digits" else 2)
    model = build_model(args.activation, ds.input_shape, ds.classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    from ..train.loop import _progress
    for epoch in range(epochs):
        model.train()
        batches = torch.randperm(ds.n_train, generator=gen).split(64)
        for idx in _progress(batches, len(batches), f"training the ANN, epoch {epoch + 1}/{epochs}",
                             not (args.json or args.no_progress)):
            opt.zero_grad()
            F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx]).backward()
            opt.step()
    model.eval()
    train_s = time.perf_counter() - start
    net = fs.convert(model)
    net.eval()
    ann = _logits(model, ds.x_test)
    net.reset_stats()
    out = _logits(net, ds.x_test)
    stats = net.stats()
    result = {
        "activation": args.activation,
        "dataset": args.dataset,
        "epochs": epochs,
        "n_train": ds.n_train,
        "n_test": ds.n_test,
        "ann_accuracy": float((ann.argmax(1) == ds.y_test).double().mean()),
        "fs_accuracy": float((out.argmax(1) == ds.y_test).double().mean()),
        "agreement": float((ann.argmax(1) == out.argmax(1)).double().mean()),
        "max_logit_difference": float((ann - out).abs().max()),
        "spikes_per_neuron": stats["spikes_per_neuron"],
        "fs_layers": stats["fs_layers"],
        "fs_neurons_per_image": stats["fs_neurons_per_image"],
        "latency_steps": stats["latency_steps"],
        "throughput_steps_per_image": stats["throughput_steps_per_image"],
        "rate_coding_latency_steps": stats["rate_coding_latency_steps"],
        "layers": stats["layers"],
        "train_seconds": train_s,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.dataset}, {args.activation} CNN, {count(epochs, 'epoch')} ({train_s:.1f} s), {ds.n_test} test images")
    print(f"  ANN accuracy        {result['ann_accuracy']:.4f}")
    print(f"  FS accuracy         {result['fs_accuracy']:.4f}   agreement {result['agreement']:.4f}, "
          f"max |logit difference| {result['max_logit_difference']:.3g}")
    print(f"  spikes per neuron   {result['spikes_per_neuron']:.3f} over {stats['fs_neurons_per_image']} FS-neurons "
          f"per image in {stats['fs_layers']} layers")
    for layer in stats["layers"]:
        print(f"    {layer['name']:<6} {layer['activation']:<22} {layer['neurons_per_image']:>6} neurons  "
              f"{layer['spikes_per_neuron']:.3f} spikes/neuron")
    print(f"  latency             {stats['latency_steps']} time steps (rate coding at the same resolution: "
          f"{stats['rate_coding_latency_steps']})")
    print(f"  throughput          one image every {stats['throughput_steps_per_image']} steps (pipelined)")
    print(f"ttfs fs: FS accuracy {result['fs_accuracy']:.4f} (ANN {result['ann_accuracy']:.4f}), "
          f"{result['spikes_per_neuron']:.3f} spikes per neuron; nothing written (--json prints every number)")
    return 0
