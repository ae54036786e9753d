"""The performance benchmark suite of issue 5: correctness against the float64 reference, then
forward / backward / forward+backward medians and peak memory of the ttfs_ext kernels, the
pure-PyTorch reference (eager and compiled) and the ReLU twin (eager and compiled); whole FC2
and CIFAR VGG16 training steps; the event-driven path against its sort-and-gather reference; a
time-stepped simulation at the step size reaching 1e-3. What is measured and how is
ttfs_ext.bench (`ttfs bench` runs its cases without this suite); the presets, the issue's
targets, the README table and the plot are here, in benchmarks/suite/.

    python benchmarks/bench_suite.py --preset cpu            # 2-core CPU, minutes (--no-compile: faster)
    python benchmarks/bench_suite.py --device cuda            # the issue's shapes (preset full)
    python benchmarks/bench_suite.py --preset quick --no-compile   # seconds: checks the suite
    python benchmarks/bench_suite.py --from-json benchmarks/results/suite_cpu.json --readme README.md

Writes benchmarks/results/suite_<device>.json and .png (a quick or --only run gets a _quick /
_partial suffix); see benchmarks/NOTES.md. On the CPU it tunes glibc's malloc for the process
first (--default-malloc: leave it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/suite, also when imported

from ttfs_ext import bench  # noqa: E402
from ttfs_ext.cli.args import CommandError  # noqa: E402
from ttfs_ext.cli.bench import add_run_arguments, context, threads  # noqa: E402

from suite.host import git_state, replace_between_markers, tune_cpu_allocator  # noqa: E402
from suite.plot import plot_report  # noqa: E402
from suite.presets import PRESETS, Preset, preset  # noqa: E402
from suite.tables import readme_table  # noqa: E402
from suite.targets import evaluate_targets  # noqa: E402

README_BEGIN, README_END = "<!-- bench-suite:begin -->", "<!-- bench-suite:end -->"


def run_suite(p: Preset, ctx: bench.Context, tune_allocator: bool = True) -> dict[str, Any]:
    """Run every selected case of preset p; returns the report (what goes into the JSON), with
    the commit, the allocator setting and the targets' verdicts."""
    env = {**bench.environment(ctx.device, p.name, ctx.threads), **git_state()}
    if ctx.device == "cpu":
        env["cpu_allocator"] = (tune_cpu_allocator() if tune_allocator else None) or "default"
    cases = [*p.layers, *p.networks, *p.events, *p.simulate, *p.stepped]
    report = bench.run_report(cases, ctx, p.name, p.description, env, suite="ttfs_ext.bench")
    report["judges_targets"] = p.judges_targets
    report["targets"] = evaluate_targets(report)
    return report


def replace_readme(readme: "str | Path", text: str) -> bool:
    """Replace the text between the bench-suite markers of `readme`; False (nothing written)
    when the markers are absent."""
    return replace_between_markers(readme, README_BEGIN, README_END, text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="shapes: full (the issue's, for a GPU), cpu (the same layers at small batches), quick "
                             "(tiny, seconds); default full on cuda, cpu on cpu")
    parser.add_argument("--default-malloc", action="store_true",
                        help="CPU: leave glibc malloc's thresholds alone (by default the suite keeps freed memory in "
                             "the heap, so that page faults of recycled buffers do not decide the timings)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results",
                        help="folder for suite_<device>.json and .png (default benchmarks/results)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="replace the text between the bench-suite markers of this file with the table")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None, metavar="JSON",
                        help="run nothing: render these result files (for --readme, or print)")
    parser.add_argument("--costs", action="store_true",
                        help="print the FLOP/byte model of the preset's layers and exit")
    parser.add_argument("--channels-last", action="store_true",
                        help="conv layers: inputs and weights in channels_last memory, the twin's too (writes "
                             "suite_<device>_channels_last*.json beside the contiguous results)")
    add_run_arguments(parser)


def _output_stem(device: str, preset_name: str, only: Sequence[str], channels_last: bool = False) -> str:
    """suite_<device>; a channels_last, quick or filtered run gets a suffix, so that it never
    overwrites a full result."""
    stem = f"suite_{device}"
    if channels_last:
        stem += "_channels_last"
    if preset_name == "quick":
        stem += "_quick"
    if only:
        stem += "_partial"
    return stem


def _print_costs(p: Preset) -> None:
    print(f"{'layer':<38} {'M':>8} {'N':>6} {'K':>6} {'fwd+bwd GFLOP':>14} {'in MB':>8} {'out MB':>8} "
          f"{'extra MB':>9} {'weight MB':>9}")
    for case in p.layers:
        c = bench.layer_costs(case)
        m, n, k = c["gemm_mnk"]
        by = c["bytes"]
        print(f"{case.name:<38} {m:>8} {n:>6} {k:>6} {c['flops']['fwd+bwd'] / 1e9:>14.3f} {by['input'] / 2**20:>8.2f} "
              f"{by['output'] / 2**20:>8.2f} {by['kernel_extra_fwd+bwd'] / 2**20:>9.2f} {by['weight'] / 2**20:>9.2f}")


def run(args: argparse.Namespace) -> int:
    if args.from_json:
        text = "\n".join(readme_table(path) for path in args.from_json)
        if args.readme is None:
            print(text)
            return 0
        return _write_readme(args.readme, text)
    name = args.preset or ("full" if args.device == "cuda" else "cpu")
    p = preset(name)
    if args.costs:
        _print_costs(p)
        return 0
    try:
        ctx = context(args, p.min_run_time, p.warmup, p.rounds)
    except CommandError as err:
        print(f"bench_suite: {err}", file=sys.stderr)
        return 2
    ctx.channels_last = args.channels_last
    with threads(ctx.threads):
        print(f"bench_suite: preset {name} on {bench.device_name(ctx.device)} ({ctx.device}, {ctx.threads} threads), "
              f"precisions {', '.join(q.name for q in ctx.precisions)}, torch.compile "
              f"{'on' if ctx.compile else 'off'}{', channels_last' if ctx.channels_last else ''}", flush=True)
        report = run_suite(p, ctx, tune_allocator=not args.default_malloc)
    if ctx.channels_last:
        report["channels_last"] = True
    print(bench.format_table(report))
    stem = _output_stem(ctx.device, name, args.only, ctx.channels_last)
    json_path = bench.write_json(report, Path(args.out) / f"{stem}.json")
    print(f"\nwrote {json_path}")
    try:
        print(f"wrote {plot_report(report, Path(args.out) / f'{stem}.png')}")
    except Exception as err:  # no matplotlib: the JSON is what counts
        print(f"no plot: {type(err).__name__}: {err}")
    if args.readme is not None:
        status = _write_readme(args.readme, readme_table(json_path))
        if status:
            return status
    return 1 if report["failures"] else 0


def _write_readme(readme: Path, text: str) -> int:
    if not Path(readme).exists():
        print(f"bench_suite: {readme} does not exist", file=sys.stderr)
        return 2
    if replace_readme(readme, text):
        print(f"updated {readme} between {README_BEGIN} and {README_END}")
    else:
        print(f"{readme} has no {README_BEGIN} ... {README_END} markers: left unchanged")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
