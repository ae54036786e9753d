"""The suite's presets: which cases, how long each is timed, whether the targets are judged."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ttfs_ext import train
from ttfs_ext.bench import EventCase, LayerCase, NetworkCase, SimulateCase, SteppedCase

__all__ = ["Preset", "PRESETS", "preset", "vgg16_conv_shapes", "TINY_VGG"]


@dataclass
class Preset:
    name: str
    description: str
    layers: list[LayerCase]
    networks: list[NetworkCase]
    events: list[EventCase]
    simulate: list[SimulateCase]
    stepped: list[SteppedCase]
    min_run_time: float              # seconds of timing per implementation and mode (split over the rounds)
    warmup: int = 2
    rounds: int = 1                  # interleaved rounds (see time_interleaved)
    judges_targets: bool = True      # False: toy shapes that test the suite; the targets mean nothing there


def vgg16_conv_shapes(size: int) -> list[tuple[int, int, int, int]]:
    """The distinct (C_in, C_out, H, count) of VGG16's 13 conv layers on size x size images."""
    plan = [c for c in train.VGG_CIFAR[0]]
    shapes: dict[tuple[int, int, int], int] = {}
    c_in, s = 3, size
    for item in plan:
        if item == "P":
            s //= 2
            continue
        key = (c_in, int(item), s)
        shapes[key] = shapes.get(key, 0) + 1
        c_in = int(item)
    return [(a, b, c, n) for (a, b, c), n in shapes.items()]


def _conv_cases(group: str, size: int, batch: int) -> list[LayerCase]:
    return [LayerCase(group, "conv2d", batch, c_in, c_out, s, count=n) for c_in, c_out, s, n in vgg16_conv_shapes(size)]


def _full() -> Preset:
    return Preset(
        "full", "the issue's shapes (for a GPU)",
        layers=[LayerCase("fc2", "linear", 256, 784, 340), LayerCase("fc2", "linear", 8192, 784, 340),
                LayerCase("vgg16-dense", "linear", 128, 25088, 4096),
                LayerCase("vgg16-dense", "linear", 128, 4096, 4096),
                *_conv_cases("vgg16-cifar", 32, 128), *_conv_cases("vgg16-places", 224, 64)],
        networks=[NetworkCase("fc2", "fc2", 256), NetworkCase("fc2", "fc2", 8192),
                  NetworkCase("vgg16-cifar", "vgg", 128, input_shape=(3, 32, 32), config=train.VGG_CIFAR)],
        events=[EventCase("fc2", "linear", 256, 784, 340), EventCase("fc2", "linear", 8192, 784, 340),
                *[EventCase("vgg16-cifar", "conv2d", 128, c.in_features, c.out_features, c.size)
                  for c in _conv_cases("vgg16-cifar", 32, 128)]],
        simulate=[SimulateCase("vgg16-cifar", 128, repeats=3)],
        stepped=[SteppedCase("fc2", 256, 784, 340)],
        min_run_time=1.0, rounds=3)


def _cpu() -> Preset:
    cifar = _conv_cases("vgg16-cifar", 32, 8)
    return Preset(
        "cpu", "the same layers at batch sizes a 2-core CPU times in minutes",
        layers=[LayerCase("fc2", "linear", 256, 784, 340), LayerCase("fc2", "linear", 2048, 784, 340),
                LayerCase("vgg16-dense", "linear", 16, 25088, 4096), LayerCase("vgg16-dense", "linear", 16, 4096, 4096),
                *cifar, *_conv_cases("vgg16-places", 224, 1)],
        networks=[NetworkCase("fc2", "fc2", 256),
                  NetworkCase("vgg16-cifar", "vgg", 8, input_shape=(3, 32, 32), config=train.VGG_CIFAR)],
        events=[EventCase("fc2", "linear", 256, 784, 340),
                *[EventCase("vgg16-cifar", "conv2d", 4, c_in, c_out, s)
                  for c_in, c_out, s in ((3, 64, 32), (64, 64, 32), (256, 256, 8), (512, 512, 2))]],
        simulate=[SimulateCase("vgg16-cifar", 128)],  # the target's batch
        stepped=[SteppedCase("fc2", 32, 784, 340)],
        min_run_time=0.5, rounds=5)


TINY_VGG = ([8, "P", 16, "P"], [16])


def _quick() -> Preset:
    return Preset(
        "quick", "tiny shapes, to test the suite",
        layers=[LayerCase("dense", "linear", 32, 64, 32), LayerCase("conv", "conv2d", 2, 4, 8, 8)],
        networks=[NetworkCase("fc2-small", "fc2", 16, dims=(64, 32, 10), input_shape=(1, 8, 8)),
                  NetworkCase("vgg-tiny", "vgg", 2, input_shape=(3, 8, 8), config=TINY_VGG)],
        events=[EventCase("dense", "linear", 16, 64, 32), EventCase("conv", "conv2d", 2, 4, 8, 8)],
        simulate=[SimulateCase("vgg-tiny", 2, config=TINY_VGG, size=8)],
        stepped=[SteppedCase("dense", 8, 64, 32)],
        min_run_time=0.04, warmup=1, rounds=2, judges_targets=False)


PRESETS: dict[str, Callable[[], Preset]] = {"quick": _quick, "cpu": _cpu, "full": _full}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()

