"""What convert and agreement report."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Agreement", "SpikingLayerInfo", "ConversionReport"]


@dataclass
class Agreement:
    """How a TTFS network's outputs compare with its ReLU network's on some data."""
    samples: int
    agreement: float                  # fraction of samples with the same predicted class
    max_logit_diff: float             # max |logit_TTFS - logit_ReLU|
    max_abs_logit: float              # max |logit_ReLU|, for scale
    event_agreement: Optional[float] = None      # the same for the exact event-driven simulation
    event_max_logit_diff: Optional[float] = None
    early_spikes: Optional[list[int]] = None     # per spiking layer: spikes before the window opened
    event_deviating: Optional[list[int]] = None  # per spiking layer: event spike != closed form

    def __str__(self) -> str:
        text = (f"agreement {self.agreement:.4%} on {self.samples} samples, max |logit diff| "
                f"{self.max_logit_diff:.3g} (max |logit| {self.max_abs_logit:.3g})")
        if self.event_agreement is not None:
            text += (f"\nevent-driven simulation: agreement {self.event_agreement:.4%}, max |logit diff| "
                     f"{self.event_max_logit_diff:.3g}, early spikes per layer {self.early_spikes}, "
                     f"neurons off the closed form per layer {self.event_deviating}")
        return text


@dataclass
class SpikingLayerInfo:
    index: int                 # position in the TTFSSequential
    source: str                # the ReLU model's layers folded into it
    t_min: float
    t_max: float
    max_activation: float      # largest activation on the calibration data
    spikes_per_neuron: float   # on the calibration data


@dataclass
class ConversionReport:
    mapping: str
    zeta: float
    input_range: tuple[float, float]
    layers: list[SpikingLayerInfo] = field(default_factory=list)
    latency: float = float("nan")
    calibration: Optional[Agreement] = None
    dtype: str = "float64"  # of the returned network (the conversion itself runs in float64)
    device: str = "cpu"

    def __str__(self) -> str:
        rows = [f"TTFS conversion (mapping={self.mapping}, zeta={self.zeta}, input range {self.input_range}; "
                f"built in float64, returned in {self.dtype} on {self.device})",
                f"{'layer':>5}  {'from':<34}{'window':>24}{'max act.':>11}{'spikes/neuron':>15}"]
        for r in self.layers:
            window = f"[{r.t_min:.4g}, {r.t_max:.4g}]"
            rows.append(f"{r.index:>5}  {r.source[:33]:<34}{window:>24}{r.max_activation:>11.4g}"
                        f"{r.spikes_per_neuron:>15.4f}")
        rows.append(f"latency (readout t_min): {self.latency:.6g}")
        if self.calibration is not None:
            rows.append(f"calibration data: {self.calibration}")
        return "\n".join(rows)

