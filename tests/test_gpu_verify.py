"""benchmarks/gpu_verify.py --cpu-dry-run: the GPU verification's plumbing on the CPU (every
part's command, the budgets, the log, the JSON, the copies into the output folder) with small
sizes, the CUDA-only parts skipped. One run (about 1.5 minutes on 2 cores) serves every test here;
deselect them with -m "not gpu_verify"."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ttfs_ext

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_verify  # noqa: E402  (stdlib only at import: torch is the parts' business)

pytestmark = [pytest.mark.gpu_verify,
              pytest.mark.skipif("cpu" not in ttfs_ext.kernel_devices(), reason="no compiled CPU kernels")]

CUDA_PARTS = {"build", "tests_cuda", "tests_ops", "memcheck", "racecheck"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_verify")
    # a deadline far above the run's time: a slow machine must not turn parts into "no time left"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_verify.py"), "--cpu-dry-run",
                           "--deadline", "480", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=540)
    report = json.loads((out / gpu_verify.JSON_NAME).read_text())
    return proc, out, report


def test_dry_run_passes(dry_run):
    proc, out, report = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["passed"] and report["mode"] == "cpu-dry-run"


def test_at_most_eight_files(dry_run):
    _, out, report = dry_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and report["files_in_out"] == len(files)
    assert {gpu_verify.LOG_NAME, gpu_verify.JSON_NAME} <= {p.name for p in files}
    assert set(report["copied_files"]) == {p.name for p in files} - {gpu_verify.LOG_NAME, gpu_verify.JSON_NAME}


def test_every_part_has_a_status(dry_run):
    _, out, report = dry_run
    parts = {r["name"]: r for r in report["parts"]}
    assert list(parts) == [p.name for p in gpu_verify.PARTS]
    for name, r in parts.items():
        assert r["status"] in ("passed", "failed", "timed_out", "skipped"), r
        assert r["budget_s"] > 0 and r["estimate_s"] > 0
        if name not in CUDA_PARTS:  # on the CPU every other part runs, and passes
            assert r["status"] == "passed", r
    log = (out / gpu_verify.LOG_NAME).read_text()
    assert all(f"] {name}" in log for name in parts)  # every part's header


def test_cuda_parts_are_skipped(dry_run):  # by the dry run, on a machine with CUDA too
    _, _, report = dry_run
    for r in report["parts"]:
        if r["name"] in CUDA_PARTS:
            assert r["status"] == "skipped" and r["reason"] == "cpu dry run", r


def test_figures_come_from_the_benchmarks(dry_run):
    _, _, report = dry_run
    parts = {r["name"]: r for r in report["parts"]}
    assert "14/14 ops called" in parts["smoke"]["figures"]["verdict"]  # every kernel reached
    assert parts["check"]["figures"]["verdict"] == "PASS"
    assert any(k.startswith("forward K10") for k in parts["fs"]["figures"])
    assert "convnet_f-mnist" in parts["spide"]["figures"]
    assert parts["places"]["figures"]["conversion_s"] > 0
    for name in ("layers", "layers_cl", "events"):
        assert parts[name]["figures"]["failures"] == [] and len(parts[name]["figures"]) > 2, parts[name]
    env = report["environment"]
    assert env["git_commit"] and env["torch"] == torch.__version__
