"""Fixed-point solvers of IDE (Xiao et al. 2021): x = fn(x) by Anderson acceleration, Broyden's
method (IDE's own solver) or plain iteration, with a convergence check that never returns silent garbage: a solve that misses
its tolerance warns (NonConvergenceWarning) or raises (ConvergenceError, strict=True), and
one that diverges (inf, NaN, residual growing past 1e6 times the start) always raises."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["anderson", "broyden", "fixed_point", "solve", "SolveResult", "ConvergenceError", "NonConvergenceWarning"]


class ConvergenceError(RuntimeError):
    """A fixed-point solve diverged, or missed its tolerance with strict=True."""


class NonConvergenceWarning(RuntimeWarning):
    """A fixed-point solve stopped at max_iter above its tolerance."""


@dataclass
class SolveResult:
    x: torch.Tensor
    residual: float  # ||fn(x) - x|| / max(||fn(x)||, tiny) at the returned x
    iterations: int
    converged: bool
    growth: float = 1.0  # ||x|| / max(||x0||, ||fn(x0)||): divergence shows here


def _relative(fx: torch.Tensor, x: torch.Tensor) -> float:
    return float((fx - x).norm() / fx.norm().clamp_min(1e-30))


def fixed_point(fn: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *, tol: float = 1e-8,
                max_iter: int = 200) -> SolveResult:
    """x <- fn(x) until ||fn(x) - x|| <= tol ||fn(x)||."""
    x = x0
    res, start = float("inf"), None
    for k in range(1, max_iter + 1):
        fx = fn(x)
        start = max(float(fx.norm()), float(x0.norm())) if start is None else start
        res = _relative(fx, x)
        x = fx
        if res <= tol or not torch.isfinite(fx).all():
            break
    return SolveResult(x, res, k, res <= tol, float(x.norm()) / max(start, 1e-30))


def anderson(fn: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *, m: int = 6, tol: float = 1e-8,
             max_iter: int = 100, damping: float = 1.0, lam: float = 1e-12) -> SolveResult:
    """Anderson acceleration (type II, memory m) of x = fn(x), on the whole tensor as one vector."""
    shape = x0.shape
    xs, fs = [x0.reshape(-1)], [fn(x0).reshape(-1)]
    res = _relative(fs[0], xs[0])
    start = max(float(fs[0].norm()), float(x0.norm()), 1e-30)
    if res <= tol:
        return SolveResult(fs[0].reshape(shape), res, 1, True)
    x = fs[0]
    for k in range(1, max_iter + 1):
        xs.append(x)
        fs.append(fn(x.reshape(shape)).reshape(-1))
        res = _relative(fs[-1], xs[-1])
        if res <= tol or not torch.isfinite(fs[-1]).all():
            return SolveResult(fs[-1].reshape(shape), res, k + 1, res <= tol, float(fs[-1].norm()) / start)
        xs, fs = xs[-m:], fs[-m:]
        G = torch.stack([f - y for f, y in zip(fs, xs)])  # (n, d) residuals
        H = G @ G.T
        H = H + lam * H.diagonal().max().clamp_min(1e-30) * torch.eye(len(xs), dtype=H.dtype, device=H.device)
        try:
            alpha = torch.linalg.solve(H, torch.ones(len(xs), dtype=H.dtype, device=H.device))
        except RuntimeError:  # singular: restart from the last iterate
            xs, fs = xs[-1:], fs[-1:]
            x = fs[-1]
            continue
        alpha = alpha / alpha.sum()
        F_, X_ = torch.stack(fs), torch.stack(xs)
        x = damping * (alpha @ F_) + (1 - damping) * (alpha @ X_)
    return SolveResult(fs[-1].reshape(shape), res, max_iter + 1, False, float(fs[-1].norm()) / start)


def broyden(fn: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *, m: int = 30, tol: float = 1e-8,
            max_iter: int = 100) -> SolveResult:
    """Broyden's ("good") method on g(x) = fn(x) - x = 0, the whole tensor as one vector: the
    inverse Jacobian of g starts at -I (fn contractive: its Jacobian is small) and takes
    rank-one updates (Sherman-Morrison) kept as vector pairs, at most m before it restarts."""
    shape = x0.shape
    us: list = []
    vs: list = []

    def inv(v):  # B v, B = -I + sum u v^T
        out = -v
        for u, w in zip(us, vs):
            out = out + u * (w @ v)
        return out

    def inv_t(v):  # B^T v
        out = -v
        for u, w in zip(us, vs):
            out = out + w * (u @ v)
        return out

    x = x0.reshape(-1)
    fx = fn(x0).reshape(-1)
    start = max(float(fx.norm()), float(x.norm()), 1e-30)
    for k in range(1, max_iter + 1):
        res = _relative(fx, x)
        if res <= tol or not torch.isfinite(fx).all():
            return SolveResult(fx.reshape(shape), res, k, res <= tol, float(fx.norm()) / start)
        gx = fx - x
        dx = -inv(gx)
        x_new = x + dx
        fx_new = fn(x_new.reshape(shape)).reshape(-1)
        dg = (fx_new - x_new) - gx
        v = inv_t(dx)  # B^T dx
        denom = v @ dg
        if len(us) == m:  # full: start again from -I (dropping the oldest pair can diverge)
            us.clear()
            vs.clear()
        elif float(denom.abs()) > 1e-30 * float(dx.norm() * dg.norm()):
            us.append((dx - inv(dg)) / denom)
            vs.append(v)
        x, fx = x_new, fx_new
    res = _relative(fx, x)
    return SolveResult(fx.reshape(shape), res, max_iter + 1, res <= tol, float(fx.norm()) / start)


def solve(fn: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *, method: str = "anderson",
          tol: float = 1e-8, max_iter: int = 100, strict: bool = False, what: str = "fixed point") -> SolveResult:
    """Runs `method` ('anderson', 'broyden' or 'fixed_point') and checks the result (see the
    module)."""
    if method == "anderson":
        result = anderson(fn, x0, tol=tol, max_iter=max_iter)
    elif method == "broyden":
        result = broyden(fn, x0, tol=tol, max_iter=max_iter)
    elif method == "fixed_point":
        result = fixed_point(fn, x0, tol=tol, max_iter=max_iter)
    else:
        raise ValueError(f"ttfs_ext.spide: solver must be 'anderson', 'broyden' or 'fixed_point', got {method!r}")
    if not torch.isfinite(result.x).all() or not result.growth < 1e6:
        raise ConvergenceError(
            f"ttfs_ext.spide: the {what} solve diverged (the iterate grew {result.growth:.3g}-fold in "
            f"{result.iterations} iterations): the feedback loop is not contractive; restrict the feedback "
            f"weight's norm (fb_norm=...) or lower its scale")
    if not result.converged:
        msg = (f"ttfs_ext.spide: the {what} solve did not converge: relative residual {result.residual:.3g} > "
               f"tol {tol:g} after {result.iterations} iterations; the feedback loop may not be contractive "
               f"(restrict the feedback weight's norm with fb_norm=...)")
        if strict:
            raise ConvergenceError(msg)
        warnings.warn(msg, NonConvergenceWarning, stacklevel=3)
    return result
