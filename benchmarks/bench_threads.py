"""A `ttfs` command at 1 and at torch's default thread count, on this machine as it is and with
synthetic load (busy processes, one per core, as other users' jobs would be): wall time of each
run and whether every run printed the same result. Writes benchmarks/results/threads_cpu.json.

    python benchmarks/bench_threads.py [--command "convert --json --epochs 3"] [--timeout 600]
    python benchmarks/bench_threads.py --readme     # the README's table from the JSON
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite.host import ROOT, git, replace_between_markers  # noqa: E402


def _spin(stop) -> None:  # a busy process: another user's job
    while not stop.is_set():
        pass


def run(command: list[str], threads: int, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "ttfs_ext.cli", *command, "--threads", str(threads)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"threads": threads, "seconds": None, "timed_out": True}
    seconds = time.perf_counter() - start
    result = None
    if proc.returncode == 0 and "{" in proc.stdout:
        result = json.loads(proc.stdout[proc.stdout.index("{"):])
    return {"threads": threads, "seconds": seconds, "returncode": proc.returncode, "result": result}


def same_result(runs: list[dict]) -> bool:
    """Every run decided the same: its accuracies and agreement (the logit differences, ~1e-14 in
    float64, depend on the threads' summation order and are shown, not compared)."""
    keys = ("relu_test_accuracy", "ttfs_test_accuracy", "agreement", "event_agreement")
    return len({json.dumps([r["result"].get(k) for k in keys]) if r.get("result") else None for r in runs}) == 1


def readme_table(report: dict) -> str:
    m = report["meta"]
    diffs = sorted({r["result"]["max_logit_diff"] for r in report["runs"] if r.get("result")})
    rows = ["| machine | threads | seconds | vs. 1 thread |", "|---|---|---|---|"]
    for loaded in (False, True):
        runs = [r for r in report["runs"] if r["loaded"] == loaded]
        one = next((r["seconds"] for r in runs if r["threads"] == 1), None)
        for r in runs:
            state = (f"{r['busy_processes']} busy processes (load {r['load_1min_before']:.1f})" if loaded
                     else f"as it was (load {r['load_1min_before']:.1f})")
            took = "timed out" if r.get("timed_out") else f"{r['seconds']:.1f}"
            ratio = f"{r['seconds'] / one:.2f}x" if one and r.get("seconds") else "–"
            rows.append(f"| {state} | {r['threads']} | {took} | {ratio} |")
    rows += ["", f"`{m['command']}` on {m['cpu_count']} cores (torch's default: {m['default_threads']} threads), "
                 f"wall time of the whole command. Every run decided the same (accuracies and agreement): "
                 f"{'yes' if same_result(report['runs']) else 'NO'}; max |SNN - ReLU logit| "
                 f"{' to '.join(f'{v:.2g}' for v in diffs)}"
                 f" (float64, the threads' summation order). Commit {(m['git_commit'] or '?')[:7]}, "
                 f"{m['date']}; `python benchmarks/bench_threads.py`, `benchmarks/results/threads_cpu.json`."]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--command", default="convert --json --epochs 3")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "threads_cpu.json")
    ap.add_argument("--readme", action="store_true", help="write the table of --out into README.md and exit")
    args = ap.parse_args()
    if args.readme:
        ok = replace_between_markers(ROOT / "README.md", "<!-- threads:begin -->", "<!-- threads:end -->",
                                     readme_table(json.loads(args.out.read_text())))
        print("README table updated:", ok)
        return
    command = shlex.split(args.command)
    cores = os.cpu_count() or 1
    default_threads = int(subprocess.check_output([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                                  text=True, env={k: v for k, v in os.environ.items()
                                                                  if k != "OMP_NUM_THREADS"}))
    rows = []
    for loaded in (False, True):
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
                    for _ in range(cores if loaded else 0)]
        for p in spinners:
            p.start()
        try:
            load_before = os.getloadavg()[0]
            for threads in sorted({1, default_threads}):
                r = run(command, threads, args.timeout)
                r.update(loaded=loaded, busy_processes=len(spinners), load_1min_before=load_before)
                rows.append(r)
                took = "timed out" if r.get("timed_out") else f"{r['seconds']:.1f} s"
                print(f"{'loaded' if loaded else 'as is'}: {threads} thread(s): {took}", flush=True)
        finally:
            stop.set()
            for p in spinners:
                p.join()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git("rev-parse", "HEAD"), "python": platform.python_version(), "cpu_count": cores,
            "default_threads": default_threads, "command": "ttfs " + args.command,
            "same_result_every_run": same_result(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
