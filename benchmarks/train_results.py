"""Measured training results for the README: `ttfs train` / `ttfs evaluate` runs on
Fashion-MNIST (Debian's dataset-fashion-mnist, or --data-dir), each recorded with its
command. Writes benchmarks/results/train_results.json and the table between the
train-results markers of README.md.

    python benchmarks/train_results.py [--quick] [--no-readme]
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from suite.host import ROOT, git, replace_between_markers

RUNS = ROOT / "benchmarks" / "results" / "train_runs"
BEGIN, END = "<!-- train-results:begin -->", "<!-- train-results:end -->"


def ttfs(*args: str) -> tuple[str, float]:
    command = ["ttfs", *args]
    print("$", shlex.join(command), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ttfs_ext.cli", *args], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return shlex.join(command), time.perf_counter() - start


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny runs, to check the script")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    size = ["--train-size", "2000", "--test-size", "1000"] if args.quick else []
    epochs = "1" if args.quick else "10"
    rows, sweeps = [], []

    def train(name: str, *extra: str) -> dict:
        folder = RUNS / name  # this script's own run folders: each is replaced (--overwrite)
        command, seconds = ttfs("train", "--out", str(folder.relative_to(ROOT)), "--overwrite", "--no-progress",
                                *data, *extra)
        m = metrics(ROOT / folder)
        rows.append({"name": name, "command": command, "seconds": seconds, **m["summary"],
                     "dataset": m["dataset"], "config": m["config"]})
        return m

    fc2 = (RUNS / "fc2").relative_to(ROOT)  # commands are run from the repository root
    train("fc2-default", "--no-plots", *size)  # what plain `ttfs train` runs: 3 epochs
    train("fc2", "--epochs", epochs, *size)
    train("fc2-paper-windows", "--epochs", epochs, "--windows", "paper", "--no-plots", *size)
    train("vgg-small", "--model", "vgg-small", "--dtype", "float32", "--epochs", "1" if args.quick else "3",
          "--train-size", "500" if args.quick else "10000", "--test-size", "1000" if args.quick else "10000",
          "--no-plots")
    # Hardware fine-tuning of the FC2 run: one epoch each.
    train("fc2-noise-0.1", "--init", str(fc2 / "checkpoint.pt"), "--epochs", "1", "--noise", "0.1", "--no-plots",
          *size)
    train("fc2-4bit", "--init", str(fc2 / "checkpoint.pt"), "--epochs", "1", "--time-bits", "4", "--weight-bits",
          "4", "--no-plots", *size)
    train("fc2-latency-0.5", "--init", str(fc2 / "checkpoint.pt"), "--epochs", "1", "--latency", "0.5",
          "--no-plots", *size)
    command, _ = ttfs("evaluate", str(fc2 / "checkpoint.pt"), "--overwrite", "--noise", "0,0.05,0.1,0.2",
                      "--time-bits", "2,3,4", "--weight-bits", "2,3,4", "--latency", "1,0.5,0.25",
                      "--event-size", "10000", *data, *(["--test-size", "1000"] if args.quick else []))
    sweeps = json.loads((ROOT / fc2 / "evaluate.json").read_text())["rows"]
    meta = {"date": datetime.date.today().isoformat(), "commit": git("rev-parse", "--short", "HEAD") or "unknown", "quick": args.quick,
            "environment": metrics(ROOT / fc2)["environment"], "evaluate_command": command}
    out = ROOT / "benchmarks" / "results" / "train_results.json"
    out.write_text(json.dumps({"meta": meta, "runs": rows, "sweeps": sweeps}, indent=2) + "\n")
    text = table(rows, sweeps, meta)
    print(text)
    if not args.no_readme:
        readme = ROOT / "README.md"
        if not replace_between_markers(readme, BEGIN, END, text):
            raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers")


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def table(rows: list[dict], sweeps: list[dict], meta: dict) -> str:
    lines = ["| run | SNN test acc. | ReLU twin test acc. | spikes/neuron | latency | time | command |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {pct(r['snn_test_accuracy'])} | {pct(r['relu_test_accuracy'])} | "
                     f"{r['spikes_per_neuron']:.3f} | {r['latency']:.3g} | {r['seconds']:.0f} s | `{r['command']}` |")
    lines += ["", "Sweeps of the `fc2` run (`" + meta["evaluate_command"] + "`; latency: windows scaled, evaluated "
              "with the exact event-driven simulator):", "",
              "| sweep | value | test accuracy | notes |", "|---|---|---|---|"]
    for s in sweeps:
        notes = []
        if "std" in s:
            notes.append(f"± {100 * s['std']:.2f} over {s['repeats']} draws")
        if "early_spikes" in s:
            notes.append(f"latency {s['latency']:.3g}, {s['early_spikes']} early spikes, closed form "
                         f"{pct(s['closed_form_accuracy'])}")
        lines.append(f"| {s['sweep']} | {s['value']:g} | {pct(s['accuracy'])} | {'; '.join(notes)} |")
    env = meta["environment"]
    lines += ["", f"Generated by `python benchmarks/train_results.py` on {meta['date']} (commit {meta['commit']}, "
              f"torch {env['torch']}, {env['threads']} CPU threads{', quick mode' if meta['quick'] else ''}); "
              "raw numbers in `benchmarks/results/train_results.json`, runs (metrics and plots) in "
              "`benchmarks/results/train_runs/`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
