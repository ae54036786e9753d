"""The scripts of examples/ run as a user runs them (their --quick size), with the public API only."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), "--quick"])
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == {"train_fc2.py", "convert_relu.py", "simulate_events.py",
                                                       "time_a_layer.py"}


def test_only_public_api():
    for path in EXAMPLES.glob("*.py"):
        text = path.read_text()
        assert "._" not in text and "torch.ops" not in text, path.name
        assert len(text.splitlines()) <= 60, path.name


def test_train_fc2(monkeypatch, capsys):
    pytest.importorskip("sklearn")
    last = run_example("train_fc2.py", monkeypatch)["last"]
    assert last.test_accuracy == last.twin_test_accuracy  # float64: the twin takes the same steps
    assert "SNN test accuracy" in capsys.readouterr().out


def test_convert_relu(monkeypatch):
    pytest.importorskip("sklearn")
    check = run_example("convert_relu.py", monkeypatch)["check"]
    assert check.agreement == 1.0 and check.max_logit_diff < 1e-9
    assert check.event_agreement == 1.0 and not any(check.early_spikes)


def test_simulate_events(monkeypatch):
    result = run_example("simulate_events.py", monkeypatch)
    assert result["sim"].exact and float((result["sim"].logits - result["closed"]).abs().max()) < 1e-9


def test_time_a_layer(monkeypatch):
    (layer,) = run_example("time_a_layer.py", monkeypatch)["report"]["layers"]
    assert layer["check"]["passed"] and layer["ratios"]["fwd+bwd"]["kernel/twin"] > 0
