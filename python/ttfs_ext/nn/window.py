"""SpikingLayer: a layer whose neurons fire once, in a window [t_min, t_max]."""
from __future__ import annotations

import math
from typing import Optional

import torch

MODES = ("closed", "event")


def check_mode(owner: object, mode: str) -> str:
    """The mode of a spiking layer or readout: "closed" (closed form) or "event" (the exact
    event-driven neuron)."""
    if mode not in MODES:
        raise ValueError(f"{type(owner).__name__}: mode must be 'closed' or 'event', got {mode!r}")
    return mode


class SpikingLayer:
    """A layer that fires in a window [t_min, t_max], both None until set by the user or a
    container. t_start is when its neurons start integrating: the t_min of the spiking layer
    before (0, the start of the input window, for the first), so its inputs fired in
    [t_start, t_min], a window of width in_width.

    Time axis: a layer on its own takes and gives absolute times (t_in in [t_start, t_min],
    t_out in [t_min, t_max]). In a TTFSSequential it runs in local time (`local` is set): each
    window measured from its own start, t_in in [0, in_width] and t_out in [0, width], so that
    float32 times round at the size of their window, not at the depth of the network. The
    absolute window stays in t_min, t_max and t_start, in float64, for reports and plots.

    Subclasses define closed_forward(t_in) and event_forward(t_in); forward runs the one
    `mode` names."""

    t_min: Optional[float]
    t_max: Optional[float]
    t_start: Optional[float] = None
    width: Optional[float] = None      # t_max - t_min
    in_width: Optional[float] = None   # t_min - t_start: the width of the input window
    local: bool = False
    mode: str = "closed"

    def set_mode(self, mode: str) -> None:
        self.mode = check_mode(self, mode)

    def forward(self, t_in: torch.Tensor) -> torch.Tensor:
        return self.event_forward(t_in) if self.mode == "event" else self.closed_forward(t_in)

    def set_window(self, t_min: float, t_max: float, t_start: Optional[float] = None) -> None:
        """Set the window in absolute time: the layer then takes and gives absolute times. A
        layer chained in a TTFSSequential (local time) gets its width from the network."""
        if self.local:
            raise RuntimeError(f"{type(self).__name__}: this layer's window is chained in a TTFSSequential (local "
                               "time); set it with the network's set_widths()")
        t_min, t_max = float(t_min), float(t_max)
        if not (math.isfinite(t_min) and math.isfinite(t_max) and t_max > t_min):
            raise ValueError(f"{type(self).__name__}: the window must satisfy t_min < t_max, got [{t_min}, {t_max}]")
        if t_start is not None and not (math.isfinite(float(t_start)) and float(t_start) <= t_min):
            raise ValueError(f"{type(self).__name__}: t_start must satisfy t_start <= t_min, got t_start={t_start} "
                             f"and t_min={t_min}")
        self.t_min, self.t_max, self.width = t_min, t_max, t_max - t_min
        if t_start is not None:
            self.t_start = float(t_start)
        self.in_width = None if self.t_start is None else t_min - self.t_start

    def _chain(self, t_start: float, t_min: float, in_width: float, width: float) -> None:
        """Place the layer in a chain of windows, in local time, with exact widths (the absolute
        times follow from their sums). Called by TTFSSequential."""
        self.t_start, self.t_min, self.t_max = t_start, t_min, t_min + width
        self.in_width, self.width, self.local = in_width, width, True

    def _take_window(self, other: "SpikingLayer") -> None:
        self.t_start, self.t_min, self.t_max = other.t_start, other.t_min, other.t_max
        self.in_width, self.width, self.local = other.in_width, other.width, other.local

    def _start(self) -> float:
        """t_start, when the neurons start integrating (the t_min of the spiking layer before)."""
        if self.t_start is None:
            raise RuntimeError(f"{type(self).__name__}: t_start (when integration starts, the t_min of the spiking "
                               "layer before) is not set; pass it to set_window() or put the layer in a TTFSSequential")
        return self.t_start

    def window(self) -> tuple[float, float]:
        """The absolute window [t_min, t_max]."""
        if self.t_min is None or self.t_max is None:
            raise RuntimeError(f"{type(self).__name__}: the window [t_min, t_max] is not set; pass t_min/t_max "
                               "to the constructor, call set_window(), or put the layer in a TTFSSequential")
        return self.t_min, self.t_max


    def _in_width(self) -> float:
        """in_width, the width of the input window [t_start, t_min]."""
        return self.in_width if self.in_width is not None else self.window()[0] - self._start()

    def _layer_scalars(self) -> dict[str, float]:
        """The window arguments of the B1 ops (functional.linear/conv2d) in the layer's time form."""
        t_min, t_max = self.window()
        return {"in_width": self.in_width, "width": self.width} if self.local else {"t_min": t_min, "t_max": t_max}

    def _event_scalars(self) -> dict[str, float]:
        """The window arguments of the first_spike ops in the layer's time form."""
        t_max = self.window()[1]
        return {"in_width": self.in_width, "width": self.width} if self.local else \
            {"t_start": self._start(), "t_max": t_max}

    def output_window(self) -> tuple[float, float]:
        """The layer's window on the axis of its output times: (0, width) in local time, else
        (t_min, t_max). An output below the first is a spike before the window opens; at the
        second, no spike."""
        return (0.0, self.width) if self.local else self.window()

    def input_window(self) -> tuple[float, float]:
        """The window of the layer's inputs on their axis: (0, in_width) in local time, else
        (t_start, t_min)."""
        return (0.0, self._in_width()) if self.local else (self._start(), self.window()[0])

    def absolute(self, t: torch.Tensor) -> torch.Tensor:
        """The layer's output times t on the absolute axis, in float64; no spike is t_max exactly."""
        if not self.local:
            return t.double()
        t_min, t_max = self.window()
        return torch.where(t >= self.width, t_max, t.double() + t_min)
