"""The `ttfs train` and `ttfs evaluate` jobs.

    ttfs train                        # FC2 on Fashion-MNIST (Debian's dataset-fashion-mnist), SNN + ReLU twin
    ttfs train --model vgg16 --dataset fashion-mnist --epochs 1 --train-size 2000
    ttfs train --init runs/fashion-mnist-fc2/checkpoint.pt --noise 0.05 --epochs 1    # robust fine-tuning
    ttfs train --init runs/fashion-mnist-fc2/checkpoint.pt --latency 0.5 --epochs 1   # half the latency
    ttfs evaluate runs/fashion-mnist-fc2/checkpoint.pt   # accuracy vs noise, bits and latency (CSV, JSON, PNG)

A run folder holds checkpoint.pt (written atomically every epoch; --resume continues it),
metrics.json (history, summary, versions) and the plots curves.png, spike_histograms.png and
raster.png.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import platform
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

import ttfs_ext
from . import data as D
from . import nn as tnn
from . import plots
from . import train as T

MODELS = ("fc2", "vgg16", "vgg-small")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_model(name: str, dataset: D.Dataset) -> tnn.TTFSSequential:
    channels, size = dataset.x_train.shape[1], dataset.x_train.shape[2]
    if name == "fc2":
        return T.fc2(channels * size * size, 340, dataset.classes, input_shape=tuple(dataset.x_train.shape[1:]))
    if name == "vgg16":  # the papers' VGG: 16 weight layers for (Fashion-)MNIST, 15 for CIFAR
        config = T.VGG_CIFAR if channels == 3 else T.VGG_MNIST
        return T.vgg(config, channels, size, dataset.classes)
    if name == "vgg-small":  # a CPU-sized VGG-like net
        return T.vgg(([32, 32, "P", 64, 64, "P"], [128]), channels, size, dataset.classes)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def _window_rule(args: argparse.Namespace) -> T.FixedWindows:
    if args.windows == "paper":
        return T.PaperWindows()
    if args.windows == "calibrated":
        return T.CalibratedWindows(zeta=args.zeta)
    return T.FixedWindows()


def _load_data(args: argparse.Namespace) -> D.Dataset:
    try:
        dataset = D.load_dataset(args.dataset, root=args.data_dir, download=args.download)
    except FileNotFoundError as err:
        raise SystemExit(f"ttfs: {err}") from None
    return D.subset(dataset, args.train_size, args.test_size)


def _environment() -> dict[str, Any]:
    status = ttfs_ext.status()
    return {"ttfs_ext": ttfs_ext.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "threads": torch.get_num_threads(), "gpu": status["gpu"],
            "kernel_devices": status["kernel_devices"]}


def _print_epoch(m: T.EpochMetrics, twin: bool, header: bool) -> None:
    if header:
        cols = f"{'epoch':>5} {'SNN loss':>9} {'SNN acc':>8} {'test acc':>9}"
        if twin:
            cols += f" {'ReLU loss':>10} {'ReLU acc':>9} {'ReLU test':>10}"
        print(cols + f" {'spikes/neuron':>14} {'latency':>9} {'margin':>8} {'sec':>6}")
    row = f"{m.epoch:>5} {m.train_loss:>9.4f} {m.train_accuracy:>8.4f} {_fmt(m.test_accuracy, 9)}"
    if twin:
        row += f" {m.twin_train_loss:>10.4f} {m.twin_train_accuracy:>9.4f} {_fmt(m.twin_test_accuracy, 10)}"
    print(row + f" {_fmt(m.spikes_per_neuron, 14)} {m.latency:>9.4g} {_fmt(m.min_margin, 8, '.3g')} "
                f"{m.seconds:>6.1f}", flush=True)


def _fmt(value: Optional[float], width: int, spec: str = ".4f") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def train_main(args: argparse.Namespace) -> int:
    T.seed_everything(args.seed, args.deterministic)
    dataset = _load_data(args)
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    out = Path(args.out or f"runs/{D.canonical_name(args.dataset)}-{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    net = build_model(args.model, dataset).to(device, dtype)
    fine_tuning = args.init is not None
    if fine_tuning:
        state = T.load_checkpoint(args.init)
        net.load_state_dict(state["model"])
    if args.latency is not None:  # shrink the windows; train through the exact event-driven neurons
        net.set_widths([w * args.latency for w in net.widths])
        net.set_mode("event")
    if args.noise or args.time_bits or args.weight_bits:
        net.set_robustness(noise=args.noise, time_bits=args.time_bits, weight_bits=args.weight_bits)
    twin = None if (args.no_twin or fine_tuning) else T.relu_twin(copy.deepcopy(net))
    windows = T.FixedWindows() if (fine_tuning or args.latency is not None) else _window_rule(args)
    say = (lambda *a, **k: None) if args.json else print
    say(f"ttfs train: {args.model} on {dataset.summary()}\n  {args.epochs} epochs, batch {args.batch_size}, "
        f"Adam lr {args.lr}, windows {args.windows if windows.__class__ is not T.FixedWindows else 'fixed'}, "
        f"{args.dtype} on {device}{', with its ReLU twin side by side' if twin is not None else ''}; "
        f"run folder {out}")
    first = [True]

    def on_epoch(m: T.EpochMetrics) -> None:
        if not args.json:
            _print_epoch(m, twin is not None, first[0])
            first[0] = False

    start = time.perf_counter()
    config = {k: v for k, v in vars(args).items() if k != "func"}
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        history = T.fit(net, dataset, args.epochs, batch_size=args.batch_size, lr=args.lr, windows=windows,
                        twin=twin, seed=args.seed, checkpoint=checkpoint, resume=args.resume,
                        progress=not (args.no_progress or args.json), on_epoch=on_epoch,
                        checkpoint_extra={"config": config})
    last = history.epochs[-1] if history.epochs else None
    summary: dict[str, Any] = {"seconds": time.perf_counter() - start}
    if last is not None:
        summary.update(snn_test_accuracy=last.test_accuracy, relu_test_accuracy=last.twin_test_accuracy,
                       spikes_per_neuron=last.spikes_per_neuron, spikes_per_neuron_layers=last.spikes_per_neuron_layers,
                       latency=last.latency, widths=last.widths, min_margin=last.min_margin)
    if not args.no_plots and last is not None:
        sample = dataset.x_test[:512].to(device, dtype)
        net.set_robustness(None)
        summary["plots"] = [str(plots.plot_curves(history, out / "curves.png")),
                            str(plots.plot_spike_histograms(net, sample, out / "spike_histograms.png")),
                            str(plots.plot_raster(net, sample[:1], out / "raster.png"))]
    result = {"config": config, "dataset": dataset.summary(), "summary": summary, "history": history.as_dict(),
              "environment": _environment()}
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps({"config": config, "summary": summary}, indent=2))
    elif last is not None:
        twin_part = (f"   ReLU twin {last.twin_test_accuracy:.2%}" if last.twin_test_accuracy is not None else "")
        print(f"\nsummary: SNN test accuracy {last.test_accuracy:.2%}{twin_part}; spikes per neuron "
              f"{last.spikes_per_neuron:.3f} (per layer {', '.join(f'{s:.3f}' for s in last.spikes_per_neuron_layers)});"
              f" latency {last.latency:.4g} (input window [0, 1]); {summary['seconds']:.0f} s")
        print(f"wrote {out / 'checkpoint.pt'}, {out / 'metrics.json'}"
              + (f" and {', '.join(Path(p).name for p in summary.get('plots', []))}" if "plots" in summary else ""))
    return 0


# --- evaluation sweeps -------------------------------------------------------------------------------------

def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


@torch.no_grad()
def _accuracy(net: tnn.TTFSSequential, x: torch.Tensor, y: torch.Tensor, event: bool = False,
              batch_size: int = 1000) -> float:
    correct = 0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        out = ttfs_ext.simulate(net, xb).logits if event else net(xb)
        correct += int((out.argmax(1).cpu() == y[start:start + batch_size]).sum())
    return correct / len(x)


def evaluate_main(args: argparse.Namespace) -> int:
    state = T.load_checkpoint(args.checkpoint)
    config = (state.get("extra") or {}).get("config")
    if config is None:
        raise SystemExit(f"ttfs evaluate: {args.checkpoint} has no run configuration (write it with ttfs train)")
    ns = argparse.Namespace(**{**config, "data_dir": args.data_dir or config.get("data_dir"),
                               "download": args.download, "test_size": args.test_size or config.get("test_size"),
                               "train_size": 1})
    dataset = _load_data(ns)
    dtype = DTYPES[config["dtype"]]
    net = build_model(config["model"], dataset).to(dtype)
    net.load_state_dict(state["model"])
    net.eval()
    x, y = dataset.x_test.to(dtype), dataset.y_test
    widths = net.widths
    rows: list[dict[str, Any]] = []
    say = (lambda *a, **k: None) if args.json else print

    def record(sweep: str, value: float, accuracy: float, **extra: Any) -> None:
        rows.append({"sweep": sweep, "value": value, "accuracy": accuracy, **extra})
        say(f"  {sweep:<12} {value:>8g}   accuracy {accuracy:.4f}" +
            "".join(f"   {k} {v:.4g}" if isinstance(v, float) else f"   {k} {v}" for k, v in extra.items()))

    say(f"ttfs evaluate: {config['model']} on {dataset.summary()} ({len(x)} test images)")
    for sigma in _floats(args.noise):
        accs = []
        for repeat in range(args.repeats if sigma > 0 else 1):
            torch.manual_seed(repeat)
            net.set_robustness(noise=sigma)
            accs.append(_accuracy(net, x, y))
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        record("noise", sigma, mean, std=std, repeats=len(accs))
    for bits in _ints(args.time_bits):
        net.set_robustness(time_bits=bits)
        record("time_bits", bits, _accuracy(net, x, y))
    for bits in _ints(args.weight_bits):
        net.set_robustness(weight_bits=bits)
        record("weight_bits", bits, _accuracy(net, x, y))
    net.set_robustness(None)
    for fraction in _floats(args.latency):
        net.set_widths([w * fraction for w in widths])
        sim = ttfs_ext.simulate(net, x[:args.event_size])
        early = sum(layer.early_spikes for layer in sim.layers)
        accuracy = float((sim.logits.argmax(1).cpu() == y[:args.event_size]).double().mean())
        record("latency", fraction, accuracy, latency=net.latency, early_spikes=early,
               closed_form_accuracy=_accuracy(net, x[:args.event_size], y[:args.event_size]))
    net.set_widths(widths)

    out = Path(args.out or Path(args.checkpoint).parent)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "evaluate.csv", "w", newline="") as f:
        keys = sorted({k for r in rows for k in r}, key=lambda k: ("sweep", "value", "accuracy").index(k)
                      if k in ("sweep", "value", "accuracy") else 3)
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    (out / "evaluate.json").write_text(json.dumps({"checkpoint": str(args.checkpoint), "config": config,
                                                   "rows": rows, "environment": _environment()}, indent=2) + "\n")
    files = [out / "evaluate.csv", out / "evaluate.json"]
    if rows and not args.no_plots:
        files.append(plots.plot_sweep(rows, out / "evaluate.png"))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"wrote {', '.join(str(p) for p in files)}")
    return 0


# --- arguments ------------------------------------------------------------------------------------------------

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (default), mnist, digits, cifar10, cifar100")
    p.add_argument("--model", choices=MODELS, default="fc2", help="fc2 (784-340-10, default), vgg16, vgg-small")
    p.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    p.add_argument("--windows", choices=("calibrated", "paper", "fixed"), default="calibrated",
                   help="window rule: (1+zeta) x running max (default), the paper's 10x rule, or fixed")
    p.add_argument("--zeta", type=float, default=0.5, help="window margin of the calibrated rule (default 0.5)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float64",
                   help="float64 (default: SNN and ReLU twin agree to rounding, as in the papers) or float32")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--no-twin", action="store_true", help="do not train the ReLU twin side by side")
    p.add_argument("--out", help="run folder (default runs/<dataset>-<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run folder's checkpoint exactly")
    p.add_argument("--init", help="start from this checkpoint's weights and windows (fine-tuning)")
    p.add_argument("--noise", type=float, default=0.0, help="fine-tune with Gaussian spike-time noise (std)")
    p.add_argument("--time-bits", type=int, help="fine-tune with spike times quantised to this many bits")
    p.add_argument("--weight-bits", type=int, help="fine-tune with weights quantised to this many bits")
    p.add_argument("--latency", type=float,
                   help="fine-tune with all windows scaled by this factor (< 1: lower latency), through the exact "
                        "event-driven neurons")
    p.add_argument("--train-size", type=int, help="use only the first N training images")
    p.add_argument("--test-size", type=int, help="use only the first N test images")
    p.add_argument("--data-dir", help="folder with the dataset files (see ttfs_ext.data)")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order (default 0)")
    p.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint.pt of a ttfs train run")
    p.add_argument("--noise", default="0,0.01,0.02,0.05,0.1,0.2", help="spike-time noise levels (std)")
    p.add_argument("--repeats", type=int, default=3, help="noise draws per level (default 3)")
    p.add_argument("--time-bits", default="1,2,3,4,6,8", help="spike-time bit widths")
    p.add_argument("--weight-bits", default="2,3,4,6,8", help="weight bit widths")
    p.add_argument("--latency", default="1,0.75,0.5,0.25",
                   help="window scale factors, evaluated with the exact event-driven simulator")
    p.add_argument("--event-size", type=int, default=1000, help="test images for the event-driven sweep")
    p.add_argument("--test-size", type=int, help="use only the first N test images")
    p.add_argument("--data-dir", help="folder with the dataset files")
    p.add_argument("--download", action="store_true")
    p.add_argument("--out", help="output folder (default: the checkpoint's)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
