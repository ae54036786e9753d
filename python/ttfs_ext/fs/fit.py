"""Fitting the parameters h, d, T of a few-spikes neuron to an activation function, as the
authors' find_coeffs.py does, with the inference step order (spike with T(t), emit d(t), then
subtract h(t)) and the fused kernel's surrogate backward:

- x: n_points equally spaced on x_range, target f(x);
- loss = mean(imp(x) (f(x) - y(x))^2) + c_v v_reg, v_reg = sum_t (mean_x max(|v_s(t)| - 1, 0))^2;
- Adam; its learning rate ~ U(lr_range) and c_v ~ U(cv_range) drawn anew at every step;
- init h ~ U(-1, 0), d ~ U(-0.5, 1), T ~ U(-1, 1); random restarts, each trained with
  patience; the best restart wins. Here a restart stops after max_steps steps, extended to
  `patience` steps past each improvement of its best ranking loss (checked every 10 steps,
  at most 4 max_steps in all). The authors' loop differs: it pushes its step counter back by
  `patience` at every step whose training loss (with that step's random c_v) improves, with no
  cap. Ours ranks on a loss that does not depend on the random c_v, and always ends;
- optional importance profile imp(x), and a k-bit quantised variant: h, d, T fake-quantised to
  `quantize_bits` bits on [-quant_range, quant_range] (as TF's fake_quant, see quantize) at
  evaluation only (the training steps use
  the unquantised values; restarts are ranked on the quantised loss).

A restart is ranked by its weighted MSE (plus the v_reg term at the middle of cv_range).
One addition to the authors' procedure: the best restart is polished for `polish_steps` Adam
steps with a learning rate decaying geometrically over polish_lr (their learning rates of
0.09-0.5 leave the last digits of the loss on the table); polish_steps=0 turns it off.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch

from .functional import fs_activation_full

__all__ = ["FitResult", "fit_coefficients", "quantize"]


@dataclass
class FitResult:
    h: torch.Tensor
    d: torch.Tensor
    T: torch.Tensor
    loss: float            # the ranking loss of the best restart
    mse: float             # unweighted MSE on the fitting grid, float64
    max_abs_error: float
    restarts: int
    steps: int             # training steps over all restarts
    seconds: float
    history: list = field(default_factory=list)  # (restart, steps, loss) per restart

    def table(self) -> dict:
        return {"h": self.h.tolist(), "d": self.d.tolist(), "T": self.T.tolist()}


def quantize(p: torch.Tensor, bits: int, limit: float = 8.0) -> torch.Tensor:
    """Fake-quantises p to `bits` bits on [-limit, limit] as TensorFlow's
    fake_quant_with_min_max_args does (the authors' find_quantized_coeffs.py): 2^bits levels,
    `scale` = 2 limit / (2^bits - 1) apart, the range nudged so that 0 is one of them; values
    outside are clamped, ties round up."""
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"quantize: bits must be an int in 2..16, got {bits!r}")
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"quantize: limit must be finite and > 0, got {limit!r}")
    quant_max = 2 ** bits - 1
    scale = 2.0 * limit / quant_max
    zero_point = min(max(math.floor(limit / scale + 0.5), 0), quant_max)
    lo, hi = -zero_point * scale, (quant_max - zero_point) * scale
    return torch.floor((p.clamp(lo, hi) - lo) / scale + 0.5) * scale + lo


def _evaluate(params, x, target, imp, cv):
    y, _, reg = fs_activation_full(x, params[0], params[1], params[2], 0, True)
    return (imp * (target - y).square()).mean() + cv * reg.square().sum()


def fit_coefficients(f: Callable[[torch.Tensor], torch.Tensor], K: int, x_range: tuple[float, float], *,
                     n_points: int = 100_000, restarts: int = 100, max_steps: int = 5000, patience: int = 1000,
                     lr_range: tuple[float, float] = (0.09, 0.5), cv_range: tuple[float, float] = (0.08, 0.12),
                     importance: Optional[Union[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = None,
                     quantize_bits: Optional[int] = None, quant_range: float = 8.0, seed: int = 0,
                     dtype: torch.dtype = torch.float32, time_budget: Optional[float] = None,
                     polish_steps: int = 2000, polish_lr: tuple[float, float] = (0.02, 2e-4),
                     init: Optional[tuple] = None, verbose: bool = False) -> FitResult:
    """Fits h, d, T (K values each) so that fs_activation(x, h, d, T) approximates f on
    x_range (see the module docstring for the procedure). time_budget (seconds) stops starting
    new restarts once spent. init: an (h, d, T) table that the first restart starts from (the
    others from the random initialisation), such as relu_table(K, alpha) for ReLU-like
    functions. Returns the best restart as a FitResult (float64 tensors)."""
    if not isinstance(K, int) or not 1 <= K <= 32:
        raise ValueError(f"fit_coefficients: K must be an int in 1..32, got {K!r}")
    lo, hi = map(float, x_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"fit_coefficients: x_range must be finite with x_min < x_max, got {x_range!r}")
    if restarts < 1 or max_steps < 1 or n_points < 2:
        raise ValueError("fit_coefficients: restarts, max_steps must be >= 1 and n_points >= 2")
    if quantize_bits is not None and (not isinstance(quantize_bits, int) or not 2 <= quantize_bits <= 16):
        raise ValueError(f"fit_coefficients: quantize_bits must be None or an int in 2..16, got {quantize_bits!r}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(lo, hi, n_points, dtype=torch.float64)
    target = f(x).to(torch.float64)
    if importance is None:
        imp = torch.ones_like(x)
    elif callable(importance):
        imp = importance(x).to(torch.float64)
    else:
        imp = importance.to(torch.float64)
    xs, ts, imps = x.to(dtype), target.to(dtype), imp.to(dtype)
    cv_mid = 0.5 * (cv_range[0] + cv_range[1])

    def uniform(a, b, n=None):
        r = torch.rand(n if n is not None else (), generator=gen, dtype=torch.float64)
        return a + (b - a) * r

    def rank(params):
        with torch.no_grad():
            q = torch.stack([quantize(p, quantize_bits, quant_range) for p in params]) if quantize_bits else params
            return float(_evaluate(q, xs, ts, imps, cv_mid)), q

    start = time.perf_counter()
    best = (math.inf, None)
    history, total_steps = [], 0
    for r in range(restarts):
        if time_budget is not None and r > 0 and time.perf_counter() - start > time_budget:
            break
        if r == 0 and init is not None:
            start_params = torch.stack([torch.as_tensor(p, dtype=torch.float64) for p in init]).to(dtype)
            if start_params.shape != (3, K):
                raise ValueError(f"fit_coefficients: init must be (h, d, T) of length K={K} each")
        else:
            start_params = torch.stack([uniform(-1.0, 0.0, K), uniform(-0.5, 1.0, K), uniform(-1.0, 1.0, K)]).to(dtype)
        params = torch.nn.Parameter(start_params)
        opt = torch.optim.Adam([params], lr=0.1)
        run_best, run_params = rank(params.detach())[0], params.detach().clone()
        stop_at, step = max_steps, 0
        while step < stop_at and step < 4 * max_steps:
            step += 1
            for group in opt.param_groups:
                group["lr"] = float(uniform(*lr_range))
            cv = float(uniform(*cv_range))
            opt.zero_grad(set_to_none=True)
            loss = _evaluate(params, xs, ts, imps, cv)
            loss.backward()
            opt.step()
            if step % 10 == 0 or step == stop_at:
                score = rank(params.detach())[0]
                if score < run_best:
                    run_best, run_params = score, params.detach().clone()
                    stop_at = max(stop_at, step + patience)
        total_steps += step
        history.append((r, step, run_best))
        if verbose:
            print(f"restart {r}: {step} steps, loss {run_best:.3e} (best {min(best[0], run_best):.3e})", flush=True)
        if run_best < best[0]:
            best = (run_best, run_params)
    loss, params = best
    if polish_steps > 0:
        params = torch.nn.Parameter(params.clone())
        opt = torch.optim.Adam([params], lr=polish_lr[0])
        run_best, run_params = loss, params.detach().clone()
        for step in range(polish_steps):
            for group in opt.param_groups:
                group["lr"] = polish_lr[0] * (polish_lr[1] / polish_lr[0]) ** (step / polish_steps)
            opt.zero_grad(set_to_none=True)
            _evaluate(params, xs, ts, imps, cv_mid).backward()
            opt.step()
            if step % 10 == 9:
                score = rank(params.detach())[0]
                if score < run_best:
                    run_best, run_params = score, params.detach().clone()
        total_steps += polish_steps
        if verbose:
            print(f"polish: {polish_steps} steps, loss {loss:.3e} -> {run_best:.3e}", flush=True)
        loss, params = run_best, run_params
    params = rank(params)[1].to(torch.float64)
    with torch.no_grad():
        y = fs_activation_full(x, params[0], params[1], params[2], 0, False)[0]
        err = y - target
    return FitResult(h=params[0].clone(), d=params[1].clone(), T=params[2].clone(), loss=loss,
                     mse=float(err.square().mean()), max_abs_error=float(err.abs().max()), restarts=len(history),
                     steps=total_steps, seconds=time.perf_counter() - start, history=history)
