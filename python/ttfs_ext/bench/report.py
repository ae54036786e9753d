"""What a benchmark run reports: its environment, the records of its cases (run_cases), the
report that goes into the JSON, and the printed table."""
from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

import ttfs_ext

from .cases import (LAYER_IMPLS, NETWORK_IMPLS, REFERENCE_BYTES_PER_ELEMENT, T_MAX, T_MIN, T_START, Case, EventCase,
                    LayerCase, NetworkCase, SimulateCase, SteppedCase, snntorch_version)
from .events import bench_event, bench_simulate, bench_stepped
from .layers import bench_layer, bench_network
from .timing import MODES, PEAK_MEMORY_METHOD, Context, unavailable

__all__ = ["JSON_VERSION", "device_name", "environment", "run_cases", "run_report", "write_json", "format_table",
           "format_ms", "format_ratio", "format_error", "format_bytes"]

JSON_VERSION = 2  # 2: times and ratios from paired cycles (time_interleaved)


# --- environment ----------------------------------------------------------------------------------

def device_name(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _precision_flags() -> dict[str, Any]:
    flags: dict[str, Any] = {}
    try:
        flags["matmul_fp32_precision"] = torch.backends.cuda.matmul.fp32_precision
        flags["cudnn_conv_fp32_precision"] = torch.backends.cudnn.conv.fp32_precision
    except (AttributeError, RuntimeError):
        try:
            flags["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
            flags["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        except (AttributeError, RuntimeError):
            pass
    return flags


def environment(device: str, preset_name: str, threads: int) -> dict[str, Any]:
    """The machine, versions and settings of a run (no git: the package may not live in a checkout)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "device": device,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "ttfs_ext_version": ttfs_ext.__version__,
        "ttfs_ext_status": ttfs_ext.status(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "preset": preset_name,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1min_before": load[0] if load else None,
        "precision_flags_at_start": _precision_flags(),
        "snntorch": snntorch_version(),
        "cpu_allocator": "default" if device == "cpu" else None,  # benchmarks/bench_suite.py may tune glibc's
    }


# --- the report -------------------------------------------------------------------------------------

SECTIONS = ("layers", "networks", "events", "simulate", "timestepped")


def _jobs(cases: Sequence[Case], ctx: Context) -> list[tuple[str, str, Callable[[], dict[str, Any]]]]:
    """(report section, label, run) per case and precision, in the order of SECTIONS."""
    jobs: dict[str, list] = {section: [] for section in SECTIONS}
    for case in cases:
        if isinstance(case, LayerCase):
            for q in ctx.precisions:
                jobs["layers"].append(("layers", f"layer/{case.name} {q.name}",
                                       lambda case=case, q=q: bench_layer(case, q, ctx)))
        elif isinstance(case, NetworkCase):
            for q in ctx.precisions:
                jobs["networks"].append(("networks", f"network/{case.label} {q.name}",
                                         lambda case=case, q=q: bench_network(case, q, ctx)))
        elif isinstance(case, EventCase):
            jobs["events"].append(("events", f"event/{case.name}", lambda case=case: bench_event(case, ctx)))
        elif isinstance(case, SimulateCase):
            jobs["simulate"].append(("simulate", f"simulate/{case.label}", lambda case=case: bench_simulate(case, ctx)))
        elif isinstance(case, SteppedCase):
            jobs["timestepped"].append(("timestepped", f"timestepped/{case.name}",
                                        lambda case=case: bench_stepped(case, ctx)))
        else:
            raise TypeError(f"not a benchmark case: {case!r}")
    return [j for section in SECTIONS for j in jobs[section] if ctx.selected(*j[1].split("/", 1))]


def run_cases(cases: Sequence[Case], ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """Run every case selected by ctx.only, each at every precision of ctx: the records per
    report section, and the failures (a crashed case or a failed check; the others still run).
    The NaN/inf data check of ttfs_ext is off meanwhile: it reads the data (and syncs on a GPU)."""
    results: dict[str, list[dict[str, Any]]] = {section: [] for section in SECTIONS}
    results["failures"] = []
    jobs = _jobs(cases, ctx)
    checks = ttfs_ext.input_checks_enabled()
    ttfs_ext.set_input_checks(False)
    try:
        for i, (section, label, job) in enumerate(jobs, 1):
            t0 = time.perf_counter()
            ctx.log(f"[{i}/{len(jobs)}] {label} ...")
            try:
                record = job()
            except Exception as err:
                record = {"section": section, "name": label, "crashed": unavailable(err)["na"]}
                results["failures"].append({"case": label, "error": record["crashed"]})
            else:
                check = record.get("check", {})
                if check and not check.get("passed", True):
                    results["failures"].append({"case": label, "error": check.get("reason", "check failed")})
            results[section].append(record)
            ctx.log(f"    {time.perf_counter() - t0:.1f} s")
    finally:
        ttfs_ext.set_input_checks(checks)
    return results


def run_report(cases: Sequence[Case], ctx: Context, preset: str = "default", description: str = "",
               env: Optional[dict[str, Any]] = None, suite: str = "ttfs bench") -> dict[str, Any]:
    """Run the cases (cases.run_cases) into a report: what goes into the JSON. `env` (default
    environment()) is recorded as given, so a caller may add to it."""
    env = environment(ctx.device, preset, ctx.threads) if env is None else env
    report: dict[str, Any] = {
        "suite": suite, "json_version": JSON_VERSION, "environment": env, "preset": preset,
        "preset_description": description, "compile": ctx.compile, "only": ctx.only,
        "precisions": [q.name for q in ctx.precisions], "min_run_time_s": ctx.min_run_time, "warmup": ctx.warmup,
        "rounds": ctx.rounds, "reference_budget_bytes": ctx.reference_budget,
        "window": {"t_start": T_START, "t_min": T_MIN, "t_max": T_MAX},
        "notes": {
            "times": "ms per call: the median over cycles (each cycle times one block of calls, ~2 ms or one call, "
                     "of every implementation and mode back to back, in an order reversed every cycle) after "
                     "warm-up; fwd = forward with autograd recording, bwd = backward alone (retain_graph), "
                     "fwd+bwd = both",
            "ratios_paired": "every ratio is the median over cycles of the two implementations' ratio within a "
                             "cycle (paired), not a ratio of medians",
            "peak_memory": PEAK_MEMORY_METHOD[ctx.device],
            "input_checks": "the NaN/inf data check of ttfs_ext is off while timing (ttfs_ext_status shows the setting "
                            "before the run)",
            "twin": "F.linear / F.conv2d + relu on activations x = t_min - t_in: the floor",
            "ratios": "kernel/best_twin uses the faster of the eager and compiled twin",
            "errors": "max |x - x_float64| / max |x_float64|, kernel in activation space (t_max - t); gradients: "
                      "max over input, weight and bias",
            "event_reference": f"sort-and-gather reference, estimated {REFERENCE_BYTES_PER_ELEMENT} x element size x "
                               "rows x outputs x (inputs + 1) bytes; run at the largest power-of-two batch within the "
                               "budget",
        },
    }
    started = time.perf_counter()
    report.update(run_cases(cases, ctx))
    env["loadavg_1min_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report["seconds"] = time.perf_counter() - started
    return report


def write_json(report: dict[str, Any], path: "str | Path") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # never a half-written file
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


# --- the printed table ---------------------------------------------------------------------------------

def format_ms(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "–"
    if "median_ms" in entry and entry["median_ms"] is not None:
        v = entry["median_ms"]
        return f"{v:.3g}" if v < 100 else f"{v:.0f}"
    return "n/a"


def format_ratio(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}x"


def format_error(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.1e}"


def format_bytes(n: Optional[int]) -> str:
    if n is None:
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def _short(impl: str) -> str:
    return impl.replace("reference", "ref").replace("_compiled", "-c").replace("kernel", "kern")


def format_table(report: dict[str, Any]) -> str:
    """The printed table: medians in ms per implementation and the ratios."""
    lines: list[str] = []
    for section, impls in (("layers", LAYER_IMPLS), ("networks", NETWORK_IMPLS)):
        rows = report.get(section, [])
        if not rows:
            continue
        head = (f"{'case':<34} {'prec':<8} {'mode':<7} " + " ".join(f"{_short(i):>9}" for i in impls)
                + f" {'kern/twin':>9} {'k/twin-c':>9} {'ref/kern':>9} {'refc/kern':>9} {'kern GF/s':>9}")
        lines += ["", f"{section} (ms, median)", head, "-" * len(head)]
        for r in rows:
            if "times_ms" not in r:
                reason = r.get("crashed") or r.get("check", {}).get("reason", "not timed")
                lines.append(f"{r['name']:<34} {r.get('precision', ''):<8} {reason}")
                continue
            for mode in MODES:
                t, q = r["times_ms"][mode], r["ratios"][mode]
                gf = r["gflops"].get("kernel", {}).get(mode)
                lines.append(f"{r['name']:<34} {r['precision']:<8} {mode:<7} "
                             + " ".join(f"{format_ms(t.get(i)):>9}" for i in impls)
                             + f" {format_ratio(q['kernel/twin']):>9} {format_ratio(q['kernel/twin_compiled']):>9}"
                             f" {format_ratio(q['reference/kernel']):>9}"
                             f" {format_ratio(q['reference_compiled/kernel']):>9}"
                             f" {'–' if gf is None else f'{gf:.1f}':>9}")
            e = r["errors_vs_float64"]

            def grads(who: str) -> str:
                l2 = e[who].get("grad_l2")
                return f"grad {format_error(e[who]['grad'])}" + ("" if l2 is None else f", grad L2 {format_error(l2)}")

            lines.append(f"{'':<34} {'':<8} errors vs float64: kernel {format_error(e['kernel']['out'])} "
                         f"({grads('kernel')}), "
                         f"twin {format_error(e['twin']['out'])} ({grads('twin')})")
            reasons = {i: e["na"] for i, e in r["times_ms"]["fwd+bwd"].items()
                       if "na" in e and "--no-compile" not in e["na"]}
            for impl, reason in reasons.items():
                lines.append(f"{'':<34} {'':<8} {impl}: n/a ({reason})")
            mem = r.get("peak_mem_bytes", {})
            if any(v is not None for v in mem.values()):
                lines.append(f"{'':<34} {'':<8} peak memory (fwd+bwd): " + ", ".join(
                    f"{_short(i)} {format_bytes(v)}" for i, v in mem.items() if v is not None))
    events = report.get("events", [])
    if events:
        head = (f"{'event case':<34} {'mode':<7} {'kernel':>10} {'ref batch':>9} {'kern@rb':>10} {'reference':>10} "
                f"{'ref/kern':>9}  notes")
        lines += ["", "event-driven path (ms, median)", head, "-" * len(head)]
        for r in events:
            if "times_ms" not in r:
                lines.append(f"{r['name']:<34} {r.get('crashed') or r.get('check', {}).get('reason', 'not timed')}")
                continue
            for mode in MODES:
                t = r["times_ms"][mode]
                rb = r["reference_batch"]
                kr = t.get("kernel_at_reference_batch", t.get("kernel")) if rb else None
                lines.append(f"{r['name']:<34} {mode:<7} {format_ms(t.get('kernel')):>10} {str(rb or '–'):>9} "
                             f"{format_ms(kr):>10} {format_ms(t.get('reference')):>10} "
                             f"{format_ratio(r['ratios'][mode]['reference/kernel']):>9}"
                             f"  {r.get('reference_note', '') if mode == 'fwd' else ''}")
            mem = r.get("peak_mem_bytes", {})
            lines.append(f"{'':<34} peak memory (fwd+bwd): "
                         + ", ".join(f"{i} {format_bytes(v)}" for i, v in mem.items()))
    for r in report.get("simulate", []):
        if r.get("ok"):
            lines += ["", f"simulate {r['name']}: {r['time_ms']['median_ms'] / 1e3:.3g} s (closed form "
                      f"{format_ms(r['closed_form_ms'])} ms), {r['spikes']} spikes of {r['neurons']} neurons, "
                      f"{r['early_spikes']} early"]
        else:
            lines += ["", f"simulate {r['name']}: failed: {r.get('error')}"]
    for r in report.get("timestepped", []):
        if "dt" not in r:
            continue
        lines += ["", f"time-stepped {r['name']}: dt {r['dt']:.3g} ({r['steps']} steps), max error {r['max_error']:.2e}"
                  f"{'' if r['reached'] else ' (target not reached)'}, {r['stepped_ms']:.1f} ms; kernel fwd "
                  f"{format_ms(r['kernel_fwd_ms'])} ms -> {r['ratio_vs_kernel']:.3g}x, event kernel fwd "
                  f"{format_ms(r['event_kernel_fwd_ms'])} ms -> {r['ratio_vs_event_kernel']:.3g}x"]
    if report.get("targets"):
        lines += ["", "targets" + ("" if report.get("judges_targets", True) else
                                   f" (not judged: preset {report['preset']} has toy shapes, to test the suite)")]
        for t in report["targets"]:
            lines.append(f"  {t['status']:<13} {t['target']}: {t['measured']}")
    if report.get("failures"):
        lines += ["", "FAILURES"] + [f"  {f['case']}: {f['error']}" for f in report["failures"]]
    return "\n".join(lines)

