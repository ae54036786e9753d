"""The `ttfs train` and `ttfs evaluate` jobs.

    ttfs train                        # FC2 on Fashion-MNIST (Debian's dataset-fashion-mnist), SNN + ReLU twin
    ttfs train --model vgg16 --dataset fashion-mnist --epochs 1 --train-size 2000
    ttfs train --init runs/fashion-mnist-fc2/checkpoint.pt --noise 0.05 --epochs 1    # robust fine-tuning,
                                                      # into runs/fashion-mnist-fc2-noise-0.05
    ttfs train --init runs/fashion-mnist-fc2/checkpoint.pt --latency 0.5 --epochs 1   # half the latency
    ttfs evaluate runs/fashion-mnist-fc2/checkpoint.pt   # accuracy vs noise, bits and latency (CSV, JSON, PNG)

A run folder holds checkpoint.pt (written atomically every epoch; --resume continues it),
metrics.json (history, summary, versions) and the plots curves.png, spike_histograms.png and
raster.png. ttfs train never replaces a run it did not make in this invocation: a folder that
holds one is continued (--resume), replaced (--overwrite) or refused.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import copy
import csv
import io
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

import torch
from torch import nn

import ttfs_ext
from ttfs_ext import data as D
from ttfs_ext import nn as tnn
from ttfs_ext import plots
from ttfs_ext import train as T

from .args import (NONNEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, SEED, CommandError, bounded, bounded_list,
                   count, device_arg, new_folder)

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
    dataset = D.load_dataset(args.dataset, root=args.data_dir, download=args.download)  # errors say where to look
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


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2%}"


def _write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file and a rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- run folders: ttfs train never replaces work it did not make in this invocation ----------------------

TRAIN_FILES = ("checkpoint.pt", "metrics.json", "metrics.csv", "curves.png", "spike_histograms.png", "raster.png")
EVALUATE_FILES = ("evaluate.csv", "evaluate.json", "evaluate.png")
RUN_FILES = TRAIN_FILES + EVALUATE_FILES  # a run and what was derived from it: replaced together
# The options that define a run's trajectory. --resume takes them from the run's checkpoint (a value
# given on the command line that differs is an error); --init takes the network's (INIT_OPTIONS).
RUN_OPTIONS = ("dataset", "model", "dtype", "batch_size", "lr", "windows", "zeta", "no_twin", "init", "noise",
               "time_bits", "weight_bits", "latency", "train_size", "seed")
INIT_OPTIONS = ("dataset", "model", "dtype")
# What fit(resume=True) reads from a checkpoint.
RESUME_KEYS = ("epoch", "model", "optimizer", "twin", "twin_optimizer", "windows", "order_rng", "torch_rng",
               "history")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _adopt(args: argparse.Namespace, config: dict, options: tuple[str, ...], what: str) -> None:
    """Take `options` from a stored run configuration where the command line gave none (the
    parser leaves them None); a value given that differs is an error for --resume, and wins
    for --init."""
    conflicts = []
    for dest in options:
        if dest not in config:
            continue
        given = getattr(args, dest)
        if given is None:
            setattr(args, dest, config[dest])
        elif given != config[dest]:
            conflicts.append(f"{_flag(dest)} {given} (the run has {config[dest]})")
    if conflicts and what == "resume":
        raise CommandError(f"--resume continues the run as it was started; it differs in {'; '.join(conflicts)}. "
                           f"Leave these options out, or start a new run with another --out")


def _fill_defaults(args: argparse.Namespace) -> None:
    for dest, value in TRAIN_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


def _default_out(args: argparse.Namespace) -> Path:
    dataset, model = args.dataset or TRAIN_DEFAULTS["dataset"], args.model or TRAIN_DEFAULTS["model"]
    run = Path("runs") / f"{D.canonical_name(dataset)}-{model}"
    if args.init is None:
        return run
    # Fine-tuning: a folder next to the run it starts from, named after what is tuned.
    source = Path(args.init).parent
    base = source if source.name else run
    parts = [f"{_flag(d)[2:]}-{getattr(args, d):g}" for d in ("noise", "time_bits", "weight_bits", "latency")
             if getattr(args, d)]
    return base.parent / f"{base.name}-{'-'.join(parts) or 'finetune'}"


def _claim_run_folder(out: Path, args: argparse.Namespace) -> list[str]:
    """Refuses to replace a run this invocation did not make. Returns the old run's files that an
    --overwrite run replaces (after its first epoch: until then the old run stays whole)."""
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if args.resume:
        if not (out / "checkpoint.pt").is_file():
            raise CommandError(f"--resume: {out} holds no checkpoint.pt to continue (start the run without --resume)")
        return []
    if args.init is not None and _inside(Path(args.init), out):
        raise CommandError(f"--init {args.init} lies in the run folder {out}, which this run would overwrite; "
                           f"choose another --out (the default for --init is a new folder next to it)")
    if existing and not args.overwrite:
        raise CommandError(f"{out} already holds a run ({', '.join(existing)}); continue it with --resume, replace "
                           f"it with --overwrite, or choose another --out")
    return existing


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


@contextlib.contextmanager
def _run_lock(out: Path):
    """One ttfs train per run folder at a time: an exclusive lock on out/.ttfs-train.lock for the
    whole run, where the OS has fcntl. A POSIX record lock (lockf), not flock: it belongs to the
    process that took it, so the DataLoader workers it forks never hold it, and it dies with
    that process (a restarted rank finds it free at once). The file is removed at the end."""
    new_folder(out, "--out", lambda m: print(f"ttfs: {m}", file=sys.stderr))
    path = out / ".ttfs-train.lock"
    with open(path, "a") as f:
        if fcntl is not None:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                raise CommandError(f"{out} is in use by another ttfs train (it holds .ttfs-train.lock)") from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # still held: no other run can have taken it
                path.unlink()


def _load_run(path: Union[str, Path], keys: tuple[str, ...] = ("epoch", "model")) -> dict:
    """A checkpoint of ttfs train (or train.fit), loaded safely (train.load_checkpoint), with `keys`."""
    state = T.load_checkpoint(path)
    missing = [k for k in keys if k not in state]
    if missing:
        raise CommandError(f"{path} is not a checkpoint of ttfs train (it lacks {', '.join(missing)})")
    return state


def _load_weights(net: nn.Module, state: dict, what: str) -> None:
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, ValueError) as err:  # missing keys or shapes; the windows of another depth
        raise CommandError(f"{what}: {str(err).splitlines()[0]}") from None


def train_main(args: argparse.Namespace) -> int:
    from . import scale
    if scale.wants_scale(args):  # Places365, or any dataset under torchrun: the data-parallel loop
        return scale.train_main(args)
    if args.channels_last:
        raise CommandError("--channels-last is for the data-parallel loop (--dataset places365, or any dataset "
                           "under torchrun); the small datasets' networks train in NCHW")
    if args.resume and (args.init is not None or args.overwrite):
        raise CommandError("--resume continues a run; it cannot be combined with "
                           + ("--init (which starts a new one)" if args.init is not None else "--overwrite"))
    if args.dataset is not None:
        args.dataset = D.canonical_name(args.dataset)
    init_state = None
    if args.init is not None:
        init_state = _load_run(args.init)
        _adopt(args, (init_state.get("extra") or {}).get("config") or {}, INIT_OPTIONS, "init")
    if args.resume:
        out = Path(args.out) if args.out else _default_out(args)
        _claim_run_folder(out, args)
        state = _load_run(out / "checkpoint.pt", RESUME_KEYS)
        _adopt(args, (state.get("extra") or {}).get("config") or {}, RUN_OPTIONS, "resume")
        _fill_defaults(args)
        if args.epochs <= state["epoch"]:
            raise CommandError(f"--resume: the run in {out} has {state['epoch']} epochs already; ask for more with "
                               f"--epochs N > {state['epoch']}")
    else:
        _fill_defaults(args)
        out = Path(args.out) if args.out else _default_out(args)
        _claim_run_folder(out, args)
    device = device_arg(args.device)

    T.seed_everything(args.seed, args.deterministic)
    dataset = _load_data(args)
    dtype = DTYPES[args.dtype]
    net = build_model(args.model, dataset).to(device, dtype)
    if init_state is not None:
        _load_weights(net, init_state, f"--init {args.init} does not fit --model {args.model} on {args.dataset}")
    fine_tuning = args.init is not None  # also a resumed fine-tuning run: no twin, fixed windows
    if args.latency is not None:  # shrink the windows; train through the exact event-driven neurons
        net.set_widths([w * args.latency for w in net.widths])
        net.set_mode("event")
    if args.noise or args.time_bits or args.weight_bits:
        net.set_robustness(noise=args.noise, time_bits=args.time_bits, weight_bits=args.weight_bits)
    twin = None if (args.no_twin or fine_tuning) else T.relu_twin(copy.deepcopy(net))
    windows = T.FixedWindows() if (fine_tuning or args.latency is not None) else _window_rule(args)
    checkpoint = out / "checkpoint.pt"
    say = (lambda *a, **k: None) if args.json else print
    say(f"ttfs train: {args.model} on {dataset.summary()}\n  {count(args.epochs, 'epoch')}, batch {args.batch_size}, "
        f"Adam lr {args.lr}, windows {args.windows if windows.__class__ is not T.FixedWindows else 'fixed'}, "
        f"{args.dtype} on {device}{', with its ReLU twin side by side' if twin is not None else ''}; "
        f"run folder {out}{' (resumed)' if args.resume else ''}")
    first = [True]
    replaced: list[str] = []

    def on_epoch(m: T.EpochMetrics) -> None:
        if first[0]:  # the new run's first checkpoint is written: the old run's other files go now
            for name in replaced:
                if name != "checkpoint.pt":
                    (out / name).unlink(missing_ok=True)
        if not args.json:
            _print_epoch(m, twin is not None, first[0])
        first[0] = False

    start = time.perf_counter()
    config = {k: v for k, v in vars(args).items() if k not in ("func", "debug")}
    with _run_lock(out), warnings.catch_warnings():
        replaced = _claim_run_folder(out, args)  # again, now that no other ttfs train can start here
        warnings.simplefilter("default")
        history = T.fit(net, dataset, args.epochs, batch_size=args.batch_size, lr=args.lr, windows=windows,
                        twin=twin, seed=args.seed, checkpoint=checkpoint, resume=args.resume,
                        overwrite=args.overwrite, progress=not (args.no_progress or args.json), on_epoch=on_epoch,
                        checkpoint_extra={"config": config})
    last = history.epochs[-1]
    summary: dict[str, Any] = {"seconds": time.perf_counter() - start,
                               "snn_test_accuracy": last.test_accuracy, "relu_test_accuracy": last.twin_test_accuracy,
                               "spikes_per_neuron": last.spikes_per_neuron,
                               "spikes_per_neuron_layers": last.spikes_per_neuron_layers, "latency": last.latency,
                               "widths": last.widths, "min_margin": last.min_margin}
    if not args.no_plots:
        sample = (dataset.x_test if len(dataset.x_test) else dataset.x_train)[:512].to(device, dtype)
        net.set_robustness(None)
        summary["plots"] = [str(plots.plot_curves(history, out / "curves.png")),
                            str(plots.plot_spike_histograms(net, sample, out / "spike_histograms.png")),
                            str(plots.plot_raster(net, sample[:1], out / "raster.png"))]
    result = {"config": config, "dataset": dataset.summary(), "summary": summary, "history": history.as_dict(),
              "environment": _environment()}
    _write_atomic(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps({"config": config, "summary": summary}, indent=2))
    else:
        twin_part = f"   ReLU twin {_percent(last.twin_test_accuracy)}" if twin is not None else ""
        spikes = ("-" if last.spikes_per_neuron is None else
                  f"{last.spikes_per_neuron:.3f} (per layer "
                  f"{', '.join(f'{s:.3f}' for s in last.spikes_per_neuron_layers)})")
        print(f"\nsummary: SNN test accuracy {_percent(last.test_accuracy)}{twin_part}; spikes per neuron {spikes};"
              f" latency {last.latency:.4g} (input window [0, 1]); {summary['seconds']:.0f} s")
        print(f"wrote {out / 'checkpoint.pt'}, {out / 'metrics.json'}"
              + (f" and {', '.join(Path(p).name for p in summary.get('plots', []))}" if "plots" in summary else ""))
    return 0


# --- evaluation sweeps -------------------------------------------------------------------------------------

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
    state = _load_run(args.checkpoint)
    config = (state.get("extra") or {}).get("config")
    if not isinstance(config, dict) or not {"dataset", "model", "dtype"} <= set(config):
        raise CommandError(f"{args.checkpoint} has no run configuration (write it with ttfs train)")
    out = Path(args.out or Path(args.checkpoint).parent)
    existing = [name for name in EVALUATE_FILES if (out / name).exists()]
    if existing and not args.overwrite:
        raise CommandError(f"{out} already holds an evaluation ({', '.join(existing)}); replace it with --overwrite, "
                           f"or write elsewhere with --out")
    ns = argparse.Namespace(**{**config, "data_dir": args.data_dir or config.get("data_dir"),
                               "download": args.download, "test_size": args.test_size or config.get("test_size"),
                               "train_size": 1})
    dataset = _load_data(ns)
    dtype = DTYPES[config["dtype"]]
    net = build_model(config["model"], dataset).to(dtype)
    _load_weights(net, state, f"{args.checkpoint} does not fit its own configuration ({config['model']})")
    net.eval()
    x, y = dataset.x_test.to(dtype), dataset.y_test
    widths = net.widths
    rows: list[dict[str, Any]] = []
    say = (lambda *a, **k: None) if args.json else print

    def record(sweep: str, value: float, accuracy: float, images: int = len(x), **extra: Any) -> None:
        rows.append({"sweep": sweep, "value": value, "accuracy": accuracy, "images": images, **extra})
        say(f"  {sweep:<12} {value:>8g}   accuracy {accuracy:.4f}" +
            "".join(f"   {k} {v:.4g}" if isinstance(v, float) else f"   {k} {v}" for k, v in extra.items()))

    say(f"ttfs evaluate: {config['model']} on {dataset.name}, {count(len(x), 'test image')} of "
        f"{'x'.join(map(str, dataset.input_shape))} (from {dataset.source})")
    for sigma in args.noise:
        accs = []
        for repeat in range(args.repeats if sigma > 0 else 1):
            torch.manual_seed(repeat)
            net.set_robustness(noise=sigma)
            accs.append(_accuracy(net, x, y))
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        record("noise", sigma, mean, std=std, repeats=len(accs))
    for bits in args.time_bits:
        net.set_robustness(time_bits=bits)
        record("time_bits", bits, _accuracy(net, x, y))
    for bits in args.weight_bits:
        net.set_robustness(weight_bits=bits)
        record("weight_bits", bits, _accuracy(net, x, y))
    net.set_robustness(None)
    for fraction in args.latency:
        net.set_widths([w * fraction for w in widths])
        sim = ttfs_ext.simulate(net, x[:args.event_size])
        early = sum(layer.early_spikes for layer in sim.layers)
        accuracy = float((sim.logits.argmax(1).cpu() == y[:args.event_size]).double().mean())
        record("latency", fraction, accuracy, images=len(sim.logits), latency=net.latency, early_spikes=early,
               closed_form_accuracy=_accuracy(net, x[:args.event_size], y[:args.event_size]))
    net.set_widths(widths)

    new_folder(out, "--out", lambda m: print(f"ttfs evaluate: {m}", file=sys.stderr))
    table = io.StringIO()
    keys = sorted({k for r in rows for k in r}, key=lambda k: ("sweep", "value", "accuracy").index(k)
                  if k in ("sweep", "value", "accuracy") else 3)
    writer = csv.DictWriter(table, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(out / "evaluate.csv", table.getvalue())
    _write_atomic(out / "evaluate.json", json.dumps({"checkpoint": str(args.checkpoint), "config": config,
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

TRAIN_DEFAULTS: dict[str, Any] = {
    "dataset": "fashion-mnist", "model": "fc2", "epochs": 3, "batch_size": 32, "lr": 5e-4, "windows": "calibrated",
    "zeta": 0.5, "dtype": "float64", "device": "cpu", "no_twin": False, "out": None, "resume": False,
    "overwrite": False, "init": None, "noise": 0.0, "time_bits": None, "weight_bits": None, "latency": None,
    "train_size": None, "test_size": None, "data_dir": None, "download": False, "seed": 0, "deterministic": False,
    "no_plots": False, "no_progress": False, "json": False,
}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from . import scale
    p.add_argument("--dataset", choices=D.DATASETS + ("fashion_mnist", "fmnist", "places365"),
                   help="fashion-mnist (default), mnist, digits, cifar10, cifar100, places365 (trains at scale)")
    p.add_argument("--model", choices=tuple(dict.fromkeys(MODELS + scale.PLACES365_MODELS)),
                   help="fc2 (784-340-10, default), vgg16, vgg-small; for places365: vgg16 (torchvision's layout, "
                        "default), vgg16_bn, vgg-paper (the papers' VGG at 224x224), vgg-small")
    p.add_argument("--epochs", type=POSITIVE_INT, help="epochs (default 3; with --resume, the total)")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="batch size (default 32)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="Adam learning rate (default 5e-4)")
    p.add_argument("--windows", choices=("calibrated", "paper", "fixed"),
                   help="window rule: (1+zeta) x running max (default), the paper's 10x rule, or fixed")
    p.add_argument("--zeta", type=NONNEGATIVE_FLOAT, help="window margin of the calibrated rule (default 0.5)")
    p.add_argument("--dtype", choices=tuple(DTYPES),
                   help="float64 (default: SNN and ReLU twin agree to rounding, as in the papers) or float32")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--no-twin", action="store_true", help="do not train the ReLU twin side by side")
    p.add_argument("--out", help="run folder (default runs/<dataset>-<model>; with --init, a new folder next to the "
                                 "checkpoint's, named after the fine-tuning)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, exactly")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (its checkpoint, metrics and "
                                                            "plots) with a new one")
    p.add_argument("--init", help="start from this checkpoint's weights and windows (fine-tuning)")
    p.add_argument("--noise", type=NONNEGATIVE_FLOAT, help="fine-tune with Gaussian spike-time noise (std)")
    p.add_argument("--time-bits", type=POSITIVE_INT, help="fine-tune with spike times quantised to this many bits")
    p.add_argument("--weight-bits", type=POSITIVE_INT, help="fine-tune with weights quantised to this many bits")
    p.add_argument("--latency", type=POSITIVE_FLOAT,
                   help="fine-tune with all windows scaled by this factor (< 1: lower latency), through the exact "
                        "event-driven neurons")
    p.add_argument("--train-size", type=POSITIVE_INT, help="use only the first N training images")
    p.add_argument("--test-size", type=POSITIVE_INT, help="use only the first N test images")
    p.add_argument("--data-dir", help="folder with the dataset files, the only one searched (see ttfs_ext.data)")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    p.add_argument("--seed", type=SEED, help="seed of initialisation and data order (default 0)")
    p.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    scale.add_scale_arguments(p)
    # Every default None: ttfs train tells what the command line gave from what it left out
    # (--resume and --init take the latter from a checkpoint), then fills in TRAIN_DEFAULTS.
    p.set_defaults(**dict.fromkeys(TRAIN_DEFAULTS))


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint.pt of a ttfs train run")
    p.add_argument("--noise", type=bounded_list(float, 0.0), default=[0, 0.01, 0.02, 0.05, 0.1, 0.2],
                   help="spike-time noise levels (std), comma-separated")
    p.add_argument("--repeats", type=POSITIVE_INT, default=3, help="noise draws per level (default 3)")
    p.add_argument("--time-bits", type=bounded_list(int, 1), default=[1, 2, 3, 4, 6, 8], help="spike-time bit widths")
    p.add_argument("--weight-bits", type=bounded_list(int, 1), default=[2, 3, 4, 6, 8], help="weight bit widths")
    p.add_argument("--latency", type=bounded_list(float, 0.0, strict=True), default=[1, 0.75, 0.5, 0.25],
                   help="window scale factors, evaluated with the exact event-driven simulator")
    p.add_argument("--event-size", type=POSITIVE_INT, default=1000, help="test images for the event-driven sweep")
    p.add_argument("--test-size", type=POSITIVE_INT, help="use only the first N test images")
    p.add_argument("--data-dir", help="folder with the dataset files, the only one searched")
    p.add_argument("--download", action="store_true")
    p.add_argument("--out", help="output folder (default: the checkpoint's)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in the output folder")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
