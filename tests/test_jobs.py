"""`ttfs train` and `ttfs evaluate` on the bundled digits (small and fast)."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import ttfs_ext

from ttfs_ext import train as T
from ttfs_ext.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_train_writes_metrics_checkpoint_and_plots(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    summary = metrics["summary"]
    assert summary["snn_test_accuracy"] == summary["relu_test_accuracy"] > 0.5  # float64: the twin agrees
    assert 0 < summary["spikes_per_neuron"] < 1 and summary["latency"] > 1
    assert len(metrics["history"]["epochs"]) == 2 and metrics["environment"]["torch"]
    for name in ("curves.png", "spike_histograms.png", "raster.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = T.load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 2 and state["extra"]["config"]["dataset"] == "digits"


def test_train_resume_and_fine_tuning(run, tmp_path):
    # resume: a finished run continued to 3 epochs adds one epoch
    assert main(["train", "--dataset", "digits", "--epochs", "3", "--batch-size", "64", "--out", str(run),
                 "--resume", "--no-progress", "--no-plots", "--json"]) == 0
    assert len(json.loads((run / "metrics.json").read_text())["history"]["epochs"]) == 3
    # robust and latency fine-tuning from the checkpoint
    for extra in (["--noise", "0.05", "--time-bits", "4", "--weight-bits", "6"], ["--latency", "0.5"]):
        out = tmp_path / extra[0].strip("-")
        assert main(["train", "--dataset", "digits", "--epochs", "1", "--init", str(run / "checkpoint.pt"),
                     "--out", str(out), "--no-progress", "--no-plots", "--json", *extra]) == 0
        result = json.loads((out / "metrics.json").read_text())
        assert result["summary"]["snn_test_accuracy"] > 0.3
        assert result["summary"]["relu_test_accuracy"] is None  # no twin when fine-tuning


def test_evaluate_sweeps(run):
    assert main(["evaluate", str(run / "checkpoint.pt"), "--noise", "0,0.5", "--repeats", "2", "--time-bits", "1,8",
                 "--weight-bits", "1,8", "--latency", "1,0.25", "--event-size", "100"]) == 0
    rows = list(csv.DictReader(open(run / "evaluate.csv")))
    by = {(r["sweep"], float(r["value"])): float(r["accuracy"]) for r in rows}
    assert by[("noise", 0.0)] > by[("noise", 0.5)]
    assert by[("time_bits", 8.0)] > by[("time_bits", 1.0)]
    assert by[("weight_bits", 8.0)] > by[("weight_bits", 1.0)]
    latency = [r for r in rows if r["sweep"] == "latency"]
    assert int(latency[0]["early_spikes"]) == 0  # the trained windows hold every activation here
    assert (run / "evaluate.png").exists() and json.loads((run / "evaluate.json").read_text())["rows"]
    # An earlier evaluation is replaced only when asked.
    before = (run / "evaluate.csv").read_bytes()
    assert main(["evaluate", str(run / "checkpoint.pt"), "--noise", "0", "--time-bits", "8", "--weight-bits", "8",
                 "--latency", "1", "--event-size", "10", "--no-plots"]) == 2
    assert (run / "evaluate.csv").read_bytes() == before
    assert main(["evaluate", str(run / "checkpoint.pt"), "--noise", "0", "--time-bits", "8", "--weight-bits", "8",
                 "--latency", "1", "--event-size", "10", "--no-plots", "--overwrite"]) == 0
    assert len(list(csv.DictReader(open(run / "evaluate.csv")))) == 4


def test_missing_dataset_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TTFS_EXT_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["train", "--dataset", "cifar10", "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ttfs train: error: CIFAR-10 not found") and "download=True" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


# --- nothing a user made is lost -------------------------------------------------------------------

QUICK = ["--dataset", "digits", "--batch-size", "64", "--train-size", "256", "--no-progress", "--no-plots", "--json"]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".ttfs-train.lock"}


@pytest.fixture
def small_run(tmp_path, monkeypatch):
    """A finished one-epoch run in runs/digits-fc2 (the default folder) under a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1", *QUICK]) == 0
    return tmp_path / "runs" / "digits-fc2"


def _fails(capsys, argv, *needles):
    """The command fails with one line that says what is wrong (a dataset's error adds where to
    get it below), never a traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    first, *rest = err.splitlines()
    assert first.startswith(f"ttfs {argv[0]}: error: ") and "Traceback" not in err, err
    assert not rest or "not found" in first, err
    for needle in needles:
        assert needle in first, (needle, err)


def test_an_existing_run_is_never_replaced_unless_told(small_run, capsys):
    before = _snapshot(small_run)
    _fails(capsys, ["train", "--epochs", "1", *QUICK], "already holds a run", "--resume", "--overwrite")
    _fails(capsys, ["train", "--epochs", "2", "--resume", "--model", "vgg-small", "--out", str(small_run), *QUICK],
           "differs in --model vgg-small (the run has fc2)")
    _fails(capsys, ["train", "--epochs", "1", "--resume", *QUICK], "has 1 epochs already", "--epochs N > 1")
    for bad in (["--epochs", "0"], ["--epochs", "-1"], ["--batch-size", "0"], ["--lr", "-1"], ["--lr", "nan"],
                ["--test-size", "0"], ["--noise", "-0.1"]):
        with pytest.raises(SystemExit) as info:
            main(["train", *QUICK, *bad])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {bad[0]}" in err and "Traceback" not in err, err
    # A value given explicitly counts, even when it is the default (the run has batch size 64).
    _fails(capsys, ["train", "--epochs", "2", "--resume", *QUICK, "--batch-size", "32"],
           "differs in --batch-size 32 (the run has 64)")
    # --overwrite with a mistake keeps the old run whole: nothing is removed before the new run's
    # first checkpoint.
    _fails(capsys, ["train", "--epochs", "1", "--overwrite", *QUICK[:-1], "--dataset", "mnist", "--data-dir", "typo"],
           "not found in the given root typo")
    assert _snapshot(small_run) == before  # nothing touched
    # One ttfs train per run folder at a time: another process holding the run's lock.
    with _lock_holder(small_run / ".ttfs-train.lock"):
        _fails(capsys, ["train", "--epochs", "2", "--resume", *QUICK], "in use by another ttfs train")
    assert main(["train", "--epochs", "2", "--resume", *QUICK]) == 0  # continues
    assert json.loads((small_run / "metrics.json").read_text())["summary"]["snn_test_accuracy"] is not None
    assert T.load_checkpoint(small_run / "checkpoint.pt")["epoch"] == 2
    assert main(["train", "--epochs", "1", "--overwrite", *QUICK]) == 0  # replaced, as asked
    assert T.load_checkpoint(small_run / "checkpoint.pt")["epoch"] == 1


def test_fine_tuning_writes_a_new_folder(small_run, capsys):
    """The fine-tuning example of jobs.py: --init without --out never writes over the run it starts from."""
    before = _snapshot(small_run)
    init = str(small_run / "checkpoint.pt")
    assert main(["train", "--init", init, "--noise", "0.05", "--epochs", "1", *QUICK[2:]]) == 0
    assert _snapshot(small_run) == before
    tuned = small_run.parent / "digits-fc2-noise-0.05"
    state = T.load_checkpoint(tuned / "checkpoint.pt")
    assert state["extra"]["config"]["dataset"] == "digits"  # taken from the --init checkpoint
    _fails(capsys, ["train", "--init", init, "--out", str(small_run), "--overwrite", "--epochs", "1", *QUICK],
           "lies in the run folder", "choose another --out")
    _fails(capsys, ["train", "--init", init, "--resume", *QUICK], "cannot be combined with --init")
    _fails(capsys, ["train", "--init", "nowhere.pt", "--epochs", "1", *QUICK], "checkpoint nowhere.pt does not exist")
    _fails(capsys, ["train", "--init", init, "--model", "vgg-small", "--out", "other", *QUICK],
           "does not fit --model vgg-small")
    assert _snapshot(small_run) == before


def test_user_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["train", "--resume", *QUICK], "holds no checkpoint.pt to continue")
    _fails(capsys, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "typo"), "--epochs", "1"],
           f"MNIST not found in the given root {tmp_path / 'typo'} (no such folder)")
    _fails(capsys, ["evaluate", str(tmp_path / "missing.pt")], "missing.pt does not exist")
    _fails(capsys, ["train", "--device", "gpu0", *QUICK], "--device gpu0: not a device")
    if not torch.cuda.is_available():
        _fails(capsys, ["train", "--device", "cuda", *QUICK], "--device cuda: CUDA is not available")
    with pytest.raises(ttfs_ext.train.CheckpointError):  # --debug: the traceback
        main(["evaluate", "--debug", str(_evil_checkpoint(tmp_path))])
    assert not list(tmp_path.glob("runs"))


def _evil_checkpoint(folder):
    path = folder / "evil.pt"
    torch.save({"model": _Evil()}, path)
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_PWNED}",))


_PWNED = "ttfs-checkpoint-ran-code"


def test_a_checkpoint_cannot_run_code(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = _evil_checkpoint(tmp_path)
    for argv in (["evaluate", str(path)], ["train", "--init", str(path), *QUICK]):
        _fails(capsys, argv, "refused", "weights_only=True")
    with pytest.raises(T.CheckpointError, match="refused"):
        T.load_checkpoint(path)
    assert not (tmp_path / _PWNED).exists()


@contextlib.contextmanager
def _lock_holder(path, fork_child: bool = False):
    """A process that holds the run lock of ttfs train on path (jobs._run_lock) until the block
    ends; with fork_child it forks a child (as DataLoader workers are forked) that outlives it."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from ttfs_ext.cli import jobs
        with jobs._run_lock(Path({str(path.parent)!r})):
            if {fork_child!r} and os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the holder and any child it forked
        proc.wait()


def test_run_lock_belongs_to_the_process_not_to_its_forked_workers(tmp_path):
    """A rank killed while its forked DataLoader workers live leaves the run lock free at once, so
    a restarted rank can take it (flock locks would stay with the workers' inherited files)."""
    from ttfs_ext.cli import jobs
    with _lock_holder(tmp_path / ".ttfs-train.lock", fork_child=True) as holder:
        with pytest.raises(jobs.CommandError, match="in use by another ttfs train"):
            with jobs._run_lock(tmp_path):
                pass
        holder.kill()
        holder.wait()  # its child still sleeps, with the lock file open
        with jobs._run_lock(tmp_path):  # free at once
            pass
    assert not (tmp_path / ".ttfs-train.lock").exists()  # removed at the end of the run


def test_a_file_that_is_no_checkpoint_is_called_so(tmp_path, capsys):
    """metrics.json given to evaluate is not a checkpoint; only a pickle asking for code is
    refused as one that could run it."""
    path = tmp_path / "metrics.json"
    path.write_text('{"epoch": 1}')
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a readable checkpoint" in err and "could run code" not in err
    assert main(["evaluate", str(_evil_checkpoint(tmp_path))]) == 2
    assert "could run code" in capsys.readouterr().err
