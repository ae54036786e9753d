"""The PNG of a suite run: the layer and network ratios and the speed-ups, with their targets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_report"]


def plot_report(report: dict[str, Any], path: "str | Path") -> Path:
    """PNG of the ratios: layers and networks (fwd+bwd, kernel over the twin and over the
    reference; 1.05 and 1.1 marked), and the speed-ups of the event path and against the
    time-stepped simulation (log scale, with their targets)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.get("layers", []) + report.get("networks", []) if "ratios" in r]
    speedups = [(f"event {r['name']} {mode}", r["ratios"][mode]["reference/kernel"])
                for r in report.get("events", []) if "ratios" in r for mode in ("fwd", "fwd+bwd")
                if r["ratios"][mode]["reference/kernel"]]
    speedups += [(f"time-stepped {r['name']} (dt {r['dt']:.2g})", r["ratio_vs_kernel"])
                 for r in report.get("timestepped", []) if "dt" in r]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.45 * max(len(rows), len(speedups), 1) + 3), 10))
    ax = axes[0]
    series = [("kernel/twin", "kernel / twin"), ("kernel/twin_compiled", "kernel / twin (compiled)"),
              ("kernel/best_twin", None), ("reference/kernel", "reference / kernel"),
              ("reference_compiled/kernel", "reference (compiled) / kernel")]
    series = [(k, label) for k, label in series if label]
    width = 0.8 / len(series)
    labels = [f"{r['name']} {r['precision']}" for r in rows]
    for i, (key, label) in enumerate(series):
        values = [r["ratios"]["fwd+bwd"].get(key) or float("nan") for r in rows]
        ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))], values, width, label=label)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(1.05, color="red", lw=0.8, ls="--", label="1.05x (layer target)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("ratio of fwd+bwd times")
    ax.set_title(f"ttfs_ext bench: {report['environment']['device_name']} ({report['environment']['device']}), "
                 f"preset {report['preset']}")
    ax.legend(fontsize=7)
    ax = axes[1]
    if speedups:
        ax.bar(range(len(speedups)), [v for _, v in speedups], color="tab:green")
        ax.set_xticks(range(len(speedups)), [n for n, _ in speedups], rotation=60, ha="right", fontsize=7)
        need = 50 if report["environment"]["device"] == "cuda" else 10
        ax.axhline(need, color="red", ls="--", lw=0.8, label=f"{need}x (event target)")
        ax.axhline(100, color="purple", ls=":", lw=0.8, label="100x (time-stepped target)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_ylabel("speed-up of the ttfs_ext kernel")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

