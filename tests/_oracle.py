"""Independent oracles for the event-driven neuron, written without the library:

- exact_first_spike: one neuron in exact rational arithmetic (fractions.Fraction), walking
  the sorted input events segment by segment;
- euler_first_spike: forward-Euler integration of the ODE on a fine time grid, for a
  tolerance check that the closed-form times are true threshold crossings.

Neuron: dV/dt = alpha H(t - t_start) + sum_j w_j H(t - t_j), V(t_start) = 0; first t >= t_start
with V(t) >= theta, if before t_max (else t_max). Inputs before t_start act from t_start;
inputs at +inf never arrive.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence


def exact_first_spike(t_in: Sequence[float], w: Sequence[float], alpha: float, theta: float,
                      t_start: float, t_max: float) -> float:
    events = sorted((max(Fraction(t), Fraction(t_start)), Fraction(wj))
                    for t, wj in zip(t_in, w) if math.isfinite(t))
    theta, slope, v, now = Fraction(theta), Fraction(alpha), Fraction(0), Fraction(t_start)
    if theta <= 0:
        return float(now) if now < t_max else t_max
    for when, wj in events + [(None, Fraction(0))]:
        # V rises linearly on [now, when) (to +inf after the last event)
        if slope > 0:
            crossing = now + (theta - v) / slope
            if when is None or crossing <= when:
                return float(crossing) if crossing < Fraction(t_max) else t_max
        if when is None:
            return t_max
        v += slope * (when - now)
        slope += wj
        now = when
    return t_max


def euler_first_spike(t_in: Sequence[float], w: Sequence[float], alpha: float, theta: float,
                      t_start: float, t_max: float, dt: float) -> float:
    """Integrates dV/dt on a grid of step dt from t_start; returns the first grid time where
    V >= theta (an overestimate by at most dt of the true crossing), t_max if none."""
    steps = int(math.ceil((t_max - t_start) / dt))
    v = 0.0
    for k in range(steps):
        t = t_start + k * dt
        if v >= theta:
            return t
        current = alpha + sum(wj for tj, wj in zip(t_in, w) if tj <= t)
        v += current * dt
    return t_max
