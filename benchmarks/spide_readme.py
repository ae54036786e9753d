"""Regenerates the tables of README.md's "Feedback SNNs (ttfs_ext.spide)" section: the
iteration table from benchmarks/results/spide_<device>.json and, where present,
spide_<device>_trained.json (bench_spide.py --state ...); the Fashion-MNIST accuracy table from
benchmarks/results/spide/fashion_mnist_<backward>_100ep.json (the metrics.json of `ttfs spide
--dataset fashion-mnist --backward <backward> --out ...`, the command in it): numbers from the
JSON only, beside the papers' published figures.

    python benchmarks/spide_readme.py [--device cpu]
"""
from __future__ import annotations

import argparse
import json

from suite.host import ROOT, replace_between_markers

RESULTS = ROOT / "benchmarks" / "results"


def _weights(row) -> str:
    w = row.get("weights", "initial (uniform random inputs)")
    if isinstance(w, str):
        return "initial weights, uniform random inputs"
    c, last = w["config"], w["last_epoch"]
    steps = f" --max-steps-per-epoch {c['max_steps']}" if c.get("max_steps") else ""
    return (f"trained by `ttfs spide --dataset {c['dataset']} --model {c['model']} --epochs {c['epochs']}{steps}` "
            f"(test accuracy {last['test_accuracy']:.1%}); {c['dataset']} test images")


def bench_md(device: str) -> str:
    files = [RESULTS / f"spide_{device}.json", RESULTS / f"spide_{device}_trained.json"]
    rows = ["| case | weights | batch | T / T_b | spikes per step, forward | backward | iteration (kernels) | "
            "vs reference | vs port of the authors' loop | vs the kernels with dense products | forward | backward |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def spread(values):  # the populations' range
        return f"{min(values):.1%}-{max(values):.1%}" if values else "–"
    metas = []
    for path in files:
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        metas.append((path.name, data))
        for r in data["cases"]:
            it = (r["kernel_forward_s"] + r["kernel_backward_s"]) * 1e3
            rows.append(
                f"| {r['case']} | {_weights(r)} | {r['batch']} | {r['T']} / {r['T_b']} | "
                f"{spread(r['step_densities']['forward'])} | {spread(r['step_densities']['backward'])} | {it:.0f} ms | {r['reference_iteration_speedup']:.2f}x | "
                f"{r['port_iteration_speedup']:.2f}x | {r['dense_products_iteration_speedup']:.2f}x | "
                f"{r['reference_forward_speedup']:.2f}x | {r['reference_backward_speedup']:.2f}x |")
    notes = []
    for name, d in metas:
        v, h = d["versions"], d["host"]
        notes.append(f"`{name}`: `{d['command'].strip()}`, commit {(d.get('git_commit') or '?')[:7]}, {d['time']}, torch "
                     f"{v['torch']}, {v['cpu_isa']}, {h['torch_threads']} thread(s), load average "
                     f"{h['load_average'][0]:.1f}")
    rows += ["", "Speedups are the baseline's time over the kernels' (paired, alternated runs; medians); forward "
                 "and backward against the reference. Spikes per step: the fraction of each population's neurons "
                 "that spike in a step, averaged over the iteration, from the least to the most active population "
                 "(backward: ternary spikes, either sign). " + "; ".join(notes) + "."]
    return "\n".join(rows)


# The papers' figures (cited, not measured here): IDE (Xiao et al. 2021), Fashion-MNIST, F400, IF, T = 5:
# 90.04 % +- 0.09 (IDE-FSNN README); the SPIDE paper reports no Fashion-MNIST figure.
PAPER = {"ide": "90.04 % ± 0.09 (IDE paper, IF, T = 5)", "spide": "– (the SPIDE paper has no Fashion-MNIST run)"}


def fmnist_md() -> str:
    rows = ["| backward | epochs | test accuracy (last epoch) | best epoch | forward rate | backward rate | "
            "time | the paper |", "|---|---|---|---|---|---|---|---|"]
    commands = []
    for backward in ("ide", "spide"):
        path = RESULTS / "spide" / f"fashion_mnist_{backward}_100ep.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        h = r["history"]
        best = max(h, key=lambda e: e["test_accuracy"])
        b = "–" if r.get("backward_rate") is None else f"{r['backward_rate']:.4f}"
        rows.append(f"| {backward.upper()} | {len(h)} | {r['test_accuracy']:.2%} | {best['test_accuracy']:.2%} "
                    f"(epoch {best['epoch']}) | {r['forward_rate']:.4f} | {b} | {r['seconds'] / 60:.0f} min | "
                    f"{PAPER[backward]} |")
        commands.append(f"    {r['command']}")
    return "\n".join(rows + ["", "F400 with the authors' settings (above), the full schedule (100 epochs, lr 0.05 x0.1 "
                                  "at 30, 60, 90), seed 0, 2 threads on this 2-core CPU, at commit 5dafea9 (the "
                                  "defaults of this README); metrics and history in "
                                  "`benchmarks/results/spide/fashion_mnist_<backward>_100ep.json` (the log beside it), "
                                  "from:", ""] + commands)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ok = replace_between_markers(ROOT / "README.md", f"<!-- spide-bench-{args.device}:begin -->",
                                 f"<!-- spide-bench-{args.device}:end -->", bench_md(args.device))
    ok2 = replace_between_markers(ROOT / "README.md", "<!-- spide-fmnist:begin -->", "<!-- spide-fmnist:end -->",
                                  fmnist_md())
    print("README tables updated:", ok, ok2)


if __name__ == "__main__":
    main()
