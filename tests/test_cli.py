import json
import shutil
import subprocess
import sys

import pytest
import torch

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


def _subparsers():
    from ttfs_ext.cli.main import build_parser
    parser = build_parser()
    choices = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)).choices
    return sorted(choices.items())


def test_every_numeric_option_is_bounded_in_the_parser():
    """No command takes a bare int or float: each numeric option has a type from cli.args that
    names the bound it breaks (a negative --epochs or a --seed past numpy's range is a parser
    error, never a traceback later)."""
    bare = [f"ttfs {name} {'/'.join(a.option_strings)}" for name, sub in _subparsers() for a in sub._actions
            if a.type in (int, float)]
    assert bare == []


@pytest.mark.parametrize("argv, message", [
    (["convert", "--epochs", "0"], "--epochs: must be >= 1, got 0"),
    (["convert", "--zeta", "-1"], "--zeta: must be >= 0, got -1"),
    (["convert", "--seed", "-3"], "--seed: must be >= 0 and <= 4294967295, got -3"),
    (["fs", "--seed", str(2**40)], "--seed: must be >= 0 and <= 4294967295"),
    (["spide", "--dropout", "1"], "--dropout: must be >= 0 and < 1, got 1"),
    (["spide", "--leak", "1.5"], "--leak: must be > 0 and <= 1, got 1.5"),
    (["spide", "--seed", "x"], "--seed: 'x' is not an integer"),
    (["train", "--seed", "nan"], "--seed: 'nan' is not an integer"),
    (["train", "--image-size", "0"], "--image-size: must be >= 1, got 0"),
])
def test_numeric_mistakes_are_parser_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["spide", "--epochs", "1"],
                                     ["validate", "--checkpoint", "x.pt"], ["bench"]])
def test_every_command_checks_device_the_same_way(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if command[0] != "bench":
        assert main([*command, "--device", "meta"]) == 2
        assert "--device meta: only cpu and cuda are supported" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*command, "--device", "cuda"]) == 2
        assert "--device cuda: CUDA is not available here" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_channels_last_outside_the_data_parallel_loop_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--channels-last"]) == 2
    assert "--channels-last is for the data-parallel loop" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_threads_is_every_commands_option(capsys):
    """--threads N on any command sets torch's CPU threads for the run; ttfs info shows them and
    the machine's load."""
    import torch
    before = torch.get_num_threads()
    try:
        assert main(["info", "--json", "--threads", "1"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["threads"] == 1 == torch.get_num_threads()
        assert {"cpu_count", "load_1min", "oversubscribed"} <= set(info)
    finally:
        torch.set_num_threads(before)
    for name, sub in _subparsers():
        assert "--threads" in sub._option_string_actions, name
    with pytest.raises(SystemExit):
        main(["train", "--threads", "0"])


@pytest.mark.parametrize("argv, usage, message", [
    (["bench", "--preset", "quick"], "usage: ttfs bench [options]\n",
     "unrecognized arguments: --preset quick (--preset: did you mean --precisions?)"),
    (["train", "--epochs", "0"], "usage: ttfs train [options]\n", "--epochs: must be >= 1, got 0"),
    (["evaluate"], "usage: ttfs evaluate [options] checkpoint\n", "required: checkpoint"),
    (["trian"], "usage: ttfs [--debug] COMMAND [options]", "invalid choice: 'trian'"),
])
def test_errors_show_the_commands_own_short_usage(argv, usage, message, capsys):
    """A mistake gets three lines: the command's own one-line usage (not the top level's, not
    thirty lines of options), the error, and where the options are listed."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(usage) and message in err
    assert len(err.splitlines()) == 3 and "--help' lists the options" in err


def test_report_writers_take_an_out_folder(capsys, tmp_path):
    """validate and bench write their report into an --out folder, as train's run folder: never
    over an earlier report without --overwrite, new parent folders named; the old --out FILE.json
    still works for one release, with a warning, and needs its folder to exist."""
    from ttfs_ext.cli.args import CommandError, report_file
    out = tmp_path / "typo" / "reports"
    path = report_file(out, "validate.json", False, "validate")
    assert path == out / "validate.json" and out.is_dir()
    assert "created the new folders" in capsys.readouterr().err
    path.write_text("{}")
    with pytest.raises(CommandError, match="exists: replace it with --overwrite"):
        report_file(out, "validate.json", False, "validate")
    assert report_file(out, "validate.json", True, "validate") == path
    assert report_file(tmp_path / "old.json", "validate.json", False, "validate") == tmp_path / "old.json"
    assert "--out FILE.json is deprecated" in capsys.readouterr().err
    with pytest.raises(CommandError, match="does not exist"):
        report_file(tmp_path / "nowhere" / "old.json", "validate.json", False, "validate")
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(CommandError, match="is a file; give a folder"):
        report_file(tmp_path / "a-file", "bench_cpu.json", False, "bench")


def test_deprecated_spellings_set_the_new_option_with_a_warning(capsys):
    """One vocabulary across commands (--train-size/--test-size, --max-steps-per-epoch,
    --data-dir); the old spellings work one release, with a warning naming the new one."""
    from ttfs_ext.cli.main import build_parser
    args = build_parser().parse_args(["fs", "--n-train", "30", "--n-test", "20"])
    assert (args.train_size, args.test_size) == (30, 20)
    err = capsys.readouterr().err
    assert "--n-train is deprecated, use --train-size" in err and "--n-test is deprecated, use --test-size" in err
    args = build_parser().parse_args(["spide", "--max-steps", "4", "--data-root", "d"])
    assert (args.max_steps_per_epoch, args.data_dir) == (4, "d")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fs", "--n-train", "0"])  # the new option's bounds
    assert "--n-train: must be >= 1, got 0" in capsys.readouterr().err


def test_a_busy_machine_gets_a_threads_hint(capsys, monkeypatch):
    """Load above the core count: long commands suggest --threads 1 (a hint only: the thread
    count, and so the rounding of the results, stays the user's); none with --threads."""
    import importlib
    import os

    cli_main = importlib.import_module("ttfs_ext.cli.main")  # the module (ttfs_ext.cli.main is also the function)
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0 * (os.cpu_count() or 1), 0.0, 0.0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cli_main._hint_if_busy("train")
        assert "--threads 1 may well be faster" in capsys.readouterr().err
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        cli_main._hint_if_busy("train")
        assert capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)
