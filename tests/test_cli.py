import json
import shutil
import subprocess
import sys

import pytest

from ttfs_ext.cli import main


def test_info(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["compiled"] and "cpu" in info["kernel_devices"]


def test_check_passes(capsys):
    assert main(["check", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("PASS")
    assert "linear" in out and "conv2d" in out and "FAIL" not in out


def test_console_script_installed():
    exe = shutil.which("ttfs")
    if exe is None:
        pytest.skip("console script not on PATH")
    result = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "kernel_devices" in result.stdout


@pytest.mark.parametrize("module", ["ttfs_ext", "ttfs_ext.cli"])
def test_module_entry_point(module):
    """python -m ttfs_ext is the ttfs command (torchrun -m ttfs_ext train ... runs it per process)."""
    result = subprocess.run([sys.executable, "-m", module, "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "version" in result.stdout


@pytest.mark.parametrize("argv", [["--model", "mlp", "--epochs", "3"],
                                  ["--model", "mlp", "--epochs", "3", "--mapping", "alpha1", "--windows", "activation"]])
def test_convert_demo(capsys, argv):
    pytest.importorskip("sklearn")
    assert main(["convert", "--json", *argv]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["agreement"] == 1.0 and result["max_logit_diff"] < 1e-9
    assert result["ttfs_test_accuracy"] == result["relu_test_accuracy"] > 0.5
    assert 0 < result["spikes_per_neuron"] < 1 and result["latency"] > 1
    assert len(result["early_spikes_per_layer"]) == 2
    if "--windows" not in argv:  # event-safe windows: the event-driven network is exact as well
        assert result["event_agreement"] == 1.0 and result["event_max_logit_diff"] < 1e-9
        assert result["early_spikes_per_layer"] == [0, 0]
