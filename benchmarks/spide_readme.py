"""Regenerates the iteration table of README.md's "Feedback SNNs (ttfs_ext.spide)" section from
benchmarks/results/spide_<device>.json and, where present, spide_<device>_trained.json
(bench_spide.py --state ...): numbers from the JSON only.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ok = replace_between_markers(ROOT / "README.md", f"<!-- spide-bench-{args.device}:begin -->",
                                 f"<!-- spide-bench-{args.device}:end -->", bench_md(args.device))
    print("README table updated:", ok)


if __name__ == "__main__":
    main()
