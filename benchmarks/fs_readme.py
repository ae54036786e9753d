"""Regenerates the tables of README.md's "Few-spikes neurons (ttfs_ext.fs)" section from
benchmarks/results/fs_tables.json, fs_<device>.json and fs_<device>_thp.json (the same
benchmark under THP_MEM_ALLOC_ENABLE=1): numbers from the JSON only.

    python benchmarks/fs_readme.py [--device cpu]
    python benchmarks/fs_readme.py --run-cli     # first run `ttfs fs --json` for relu and silu on digits
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from suite.host import ROOT, replace_between_markers

RESULTS = ROOT / "benchmarks" / "results"


def tables_md() -> str:
    data = json.loads((RESULTS / "fs_tables.json").read_text())
    rows = ["| table | K | fit range | fitted for | MSE on the range | MSE, x ~ N(0, 1.5²) | max abs error "
            "| spikes/neuron, x ~ N(0, 1.5²) | restarts | steps | fit time | commit |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    default = {}
    for name, r in data["functions"].items():
        base = name.partition("_")[0]
        if base not in default or r["mse_normal_0_1.5"] < data["functions"][default[base]]["mse_normal_0_1.5"]:
            default[base] = name
    for name, r in sorted(data["functions"].items()):
        weighting = r.get("weighting", "interval")
        label = f"{name}{' (default)' if default.get(name.partition('_')[0]) == name else ''}"
        rows.append(f"| {label} | {r['K']} | [{r['x_range'][0]:g}, {r['x_range'][1]:g}] | "
                    f"{'the range' if weighting == 'interval' else 'N(0, 1.5²), 15 % range'} | {r['mse']:.2e} | "
                    f"{r['mse_normal_0_1.5']:.2e} | {r['max_abs_error']:.3f} | {r['spikes_per_neuron_normal_0_1.5']:.2f} | "
                    f"{r['restarts']} | {r['steps']} | {r['seconds']:.0f} s | "
                    f"{(r.get('meta', data['meta'])['git_commit'] or '?')[:7]} |")
    for name, r in sorted(data.get("authors", {}).get("tables", {}).items()):
        rng = data["functions"][name]["x_range"]
        rows.append(f"| FS paper's {name} | {r['K']} | [{rng[0]:g}, {rng[1]:g}] | (theirs) | {r['mse']:.2e} | "
                    f"{r['mse_normal_0_1.5']:.2e} | {r['max_abs_error']:.3f} | {r['spikes_per_neuron_normal_0_1.5']:.2f} "
                    f"| – | – | – | – |")
    m = data["meta"]
    rows += ["", f"Fitted by `python benchmarks/fit_fs_tables.py` ({m['threads']} threads, {m['cpu_isa']}, torch "
                 f"{m['torch']}); raw results and each fit's settings in `benchmarks/results/fs_tables.json`. MSE on "
                 "100,001 equally spaced points of the fit range, and over 1,000,000 draws of N(0, 1.5²) (where a "
                 "network's pre-activations mostly lie). `FSActivation.sigmoid()` and `.silu()` take the default row "
                 "(the lower MSE on N(0, 1.5²)); `fit=\"interval\"` the other. The FS paper's tables "
                 "(christophstoeckl/FS-neurons `fs_weights.py`, measured by `--authors PATH`; not shipped, it has no "
                 "licence) on the same grids. Each table comes from its command below; `--check` added to it refits "
                 "the table and compares it with the shipped one, writing nothing (on the fitting machine: the same "
                 "bits; another CPU may round ATen's Adam steps differently):", ""]
    for name, r in sorted(data["functions"].items()):
        rows.append(f"    {r['command']}" if r.get("command") else f"    # {name}: no command recorded")
    return "\n".join(rows)


def bench_md(device: str, suffix: str = "") -> str:
    name = f"fs_{device}{suffix}.json"
    data = json.loads((RESULTS / name).read_text())
    rows = ["| mode | elements | K | fused | GB/s | clone GB/s | fused / clone | fused / copy | eager loop / fused | "
            "compiled loop / fused |", "|---|---|---|---|---|---|---|---|---|---|"]

    def ms(v):
        return f"{v * 1e3:.2f} ms"

    def over(name):  # fused time / that copy's time, per cycle
        v = im.get(name)
        return f"{1 / v['ratio_to_fused']:.2f}x" if v else "–"
    for c in data["activation"]:
        im = c["impls"]
        f, clone = im["fused"], im.get("clone")
        eager, comp = im.get("eager_loop"), im.get("compiled_loop")
        rows.append(f"| {c['mode']} | {c['numel']:.0e} | {c['K']} | {ms(f['median_s'])} | {f['GB_per_s']:.1f} | "
                    f"{clone['GB_per_s']:.1f} |" if clone else
                    f"| {c['mode']} | {c['numel']:.0e} | {c['K']} | {ms(f['median_s'])} | {f['GB_per_s']:.1f} | – |")
        rows[-1] += f" {over('clone')} | {over('copy')} |"
        rows[-1] += (f" {eager['ratio_to_fused']:.1f}x |" if eager else " – |") + \
                    (f" {comp['ratio_to_fused']:.1f}x |" if comp else " – |")
    net = data.get("network", {})
    m = data["meta"]
    where = m["gpu"] if device == "cuda" and m.get("gpu") else f"{m['threads']} threads ({m['cpu_isa']})"
    smallest = min(c["numel"] for c in data["activation"])
    if "max_eager" not in m:
        limits = "–: not run (sizes limited by the loops' memory and time)"
    elif m["max_eager"] < smallest and m["max_backward"] < smallest:
        limits = "–: not run (this run times the fused forward and the copies only)"
    else:
        limits = (f"–: not run: the loops only up to {m['max_eager']:.0e} elements and while their temporaries fit "
                  f"in {m['memory_budget']:.0e} bytes, forward+backward only up to {m['max_backward']:.0e} elements")
    checks = "" if m.get("input_checks", True) else " Timed without the NaN/inf check of x (`--no-input-checks`)."
    rows += ["", f"{limits}.{checks}", "",
             f"float32, {device}, {where}, torch {m['torch']}, "
                 f"{m['cycles']} paired cycles (ratios per cycle, medians), commit {(m['git_commit'] or '?')[:7]}, "
                 f"{m['date']}; `benchmarks/results/{name}`. GB/s counts the bytes the fused kernel must "
                 "move (forward: read x, write y; forward+backward: also read x and the gradient, write the "
                 "input gradient); the clone is `x.clone()` (a new tensor, as the op returns one), the copy "
                 f"`y.copy_(x)` into a kept tensor; THP_MEM_ALLOC_ENABLE={m.get('THP_MEM_ALLOC_ENABLE')}."]
    if net:
        rows += ["", "Converted CNN (the `ttfs fs` network on 1×28×28 inputs, batch 256, inference): " +
                 "; ".join(f"{a}: FS {v['fs_s'] * 1e3:.1f} ms vs ANN {v['ann_s'] * 1e3:.1f} ms "
                           f"(median per-cycle ratio FS/ANN {v['fs_over_ann']:.2f}x)" for a, v in net.items()) + "."]
    return "\n".join(rows)


def isas_md() -> str:
    """The fused kernel in every ISA's code against the eager loop (bench_fs.py's fused_<isa>)."""
    data = json.loads((RESULTS / "fs_cpu_isas.json").read_text())
    m = data["meta"]
    isas = [m["cpu_isa"]] + [k[len("fused_"):] for k in data["activation"][0]["impls"] if k.startswith("fused_")]
    rows = ["| mode | elements | K | " + " | ".join(f"{isa}: ms, loop / fused" for isa in isas) + " |",
            "|---|---|---|" + "---|" * len(isas)]
    for c in data["activation"]:
        cells = []
        for isa in isas:
            v = c["impls"]["fused" if isa == m["cpu_isa"] else f"fused_{isa}"]
            speedup = v.get("over_eager_loop")
            cells.append(f"{1e3 * v['median_s']:.1f} ms, " + (f"{speedup:.1f}x" if speedup else "–"))
        rows.append(f"| {c['mode']} | {c['numel']:.0e} | {c['K']} | " + " | ".join(cells) + " |")
    rows += ["", f"float32, {m['threads']} thread(s), this CPU's {m['cpu_isa']} code and each lower ISA's "
                 f"(`TTFS_EXT_CPU_ISA`'s choice, set per call), paired in the same {m['cycles']} cycles (median of "
                 f"per-cycle ratios); torch {m['torch']}, commit {(m['git_commit'] or '?')[:7]}, {m['date']}; "
                 "`benchmarks/results/fs_cpu_isas.json`. –: the loop not run (its temporaries over the "
                 "memory budget)."]
    return "\n".join(rows)


def cli_md() -> str:
    """benchmarks/results/fs_cli_digits.json: the outputs of `ttfs fs --json` (a list)."""
    runs = json.loads((RESULTS / "fs_cli_digits.json").read_text())
    rows = ["| activation | dataset | epochs | ANN acc. | FS acc. | agreement | max logit diff | spikes/neuron | "
            "FS-neurons | latency | throughput | rate coding latency |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rows.append(f"| {r['activation']} | {r['dataset']} | {r['epochs']} | {r['ann_accuracy']:.2%} | "
                    f"{r['fs_accuracy']:.2%} | {r['agreement']:.2%} | {r['max_logit_difference']:.3f} | "
                    f"{r['spikes_per_neuron']:.2f} | {r['fs_neurons_per_image']} | {r['latency_steps']} steps | "
                    f"1 image / {r['throughput_steps_per_image']} steps | {r['rate_coding_latency_steps']} steps |")
    rows += ["", f"`ttfs fs --json --activation <a>` (default seed 0, {runs[0]['n_test']} test images); raw output "
                 "in `benchmarks/results/fs_cli_digits.json`."]
    return "\n".join(rows)


def run_cli() -> None:
    """benchmarks/results/fs_cli_digits.json from `ttfs fs --json --activation relu|silu`."""
    runs = []
    for activation in ("relu", "silu"):
        out = subprocess.run([sys.executable, "-m", "ttfs_ext.cli", "fs", "--json", "--activation", activation],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out[out.index("{"):]))
    (RESULTS / "fs_cli_digits.json").write_text(json.dumps(runs, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--run-cli", action="store_true", help="first rerun `ttfs fs --json` (relu, silu; digits)")
    args = ap.parse_args()
    if args.run_cli:
        run_cli()
    readme = ROOT / "README.md"
    ok1 = replace_between_markers(readme, "<!-- fs-tables:begin -->", "<!-- fs-tables:end -->", tables_md())
    ok2 = (RESULTS / f"fs_{args.device}.json").exists() and replace_between_markers(
        readme, f"<!-- fs-bench-{args.device}:begin -->", f"<!-- fs-bench-{args.device}:end -->", bench_md(args.device))
    # the same benchmark with PyTorch's CPU allocator on 2 MB pages (THP_MEM_ALLOC_ENABLE=1)
    ok_thp = (RESULTS / f"fs_{args.device}_thp.json").exists() and replace_between_markers(
        readme, f"<!-- fs-bench-{args.device}-thp:begin -->", f"<!-- fs-bench-{args.device}-thp:end -->",
        bench_md(args.device, "_thp"))
    ok3 = (RESULTS / "fs_cli_digits.json").exists() and replace_between_markers(
        readme, "<!-- fs-cli:begin -->", "<!-- fs-cli:end -->", cli_md())
    ok_isas = (RESULTS / "fs_cpu_isas.json").exists() and replace_between_markers(
        readme, "<!-- fs-bench-isas:begin -->", "<!-- fs-bench-isas:end -->", isas_md())
    print("README tables updated:", ok1, ok2, ok_thp, ok3, ok_isas)


if __name__ == "__main__":
    main()
