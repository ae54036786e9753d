"""Side by side: suite JSONs (benchmarks/bench_suite.py) of two builds, run alternately with the
same command. Per case, the median over the runs of each build of the paired ratios the suite
measured (kernel/twin for layers and networks, reference/kernel for the event path), and the
kernel's own median time; written as JSON and printed as a markdown table.

    python benchmarks/compare_suites.py --before b1.json b2.json --after a1.json a2.json --out cmp.json
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SECTIONS = {"layers": "kernel/twin", "networks": "kernel/twin", "events": "reference/kernel"}


def rows(report: dict) -> dict[tuple[str, str, str], float]:
    out = {}
    for section, ratio in SECTIONS.items():
        for case in report.get(section, []):
            for mode in ("fwd", "fwd+bwd"):
                value = case.get("ratios", {}).get(mode, {}).get(ratio)
                if value is not None:
                    out[(f"{section[:-1]} {case['name']}", mode, ratio)] = value
                t = case.get("times_ms", {}).get(mode, {}).get("kernel", {}).get("median_ms")
                if t is not None:
                    out[(f"{section[:-1]} {case['name']}", mode, "kernel ms")] = t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", nargs="+", required=True)
    parser.add_argument("--after", nargs="+", required=True)
    parser.add_argument("--out")
    args = parser.parse_args()
    before = [rows(json.loads(Path(p).read_text())) for p in args.before]
    after = [rows(json.loads(Path(p).read_text())) for p in args.after]
    keys = [k for k in before[0] if all(k in r for r in before + after)]
    table = []
    for key in keys:
        b = statistics.median(r[key] for r in before)
        a = statistics.median(r[key] for r in after)
        table.append({"case": key[0], "mode": key[1], "measure": key[2], "before": b, "after": a, "after/before": a / b})
    print("| case | mode | measure | before | after | after/before |")
    print("|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['case']} | {r['mode']} | {r['measure']} | {r['before']:.3g} | {r['after']:.3g} | "
              f"{r['after/before']:.3f} |")
    if args.out:
        meta = {"before": args.before, "after": args.after,
                "environment": json.loads(Path(args.after[0]).read_text()).get("environment")}
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
