"""What the `ttfs` commands share: the error a user causes, and argparse types that refuse
bad numbers with the option's name."""
from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["CommandError", "bounded", "bounded_list", "POSITIVE_INT", "POSITIVE_FLOAT", "NONNEGATIVE_FLOAT"]


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


def bounded(kind: type, minimum: float, strict: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of `kind` >= minimum (> minimum when strict)."""
    def parse(text: str):
        value = _number(kind, text)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g}, got {text}")
        return value
    parse.__name__ = f"{kind.__name__} {'>' if strict else '>='} {minimum:g}"
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
