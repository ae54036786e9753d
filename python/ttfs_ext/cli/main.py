"""The `ttfs` command line: info (build status), check (self-test), convert (train, convert
and verify a ReLU network on the bundled digits), train and evaluate (run folders), bench
(timings). Each command lives in its own module of ttfs_ext.cli, imported when the parser is built."""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tarfile
import traceback
from typing import Optional, Sequence

import ttfs_ext

from .args import POSITIVE_INT, CommandError, Parser


def _info(args: argparse.Namespace) -> int:
    import torch
    info = ttfs_ext.status()
    # CPU threads: torch's (or --threads), and whether other jobs already fill this machine's cores
    load, cores = os.getloadavg()[0] if hasattr(os, "getloadavg") else None, os.cpu_count()
    info.update(threads=torch.get_num_threads(), cpu_count=cores, load_1min=load,
                oversubscribed=None if load is None else load > (cores or 1))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


# Errors a user causes with the command line or the files it names (a missing or foreign file, a
# run folder that is not this run's, a malformed dataset): one line each, no traceback.
_USER_ERRORS = (CommandError, OSError, ValueError, tarfile.TarError, pickle.UnpicklingError)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ttfs", description="Exact time-to-first-spike networks (ttfs_ext).")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {ttfs_ext.__version__}")
    # --debug after the command too; SUPPRESS: it does not reset a --debug given before the command
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    common.add_argument("--threads", type=POSITIVE_INT, default=None,
                        help="CPU threads of torch and the kernels (default: torch's, one per core); on a busy "
                             "or shared machine fewer are faster (ttfs info shows the load)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", parents=[common])

    info = command("info", "how ttfs_ext was built and which kernels are available")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)
    from . import bench, check, demo, jobs
    check_parser = command("check", "self-test: kernels vs reference vs event simulation on every device")
    check.add_arguments(check_parser)
    check_parser.set_defaults(func=check.run)
    convert = command("convert", "train a ReLU network on scikit-learn's digits, convert it to TTFS and verify that "
                                 "it is exact")
    demo.add_arguments(convert)
    convert.set_defaults(func=lambda a: (demo.run(a), 0)[1])
    train = command("train", "train a TTFS network and its ReLU twin side by side (default: FC2 on Fashion-MNIST), "
                             "with metrics, checkpoints and plots")
    jobs.add_train_arguments(train)
    train.set_defaults(func=jobs.train_main)
    evaluate = command("evaluate", "accuracy of a trained network against spike-time noise, bit widths and latency "
                                   "(CSV, JSON, PNG)")
    jobs.add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=jobs.evaluate_main)
    from . import scale
    validate = command("validate", "SNN vs ReLU twin on a validation split (top-1/top-5, agreement, spikes per "
                                   "neuron, latency), sharded over torchrun's processes")
    scale.add_validate_arguments(validate)
    validate.set_defaults(func=scale.validate_main)
    bench_parser = command("bench", "time the kernels against the reference and the ReLU twin (layers, a training "
                                    "step, the event path, a time-stepped simulation); JSON")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=bench.run)
    from . import fs as fs_cli
    fs_parser = command("fs", "train a ReLU or SiLU CNN, convert it to few-spikes neurons (Stöckl & Maass) and "
                              "report accuracy, spikes per neuron, latency and throughput")
    fs_cli.add_arguments(fs_parser)
    fs_parser.set_defaults(func=fs_cli.run)
    from . import spide as spide_command  # `ttfs spide`: feedback SNNs by SPIDE / IDE
    spide_command.register(command)
    return parser


def _hint_if_busy(command: str) -> None:
    """Other jobs already fill the cores: torch's threads would wait on each other (the documentation:
    threads on a shared machine). A hint only: the thread count, and so the results' rounding,
    stays what the user chose."""
    import torch
    if not hasattr(os, "getloadavg") or torch.get_num_threads() == 1:
        return
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        print(f"ttfs {command}: note: this machine is busy (load {load:.1f} on {cores} cores); "
              f"--threads 1 may well be faster", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # the command's own error and usage, not the top-level one
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        commands[args.command].unrecognized(extras)
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    elif args.command not in ("info", "check"):
        _hint_if_busy(args.command)
    try:
        return args.func(args)
    except _USER_ERRORS as err:
        if args.debug:
            raise
        message = str(err) or type(err).__name__
        print(f"ttfs {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        hint = {"train": "; the same command with --resume continues it",
                "spide": "; the same command with --resume continues it"}.get(args.command, "")
        print(f"ttfs {args.command}: interrupted (a run keeps its last complete checkpoint{hint})", file=sys.stderr)
        return 130

