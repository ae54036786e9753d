"""The README table of a suite run, rendered from its JSON (never typed by hand)."""
from __future__ import annotations

import json
from pathlib import Path

from ttfs_ext.bench import format_bytes as _bytes, format_error as _err, format_ms as _ms, format_ratio as _x

from .targets import evaluate_targets

__all__ = ["readme_table"]


def readme_table(json_path: "str | Path") -> str:
    """The JSON of a run as markdown: environment, layers (fwd+bwd), networks (training step),
    event path, time-stepped simulation and targets. Generated, never typed by hand."""
    report = json.loads(Path(json_path).read_text())
    env = report["environment"]
    commit = (env.get("git_commit") or "unknown")[:7] + (" (dirty)" if env.get("git_dirty") else "")
    out = [f"**{env['device_name']}** ({env['device']}, torch {env['torch_version']}"
           + (f", CUDA {env['cuda_version']}" if env.get("cuda_version") else "")
           + f", {env['threads']} thread{'s' if env['threads'] != 1 else ''}), preset `{report['preset']}`"
           + ("" if report.get("compile", True) else ", torch.compile off")
           + f", commit {commit}, {env['date'][:10]}; raw results `{Path(json_path).name}`."
           + (" Times are medians over cycles; a ratio is the median of the per-cycle ratios (paired), not the "
              "quotient of the medians shown." if report.get("json_version", 1) >= 2 else ""), ""]
    layers = [r for r in report.get("layers", []) if "times_ms" in r]
    if layers:
        out += ["Layers, forward+backward (ms, median; twin = `F.linear`/`F.conv2d` + ReLU, the floor; "
                "-c = torch.compile):", "",
                "| layer | precision | kernel | twin | twin-c | reference | reference-c | kernel/twin | "
                "reference/kernel | fwd kernel/twin | error (kernel / twin) |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in layers:
            t, q, e = r["times_ms"]["fwd+bwd"], r["ratios"], r["errors_vs_float64"]
            out.append(f"| {r['name']} | {r['precision']} | {_ms(t.get('kernel'))} | {_ms(t.get('twin'))} | "
                       f"{_ms(t.get('twin_compiled'))} | {_ms(t.get('reference'))} | "
                       f"{_ms(t.get('reference_compiled'))} | {_x(q['fwd+bwd']['kernel/best_twin'])} | "
                       f"{_x(q['fwd+bwd']['reference/kernel'])} | {_x(q['fwd']['kernel/best_twin'])} | "
                       f"{_err(e['kernel']['out'])} / {_err(e['twin']['out'])} |")
        out.append("")
    networks = [r for r in report.get("networks", []) if "times_ms" in r]
    if networks:
        out += ["Whole networks, one training step (forward, cross-entropy, backward; ms):", "",
                "| network | precision | kernel | kernel-c | twin | twin-c | reference | reference-c | "
                "kernel/twin | reference/kernel | logit error (kernel / twin) | gradient L2 error (kernel / twin) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in networks:
            t, q, e = r["times_ms"]["fwd+bwd"], r["ratios"]["fwd+bwd"], r["errors_vs_float64"]
            out.append(f"| {r['name']} | {r['precision']} | {_ms(t.get('kernel'))} | {_ms(t.get('kernel_compiled'))} | "
                       f"{_ms(t.get('twin'))} | {_ms(t.get('twin_compiled'))} | {_ms(t.get('reference'))} | "
                       f"{_ms(t.get('reference_compiled'))} | {_x(q['kernel/best_twin'])} | "
                       f"{_x(q['reference/kernel'])} | {_err(e['kernel']['out'])} / {_err(e['twin']['out'])} | "
                       f"{_err(e['kernel'].get('grad_l2'))} / {_err(e['twin'].get('grad_l2'))} |")
        out.append("")
    events = [r for r in report.get("events", []) if "times_ms" in r]
    if events:
        out += ["Event-driven path (`first_spike_*`, exact; reference = sort-and-gather, run at the largest batch "
                "within its memory budget; ms):", "",
                "| layer | kernel fwd | kernel fwd+bwd | reference batch | reference fwd | reference/kernel fwd | "
                "reference/kernel fwd+bwd | peak memory fwd+bwd (kernel / reference) |",
                "|---|---|---|---|---|---|---|---|"]
        for r in events:
            t, mem = r["times_ms"], r.get("peak_mem_bytes", {})
            kernel_mem = mem.get("kernel_at_reference_batch", mem.get("kernel"))
            out.append(f"| {r['name']} | {_ms(t['fwd'].get('kernel'))} | {_ms(t['fwd+bwd'].get('kernel'))} | "
                       f"{r['reference_batch'] or 'skipped'} | {_ms(t['fwd'].get('reference'))} | "
                       f"{_x(r['ratios']['fwd']['reference/kernel'])} | "
                       f"{_x(r['ratios']['fwd+bwd']['reference/kernel'])} | "
                       f"{_bytes(kernel_mem)} / {_bytes(mem.get('reference'))} |")
        out.append("")
    sims = report.get("simulate", [])
    if sims:
        out += ["| event-driven network (`ttfs_ext.simulate`) | batch | time | closed form | spikes / neurons | "
                "early spikes |", "|---|---|---|---|---|---|"]
        for r in sims:
            if r.get("ok"):
                out.append(f"| {r['model']} | {r['batch']} | {r['time_ms']['median_ms'] / 1e3:.3g} s | "
                           f"{_ms(r['closed_form_ms'])} ms | {r['spikes']} / {r['neurons']} | {r['early_spikes']} |")
            else:
                out.append(f"| {r.get('model', r['name'])} | {r.get('batch', '')} | failed: "
                           f"{r.get('error') or r.get('crashed')} | | | |")
        out.append("")
    stepped = [r for r in report.get("timestepped", []) if "dt" in r]
    if stepped:
        out += ["| time-stepped simulation | batch | dt | steps | max spike-time error | time | ttfs_ext kernel fwd | "
                "ratio | ratio to the event kernel |", "|---|---|---|---|---|---|---|---|---|"]
        for r in stepped:
            out.append(f"| {r['name']} | {r['batch']} | {r['dt']:.3g} | {r['steps']} | {r['max_error']:.2e}"
                       f"{'' if r['reached'] else ' (not reached)'} | {r['stepped_ms'] / 1e3:.3g} s | "
                       f"{_ms(r['kernel_fwd_ms'])} ms | {r['ratio_vs_kernel']:.3g}x | "
                       f"{r['ratio_vs_event_kernel']:.3g}x |")
        out.append("")
    if report.get("targets"):
        # Verdicts by the current rules (evaluate_targets), from the measurements in the JSON.
        out += ["| target | status | measured |", "|---|---|---|"]
        for t in evaluate_targets(report):
            out.append(f"| {t['target']} | {t['status']} | {t['measured']} |")
    return "\n".join(out).rstrip() + "\n"
