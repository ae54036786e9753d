"""A `ttfs` command at 1 and at torch's default thread count, on this machine as it is and with
synthetic load (busy processes, one per core, as other users' jobs would be): wall time of each
run and whether every run printed the same result. Writes benchmarks/results/threads_cpu.json.

    python benchmarks/bench_threads.py [--command "convert --json --epochs 3"] [--timeout 600]
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
from suite.host import ROOT, git  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--command", default="convert --json --epochs 3")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "threads_cpu.json")
    args = ap.parse_args()
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
    results = [json.dumps([r["result"][k] for k in ("relu_test_accuracy", "ttfs_test_accuracy", "max_logit_diff")]
                          if r.get("result") else None) for r in rows]
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git("rev-parse", "HEAD"), "python": platform.python_version(), "cpu_count": cores,
            "default_threads": default_threads, "command": "ttfs " + args.command,
            "same_result_every_run": len(set(results)) == 1}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
