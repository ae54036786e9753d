"""The issue's performance targets, judged from a report of the suite (met, missed, not
measured, or not judged for a preset of toy shapes)."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

from ttfs_ext.bench import MODES

__all__ = ["evaluate_targets"]


def _target(tid: str, text: str, details: list[dict[str, Any]], key: str, ok: Callable[[float], bool],
            larger_is_worse: bool, missing: str, note: Callable[[dict], str] = lambda d: "") -> dict[str, Any]:
    """A target over `details` (one dict per measurement, with "case" and the value under
    `key`): met if ok(value) for all, missed otherwise; "measured" names the worst one."""
    if not details:
        return {"id": tid, "target": text, "status": "not measured", "measured": missing, "details": []}
    values = [d[key] if d[key] is not None else (math.inf if larger_is_worse else 0.0) for d in details]
    i = max(range(len(values)), key=values.__getitem__) if larger_is_worse else \
        min(range(len(values)), key=values.__getitem__)
    status = "met" if all(d[key] is not None and ok(d[key]) for d in details) else "missed"
    word = "worst" if larger_is_worse else "smallest"
    measured = f"{word} {key} {values[i]:.3g}x ({details[i]['case']}){note(details[i])}"
    return {"id": tid, "target": text, "status": status, "measured": measured, "details": details}


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets that apply to the report's device: met, missed or not measured,
    with the worst measured value."""
    gpu = report["environment"]["device"] == "cuda"
    layers = [r for r in report.get("layers", []) if "ratios" in r]
    networks = [r for r in report.get("networks", []) if "ratios" in r]
    targets = []

    def ratio(r: dict, mode: str, key: str) -> Optional[float]:
        return r["ratios"].get(mode, {}).get(key)

    # every layer's fwd+bwd within 1.05x of its ReLU twin (the faster of eager and compiled: the floor)
    details = [{"case": f"{r['name']} {r['precision']}", "kernel/best_twin": ratio(r, "fwd+bwd", "kernel/best_twin")}
               for r in layers if ratio(r, "fwd+bwd", "kernel/best_twin") is not None]
    targets.append(_target("layer_vs_twin", "every dense/conv layer fwd+bwd within 1.05x of its ReLU twin (the faster "
                           "of eager and compiled)", details, "kernel/best_twin", lambda v: v <= 1.05, True,
                           "no layer timed"))
    if gpu:  # never slower than the eager or compiled reference, in any mode
        details = [{"case": f"{r['name']} {r['precision']} {mode}",
                    "kernel/best_reference": 1.0 / ratio(r, mode, "best_reference/kernel")}
                   for r in layers for mode in MODES if ratio(r, mode, "best_reference/kernel")]
        targets.append(_target("layer_vs_reference", "every layer, every mode: never slower than the eager or compiled "
                               "reference", details, "kernel/best_reference", lambda v: v <= 1.0, True,
                               "no layer timed"))
    else:  # fwd+bwd faster than the eager reference
        details = [{"case": f"{r['name']} {r['precision']}",
                    "kernel/reference": 1.0 / ratio(r, "fwd+bwd", "reference/kernel")}
                   for r in layers if ratio(r, "fwd+bwd", "reference/kernel")]
        targets.append(_target("layer_vs_reference", "every dense/conv layer fwd+bwd faster than the eager reference",
                               details, "kernel/reference", lambda v: v < 1.0, True, "no layer timed"))
    if gpu:
        details = [{"case": f"{r['name']} {r['precision']}",
                    "kernel/best_twin": ratio(r, "fwd+bwd", "kernel/best_twin")}
                   for r in networks if r["model"] == "vgg16-cifar" and ratio(r, "fwd+bwd", "kernel/best_twin")]
        targets.append(_target("vgg_step_vs_twin", "CIFAR VGG16 training step within 1.1x of its ReLU twin", details,
                               "kernel/best_twin", lambda v: v <= 1.1, True, "no CIFAR VGG16 network timed"))
        details = []
        for r in layers + networks:
            e = r.get("errors_vs_float64")
            if r["precision"] != "bfloat16" or not e:
                continue
            for what in ("out", "grad" if r["section"] == "layer" else "grad_l2"):
                k_err, t_err = e["kernel"][what], e["twin"][what]
                details.append({"case": f"{r['name']} {what}", "kernel": k_err, "twin": t_err,
                                "kernel/twin": k_err / t_err if t_err > 0 else (1.0 if k_err == 0 else None)})
        targets.append(_target("bf16_error", "bfloat16 error vs float64 within 2x the twin's bfloat16 error (values; "
                               "gradients: max for layers, relative L2 for networks)", details,
                               "kernel/twin", lambda v: v <= 2.0, True, "no bfloat16 case"))
    need = 50.0 if gpu else 10.0
    details = [{"case": f"{r['name']} {mode} at batch {r['reference_batch']}",
                "reference/kernel": r["ratios"][mode]["reference/kernel"]}
               for r in report.get("events", []) if "ratios" in r for mode in MODES
               if r["ratios"][mode]["reference/kernel"] is not None]
    targets.append(_target("event_vs_reference", f"event path >= {need:g}x faster than the sort-and-gather reference "
                           "(where the reference runs)", details, "reference/kernel", lambda v: v >= need, False,
                           "the reference ran nowhere"))
    sims = [r for r in report.get("simulate", []) if r.get("model") == "vgg16-cifar"]
    big = [r for r in sims if r["batch"] >= 128]
    text = "event path runs the CIFAR VGG16 at batch 128"
    runs = [{"case": r["name"], "ok": bool(r.get("ok")), "seconds": r["time_ms"]["median_ms"] / 1e3 if r.get("ok")
             else None, "error": r.get("error")} for r in sims]
    if big:
        ok = all(r.get("ok") for r in big)
        measured = (f"ran at batch {big[0]['batch']} in {big[0]['time_ms']['median_ms'] / 1e3:.3g} s" if ok
                    else f"failed: {next(r.get('error') for r in big if not r.get('ok'))}")
        targets.append({"id": "event_vgg_batch_128", "target": text, "status": "met" if ok else "missed",
                        "measured": measured, "details": runs})
    else:
        ran = ", ".join(f"batch {r['batch']} ({'ran' if r.get('ok') else 'failed'})" for r in sims)
        targets.append({"id": "event_vgg_batch_128", "target": text, "status": "not measured",
                        "measured": f"this preset runs it at {ran}" if ran else "not run", "details": runs})
    details = [{"case": r["name"], "dt": r["dt"], "reached": r["reached"],
                "ratio": min(r["ratio_vs_kernel"], r["ratio_vs_event_kernel"]) if r["reached"] else None,
                "ratio_if_not_reached": min(r["ratio_vs_kernel"], r["ratio_vs_event_kernel"])}
               for r in report.get("timestepped", []) if "dt" in r]
    targets.append(_target("timestepped", "ttfs_ext >= 100x faster than a time-stepped simulation at the step size "
                           "that reaches 1e-3 spike-time error (ratio to the slower of the closed-form and event "
                           "kernels)", details, "ratio", lambda v: v >= 100.0, False, "not run",
                           note=lambda d: f", dt {d['dt']:.3g}" + ("" if d["reached"] else ": 1e-3 not reached")))
    if not report.get("judges_targets", True):  # toy shapes: the values are shown, no verdict
        for t in targets:
            if t["status"] in ("met", "missed"):
                t["status"] = "not judged"
    return targets

