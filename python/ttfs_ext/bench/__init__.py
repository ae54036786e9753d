"""Benchmark helpers: how to time (timing), what is measured (cases: the case types; layers:
layers and networks; events: the event path and the time-stepped simulation) and what is
reported (report). `ttfs bench` runs the default cases or given shapes; the performance suite,
with its presets, targets, generated tables and plots, is benchmarks/bench_suite.py, beside the
package.

    from ttfs_ext import bench
    ctx = bench.Context(device="cpu", threads=2, min_run_time=0.5, warmup=2, compile=False,
                        precisions=[bench.PRECISIONS["float32"]], reference_budget=4 << 30)
    report = bench.run_report([bench.LayerCase("mine", "linear", 256, 784, 340)], ctx)
    print(bench.format_table(report))

Importing it changes nothing in the process; a run switches the ttfs_ext backend, the input
checks and TF32 only for its duration.
"""
from .cases import (COMPILED, LAYER_IMPLS, NETWORK_IMPLS, Case, EventCase, LayerCase, NetworkCase, SimulateCase,
                    SteppedCase, b1_neurons, default_cases, layer_costs, reference_bytes, rel_error)
from .events import bench_event, bench_simulate, bench_stepped, clock_driven_first_spikes
from .layers import bench_layer, bench_network
from .report import (JSON_VERSION, device_name, environment, format_bytes, format_error, format_ms, format_ratio,
                     format_table, run_cases, run_report, write_json)
from .timing import (MODES, PRECISIONS, Context, Precision, measure, paired_ratio, peak_memory, precision_context,
                     time_interleaved, time_paired, time_runs)

__all__ = [
    "Context", "Precision", "PRECISIONS", "MODES", "measure", "time_runs", "peak_memory", "precision_context",
    "time_paired", "time_interleaved", "paired_ratio",
    "Case", "LayerCase", "NetworkCase", "EventCase", "SimulateCase", "SteppedCase", "LAYER_IMPLS", "NETWORK_IMPLS",
    "COMPILED", "layer_costs", "bench_layer", "bench_network", "bench_event", "bench_simulate", "bench_stepped",
    "run_cases", "default_cases", "clock_driven_first_spikes", "b1_neurons", "reference_bytes", "rel_error",
    "JSON_VERSION", "device_name", "environment", "run_report", "write_json", "format_table", "format_ms",
    "format_ratio", "format_error", "format_bytes",
]
