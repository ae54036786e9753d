"""The performance benchmark suite of issue 5 (the same as `ttfs bench`): correctness against
the float64 reference, then forward / backward / forward+backward medians and peak memory of
the ttfs_ext kernels, the pure-PyTorch reference (eager and compiled) and the ReLU twin
(eager and compiled); whole FC2 and CIFAR VGG16 training steps; the event-driven path against
its sort-and-gather reference; a time-stepped simulation at the step size reaching 1e-3.

    python benchmarks/bench_suite.py --preset cpu            # 2-core CPU, minutes (--no-compile: faster)
    python benchmarks/bench_suite.py --device cuda            # the issue's shapes (preset full)
    python benchmarks/bench_suite.py --preset quick --no-compile   # seconds: checks the suite
    python benchmarks/bench_suite.py --from-json benchmarks/results/suite_cpu.json --readme README.md

Writes benchmarks/results/suite_<device>.json and .png (a quick or --only run gets a _quick /
_partial suffix); see ttfs_ext/bench.py and benchmarks/NOTES.md.
"""
from __future__ import annotations

import argparse
import sys

from ttfs_ext import bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
