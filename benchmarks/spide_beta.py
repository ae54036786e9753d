"""SPIDE's backward rates against the IDE solution on a small random feedback net (float64):
beta^N from T_b ternary steps vs the dense solve of (I - J^T) beta = g, J with the forward
masks, for T_b = 50, 100, 250, 1000 and several seeds; cosine similarity and relative error.
JSON: benchmarks/results/spide_beta_convergence.json."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite.host import git_state  # noqa: E402

from ttfs_ext import spide  # noqa: E402

F64 = torch.float64


def one(seed: int, T_bs=(50, 100, 250, 1000)) -> dict:
    torch.manual_seed(seed)
    net = spide.FeedbackSNN(nn.Linear(6, 8), [nn.Linear(8, 5)], nn.Linear(5, 8, bias=False), None, T=100).double()
    with torch.no_grad():
        net.feedback.module.weight.mul_(0.5)
        net.input.module.bias.add_(0.3)
        x = torch.rand(4, 6, dtype=F64)
        rates = net._simulate(x, None)
    m1, m2 = [((r > 0) & (r < 1)).double() for r in rates]
    W1, Wfb, q = net.layers[0].module.weight.detach(), net.feedback.module.weight.detach(), net.q
    g = 0.01 * torch.randn(rates[-1].shape, dtype=F64)
    exact = torch.stack([torch.linalg.solve(torch.eye(5, dtype=F64) - (torch.diag(m2[b]) @ W1 @ torch.diag(m1[b]) @ Wfb
                                                                        / q**2).T, g[b]) for b in range(len(g))])
    net.loss_scale = 0.5 / float(exact.abs().max())
    out = {}
    with torch.no_grad():
        for T_b in T_bs:
            net.T_b = T_b
            beta = net._spide_backward(g, rates, None)[0][-1]
            out[T_b] = dict(cosine=float(torch.nn.functional.cosine_similarity(beta.flatten(), exact.flatten(), dim=0)),
                            relative_error=float((beta - exact).norm() / exact.norm()))
    return out


def main():
    seeds = list(range(10))
    runs = [one(s) for s in seeds]
    summary = {T_b: dict(cosine_median=statistics.median(r[T_b]["cosine"] for r in runs),
                         relative_error_median=statistics.median(r[T_b]["relative_error"] for r in runs),
                         relative_error_max=max(r[T_b]["relative_error"] for r in runs)) for T_b in runs[0]}
    for T_b, row in summary.items():
        print(f"T_b {T_b:5d}: cosine {row['cosine_median']:.5f}, relative error {row['relative_error_median']:.4f} "
              f"(max {row['relative_error_max']:.4f})")
    path = Path(__file__).resolve().parent / "results" / "spide_beta_convergence.json"
    path.write_text(json.dumps(dict(benchmark="spide_beta", seeds=seeds, net="FC 6 -> 8 -> 5, feedback 5 -> 8, T = 100",
                                    summary=summary, runs=runs, **git_state(),
                                    torch=torch.__version__, command="python benchmarks/spide_beta.py"), indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
