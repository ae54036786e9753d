"""GPU verification in one device call: build ttfs_ext with CUDA for Hopper (sm_90) once, then
run its parts in order, each in a subprocess with its own time budget (a part that overruns is
killed and recorded as timed out; every part runs even if one before it failed): `ttfs info`,
`ttfs check`, every kernel once (gpu_kernels_smoke.py), the CUDA tests, the smoke script under
compute-sanitizer memcheck and racecheck, then the measurements (fs_activation against a copy, one
SPIDE iteration, VGG16 training throughput, the event path, layers against their ReLU twins, the
Places365 data pipeline, a torchrun training) as far as the time allows. It replaces the
run_gpu*.sh scripts; a long training run (Fashion-MNIST VGG16) is `ttfs train --device cuda ...`
on its own.

    python benchmarks/gpu_verify.py                          # the default parts, then optional ones while time is left
    python benchmarks/gpu_verify.py --no-build --part layers --part events   # a second call, warm machine
    python benchmarks/gpu_verify.py --cpu-dry-run --out /tmp/v   # the same plumbing on the CPU, small sizes (~1.5 min)

Writes into $OUT (the device tool's folder; --out DIR wins; default benchmarks/results/gpu/) at
most 8 files: gpu_verify.log (all output, with part headers, durations and status),
gpu_verify.json (every part's status, duration, budget and the figures read from the
benchmarks' own JSON, the environment) and at most 6 of the benchmarks' JSON/PNG files. The
JSON is rewritten after every part, so a call cut off from outside still returns what ran.
Exit status 0 when every part that ran passed (skipped parts are fine), 1 otherwise.

Needs on the GPU machine: torch with CUDA, nvcc, compute-sanitizer, scikit-build-core and
pybind11 installed (no package index: pip builds with --no-build-isolation --no-deps --no-index).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DEFAULT_OUT = BENCH / "results" / "gpu"
LOG_NAME, JSON_NAME = "gpu_verify.log", "gpu_verify.json"
MAX_FILES = 8          # the device tool brings back at most 8 files from $OUT
MAX_COPIES = 6         # of the benchmarks' JSON/PNG files: the log and our JSON are the other two
DEADLINE_S = 540       # one device call may run 600 s: the rest is slack for the tool and this script
DRY_DEADLINE_S = 180   # --cpu-dry-run: under 3 minutes on 2 cores
RESERVE_S = 10         # kept back from the deadline for writing the JSON and copying files
MIN_TIMEOUT_S = 10     # a part given less than this is not started
JSON_VERSION = 1

# Estimated seconds of each part on one H100 (16 cores, 80 GB), not measured yet: the first GPU
# run's gpu_verify.json has the real durations. The budgets (a part's timeout, in PARTS) are
# ~1.5-2x these; the default parts' budgets add up to 530 s, the build's being the largest
# (a build cut short leaves nothing to run).
EST_BUILD = 120      # cmake configure ~15 s, 34 C++ files (torch headers) on 16 cores ~45 s, 4 .cu for sm_90 ~60 s
EST_INFO = 4         # python start, torch import, `ttfs info --json`
EST_CHECK = 8        # `ttfs check`: 3 seeds of small layers, networks and event ops on CPU and CUDA
EST_SMOKE = 8        # gpu_kernels_smoke.py: ~40 calls on tiny tensors, CUDA context start-up dominates
EST_TESTS_CUDA = 60  # -m needs_cuda: ~420 small tests (collection ~8 s; torch.compile of two tests ~20 s)
EST_TESTS_OPS = 25   # test_registration (CPU opchecks) and test_raw_ops (~700 bad calls, CUDA ones included)
EST_MEMCHECK = 45    # the smoke script under memcheck: torch's CUDA start-up instrumented, then ~100 tiny kernels
EST_RACECHECK = 45   # the same under racecheck (shared memory of fs_activation's kernels)
EST_FS = 25          # bench_fs at 100M float32, K 10 and 16: fused vs clone/copy vs the eager loop, 5 cycles
EST_SPIDE = 50       # bench_spide, both networks at batch 128, 3 repeats of 4 variants, then the CUDA graphs
EST_PLACES = 60      # bench_places365_train: VGG16 converted on the CPU (float64, ~20 s), 2 x 18 steps at batch 64
EST_EVENTS = 45      # bench_suite --only event/: 11 layers (FC2, VGG16-CIFAR convs), kernel vs sort-and-gather
EST_LAYERS = 80      # bench_suite --only layer/: 22 layers x (float32, bfloat16), kernel/reference/twin x 3 modes
EST_LAYERS_CL = 45   # the 18 VGG16 conv layers in channels_last, bfloat16 (the training configuration)
EST_PIPELINE = 45    # bench_data_pipeline: 256 synthetic JPEGs x 3 rounds, PIL in 0/4 workers and decode on the GPU
EST_DDP = 90         # torchrun x3 (~10 s start each): VGG16 2 epochs from scratch, converted + fine-tuned, validated

# The lines of pip's verbose build output that go to the log (all of it goes to build_pip.log in
# the work folder, and its last 60 lines to the log when the build fails).
BUILD_LINE = re.compile(r"ttfs_ext:|error|Successfully installed|Created wheel", re.IGNORECASE)
BUILD_WARNING = re.compile(r"warning", re.IGNORECASE)
MAX_BUILD_WARNINGS = 100  # torch's headers can warn hundreds of times: the first ones say enough


# --- the run and its parts ----------------------------------------------------------------------

@dataclass
class Run:
    """What a part's command builder needs to know about this invocation."""
    dry: bool           # --cpu-dry-run: the CPU, small sizes
    work: Path          # the benchmarks write here (a temporary folder), each part in work/<part>
    python: str = sys.executable
    tools: dict[str, Optional[str]] = field(default_factory=dict)  # paths of nvcc and compute-sanitizer

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def folder(self, part: str) -> Path:
        path = self.work / part
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Job:
    """The commands of a part (run in order, stopping at the first failure) and how to run them."""
    commands: list[list[str]]
    env: dict[str, str] = field(default_factory=dict)
    keep_line: Optional[Callable[[str], bool]] = None  # None: every line goes to the log
    full_log: Optional[Path] = None                     # where all lines go when keep_line filters


@dataclass(frozen=True)
class Part:
    name: str
    budget_s: int          # its timeout
    estimate_s: int        # on one H100 (the EST_ constants)
    needs_cuda: bool       # skipped on a --cpu-dry-run
    default: bool          # in a plain run; the others need --part NAME, or run while time is left
    job: Callable[[Run], Job]
    figures: Optional[Callable[[Run, list[str]], dict[str, Any]]] = None  # what it measured
    help: str = ""


def bench_script(run: Run, name: str, *args: str) -> list[str]:
    return [run.python, str(BENCH / name), *args]


# --- one function per part: its commands ------------------------------------------------------------

def build_job(run: Run) -> Job:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # nproc
    env = {"TORCH_CUDA_ARCH_LIST": "9.0", "TTFS_CUDA": "ON", "CMAKE_BUILD_PARALLEL_LEVEL": str(cores)}
    # --no-index: the GPU machine has no package index, so pip must not wait for one
    pip = [run.python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-v", "."]
    return Job([pip, status_command(run, need="cuda")], env=env, keep_line=build_line_filter(),
               full_log=run.work / "build_pip.log")


def build_line_filter() -> Callable[[str], bool]:
    """Keeps ours, errors and the end of pip's output, and its first MAX_BUILD_WARNINGS warnings."""
    warnings = 0

    def keep(line: str) -> bool:
        nonlocal warnings
        if BUILD_LINE.search(line):
            return True
        warnings += bool(BUILD_WARNING.search(line))
        return bool(BUILD_WARNING.search(line)) and warnings <= MAX_BUILD_WARNINGS
    return keep


def info_job(run: Run) -> Job:
    return Job([[run.python, "-m", "ttfs_ext", "info", "--json"]])


def check_job(run: Run) -> Job:
    return Job([[run.python, "-m", "ttfs_ext", "check", *(["--seeds", "1"] if run.dry else [])]])


def smoke_job(run: Run) -> Job:
    return Job([bench_script(run, "gpu_kernels_smoke.py", "--device", run.device)])


def pytest_command(run: Run, *args: str) -> list[str]:
    # -p no:cacheprovider: nothing written into the checkout; faulthandler_timeout: a hung test
    # prints its stack before the part's timeout kills pytest (pytest-timeout may be absent)
    return [run.python, "-m", "pytest", "-q", "-rs", "-x", "-p", "no:cacheprovider", "-o", "faulthandler_timeout=120",
            *args]


def tests_cuda_job(run: Run) -> Job:
    return Job([pytest_command(run, "-m", "needs_cuda", "tests")])


def tests_ops_job(run: Run) -> Job:
    # the needs_cuda tests of these files ran in tests_cuda (two of them compile): not twice
    files = [f for f in ("tests/test_registration.py", "tests/test_raw_ops.py") if (ROOT / f).exists()]
    return Job([pytest_command(run, "-m", "not needs_cuda", *files)])


def sanitizer_job(run: Run, tool: str) -> Job:
    sanitizer = run.tools.get("compute-sanitizer") or "compute-sanitizer"
    command = [sanitizer, "--tool", tool, "--error-exitcode", "1",
               *bench_script(run, "gpu_kernels_smoke.py", "--device", "cuda")]
    # Without PyTorch's caching allocator every tensor is its own cudaMalloc, so that memcheck
    # sees a read past a tensor's end (inside a cached block it is a valid address).
    return Job([command], env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"})


def memcheck_job(run: Run) -> Job:
    return sanitizer_job(run, "memcheck")


def racecheck_job(run: Run) -> Job:
    return sanitizer_job(run, "racecheck")


def fs_job(run: Run) -> Job:
    out = run.folder("fs") / f"fs_{run.device}.json"
    sizes = ["--sizes", "1e4", "--ks", "10", "--cycles", "2"] if run.dry else ["--sizes", "1e8", "--ks", "10,16",
                                                                             "--cycles", "5"]
    # no torch.compile (each size and K compiles anew), no network; the eager loop forward at
    # 100M (~3 GB of temporaries), the fused forward+backward, not the loop's (~20 GB saved)
    return Job([bench_script(run, "bench_fs.py", "--device", run.device, *sizes, "--no-compile", "--no-network",
                             "--no-input-checks", "--max-eager", "1e8", "--max-backward", "1e8",
                             "--memory-budget", "1.6e10", "--out", str(out))])


def spide_job(run: Run) -> Job:
    out = run.folder("spide") / f"spide_{run.device}.json"
    if run.dry:
        size = ["--cases", "convnet_f-mnist", "--batch", "2", "--repeats", "1", "--T", "4", "--T-b", "6"]
    else:  # the papers' batch, both networks, then the forward and the T_b loop as CUDA graphs
        size = ["--batch", "128", "--repeats", "3", "--cuda-graphs", "--threads", "0"]
    return Job([bench_script(run, "bench_spide.py", "--device", run.device, *size, "--out", str(out))])


def places_job(run: Run) -> Job:
    out = run.folder("places") / f"places365_train_{run.device}.json"
    size = (["--model", "vgg-small", "--num-classes", "10", "--image-size", "32", "--batch", "2", "--steps", "1",
             "--repeats", "1", "--warmup", "1"] if run.dry else
            ["--model", "vgg16", "--image-size", "224", "--batch", "64", "--steps", "5", "--repeats", "3",
             "--warmup", "3"])
    return Job([bench_script(run, "bench_places365_train.py", "--device", run.device, "--precision", "bf16",
                             "--channels-last", *size, "--out", str(out))])


def suite_command(run: Run, part: str, *args: str) -> list[str]:
    # no torch.compile (~10 s per case and implementation); short timing: 3 paired cycles at least
    timing = ["--preset", "quick", "--min-run-time", "0.01", "--rounds", "1"] if run.dry else \
        ["--preset", "full", "--min-run-time", "0.05", "--rounds", "3"]
    return bench_script(run, "bench_suite.py", "--device", run.device, *timing, "--no-compile",
                        "--out", str(run.folder(part)), *args)


def events_job(run: Run) -> Job:
    return Job([suite_command(run, "events", "--only", "event/", "--reference-budget-gb", "2")])


def layers_job(run: Run) -> Job:
    return Job([suite_command(run, "layers", "--only", "layer/", "--precisions", "float32,bfloat16")])


def layers_cl_job(run: Run) -> Job:
    # bfloat16 only: channels_last with bfloat16 autocast is how the VGG16 trains
    only = ["--only", "layer/conv"] if run.dry else ["--only", "layer/vgg16-cifar", "--only", "layer/vgg16-places"]
    return Job([suite_command(run, "layers_cl", *only, "--channels-last", "--precisions", "bfloat16")])


def data_pipeline_job(run: Run) -> Job:
    out = run.folder("data_pipeline") / f"data_pipeline_{'cpu' if run.dry else 'gpu'}.json"
    size = ["--quick"] if run.dry else ["--gpu-decode", "--images", "256", "--rounds", "3", "--workers", "0", "4"]
    return Job([bench_script(run, "bench_data_pipeline.py", *size, "--out", str(out))])


SYNTHETIC_PLACES = ("import sys; from ttfs_ext.data.places365 import make_synthetic_places365; "
                    "make_synthetic_places365(sys.argv[1], train_per_class={}, val_per_class={}, test_count=8, "
                    "size=({size}, {size}))")
RELU_CHECKPOINT = ("import sys, torch; from ttfs_ext.train import vgg16; torch.manual_seed(0); "
                   "torch.save(vgg16.{}(4).state_dict(), sys.argv[1])")  # 4: the synthetic data's classes


def ddp_train_job(run: Run) -> Job:
    """The README's distributed training on one process (torchrun, NCCL on CUDA), bfloat16 +
    channels_last, on a synthetic Places365 (no data can be downloaded there): from scratch,
    then fine-tuning a converted ReLU VGG16 (random weights), then validation."""
    folder = run.folder("ddp_train")
    data, relu = folder / "data", folder / "relu_random.pth"
    if run.dry:
        make_data = SYNTHETIC_PLACES.format(4, 2, size=40)
        model = ["--model", "vgg-small", "--image-size", "32", "--max-steps-per-epoch", "2", "--batch-size", "4",
                 "--workers", "0"]
        calibration, save_relu = "4", RELU_CHECKPOINT.format("vgg_small_relu")
    else:
        make_data = SYNTHETIC_PLACES.format(40, 8, size=256)
        model = ["--model", "vgg16", "--batch-size", "32", "--workers", "8"]
        calibration, save_relu = "16", RELU_CHECKPOINT.format("vgg16_relu")
    torchrun = [run.python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "ttfs_ext"]
    common = ["--dataset", "places365", "--data-dir", str(data), *model, "--device", run.device, "--precision", "bf16",
              "--channels-last", "--no-progress", "--no-plots", "--json"]
    return Job([[run.python, "-c", make_data, str(data)],
                [*torchrun, "train", *common, "--epochs", "2", "--out", str(folder / "scratch")],
                [run.python, "-c", save_relu, str(relu)],
                [*torchrun, "train", *common, "--relu-checkpoint", str(relu), "--calibration-images", calibration,
                 "--epochs", "1", "--out", str(folder / "finetune")],
                [*torchrun, "validate", "--checkpoint", str(folder / "finetune" / "checkpoint.pt"), "--data-dir",
                 str(data), "--device", run.device, "--precision", "bf16", "--json",
                 "--out", str(folder / "validate")]])


def status_command(run: Run, need: str) -> list[str]:
    """Fails unless ttfs_ext imports with compiled kernels for `need`; prints its status as JSON."""
    code = ("import json, sys, ttfs_ext; s = ttfs_ext.status(); print('ttfs_ext: status ' + json.dumps(s)); "
            f"sys.exit(0 if {need!r} in s['kernel_devices'] else 'ttfs_ext: no {need} kernels in this build')")
    return [run.python, "-c", code]


# --- what each part measured -----------------------------------------------------------------------

def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def the_json(run: Run, part: str) -> Any:
    files = sorted(run.folder(part).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no JSON in {run.folder(part)}")
    return read_json(files[0])


def build_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    full = run.work / "build_pip.log"
    text = full.read_text(errors="replace") if full.exists() else ""
    return {"warning_lines": len(re.findall(r"warning", text, re.IGNORECASE)),
            "error_lines": len(re.findall(r"\berror\b", text, re.IGNORECASE)),
            "installed": "Successfully installed" in text}


def info_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    text = "\n".join(lines)
    start = text.find("{")
    return {"ttfs_ext_status": json.loads(text[start:text.rfind("}") + 1])} if start >= 0 else {}


def check_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    rows = [line for line in lines if line.rstrip().endswith((" ok", " FAIL"))]
    return {"rows": len(rows), "failed_rows": sum(line.rstrip().endswith("FAIL") for line in rows),
            "verdict": next((line.strip() for line in reversed(lines) if line.strip() in ("PASS", "FAIL")), None)}


def smoke_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    verdict = next((line for line in reversed(lines) if line.startswith("smoke: PASS") or
                    line.startswith("smoke: FAIL")), None)
    return {"verdict": verdict, "calls": sum(line.startswith("  ") and line.rstrip().endswith(": ok")
                                            for line in lines)}


def pytest_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|error|skipped)", line)
                    and " in " in line), "")
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)",
                                                   summary)} | {"summary": summary.strip("= ")}


def sanitizer_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    summary = next((line for line in reversed(lines) if re.search(r"(ERROR|RACECHECK) SUMMARY", line)), None)
    found = re.search(r"(\d+) errors?", summary or "")  # racecheck: "N hazards displayed (N errors, N warnings)"
    smoke = smoke_figures(run, lines)
    return {"summary": summary and summary.split("=========")[-1].strip(),
            "errors": int(found.group(1)) if found else None, "smoke": smoke["verdict"]}


def fs_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    rows = {}
    for r in the_json(run, "fs")["activation"]:
        impls = r["impls"]
        key = f"{r['mode']} K{r['K']} n{r['numel']:.0e}"
        rows[key] = {f"{name}_GB_per_s": v["GB_per_s"] for name, v in impls.items()}
        if r["mode"] == "forward":
            rows[key].update(fused_over_copy=r["fused_over_copy"], fused_over_clone=r["fused_over_clone"])
    return rows


def spide_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    report = the_json(run, "spide")
    keys = ("batch", "T", "T_b", "kernel_forward_s", "kernel_backward_s", "reference_forward_speedup",
            "reference_backward_speedup", "reference_iteration_speedup", "port_iteration_speedup")
    out: dict[str, Any] = {c["case"]: {k: c.get(k) for k in keys} for c in report["cases"]}
    for g in report.get("cuda_graphs", []):
        out[g["case"]]["cuda_graphs"] = {k: g.get(k) for k in ("eager_forward_s", "graph_forward_s", "graph_speedup",
                                                                "eager_backward_loop_s", "graph_backward_loop_s",
                                                                "backward_graph_speedup")}
    return out


def places_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    report = the_json(run, "places")
    out: dict[str, Any] = {"conversion_s": report["conversion"]["seconds"]}
    for r in report["results"]:
        key = f"{r['precision']} {'channels_last' if r['channels_last'] else 'NCHW'} batch {r['batch']}"
        out[key] = {name: r[name].get("images_per_s", r[name].get("error")) for name in ("ttfs", "relu")}
        out[key]["ttfs_over_relu_images_per_s"] = (r.get("ttfs_over_relu_images_per_s") or {}).get("median")
    return out


def suite_figures(run: Run, part: str) -> dict[str, Any]:
    report = the_json(run, part)
    out: dict[str, Any] = {"failures": report.get("failures", []), "seconds": report.get("seconds")}
    for r in report.get("layers", []):
        key = f"{r['name']} {r['precision']}{' channels_last' if r.get('memory_format') == 'channels_last' else ''}"
        if "times_ms" not in r:
            out[key] = {"not_timed": r.get("crashed") or r.get("check", {}).get("reason")}
            continue
        fb = r["times_ms"]["fwd+bwd"]
        out[key] = {"fwd+bwd_ms": {i: fb[i].get("median_ms") for i in ("kernel", "reference", "twin") if i in fb},
                    "kernel/twin": {m: q.get("kernel/twin") for m, q in r["ratios"].items()},
                    "kernel_error_vs_float64": r["errors_vs_float64"]["kernel"]}
    for r in report.get("events", []):
        if "times_ms" not in r:
            out[r["name"]] = {"not_timed": r.get("crashed") or r.get("check", {}).get("reason")}
            continue
        out[r["name"]] = {"reference_batch": r.get("reference_batch"),
                          "ms": {m: {i: v.get("median_ms") for i, v in t.items()} for m, t in r["times_ms"].items()},
                          "reference/kernel": {m: q.get("reference/kernel") for m, q in r["ratios"].items()}}
    return out


def data_pipeline_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    report = the_json(run, "data_pipeline")
    return {"images_per_s": {r["case"]: r["images_per_s"] for r in report["results"]},
            "ratios": report.get("throughput_ratios")}


def ddp_train_figures(run: Run, lines: list[str]) -> dict[str, Any]:
    folder = run.folder("ddp_train")
    out: dict[str, Any] = {}
    for name in ("scratch", "finetune"):
        summary = read_json(folder / name / "metrics.json")["summary"]
        out[name] = {k: summary.get(k) for k in ("epoch", "images", "loss", "top1", "images_per_s", "world_size")}
        out[name]["val_agreement"] = summary.get("val", {}).get("agreement")
    validate = read_json(folder / "validate" / "validate.json")
    out["validate"] = {k: validate.get(k) for k in ("images", "top1", "relu_top1", "agreement", "seconds")}
    return out


# --- the table of parts, in the order they run ------------------------------------------------------

PARTS = [  # name, budget_s, estimate_s, needs_cuda, default, command builder, figures, what it does
    Part("build", 240, EST_BUILD, True, True, build_job, build_figures,
         "pip install for sm_90 with all cores; fails unless ttfs_ext then has CUDA kernels"),
    Part("info", 10, EST_INFO, False, True, info_job, info_figures, "ttfs info --json"),
    Part("check", 15, EST_CHECK, False, True, check_job, check_figures, "ttfs check: kernels vs reference vs events"),
    Part("smoke", 15, EST_SMOKE, False, True, smoke_job, smoke_figures,
         "gpu_kernels_smoke.py: every kernel once, forward and backward"),
    Part("tests_cuda", 80, EST_TESTS_CUDA, True, True, tests_cuda_job, pytest_figures, "pytest -m needs_cuda tests"),
    Part("tests_ops", 40, EST_TESTS_OPS, True, True, tests_ops_job, pytest_figures,
         "pytest test_registration.py test_raw_ops.py (their needs_cuda tests ran in tests_cuda)"),
    Part("memcheck", 65, EST_MEMCHECK, True, True, memcheck_job, sanitizer_figures,
         "compute-sanitizer memcheck over the smoke script"),
    Part("racecheck", 65, EST_RACECHECK, True, True, racecheck_job, sanitizer_figures,
         "compute-sanitizer racecheck over the smoke script"),
    Part("fs", 60, EST_FS, False, False, fs_job, fs_figures, "bench_fs: fs_activation GB/s vs a copy at 100M elements"),
    Part("spide", 100, EST_SPIDE, False, False, spide_job, spide_figures,
         "bench_spide: one training iteration vs the reference loop, and as CUDA graphs"),
    Part("places", 120, EST_PLACES, False, False, places_job, places_figures,
         "bench_places365_train: TTFS vs ReLU VGG16 images/s, bf16, channels_last, batch 64, 224x224"),
    Part("events", 90, EST_EVENTS, False, False, events_job, lambda run, lines: suite_figures(run, "events"),
         "bench_suite --only event/: the event path vs its sort-and-gather reference"),
    Part("layers", 150, EST_LAYERS, False, False, layers_job, lambda run, lines: suite_figures(run, "layers"),
         "bench_suite --only layer/: every layer fwd+bwd vs its ReLU twin, float32 and bfloat16"),
    Part("layers_cl", 90, EST_LAYERS_CL, False, False, layers_cl_job,
         lambda run, lines: suite_figures(run, "layers_cl"),
         "bench_suite --channels-last: the VGG16 conv layers in channels_last, bfloat16"),
    Part("data_pipeline", 90, EST_PIPELINE, False, False, data_pipeline_job, data_pipeline_figures,
         "bench_data_pipeline --gpu-decode: Places365 decode + augment, CPU workers and on the GPU"),
    Part("ddp_train", 150, EST_DDP, False, False, ddp_train_job, ddp_train_figures,
         "torchrun, 1 GPU: VGG16 bf16 channels_last on synthetic Places365, fine-tuned, validated"),
]


# --- running a command -----------------------------------------------------------------------------

class Log:
    """gpu_verify.log and stdout at once, line by line (flushed: a killed run keeps its log)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8", errors="replace")
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        line = line.rstrip("\n")
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()
            print(line, flush=True)

    def close(self) -> None:
        self.file.close()


def execute(command: list[str], env: dict[str, str], timeout: float, on_line: Callable[[str], None]
            ) -> tuple[Optional[int], bool]:
    """Run command in the repository root, every output line to on_line; (exit status, timed
    out). On timeout the command's whole process group is killed (pytest's or the sanitizer's
    children with it)."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, start_new_session=True)
    def read() -> None:
        for line in proc.stdout:
            on_line(line)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc, timed_out = proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        rc = proc.poll()
    reader.join(timeout=10)
    return rc, timed_out


def run_part(part: Part, run: Run, timeout: float, log: Log) -> dict[str, Any]:
    """Run a part's commands within `timeout` seconds in all; its record for the JSON."""
    job = part.job(run)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **job.env}
    lines: list[str] = []  # what went to the log: the figures are read from it
    full = job.full_log.open("w", encoding="utf-8", errors="replace") if job.full_log else None

    def on_line(line: str) -> None:
        if full:
            full.write(line)
        if job.keep_line is None or job.keep_line(line):
            lines.append(line.rstrip("\n"))
            log(line)

    record: dict[str, Any] = {"commands": [" ".join(c) for c in job.commands], "env": job.env}
    start = time.monotonic()
    rc, timed_out, reason = 0, False, None
    for command in job.commands:
        left = timeout - (time.monotonic() - start)
        log(f"--- $ {' '.join(command)}")
        began = time.monotonic()
        try:
            rc, timed_out = execute(command, env, max(left, 1.0), on_line)
        except OSError as err:  # a missing executable
            rc, reason = None, f"cannot run {command[0]}: {err}"
        log(f"--- {'timed out' if timed_out else f'exit status {rc}'} after {time.monotonic() - began:.1f} s")
        if rc != 0 or timed_out:
            break
    if full:
        full.close()
    record["duration_s"] = round(time.monotonic() - start, 1)
    record["returncode"] = rc
    if timed_out:
        record.update(status="timed_out", reason=f"killed after its {timeout:.0f} s")
    elif rc != 0:
        record.update(status="failed", reason=reason or f"exit status {rc}")
    else:
        record["status"] = "passed"
    if rc != 0 and job.full_log and job.full_log.exists():  # the build's error is in the lines filtered out
        log(f"--- last lines of {job.full_log.name}:")
        for line in job.full_log.read_text(errors="replace").splitlines()[-60:]:
            log(line)
    if part.figures is not None:  # a failed part's figures too, where its output has them (test counts)
        try:
            record["figures"] = part.figures(run, lines)
        except Exception as err:  # noqa: BLE001  (figures are a report: a missing key must not fail the run)
            if record["status"] == "passed":
                record["figures_error"] = f"{type(err).__name__}: {err}"
    return record


# --- the environment --------------------------------------------------------------------------------

ENV_PROBE = """
import json, torch
info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device_name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                device_count=torch.cuda.device_count())
print(json.dumps(info))
"""


def first_line(command: list[str], pick: Callable[[list[str]], str] = lambda lines: lines[0]) -> Optional[str]:
    """A line of a command's output, or None where it is missing or fails."""
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return pick(lines) if proc.returncode == 0 and lines else None


def find_tool(name: str) -> Optional[str]:
    """A CUDA tool on PATH, else in $CUDA_HOME/bin or /usr/local/cuda/bin."""
    found = shutil.which(name)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if found is None and home and (Path(home) / "bin" / name).exists():
            found = str(Path(home) / "bin" / name)
    return found


def environment(run: Run) -> dict[str, Any]:
    """Versions and the device (no host name)."""
    torch_info = first_line([run.python, "-c", ENV_PROBE])
    nvcc = run.tools.get("nvcc")
    commit = first_line(["git", "rev-parse", "HEAD"])
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),  # kernel and libc, no host name
        "cpu_count": os.cpu_count(),
        **(json.loads(torch_info) if torch_info else {"torch": None}),
        "nvidia_smi": first_line(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"]),
        "nvcc": first_line([nvcc, "--version"], lambda lines: next((x for x in lines if "release" in x), lines[-1]))
        if nvcc else None,
        "compute_sanitizer": run.tools.get("compute-sanitizer"),
        "git_commit": commit or "unknown",
        "git_dirty": None if commit is None else first_line(["git", "status", "--porcelain"]) is not None,
    }


# --- the whole run ------------------------------------------------------------------------------------

def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def copy_results(run: Run, records: list[dict[str, Any]], out: Path, room: int) -> list[str]:
    """Copy at most `room` of the benchmarks' files into out, JSON before PNG, in part order,
    named <part>_<file> where the name does not start with the part's (two suite parts write
    the same file name)."""
    candidates = [(part, f) for suffix in (".json", ".png") for part in (r["name"] for r in records)
                  if (run.work / part).is_dir() for f in sorted((run.work / part).glob(f"*{suffix}"))]
    copied = []
    for part, f in candidates:
        target = out / (f.name if f.name.startswith(part) else f"{part}_{f.name}")
        if len(copied) == room or target.exists():  # a file already there is someone's: left alone
            continue
        shutil.copyfile(f, target)
        copied.append(target.name)
    return copied


def selection(args: argparse.Namespace, part: Part) -> Optional[str]:
    """Why the part was chosen to run, or None."""
    if part.name == "build":
        return None if args.no_build else "build"
    if args.part:
        return "--part" if part.name in args.part else None
    if args.cpu_dry_run:
        return "dry run"  # every part: the dry run proves all the plumbing
    return "default" if part.default else ("time left" if args.fill else None)


def skip_reason(args: argparse.Namespace, part: Part, why: Optional[str], ext_error: Optional[str],
                left: float) -> Optional[str]:
    """Why a part does not run now, or None."""
    if args.cpu_dry_run and part.needs_cuda:
        return "cpu dry run"
    if why is None:
        if part.name == "build":
            return "--no-build: the installed extension"
        return "not among the --part parts" if args.part else f"optional: run it with --part {part.name}"
    if part.name != "build" and ext_error:
        return ext_error
    if why == "time left" and left < part.budget_s:
        return f"not enough time left ({left:.0f} s for a {part.budget_s} s budget): run it with --part {part.name}"
    if left < MIN_TIMEOUT_S:
        return f"no time left before the {args.deadline:.0f} s deadline"
    return None


def extension_error(run: Run, build: dict[str, Any]) -> Optional[str]:
    """Why the parts that need ttfs_ext cannot run, or None: the build's failure, or (build
    skipped) the installed extension's lack of kernels for this run's device."""
    if build["status"] != "skipped":
        return None if build["status"] == "passed" else f"build {build['status']}: {build.get('reason')}"
    try:
        rc = subprocess.run(status_command(run, need=run.device), cwd=ROOT, capture_output=True, timeout=120).returncode
    except subprocess.TimeoutExpired:
        rc = None
    return None if rc == 0 else f"the installed ttfs_ext has no {run.device} kernels (run with the build)"


def run_or_skip(args: argparse.Namespace, run: Run, part: Part, number: str, left: float, ext_error: Optional[str],
                log: Log) -> dict[str, Any]:
    """The part's record: run within min(budget, time left), or skipped with the reason."""
    why = selection(args, part)
    record: dict[str, Any] = {"name": part.name, "budget_s": part.budget_s, "estimate_s": part.estimate_s,
                              "needs_cuda": part.needs_cuda, "default": part.default, "selected_by": why}
    reason = skip_reason(args, part, why, ext_error, left)
    if reason is not None:
        log(f"=== {number} {part.name}: skipped ({reason})")
        return {**record, "status": "skipped", "reason": reason}
    timeout = min(part.budget_s, left)
    log(f"=== {number} {part.name} ({part.help}): budget {part.budget_s} s, timeout {timeout:.0f} s, "
        f"H100 estimate {part.estimate_s} s")
    record.update(timeout_s=round(timeout), **run_part(part, run, timeout, log))
    log(f"=== {part.name}: {record['status']} in {record['duration_s']} s"
        + (f" ({record['reason']})" if record.get("reason") else ""))
    return record


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    started, start = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    out = Path(args.out or os.environ.get("OUT") or DEFAULT_OUT).resolve()
    out.mkdir(parents=True, exist_ok=True)
    others = [f for f in files_in(out) if f.name not in (LOG_NAME, JSON_NAME)]  # not ours: counted, never deleted
    run = Run(dry=args.cpu_dry_run, work=Path(tempfile.mkdtemp(prefix="gpu_verify_")),
              tools={t: find_tool(t) for t in ("nvcc", "compute-sanitizer")})
    log = Log(out / LOG_NAME)
    report: dict[str, Any] = {
        "script": "benchmarks/gpu_verify.py", "json_version": JSON_VERSION,
        "mode": "cpu-dry-run" if run.dry else "gpu", "argv": sys.argv[1:] if argv is None else argv,
        "started_utc": started.isoformat(timespec="seconds"), "deadline_s": args.deadline,
        "environment": environment(run), "parts": []}
    log(f"gpu_verify ({report['mode']}): output in {out}, deadline {args.deadline:.0f} s")
    log(f"environment: {json.dumps(report['environment'])}")

    def write_json() -> None:
        report["wall_s"] = round(time.monotonic() - start, 1)
        (out / JSON_NAME).write_text(json.dumps(report, indent=1, default=str) + "\n")

    ext_error = None
    for i, part in enumerate(PARTS, 1):
        left = args.deadline - RESERVE_S - (time.monotonic() - start)
        report["parts"].append(run_or_skip(args, run, part, f"[{i}/{len(PARTS)}]", left, ext_error, log))
        if part.name == "build":  # PARTS[0]: every later part needs the extension
            ext_error = extension_error(run, report["parts"][-1])
            report["extension"] = ext_error or "ok"
            if ext_error:
                log(f"=== extension: {ext_error}")
        write_json()

    ran = [r for r in report["parts"] if r["status"] != "skipped"]
    # a build that failed is a failed part; an installed extension without the kernels fails the run too
    report["passed"] = all(r["status"] == "passed" for r in ran) and not ext_error
    report["copied_files"] = copy_results(run, report["parts"], out, min(MAX_COPIES, MAX_FILES - 2 - len(others)))
    shutil.rmtree(run.work, ignore_errors=True)
    log("")
    log(f"{'part':<13} {'status':<10} {'seconds':>8} {'budget':>7} {'H100 est':>9}  reason")
    for r in report["parts"]:
        log(f"{r['name']:<13} {r['status']:<10} {r.get('duration_s', ''):>8} {r['budget_s']:>7} {r['estimate_s']:>9}  "
            f"{r.get('reason', '')}")
    log(f"copied into {out}: {', '.join(report['copied_files']) or 'nothing'}")
    write_json()  # every file is there now: the log, this JSON, the copies
    report["files_in_out"] = count = len(files_in(out))
    ok = report["passed"] = report["passed"] and count <= MAX_FILES
    if count > MAX_FILES:
        log(f"gpu_verify: {count} files in {out}, but the device tool brings back only {MAX_FILES}")
    log(f"gpu_verify: {'PASS' if ok else 'FAIL'} ({len(ran)} parts ran) in {time.monotonic() - start:.0f} s")
    log.close()
    write_json()
    return 0 if ok else 1


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    table = "\n".join(f"  {p.name:<13} {'default' if p.default else 'optional':<9} {p.estimate_s:>5} s "
                      f"{p.budget_s:>5} s  {p.help}" for p in PARTS)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"parts, in the order they run (H100 estimate, budget = timeout):\n{table}\n\n"
               f"A plain run runs the default parts (budgets {sum(p.budget_s for p in PARTS if p.default)} s in all), "
               "then the optional ones in order\nwhile a part's whole budget fits before the deadline. Later "
               "calls on the warm machine run the rest, e.g.\n  python benchmarks/gpu_verify.py --no-build --part "
               "layers --part events --deadline 250")
    parser.add_argument("--part", action="append", choices=[p.name for p in PARTS if p.name != "build"],
                        metavar="NAME", help="run only this part (repeatable; the build still runs unless --no-build)")
    parser.add_argument("--no-build", action="store_true",
                        help="use the installed ttfs_ext (it must have CUDA kernels)")
    parser.add_argument("--no-fill", dest="fill", action="store_false",
                        help="a plain run stops after the default parts")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="the plumbing on the CPU: no build, small sizes, the CUDA-only parts skipped")
    parser.add_argument("--deadline", type=float, default=None,
                        help=f"seconds for the whole run (default {DEADLINE_S}; {DRY_DEADLINE_S} for a dry run)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the (at most {MAX_FILES}) files (default $OUT, else {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.deadline is None:
        args.deadline = DRY_DEADLINE_S if args.cpu_dry_run else DEADLINE_S
    return args


if __name__ == "__main__":
    sys.exit(main())
