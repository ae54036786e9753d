"""`ttfs spide`: train and evaluate a feedback SNN with SPIDE or IDE (ttfs_ext.spide), with the
papers' settings per dataset as defaults (ttfs_ext.spide.train.DEFAULTS)."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

from .args import (NONNEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, SEED, CommandError, bounded, count,
                   deprecated_alias, device_arg)

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100")


def register(command) -> None:
    p = command("spide", "train a feedback SNN by SPIDE (spiking backward) or IDE (implicit differentiation); "
                         "per-epoch accuracy and firing rates, checkpoints, JSON")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..spide import MODELS
    p.add_argument("--model", choices=sorted(MODELS), help="architecture (default: the dataset's paper net)")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--backward", choices=("spide", "ide"), default="spide")
    p.add_argument("--epochs", type=POSITIVE_INT, help="default: the paper's (digits: 20)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=128)
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="default 0.05")
    p.add_argument("--milestones", type=POSITIVE_INT, nargs="*", help="epochs at which the lr drops x0.1 "
                   "(default: the paper's)")
    p.add_argument("--weight-decay", type=NONNEGATIVE_FLOAT,
                   help="SGD's weight decay (default: the authors' effective value, 5e-4 / loss scale for SPIDE, "
                        "5e-4 for IDE; with --reference-scaling, 5e-4)")
    p.add_argument("--T", type=POSITIVE_INT, help="forward time steps (default: the model's, 30; F400: 5)")
    p.add_argument("--T-b", type=POSITIVE_INT, help="SPIDE backward time steps (default 100; CIFAR 250)")
    p.add_argument("--loss-scale", type=POSITIVE_FLOAT, help="gradient scale of the spiking backward (default "
                   "100; CIFAR-10 400, CIFAR-100 500)")
    p.add_argument("--reference-scaling", action="store_true",
                   help="scale the loss and divide the learning rate by the loss scale, as the reference code")
    p.add_argument("--dropout", type=bounded(float, 0.0, maximum=1.0, strict_maximum=True),
                   help="variational dropout (default: the model's)")
    p.add_argument("--leak", type=bounded(float, 0.0, strict=True, maximum=1.0), default=1.0, help="1: IF; < 1: LIF")
    p.add_argument("--hidden", type=POSITIVE_INT, help="F400's population size (default 400)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-steps-per-epoch", type=POSITIVE_INT, help="stop each epoch after N iterations")
    p.add_argument("--out", help="run folder, as ttfs train's: checkpoint.pt after every epoch, metrics.json at the "
                   "end; never replaced without --overwrite")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--data-dir", help="folder of the dataset's files, the only one searched")
    # Deprecated spellings (one release): a checkpoint file instead of a run folder; --data-dir's old name.
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)

    deprecated_alias(p, "--max-steps", "--max-steps-per-epoch")
    deprecated_alias(p, "--data-root", "--data-dir")
    p.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep the pixels in [0, 1] (default on MNIST and Fashion-MNIST: the authors' (x - 0.1307) "
                        "/ 0.3081)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also with --json)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import data
    from ..spide import build
    from ..spide.train import DEFAULTS, fit

    from . import jobs

    _deprecated(args)
    if args.out and args.checkpoint:
        raise CommandError("--checkpoint is the old spelling of a run's checkpoint: give --out only")
    if args.resume and not (args.out or args.checkpoint):
        raise CommandError("--resume needs --out (the run folder to continue)")
    if args.resume and args.overwrite:
        raise CommandError("--resume continues a run; it cannot be combined with --overwrite")
    device = device_arg(args.device)  # the check of every ttfs command
    d = DEFAULTS[args.dataset]
    model = args.model or d["model"]
    epochs = args.epochs or d["epochs"]
    # Before any data is read (a mistake costs nothing): ttfs train's run-folder rules, or for the
    # deprecated --checkpoint file the same rules on one file.
    out = Path(args.out) if args.out else None
    if out is not None:
        jobs._claim_run_folder(out, argparse.Namespace(resume=args.resume, init=None, overwrite=args.overwrite))
        checkpoint = out / "checkpoint.pt"
    else:
        checkpoint = Path(args.checkpoint) if args.checkpoint else None
        if checkpoint is not None:
            _file_rules(checkpoint, args)
    done = _continuation(checkpoint, model, args, epochs) if args.resume else None
    if done is not None:
        print(f"ttfs spide: nothing to do: {checkpoint} has {count(done, 'epoch')} and --epochs is {epochs}")
        return 0
    ds = data.load_dataset(args.dataset, root=args.data_dir, download=args.download) if args.dataset != "digits" \
        else data.load_digits(seed=args.seed)
    if args.dataset in NORMALIZE and not args.no_normalize:
        ds = _normalized(ds, *NORMALIZE[args.dataset])
    c, size = ds.x_train.shape[1], ds.x_train.shape[2]
    kw = dict(in_channels=c, size=size, classes=ds.classes, backward=args.backward,
              T_b=args.T_b or d["T_b"], loss_scale=args.loss_scale or d["loss_scale"], leak=args.leak)
    if args.T is not None:
        kw["T"] = args.T
    if args.dropout is not None:
        kw["dropout"] = args.dropout
    if args.hidden is not None:
        if model != "f400":
            raise CommandError("--hidden applies to --model f400 only")
        kw["hidden"] = args.hidden
    torch.manual_seed(args.seed)
    net = build(model, **kw)
    lr = args.lr or d["lr"]
    weight_decay = args.weight_decay
    if weight_decay is None:
        # SPIDE scales the loss by loss_scale and divides the lr by it (SPIDE-FSNN cifar_alexnetf.py:175,
        # 276-280), so its 5e-4 acts as 5e-4 / loss_scale on the loss's own gradients; IDE does not
        # scale (IDE-FSNN fashionmnist_fc.py). --reference-scaling scales as SPIDE, so 5e-4 there.
        # (IDE with --reference-scaling: fit scales anyway, so 5e-4 x loss_scale acts as IDE's 5e-4)
        if args.backward == "spide":
            weight_decay = 5e-4 if args.reference_scaling else 5e-4 / net.loss_scale
        else:
            weight_decay = 5e-4 * net.loss_scale if args.reference_scaling else 5e-4
    milestones = tuple(args.milestones) if args.milestones is not None else tuple(d["milestones"])
    settings = dict(model=model, dataset=args.dataset, backward=args.backward, epochs=epochs, lr=lr,
                    weight_decay=weight_decay, batch_size=args.batch_size, T=net.T, T_b=net.T_b, loss_scale=net.loss_scale, leak=net.leak,
                    dropout=net.dropout, milestones=list(milestones), warmup=d["warmup"],
                    reference_scaling=args.reference_scaling, seed=args.seed, max_steps=args.max_steps_per_epoch,
                    normalized=args.dataset in NORMALIZE and not args.no_normalize)

    def show(row):
        if not args.json:
            b = f"{row['backward_rate']:.4f}" if row["backward_rate"] is not None else "-"
            print(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  train {row['train_accuracy']:.4f}  "
                  f"test {row['test_accuracy']:.4f}  forward rate {row['forward_rate']:.4f}  backward rate {b}  "
                  f"{row['seconds']:.1f} s", flush=True)

    if not args.json:
        print(f"ttfs spide: {model} on {args.dataset} ({ds.n_train} train / {ds.n_test} test images), "
              f"{args.backward.upper()} backward, {count(epochs, 'epoch')}, batch {args.batch_size}, SGD lr {lr}"
              f"{f', run folder {out}' if out is not None else ''}", flush=True)
    t0 = time.perf_counter()
    with jobs._run_lock(out) if out is not None else contextlib.nullcontext():
        history = fit(net, ds, epochs, batch_size=args.batch_size, lr=lr, weight_decay=weight_decay,
                      warmup=d["warmup"], milestones=milestones, reference_scaling=args.reference_scaling,
                      seed=args.seed, checkpoint=checkpoint, resume=args.resume, device=device,
                      max_steps_per_epoch=args.max_steps_per_epoch, on_epoch=show, config=settings,
                      progress=not (args.json or args.no_progress))
    last = history[-1] if history else {}
    result = dict(test_accuracy=last.get("test_accuracy"), backward=args.backward,
                  forward_rate=last.get("forward_rate"), backward_rate=last.get("backward_rate"),
                  train_accuracy=last.get("train_accuracy"), settings=settings, history=history,
                  seconds=time.perf_counter() - t0, command="ttfs " + " ".join(sys.argv[1:]),
                  environment=jobs._environment())
    if out is not None:
        jobs._write_atomic(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        written = f"{out / 'checkpoint.pt'} and {out / 'metrics.json'}" if out is not None else \
            (str(checkpoint) if checkpoint is not None else "nothing (no --out)")
        print(f"ttfs spide: {count(len(history), 'epoch')}, test accuracy {result['test_accuracy']:.4f}; "
              f"wrote {written}")
    return 0


# The authors' input normalisation: (x - mean) / std on MNIST and Fashion-MNIST (SPIDE-FSNN
# mnist_convnetf.py:98-105, IDE-FSNN fashionmnist_fc.py:98-105). (CIFAR's, with its augmentation,
# is not done here yet.)
NORMALIZE = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.1307, 0.3081)}


def _normalized(ds, mean: float, std: float):
    import dataclasses
    return dataclasses.replace(ds, x_train=(ds.x_train - mean) / std, x_test=(ds.x_test - mean) / std)


def _deprecated(args: argparse.Namespace) -> None:
    """The old spellings, kept one release: a warning each, then the new meaning."""
    if args.checkpoint is not None:
        print("ttfs spide: warning: --checkpoint FILE is deprecated, use --out FOLDER (its checkpoint.pt)",
              file=sys.stderr)


def _file_rules(path: Path, args: argparse.Namespace) -> None:
    """ttfs train's run-folder rules for the deprecated --checkpoint file: its folder must exist
    (nothing is created for a mistyped path), an existing file is never replaced without
    --overwrite, --resume needs the file."""
    if not path.parent.is_dir():
        raise CommandError(f"--checkpoint {path}: the folder {path.parent} does not exist")
    if not args.resume and path.exists() and not args.overwrite:
        raise CommandError(f"--checkpoint {path} exists: --resume continues it, --overwrite replaces it")
    if args.resume and not path.is_file():
        raise CommandError(f"--resume: {path} does not exist, so there is nothing to continue (drop --resume to start)")


def _continuation(path: Path, model: str, args: argparse.Namespace, epochs: int) -> Optional[int]:
    """--resume: the checkpoint must be one of this command's, of the same model, dataset and
    backward. Returns the epochs already done when --epochs asks for no more (nothing to do)."""
    from ..train.checkpoints import CheckpointError, load_checkpoint

    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise CommandError(f"--resume: {err}") from None
    if not isinstance(state, dict) or state.get("kind") != "ttfs_ext.spide":
        raise CommandError(f"--resume: {path} is not a checkpoint of ttfs spide")
    config = state.get("config") or {}
    asked = {"model": model, "dataset": args.dataset, "backward": args.backward,
             "normalized": args.dataset in NORMALIZE and not args.no_normalize}
    config.setdefault("normalized", False)  # runs from before the normalisation
    differs = [f"--{k} {v} (the checkpoint has {config[k]})" for k, v in asked.items() if k in config and config[k] != v]
    if differs:
        raise CommandError(f"--resume continues the run as it was started; it differs in {'; '.join(differs)}")
    done = int(state.get("epoch", 0))
    return done if epochs <= done else None
