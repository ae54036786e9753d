"""`ttfs train` at scale (Places365, or any dataset under torchrun) and `ttfs validate`.

    torchrun --nproc-per-node 8 -m ttfs_ext train --dataset places365 --data-dir /data/places365 \
        --model vgg16 --relu-checkpoint vgg16_places365.pth --precision bf16 --channels-last --epochs 10
    torchrun --nproc-per-node 8 -m ttfs_ext validate --dataset places365 --data-dir /data/places365 \
        --checkpoint runs/places365-vgg16/checkpoint.pt

One process per GPU (nccl), or per CPU worker (gloo); without torchrun, one process. Rank 0 owns
the run folder (the lock, checkpoint.pt, metrics.json, metrics.csv, TensorBoard events when
tensorboard is installed, curves.png), prints and shows the progress bar. A run that torchrun
restarts (--max-restarts) continues from its latest checkpoint by itself.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from ttfs_ext import data as D
from ttfs_ext import nn as tnn
from ttfs_ext import plots
from ttfs_ext import train as T
from ttfs_ext.train import distributed as dd

from . import jobs
from .args import NONNEGATIVE_FLOAT, POSITIVE_INT, CommandError, bounded, device_arg, report_file

PLACES365_MODELS = ("vgg16", "vgg16_bn", "vgg-paper", "vgg-small")
# Options of `ttfs train` that only the one-process in-memory path has.
_IN_MEMORY_ONLY = ("noise", "time_bits", "weight_bits", "latency", "init", "test_size", "download")
SCALE_DEFAULTS: dict[str, Any] = {
    "model": "vgg16", "epochs": 1, "batch_size": 256, "lr": None, "optimizer": "sgd", "momentum": 0.9,
    "weight_decay": 1e-4, "schedule": "cosine", "warmup_epochs": 0.0, "accumulate": 1, "precision": "fp32",
    "dtype": "float32", "zeta": 0.5, "workers": 4, "checkpoint_every": 1000,
    "preset": "torchvision", "image_size": 224, "split": "train-standard", "decoder": "pil",
    "calibration_images": 64, "eval_batch_size": 64, "device": "cpu", "seed": 0, "large": False,
    "channels_last": False, "compile": False}
# What defines a run's trajectory: --resume takes these from the checkpoint (a different value is an error).
SCALE_RUN_OPTIONS = ("dataset", "model", "dtype", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
                     "schedule", "warmup_epochs", "accumulate", "precision", "windows", "zeta", "preset", "image_size",
                     "split", "large", "relu_checkpoint", "train_size", "seed", "max_steps_per_epoch")


def add_scale_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("at scale (--dataset places365, or any dataset under torchrun)")
    g.add_argument("--relu-checkpoint", help="a ReLU VGG16/VGG16-BN checkpoint in torchvision's layout (e.g. a "
                                             "Places365 vgg16): converted exactly to TTFS, then fine-tuned")
    g.add_argument("--precision", choices=("fp32", "bf16"), help="bf16: bfloat16 autocast (spike times stay "
                                                                 "float32; default fp32)")
    g.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory format")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--accumulate", type=POSITIVE_INT, help="micro-batches per optimizer step (default 1)")
    g.add_argument("--optimizer", choices=("sgd", "adam"), help="default sgd (momentum 0.9)")
    g.add_argument("--momentum", type=NONNEGATIVE_FLOAT, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=NONNEGATIVE_FLOAT, help="default 1e-4")
    g.add_argument("--schedule", choices=("cosine", "step", "constant"),
                   help="learning rate per step after warm-up (default cosine; step: x0.1 every 30 epochs)")
    g.add_argument("--warmup-epochs", type=NONNEGATIVE_FLOAT, help="linear warm-up (default 0)")
    g.add_argument("--workers", type=bounded(int, 0), help="data loader processes per rank (default 4)")
    g.add_argument("--checkpoint-every", type=bounded(int, 0),
                   help="also checkpoint every N optimizer steps (default 1000; 0: after every epoch only)")
    g.add_argument("--preset", choices=("torchvision", "caffe"), help="preprocessing (default torchvision)")
    g.add_argument("--image-size", type=POSITIVE_INT, help="crop size (default 224)")
    g.add_argument("--split", choices=("train-standard", "train-challenge"), help="Places365 training split")
    g.add_argument("--large", action="store_true", default=None, help="high-resolution images (default 256x256)")
    g.add_argument("--decoder", choices=("pil", "torchvision"), help="JPEG decoder of the loader (default pil)")
    g.add_argument("--calibration-images", type=POSITIVE_INT, help="images that calibrate the converted windows "
                                                                   "(default 64)")
    g.add_argument("--max-steps-per-epoch", type=POSITIVE_INT, help="stop each epoch after N optimizer steps")
    g.add_argument("--val-size", type=POSITIVE_INT, help="validate on the first N validation images")
    g.add_argument("--eval-batch-size", type=POSITIVE_INT, help="per rank (default 64)")


def _dataset_name(name: Optional[str]) -> str:
    return "places365" if (name or "").lower() == "places365" else D.canonical_name(name or "fashion-mnist")


def wants_scale(args: argparse.Namespace) -> bool:
    return (args.dataset or "").lower() == "places365" or dd.in_torchrun()


# --- data and model ------------------------------------------------------------------------------------

class _First(torch.utils.data.Dataset):
    """The first n samples of a keyed dataset (keys pass through unchanged)."""

    def __init__(self, dataset, n: Optional[int]) -> None:
        self.dataset, self.n = dataset, len(dataset) if n is None else min(n, len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        return self.dataset[key]


def _places365(args: argparse.Namespace):
    from ttfs_ext.data import places365 as P
    if args.data_dir is None:
        raise CommandError("--dataset places365 needs --data-dir (the folder with the file lists and the image folders"
                           " of http://places2.csail.mit.edu/download.html)")
    common = dict(small=not args.large, decoder=args.decoder)
    train = P.Places365(args.data_dir, split=args.split, transform=P.preset(args.preset, True, args.image_size),
                        **common)
    val = P.Places365(args.data_dir, split="val", transform=P.preset(args.preset, False, args.image_size), **common)
    calib = P.Places365(args.data_dir, split=args.split, transform=P.preset(args.preset, False, args.image_size),
                        **common)
    return _First(train, args.train_size), _First(val, args.val_size), calib, len(train.classes), train.collate


def _in_memory(args: argparse.Namespace):
    dataset = D.subset(D.load_dataset(args.dataset, root=args.data_dir), args.train_size, args.val_size)
    train = dd.KeyedTensorDataset(dataset.x_train, dataset.y_train)
    val = dd.KeyedTensorDataset(dataset.x_test, dataset.y_test)
    return train, val, train, dataset, dd._collate


def _calibration(dataset, n: int, collate) -> torch.Tensor:
    """n images spread evenly over the dataset, in evaluation preprocessing."""
    picks = torch.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().long().unique().tolist()
    x, _, _ = collate([dataset[i] for i in picks])
    return x


def _build(args: argparse.Namespace, ctx: dd.Context, state: Optional[dict] = None):
    """The network, the data and its collate. With `state` (a run's checkpoint) the run's network
    without converting anything; with --relu-checkpoint rank 0 converts it and the other ranks
    take rank 0's network."""
    dtype = jobs.DTYPES[args.dtype]
    if args.dataset == "places365":
        train, val, calib_set, classes, collate = _places365(args)
        from ttfs_ext.train import vgg16 as V
        input_range = train.dataset.transform.input_range  # the encoder spans what the preset outputs
        try:  # an --image-size the model's pooling cannot take: one line, not a traceback
            with torch.device("meta"):  # the structure only: no weights allocated
                V.ttfs_skeleton(args.model, classes, args.image_size, input_range)
        except ValueError as err:
            raise CommandError(f"--image-size {args.image_size}: {err}") from None
        if state is not None or args.relu_checkpoint is not None:
            net = V.ttfs_skeleton(args.model, classes, args.image_size, input_range)
            if state is None:  # convert exactly, then fine-tune (the papers' recipe)
                converted = None
                if ctx.is_main:
                    calibration = _calibration(calib_set, args.calibration_images, collate)
                    converted, _ = V.build_places365_model(args.model, classes, args.image_size, args.relu_checkpoint,
                                                           calibration.double(), input_range=input_range)
                    converted = converted.state_dict()
                state = {"model": dd._broadcast_object(converted)}
            net = V.load_ttfs_state(net, state["model"])
        else:
            net, _ = V.build_places365_model(args.model, classes, args.image_size, input_range=input_range)
        summary = f"Places365 ({args.split}, {len(train)} training and {len(val)} validation images, {classes} classes)"
    else:
        if args.relu_checkpoint:
            raise CommandError("--relu-checkpoint is for --dataset places365")
        train, val, _, dataset, collate = _in_memory(args)
        net = jobs.build_model(args.model, dataset)
        if state is not None:
            jobs._load_weights(net, state, "the run's checkpoint")
        summary = dataset.summary()
    net = net.to(ctx.device, dtype)
    net.set_widths(dd._broadcast_object(list(net.widths)))  # DDP broadcasts parameters, not the windows
    return net, train, val, collate, summary


def _optimizer(args: argparse.Namespace, net: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    if args.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)


def _base_lr(args: argparse.Namespace) -> float:
    """The learning rate at a global batch of 256 (scaled linearly with the global batch)."""
    if args.lr is not None:
        return args.lr
    fine_tuning = args.relu_checkpoint is not None
    return {"sgd": 1e-3 if fine_tuning else 1e-2, "adam": 1e-4 if fine_tuning else 5e-4}[args.optimizer]


# --- the run folder (rank 0) ---------------------------------------------------------------------------

def _decide(args: argparse.Namespace, out: Path) -> dict:
    """Rank 0: start, resume or refuse. A worker group that torchrun restarted resumes the checkpoint
    its own run wrote (same torchrun run id), whatever the command line says."""
    checkpoint = out / "checkpoint.pt"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if dd.restart_count() > 0 and checkpoint.is_file():
        state = jobs._load_run(checkpoint, ("epoch", "model"))
        extra = state.get("extra") or {}
        if run_id is not None and extra.get("run_id") == run_id:
            return {"resume": True, "replaced": [], "config": extra.get("config") or {}, "restarted": True}
    if args.resume and args.overwrite:
        raise CommandError("--resume continues a run; it cannot be combined with --overwrite")
    replaced = jobs._claim_run_folder(out, args)
    config = {}
    if args.resume:
        state = jobs._load_run(checkpoint, ("epoch", "step", "model", "rng", "running"))
        config = (state.get("extra") or {}).get("config") or {}
    return {"resume": args.resume, "replaced": replaced, "config": config, "restarted": False}


def _adopt_config(args: argparse.Namespace, config: dict) -> None:
    conflicts = []
    for dest in SCALE_RUN_OPTIONS:
        if dest in config:
            given = getattr(args, dest, None)
            if given is None:
                setattr(args, dest, config[dest])
            elif given != config[dest]:
                conflicts.append(f"{jobs._flag(dest)} {given} (the run has {config[dest]})")
    if conflicts:
        raise CommandError(f"--resume continues the run as it was started; it differs in {'; '.join(conflicts)}")


class _Writers:
    """Rank 0's outputs after every epoch: metrics.json, metrics.csv, TensorBoard scalars (when
    tensorboard is installed) and, at the end, curves.png."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.out, self.enabled, self.tb = out, enabled, None
        if enabled:
            with contextlib.suppress(ImportError, ModuleNotFoundError):
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tensorboard"))

    def epoch(self, history: list[dict], result: dict) -> None:
        if not self.enabled:
            return
        jobs._write_atomic(self.out / "metrics.json", json.dumps(result, indent=2, default=str) + "\n")
        rows = [_flat(r) for r in history]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
        jobs._write_atomic(self.out / "metrics.csv", buf.getvalue())
        if self.tb is not None:
            for key, value in _flat(history[-1]).items():
                if isinstance(value, (int, float)) and key != "epoch" and value is not None and math.isfinite(value):
                    self.tb.add_scalar(key.replace("val_", "val/"), value, history[-1]["epoch"])
            self.tb.flush()

    def close(self, history: list[dict]) -> list[str]:
        if self.tb is not None:
            self.tb.close()
        if not (self.enabled and history):
            return []
        epochs = [T.EpochMetrics(r["epoch"], r["loss"], r["top1"], (r.get("val") or {}).get("loss"),
                                 (r.get("val") or {}).get("top1"),
                                 twin_test_loss=(r.get("val") or {}).get("relu_loss"),
                                 twin_test_accuracy=(r.get("val") or {}).get("relu_top1")) for r in history]
        return [str(plots.plot_curves(T.History(epochs), self.out / "curves.png"))]


def _flat(record: dict) -> dict:
    row = {k: v for k, v in record.items() if k not in ("val", "widths", "spikes_per_neuron_layers")}
    for k, v in (record.get("val") or {}).items():
        if k != "spikes_per_neuron_layers":
            row[f"val_{k}"] = v
    return row


def _print_epoch(r: dict, header: bool) -> None:
    v = r.get("val") or {}
    if header:
        print(f"{'epoch':>5} {'loss':>8} {'top1':>7} {'top5':>7} {'val top1':>9} {'val top5':>9} {'ReLU top1':>10} "
              f"{'agree':>7} {'spikes/n':>9} {'latency':>8} {'img/s':>9} {'unread':>7}")
    f = lambda value, width, spec=".4f": jobs._fmt(value, width, spec)  # noqa: E731
    print(f"{r['epoch']:>5} {r['loss']:>8.4f} {r['top1']:>7.4f} {r['top5']:>7.4f} {f(v.get('top1'), 9)} "
          f"{f(v.get('top5'), 9)} {f(v.get('relu_top1'), 10)} {f(v.get('agreement'), 7)} "
          f"{f(v.get('spikes_per_neuron'), 9)} {r['latency']:>8.4g} {f(r['images_per_s'], 9, '.1f')} "
          f"{r['unreadable'] + v.get('unreadable', 0):>7}", flush=True)


# --- the commands --------------------------------------------------------------------------------------

def train_main(args: argparse.Namespace) -> int:
    args.dataset = _dataset_name(args.dataset)
    if args.model is None:
        args.model = "vgg16" if args.dataset == "places365" else "fc2"
    given = [jobs._flag(d) for d in _IN_MEMORY_ONLY if getattr(args, d, None) not in (None, False, 0, 0.0)]
    if given:
        raise CommandError(f"{', '.join(given)}: not available at scale (--dataset places365 or torchrun) yet; "
                           f"train on one process with another dataset")
    ctx = dd.init_distributed(device_arg(args.device or SCALE_DEFAULTS["device"]))
    try:
        return _train(args, ctx)
    finally:
        dd.shutdown()


def _train(args: argparse.Namespace, ctx: dd.Context) -> int:
    out = Path(args.out) if args.out else Path("runs") / f"{args.dataset}-{args.model}"
    decision: Any = None
    lock = contextlib.ExitStack()
    if ctx.is_main:
        try:
            lock.enter_context(jobs._run_lock(out))
            decision = _decide(args, out)
        except (CommandError, OSError, ValueError) as err:
            decision = {"error": str(err)}
    decision = dd._broadcast_object(decision)
    with lock:
        if "error" in decision:
            raise CommandError(decision["error"])
        if decision["resume"]:
            _adopt_config(args, decision["config"])
        for dest, value in SCALE_DEFAULTS.items():
            if getattr(args, dest, None) is None:
                setattr(args, dest, value)
        if args.windows is None:  # a converted network keeps its calibrated windows; one from scratch follows its data
            args.windows = "fixed" if args.relu_checkpoint else "calibrated"
        return _run(args, ctx, out, decision)


def _run(args: argparse.Namespace, ctx: dd.Context, out: Path, decision: dict) -> int:
    say = print if (ctx.is_main and not args.json) else (lambda *a, **k: None)
    if args.batch_size % (ctx.world_size * args.accumulate):
        raise CommandError(f"--batch-size {args.batch_size} (the global batch) must be a multiple of processes x "
                           f"--accumulate ({ctx.world_size} x {args.accumulate})")
    resume_state = T.load_checkpoint(out / "checkpoint.pt") if decision["resume"] else None
    if resume_state is not None and resume_state["epoch"] >= args.epochs:
        raise CommandError(f"--resume: the run in {out} has {resume_state['epoch']} epochs already; ask for more "
                           f"with --epochs N > {resume_state['epoch']}")
    T.seed_everything(args.seed, args.deterministic)  # the same initial network on every rank
    net, train_set, val_set, collate, summary = _build(args, ctx, resume_state)
    torch.manual_seed(dd.sample_seed(args.seed, 0, 1 + ctx.rank))  # each rank its own dropout draws
    lr = _base_lr(args) * args.batch_size / 256
    optimizer = _optimizer(args, net, lr)
    steps = len(train_set) // args.batch_size
    if args.max_steps_per_epoch:
        steps = min(steps, args.max_steps_per_epoch)
    if steps == 0:
        raise CommandError(f"--batch-size {args.batch_size} exceeds the {len(train_set)} training images")
    scheduler = dd.make_schedule(optimizer, steps * args.epochs, round(args.warmup_epochs * steps), args.schedule,
                                 milestones=[30 * steps * k for k in range(1, 1 + args.epochs // 30)])
    config = {k: v for k, v in vars(args).items() if k not in ("func", "debug")}
    say(f"ttfs train: {args.model} on {summary}\n  {ctx.world_size} process(es) ({ctx.backend or 'no process group'}"
        f", {ctx.device}), global batch {args.batch_size} ({args.accumulate} micro-batch(es) per step), "
        f"{args.optimizer} lr {lr:.4g}, {args.schedule} schedule, {args.precision}, windows {args.windows}; "
        f"run folder {out}" + (" (resumed" + (" after a restart)" if decision["restarted"] else ")")
                               if decision["resume"] else ""))
    writers = _Writers(out, ctx.is_main)
    start = time.perf_counter()

    first = [True]

    def on_epoch(record: dict, history: list[dict]) -> None:
        if first[0]:  # the new run's first checkpoint exists: the replaced run's other files go now
            for name in decision["replaced"]:
                if name != "checkpoint.pt":
                    (out / name).unlink(missing_ok=True)
        writers.epoch(history, {"config": config, "summary": record, "history": history,
                                "environment": jobs._environment()})
        if not args.json:
            _print_epoch(record, header=first[0])
        first[0] = False

    windows = jobs._window_rule(args)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        history_out = dd.fit_distributed(
            net, train_set, val_set, ctx, epochs=args.epochs, global_batch=args.batch_size, optimizer=optimizer,
            scheduler=scheduler, windows=windows, accumulation=args.accumulate, seed=args.seed,
            workers=args.workers, precision=args.precision, channels_last=bool(args.channels_last),
            compile=bool(args.compile), checkpoint=out / "checkpoint.pt", checkpoint_every=args.checkpoint_every,
            resume_state=resume_state, eval_batch=args.eval_batch_size, max_steps_per_epoch=args.max_steps_per_epoch,
            progress=not (args.no_progress or args.json), on_epoch=on_epoch,
            checkpoint_extra={"config": config, "run_id": os.environ.get("TORCHELASTIC_RUN_ID")}, collate=collate)
    if not ctx.is_main:
        return 0
    last = history_out[-1]
    result = {"config": config, "summary": {**last, "seconds": time.perf_counter() - start,
                                            "plots": [] if args.no_plots else writers.close(history_out)},
              "history": history_out, "environment": jobs._environment()}
    jobs._write_atomic(out / "metrics.json", json.dumps(result, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps({"config": config, "summary": result["summary"]}, indent=2, default=str))
    else:
        v = last.get("val") or {}
        print(f"\nsummary: top-1 {jobs._percent(v.get('top1'))} (ReLU twin {jobs._percent(v.get('relu_top1'))}, "
              f"agreement {jobs._percent(v.get('agreement'))}); spikes per neuron "
              f"{jobs._fmt(v.get('spikes_per_neuron'), 0, '.3f')}; "
              f"{last['images_per_s'] or 0:.1f} images/s on {ctx.world_size} process(es); wrote {out}")
    return 0


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="checkpoint.pt of a `ttfs train` run at scale")
    what.add_argument("--relu-checkpoint", help="a ReLU VGG16/VGG16-BN checkpoint (torchvision layout), converted "
                                                "exactly first")
    p.add_argument("--dataset", default="places365", help="places365 (default), or a dataset of `ttfs train`")
    p.add_argument("--data-dir", help="the dataset's folder")
    p.add_argument("--model", choices=PLACES365_MODELS + jobs.MODELS, help="with --relu-checkpoint (default vgg16)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (one GPU per torchrun process)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--preset", choices=("torchvision", "caffe"), help="default: the run's, or torchvision")
    p.add_argument("--image-size", type=POSITIVE_INT, help="default: the run's, or 224")
    p.add_argument("--large", action="store_true", default=None, help="high-resolution images")
    p.add_argument("--decoder", choices=("pil", "torchvision"), default="pil")
    p.add_argument("--calibration-images", type=POSITIVE_INT, default=64)
    p.add_argument("--val-size", type=POSITIVE_INT, help="the first N validation images")
    p.add_argument("--eval-batch-size", type=POSITIVE_INT, default=64, help="per rank")
    p.add_argument("--workers", type=bounded(int, 0), default=4, help="data loader processes per rank")
    p.add_argument("--out", help="folder of the report, validate.json (rank 0 writes it)")
    p.add_argument("--overwrite", action="store_true", help="replace a validate.json in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def validate_main(args: argparse.Namespace) -> int:
    """The agreement report (SNN vs ReLU twin top-1/top-5, agreement, spikes per neuron, latency) of a
    trained or converted network on the validation split, sharded over torchrun's processes."""
    args.dataset = _dataset_name(args.dataset)
    ctx = dd.init_distributed(device_arg(args.device))
    # where the report goes, decided before the work (rank 0 writes it)
    path = report_file(args.out, "validate.json", args.overwrite, "validate") if args.out and ctx.is_main else None
    try:
        state = None
        if args.checkpoint:
            state = jobs._load_run(args.checkpoint, ("epoch", "model"))
            config = (state.get("extra") or {}).get("config") or {}
            for dest in ("dataset", "model", "preset", "image_size", "large", "split", "dtype", "relu_checkpoint"):
                if getattr(args, dest, None) is None and dest in config:
                    setattr(args, dest, config[dest])
        for dest, value in SCALE_DEFAULTS.items():
            if getattr(args, dest, None) is None:
                setattr(args, dest, value)
        args.train_size = None
        net, _, val_set, collate, summary = _build(args, ctx, state)
        loader = torch.utils.data.DataLoader(
            val_set, batch_sampler=dd.ShardSampler(len(val_set), args.eval_batch_size, ctx.rank, ctx.world_size),
            num_workers=args.workers, collate_fn=collate)
        start = time.perf_counter()
        report = dd.evaluate_distributed(net, loader, ctx, precision=args.precision,
                                         channels_last=args.channels_last, progress=not (args.no_progress or args.json))
        report.update(seconds=time.perf_counter() - start, world_size=ctx.world_size, model=args.model,
                      dataset=summary, source=args.checkpoint or args.relu_checkpoint)
        if ctx.is_main:
            if path is not None:
                jobs._write_atomic(path, json.dumps(report, indent=2) + "\n")
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                print(f"ttfs validate: {args.model} on {summary}, {ctx.world_size} process(es)\n"
                      f"  SNN top-1 {jobs._percent(report['top1'])}, top-5 {jobs._percent(report['top5'])}; "
                      f"ReLU twin top-1 {jobs._percent(report['relu_top1'])}, top-5 "
                      f"{jobs._percent(report['relu_top5'])}; agreement {jobs._percent(report['agreement'])}\n"
                      f"  spikes per neuron {jobs._fmt(report['spikes_per_neuron'], 0, '.3f')}, "
                      f"latency {report['latency']:.4g}, "
                      f"{report['images']} images ({report['unreadable']} unreadable) in {report['seconds']:.1f} s; "
                      f"wrote {path or 'nothing (no --out)'}")
        return 0
    finally:
        dd.shutdown()
