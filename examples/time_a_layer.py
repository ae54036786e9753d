"""Time a TTFS layer against its ReLU twin and the pure-PyTorch reference on this machine,
with the package's benchmark helpers (ttfs_ext.bench; `ttfs bench --linear B,IN,OUT` does the same).

    python examples/time_a_layer.py [--quick]
"""
import argparse

import torch

from ttfs_ext import bench

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="a small layer, timed briefly")
args = parser.parse_args()

batch, n_in, n_out = (16, 64, 32) if args.quick else (256, 784, 340)
ctx = bench.Context(device="cpu", threads=torch.get_num_threads(), min_run_time=0.01 if args.quick else 0.5,
                    warmup=1 if args.quick else 2, compile=False, precisions=[bench.PRECISIONS["float32"]],
                    reference_budget=1 << 30, rounds=2 if args.quick else 5, log=lambda line: None)
report = bench.run_report([bench.LayerCase("example", "linear", batch, n_in, n_out)], ctx)
print(bench.format_table(report))
(layer,) = report["layers"]
print(f"kernel / ReLU twin, forward+backward: {layer['ratios']['fwd+bwd']['kernel/twin']:.3f} "
      "(the median of per-cycle ratios)")
