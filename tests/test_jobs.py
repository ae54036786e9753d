"""`ttfs train` and `ttfs evaluate` on the bundled digits (small and fast)."""
from __future__ import annotations

import csv
import json

import pytest

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


def test_missing_dataset_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TTFS_EXT_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SystemExit, match="download=True|--download|not found"):
        main(["train", "--dataset", "cifar10", "--epochs", "1", "--out", str(tmp_path / "r")])
