"""Window rules: how the windows of a network follow its activations during training."""
from __future__ import annotations

from typing import Optional, Sequence

from .. import nn as tnn

__all__ = ["FixedWindows", "PaperWindows", "CalibratedWindows", "WINDOW_RULES"]


class FixedWindows:
    """Keep the windows as they are."""

    def update(self, net: tnn.TTFSSequential, activation_max: Sequence[float]) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PaperWindows(FixedWindows):
    """The reference code's rule, after each step: width = max(width, factor x the largest
    activation of the batch) (factor 10). Windows only grow."""

    def __init__(self, factor: float = 10.0) -> None:
        self.factor = factor

    def update(self, net: tnn.TTFSSequential, activation_max: Sequence[float]) -> None:
        net.set_widths([max(w, self.factor * a) for w, a in zip(net.widths, activation_max)])


class CalibratedWindows(FixedWindows):
    """width = (1 + zeta) x a running maximum of each layer's largest batch activation,
    m <- max(batch max, decay x m) (decay 1: the maximum seen so far). Windows follow the
    activations, so latency stays small; a margin check warns when a spike would precede its
    window (raise zeta or decay)."""

    def __init__(self, zeta: float = 0.5, decay: float = 1.0) -> None:
        if not (zeta > -1 and 0 < decay <= 1):
            raise ValueError(f"CalibratedWindows: need zeta > -1 and 0 < decay <= 1, got {zeta}, {decay}")
        self.zeta, self.decay = zeta, decay
        self.running: Optional[list[float]] = None

    def update(self, net: tnn.TTFSSequential, activation_max: Sequence[float]) -> None:
        if self.running is None:
            self.running = list(activation_max)
        else:
            self.running = [max(a, self.decay * r) for a, r in zip(activation_max, self.running)]
        net.set_widths([(1 + self.zeta) * r if r > 0 else w for r, w in zip(self.running, net.widths)])

    def state_dict(self) -> dict:
        return {"running": self.running}

    def load_state_dict(self, state: dict) -> None:
        self.running = state.get("running")


WINDOW_RULES = {"paper": PaperWindows, "calibrated": CalibratedWindows, "fixed": FixedWindows}
