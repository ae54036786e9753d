"""`ttfs bench`: time the kernels against the reference and the ReLU twin on this machine (the
package's default cases, or the shapes given) and write the records as JSON. The run options
here are shared with the performance suite, benchmarks/bench_suite.py."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Iterator

import torch

import ttfs_ext
from ttfs_ext import bench

from .args import POSITIVE_FLOAT, POSITIVE_INT, CommandError, bounded_list, device_arg, report_file

__all__ = ["add_run_arguments", "context", "threads", "add_arguments", "run"]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a timed run (device, precisions, torch.compile, timing, selection)."""
    default_device = "cuda" if torch.cuda.is_available() and "cuda" in ttfs_ext.kernel_devices() else "cpu"
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device,
                        help=f"where to run (default {default_device})")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile implementations")
    parser.add_argument("--only", action="append", default=[], metavar="SUBSTRING",
                        help="run only cases whose 'section/name precision' contains this (repeatable; sections: "
                             "layer, network, event, simulate, timestepped)")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated subset of float32,tf32,bfloat16 (CUDA; CPU runs float32 only)")
    if "--threads" not in parser._option_string_actions:  # `ttfs bench` has every command's --threads
        parser.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--min-run-time", type=POSITIVE_FLOAT, default=None,
                        help="seconds of timing per implementation and mode")
    parser.add_argument("--rounds", type=POSITIVE_INT, default=None,
                        help="at least this many interleaved cycles over the implementations of a case")
    parser.add_argument("--reference-budget-gb", type=POSITIVE_FLOAT, default=4.0,
                        help="memory the sort-and-gather event reference may use (default 4 GiB)")


def context(args: argparse.Namespace, min_run_time: float, warmup: int, rounds: int) -> bench.Context:
    """The run's Context from the options (the given defaults where an option is left out);
    CommandError for a device without kernels or an unknown precision."""
    device = args.device
    device_arg(device)  # the check of every ttfs command
    if device not in ttfs_ext.kernel_devices():
        raise CommandError(f"no compiled ttfs_ext kernel for {device!r} (ttfs info: {ttfs_ext.status()})")
    names = [s.strip() for s in (args.precisions or ",".join(bench.PRECISIONS)).split(",") if s.strip()]
    unknown = [s for s in names if s not in bench.PRECISIONS]
    if unknown:
        raise CommandError(f"unknown precision(s) {unknown}; choose from {list(bench.PRECISIONS)}")
    if device != "cuda":  # TF32 and bfloat16 autocast: CUDA only
        names = [s for s in names if s == "float32"] or ["float32"]
    return bench.Context(device=device, threads=args.threads or torch.get_num_threads(),
                         min_run_time=args.min_run_time or min_run_time, warmup=warmup,
                         compile=not args.no_compile, precisions=[bench.PRECISIONS[s] for s in names],
                         reference_budget=int(args.reference_budget_gb * 2**30), only=list(args.only),
                         rounds=args.rounds or rounds, log=lambda s: print(s, flush=True))


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's CPU threads set to n for the block, restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cases(args: argparse.Namespace) -> list[bench.Case]:
    layers = [bench.LayerCase("linear", "linear", *shape) for shape in args.linear]
    layers += [bench.LayerCase("conv2d", "conv2d", *shape) for shape in args.conv]
    return layers or bench.default_cases(args.device)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--linear", type=_shape(3), action="append", default=[], metavar="B,IN,OUT",
                        help="time this linear layer (batch, in_features, out_features; repeatable); with --linear "
                             "or --conv only the layers given run")
    parser.add_argument("--conv", type=_shape(4), action="append", default=[], metavar="B,CIN,COUT,SIZE",
                        help="time this 3x3 'same' convolution on SIZE x SIZE images (repeatable)")
    parser.add_argument("--out", default=None,
                        help="folder of the records, bench_<device>.json (default runs/bench)")
    parser.add_argument("--overwrite", action="store_true", help="replace a bench_<device>.json in --out")
    add_run_arguments(parser)


def _shape(n: int):
    parse = bounded_list(int, 1)

    def shape(text: str) -> tuple[int, ...]:
        values = parse(text)
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"needs {n} comma-separated integers, got {text!r}")
        return tuple(values)
    shape.__name__ = f"{n} comma-separated integers"
    return shape


def run(args: argparse.Namespace) -> int:
    ctx = context(args, min_run_time=0.5, warmup=2, rounds=3)
    cases = _cases(args)
    path = report_file(args.out or Path("runs") / "bench", f"bench_{ctx.device}.json", args.overwrite, "bench")
    with threads(ctx.threads):
        plural = "s" if len(cases) != 1 else ""
        print(f"ttfs bench: {len(cases)} case{plural} on {bench.device_name(ctx.device)} ({ctx.device}, "
              f"{ctx.threads} threads), precisions {', '.join(p.name for p in ctx.precisions)}, torch.compile "
              f"{'on' if ctx.compile else 'off'}", flush=True)
        report = bench.run_report(cases, ctx, description="ttfs bench: " + ("the shapes given" if (
            args.linear or args.conv) else "the default cases"))
    print(bench.format_table(report))
    bench.write_json(report, path)
    print(f"\nttfs bench: {len(cases)} case{plural}, {len(report['failures'])} failed; wrote {path}")
    return 1 if report["failures"] else 0

