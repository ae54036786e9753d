"""What the `ttfs` commands share: the error a user causes, and argparse types that refuse
bad numbers with the option's name."""
from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["CommandError", "bounded", "bounded_list", "POSITIVE_INT", "POSITIVE_FLOAT", "NONNEGATIVE_FLOAT", "SEED",
           "device_arg", "count"]


class CommandError(Exception):
    """A mistake on the command line or in the files it names: `ttfs` prints the message as one
    line, without a traceback (--debug shows it), and exits with status 2."""


def _number(kind: type, text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite")
    return value


def bounded(kind: type, minimum: float, strict: bool = False, maximum: float | None = None,
            strict_maximum: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of `kind` >= minimum (> minimum when strict) and, when given,
    <= maximum (< maximum when strict_maximum)."""
    def show(bound: float) -> str:
        return f"{bound:g}" if kind is float else str(int(bound))
    low = f"{'>' if strict else '>='} {show(minimum)}"
    high = "" if maximum is None else f"{'<' if strict_maximum else '<='} {show(maximum)}"

    def parse(text: str):
        value = _number(kind, text)
        too_low = value < minimum or (strict and value == minimum)
        too_high = maximum is not None and (value > maximum or (strict_maximum and value == maximum))
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {low}{' and ' + high if high else ''}, got {text}")
        return value
    parse.__name__ = f"{kind.__name__} {low}{' and ' + high if high else ''}"
    return parse


def bounded_list(kind: type, minimum: float, strict: bool = False) -> Callable[[str], list]:
    """An argparse type: a comma-separated list of numbers, each as bounded(kind, minimum, strict)."""
    one = bounded(kind, minimum, strict)

    def parse(text: str) -> list:
        values = [one(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("needs at least one value")
        return values
    parse.__name__ = f"comma-separated {one.__name__}"
    return parse


POSITIVE_INT = bounded(int, 1)
POSITIVE_FLOAT = bounded(float, 0.0, strict=True)
NONNEGATIVE_FLOAT = bounded(float, 0.0)
SEED = bounded(int, 0, maximum=2**32 - 1)  # numpy's and every data loader's seed range


def count(n: int, noun: str) -> str:
    """'1 epoch', '2 epochs': the messages' counts."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def device_arg(name: str) -> "torch.device":
    """The torch.device a --device names, or CommandError saying why it cannot be used here (the
    check of every `ttfs` command)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device {name}: not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type not in ("cpu", "cuda"):
        raise CommandError(f"--device {name}: only cpu and cuda are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                               f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU found'})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CommandError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    return device
