"""The benchmark helpers (ttfs_ext.bench) and the suite beside the package
(benchmarks/bench_suite.py): the quick preset on CPU without torch.compile writes a JSON with
the environment and every measurement; correctness errors are tiny, every timing is positive,
the time-stepped simulation reaches 1e-3; the README table renders and replaces only the text
between its markers. `ttfs bench` runs without the suite."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ttfs_ext import bench
from ttfs_ext import functional as TF
from ttfs_ext.bench import events as bench_events
from ttfs_ext.bench import layers as bench_layers
from ttfs_ext.cli import main as ttfs

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_suite  # noqa: E402
from suite import presets  # noqa: E402
from suite.targets import evaluate_targets  # noqa: E402
from suite.tables import readme_table  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    start = time.perf_counter()
    status = bench_suite.main(["--device", "cpu", "--preset", "quick", "--no-compile", "--threads", "1",
                               "--out", str(out)])
    seconds = time.perf_counter() - start
    assert torch.get_num_threads() == threads  # restored
    return status, out, seconds


def _timings(record: dict):
    for mode, per_impl in record["times_ms"].items():
        for impl, entry in per_impl.items():
            yield mode, impl, entry


def test_quick_preset_runs(quick_run):
    status, out, seconds = quick_run
    assert status == 0
    assert seconds < 300  # a hang, not a speed test (timings live in benchmarks/; CI machines are shared)
    assert (out / "suite_cpu_quick.json").exists()
    assert (out / "suite_cpu_quick.png").stat().st_size > 0


def test_json_environment(quick_run):
    report = json.loads((quick_run[1] / "suite_cpu_quick.json").read_text())
    env = report["environment"]
    for key in ("device_name", "torch_version", "cuda_version", "ttfs_ext_status", "git_commit", "date", "threads",
                "preset"):
        assert key in env
    assert env["device"] == "cpu" and env["preset"] == "quick" and env["threads"] == 1
    assert env["torch_version"] == torch.__version__ and env["device_name"]
    assert "cpu" in env["ttfs_ext_status"]["kernel_devices"]
    assert report["failures"] == [] and report["compile"] is False
    if sys.platform.startswith("linux"):  # glibc: freed memory stays in the heap for the run
        assert env["cpu_allocator"] == {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 2**31 - 1}


def test_layers_and_networks(quick_run):
    report = json.loads((quick_run[1] / "suite_cpu_quick.json").read_text())
    assert {r["kind"] for r in report["layers"]} == {"linear", "conv2d"}
    assert len(report["networks"]) == 2
    for record in report["layers"] + report["networks"]:
        assert record["check"]["passed"]
        errors = record["errors_vs_float64"]
        for who in ("kernel", "twin"):
            assert errors[who]["out"] < 1e-5 and errors[who]["grad"] < 1e-5
        seen = set()
        for mode, impl, entry in _timings(record):
            if impl in bench.COMPILED:
                assert "na" in entry  # --no-compile
                continue
            assert entry["median_ms"] > 0, (record["name"], mode, impl)
            # paired cycles: at least the preset's rounds, the time their median
            assert report["rounds"] == 2 and entry["cycles"] >= 2
            assert entry["min_ms"] <= entry["median_ms"] <= entry["max_ms"]
            seen.add((mode, impl))
        assert {m for m, _ in seen} == set(bench.MODES)
        assert {"kernel", "reference", "twin"} <= {i for _, i in seen}
        ratios = record["ratios"]["fwd+bwd"]
        assert ratios["kernel/twin"] > 0 and ratios["reference/kernel"] > 0
        assert ratios["kernel/twin_compiled"] is None
    layer = report["layers"][0]
    assert layer["flops"]["fwd+bwd"] == 3 * layer["flops"]["fwd"] > 0
    assert all(v is None or v >= 0 for v in layer["peak_mem_bytes"].values())


def test_event_path(quick_run):
    report = json.loads((quick_run[1] / "suite_cpu_quick.json").read_text())
    assert {r["kind"] for r in report["events"]} == {"linear", "conv2d"}
    for record in report["events"]:
        check = record["check"]
        assert check["passed"] and check["float64_value_error"] < 1e-9 and check["float64_grad_error"] < 1e-6
        assert record["reference_batch"] == record["batch"]  # tiny: the reference fits
        for _, _, entry in _timings(record):
            assert entry["median_ms"] > 0
        assert record["ratios"]["fwd"]["reference/kernel"] > 0
    (sim,) = report["simulate"]
    assert sim["ok"] and sim["time_ms"]["median_ms"] > 0 and sim["neurons"] > 0


def test_time_stepped(quick_run):
    report = json.loads((quick_run[1] / "suite_cpu_quick.json").read_text())
    (stepped,) = report["timestepped"]
    assert stepped["reached"] and stepped["max_error"] <= 1e-3
    assert stepped["dt"] < 0.1 and stepped["steps"] > 100
    assert [s["dt"] for s in stepped["search"]] == [0.1 / 2 ** i for i in range(len(stepped["search"]))]
    assert stepped["stepped_ms"] > 0 and stepped["kernel_fwd_ms"]["median_ms"] > 0
    assert stepped["ratio_vs_kernel"] > 1


def test_targets(quick_run):
    report = json.loads((quick_run[1] / "suite_cpu_quick.json").read_text())
    targets = {t["id"]: t for t in report["targets"]}
    assert {"layer_vs_twin", "layer_vs_reference", "event_vs_reference", "event_vgg_batch_128",
            "timestepped"} <= set(targets)
    assert "bf16_error" not in targets  # CUDA only
    for t in targets.values():  # the quick preset's toy shapes: values shown, no verdict
        assert t["status"] in ("not judged", "not measured") and t["measured"]
    assert targets["event_vgg_batch_128"]["status"] == "not measured"
    assert targets["timestepped"]["status"] == "not judged"
    assert targets["layer_vs_reference"]["measured"].startswith("worst kernel/reference ")  # the ratio is named
    judged = evaluate_targets({**report, "judges_targets": True})
    assert {t["status"] for t in judged} <= {"met", "missed", "not measured"}
    # re-evaluating from the JSON gives the same verdicts
    assert [t["status"] for t in evaluate_targets(report)] == [t["status"] for t in report["targets"]]


def test_readme_table_and_markers(quick_run, tmp_path):
    json_path = quick_run[1] / "suite_cpu_quick.json"
    table = readme_table(json_path)
    assert "| layer | precision | kernel |" in table and "dense 64-32 b32" in table
    assert "time-stepped simulation" in table and "| target | status | measured |" in table
    assert "preset `quick`" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{bench_suite.README_BEGIN}\nold table\n{bench_suite.README_END}\nafter\n")
    assert bench_suite.replace_readme(readme, table)
    text = readme.read_text()
    assert "old table" not in text and table.strip() in text
    begin, end = bench_suite.README_BEGIN, bench_suite.README_END
    assert text.startswith("# title\n\nbefore\n" + begin) and text.endswith(end + "\nafter\n")
    assert bench_suite.replace_readme(readme, table) and readme.read_text() == text  # idempotent
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not bench_suite.replace_readme(plain, table) and plain.read_text() == "no markers\n"


def test_from_json_updates_readme(quick_run, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{bench_suite.README_BEGIN}\n{bench_suite.README_END}\n")
    argv = ["--from-json", str(quick_run[1] / "suite_cpu_quick.json"), "--readme", str(readme)]
    assert bench_suite.main(argv) == 0
    assert "| layer | precision |" in readme.read_text()
    missing = tmp_path / "NOMARKERS.md"
    missing.write_text("text\n")
    assert bench_suite.main([*argv[:-1], str(missing)]) == 0
    assert "no <!-- bench-suite:begin -->" in capsys.readouterr().out and missing.read_text() == "text\n"


def test_clock_driven_simulation_converges():
    """The time-stepped loop approaches the exact event-driven spike times as dt shrinks (error
    about proportional to dt), including neurons that fire before all inputs arrived."""
    gen = torch.Generator().manual_seed(3)
    t_in = torch.rand(4, 12, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 12, generator=gen, dtype=torch.float64) / 12 ** 0.5
    alpha, theta = torch.randn(6, generator=gen, dtype=torch.float64), 0.1 + torch.rand(6, generator=gen,
                                                                                       dtype=torch.float64)
    exact = TF.first_spike_linear(t_in, w, alpha, theta, 0.0, 3.0, backend="reference")
    errors = [float((bench.clock_driven_first_spikes(t_in, w, alpha, theta, 0.0, 3.0, dt) - exact).abs().max())
              for dt in (1e-2, 1e-3)]
    assert errors[1] < errors[0] and errors[1] < 2e-2
    assert math.isclose(float(bench.clock_driven_first_spikes(t_in, w, alpha, -theta, 0.0, 3.0, 1e-2).max()), 0.0)


def test_presets_and_costs():
    full = presets.preset("full")
    names = {c.name for c in full.layers}
    assert {"fc2 784-340 b256", "fc2 784-340 b8192", "vgg16-dense 25088-4096 b128", "vgg16-dense 4096-4096 b128",
            "vgg16-cifar 64-64 32x32 b128", "vgg16-places 64-64 224x224 b64"} <= names
    assert sum(c.count for c in full.layers if c.group == "vgg16-cifar") == 13
    assert [(n.name, n.batch) for n in full.networks if n.name == "vgg16-cifar"] == [("vgg16-cifar", 128)]
    assert full.simulate[0].batch == 128
    cpu = presets.preset("cpu")
    assert {c.group for c in cpu.layers} == {c.group for c in full.layers}
    assert cpu.simulate[0].batch == 128  # the event-path target's batch runs on the CPU too
    c = bench.layer_costs(bench.LayerCase("x", "linear", 8, 100, 30))
    assert c["flops"] == {"fwd": 2 * 8 * 30 * 100, "bwd": 4 * 8 * 30 * 100, "fwd+bwd": 6 * 8 * 30 * 100}
    assert c["bytes"]["prologue"] == 2 * 4 * 8 * 100 and c["bytes"]["kernel_extra_fwd+bwd"] == 4 * 4 * 8 * 100
    conv = bench.LayerCase("y", "conv2d", 2, 3, 4, 5)
    assert conv.gemm() == (2 * 25, 4, 27)
    # the event reference's memory budget picks the largest power-of-two batch that fits
    big = bench.LayerCase("z", "conv2d", 128, 64, 64, 32)
    batch = bench_events._reference_batch(big, 4 << 30)
    assert batch is not None and batch < 128 and bench.reference_bytes(big, batch) <= 4 << 30 < \
        bench.reference_bytes(big, 2 * batch)


def _context(**overrides) -> bench.Context:
    options = dict(device="cpu", threads=1, min_run_time=0.005, warmup=1, compile=False,
                   precisions=[bench.PRECISIONS["float32"]], reference_budget=4 << 30, log=lambda s: None)
    options.update(overrides)
    return bench.Context(**options)


def _preset(**sections) -> presets.Preset:
    fields = dict(layers=[], networks=[], events=[], simulate=[], stepped=[])
    fields.update(sections)
    return presets.Preset("test", "test", min_run_time=0.005, warmup=1, **fields)


def test_failed_check_aborts_the_case(monkeypatch):
    monkeypatch.setattr(bench_layers, "CHECK_TOLERANCE", 0.0)
    report = bench_suite.run_suite(_preset(layers=[bench.LayerCase("dense", "linear", 4, 8, 4)]), _context())
    (record,) = report["layers"]
    assert record["check"]["passed"] is False and "times_ms" not in record
    assert report["failures"] and report["failures"][0]["case"].startswith("layer/dense")
    assert "aborted" in bench.format_table(report)


def test_event_reference_batch_and_skip():
    case = bench.EventCase("dense", "linear", 16, 32, 8)
    per_batch = bench.reference_bytes(case.layer(), 1)
    report = bench_suite.run_suite(_preset(events=[case]), _context(reference_budget=4 * per_batch))
    (record,) = report["events"]
    assert record["reference_batch"] == 4 and "reference at batch 4" in record["reference_note"]
    assert record["times_ms"]["fwd"]["kernel_at_reference_batch"]["median_ms"] > 0
    assert record["ratios"]["fwd"]["reference/kernel"] > 0
    report = bench_suite.run_suite(_preset(events=[case]), _context(reference_budget=per_batch // 2))
    (record,) = report["events"]
    assert record["reference_batch"] is None and "skipped" in record["reference_note"]
    assert set(record["times_ms"]["fwd"]) == {"kernel"} and record["ratios"]["fwd"]["reference/kernel"] is None
    assert {t["id"]: t["status"] for t in report["targets"]}["event_vs_reference"] == "not measured"


def test_one_pass_script_quick(tmp_path):
    """benchmarks/bench_one_pass.py --quick: every case timed, the one-pass cases marked by the
    policy in status() (its second shape is over the size threshold in float32)."""
    import importlib.util
    from pathlib import Path

    import ttfs_ext

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_one_pass.py"
    spec = importlib.util.spec_from_file_location("bench_one_pass", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "one_pass_cpu_quick.json").read_text())
    assert report["environment"]["ttfs_ext_status"]["cpu_dense_one_pass"] == ttfs_ext.status()["cpu_dense_one_pass"]
    policy = ttfs_ext.status()["cpu_dense_one_pass"]
    cases = report["results"]
    assert len(cases) == len(module.QUICK_SHAPES) * len(module.QUICK_ROWS)
    for case in cases:
        assert all(v > 0 for v in case["median_ms"].values())
        large = policy["enabled"] and case["weight_bytes"] >= policy["min_weight_bytes"]
        assert case["one_pass_backward"] == (large and policy["min_rows"] <= case["rows"] <= policy["max_rows"])
        assert case["one_pass_forward"] == (large and policy["min_rows"] <= case["rows"] <= policy["forward_max_rows"])
    assert any(c["one_pass_forward"] for c in cases) == policy["enabled"]
    assert not all(c["one_pass_backward"] for c in cases)


def test_paired_ratio():
    samples = {"kernel": [2.0, 4.0, 9.0], "twin": [1.0, 4.0, 3.0], "twin_compiled": [2.0, 2.0, 2.0]}
    assert bench.paired_ratio(samples, ["kernel"], ["twin"]) == 2.0  # median of 2, 1, 3
    # the fastest of several per cycle: 2/1, 4/2, 9/2
    assert bench.paired_ratio(samples, ["kernel"], ["twin", "twin_compiled"]) == 2.0
    assert bench.paired_ratio(samples, ["twin"], ["kernel"]) == 0.5  # median of 1/2, 1, 1/3
    assert bench.paired_ratio(samples, ["reference"], ["kernel"]) is None
    assert bench.paired_ratio({"kernel": [], "twin": [1.0]}, ["kernel"], ["twin"]) is None


def test_time_interleaved_pairs_cycles_and_records_failures():
    def builder(seconds: float, fail: bool = False, keep_graph: bool = True):
        def build():
            def fwd():
                time.sleep(seconds)
                return seconds

            def grad(out, retain):
                if fail:
                    raise RuntimeError("boom")
                if retain and not keep_graph:
                    raise RuntimeError("graph freed")
                time.sleep(out)
            return fwd, grad
        return build

    ctx = _context(min_run_time=0.01, rounds=3)
    times, methods, memory, samples = bench.time_interleaved(
        {"fast": builder(0.001), "slow": builder(0.003), "no_graph": builder(0.002, keep_graph=False),
         "broken": builder(0.001, fail=True)}, ctx)
    assert "boom" in times["fwd"]["broken"]["na"] and memory["broken"] is None
    assert methods == {"fast": "retain_graph", "slow": "retain_graph", "no_graph": "difference"}
    cycles = len(samples["fwd"]["fast"])
    assert cycles >= 3
    for mode in bench.MODES:
        for impl in ("fast", "slow", "no_graph"):
            assert len(samples[mode][impl]) == cycles and times[mode][impl]["cycles"] == cycles
    # sleeps only ever last longer: 3 ms against 1 ms per call is a ratio near 3
    assert 1.5 < bench.paired_ratio(samples["fwd"], ["slow"], ["fast"]) < 4.5
    assert samples["bwd"]["no_graph"][0] == pytest.approx(samples["fwd+bwd"]["no_graph"][0]
                                                          - samples["fwd"]["no_graph"][0])


def test_time_paired_raises_without_on_error_and_keeps_cycles_aligned():
    ctx = _context(min_run_time=0.003, rounds=3)
    calls = {"a": lambda: time.sleep(0.0005), "b": lambda: time.sleep(0.001)}
    samples = bench.time_paired(calls, ctx)
    assert set(samples) == {"a", "b"} and len(samples["a"]) == len(samples["b"]) >= 3
    state = {"n": 0}

    def flaky():
        state["n"] += 1
        if state["n"] > 3:  # passes the warm-up, fails in a later cycle
            raise RuntimeError("flaky")
    with pytest.raises(RuntimeError, match="flaky"):
        bench.time_paired({**calls, "c": flaky}, ctx)
    state["n"] = 0
    dropped = []
    samples = bench.time_paired({**calls, "c": flaky}, ctx, lambda key, err: dropped.append(key) or [key])
    assert dropped == ["c"] and set(samples) == {"a", "b"} and len(samples["a"]) == len(samples["b"]) >= 3


def test_ttfs_bench_runs_given_shapes(tmp_path, capsys):
    """`ttfs bench` needs no benchmarks/ folder: the package's cases, a JSON of the same records."""
    out = tmp_path / "bench"
    assert ttfs(["bench", "--device", "cpu", "--linear", "8,16,8", "--no-compile", "--threads", "1",
                 "--min-run-time", "0.005", "--rounds", "2", "--out", str(out)]) == 0
    report = json.loads((out / "bench_cpu.json").read_text())
    assert report["suite"] == "ttfs bench" and report["json_version"] == bench.JSON_VERSION
    assert "targets" not in report and "git_commit" not in report["environment"]
    assert report["environment"]["cpu_allocator"] == "default"
    (layer,) = report["layers"]
    assert layer["name"] == "linear 16-8 b8" and layer["check"]["passed"]
    assert layer["times_ms"]["fwd+bwd"]["kernel"]["median_ms"] > 0
    assert report["networks"] == report["events"] == report["timestepped"] == []
    assert "linear 16-8 b8" in capsys.readouterr().out
    assert ttfs(["bench", "--device", "cpu", "--precisions", "int8", "--out", str(out)]) == 2


def test_default_cases():
    for device in ("cpu", "cuda"):
        kinds = {type(c) for c in bench.default_cases(device)}
        assert {bench.LayerCase, bench.NetworkCase, bench.EventCase, bench.SteppedCase} <= kinds


def test_no_process_wide_effects_in_the_package():
    """glibc malloc tuning, git and README writing live in benchmarks/ scripts only: importing
    every ttfs_ext module leaves the suite's modules unimported, and no package source can
    reach them."""
    package = Path(bench.__file__).resolve().parents[1]
    for path in package.rglob("*.py"):
        text = path.read_text()
        for word in ("ctypes", "subprocess", "mallopt", "README"):
            assert word not in text, (path, word)
    names = [".".join(p.relative_to(package.parent).with_suffix("").parts) for p in package.rglob("*.py")
             if p.name != "__main__.py"]
    code = ("import importlib, sys\n"
            f"for name in {[n.removesuffix('.__init__') for n in names]!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m in ('bench_suite', 'suite') or m.startswith('suite.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=package.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
