"""What the `ttfs` commands share: the error a user causes, and argparse types that refuse
bad numbers with the option's name."""
from __future__ import annotations

import argparse
import difflib
import math
from pathlib import Path
from typing import Callable

__all__ = ["CommandError", "Parser", "deprecated_alias", "new_folder", "report_file", "bounded", "bounded_list", "POSITIVE_INT", "POSITIVE_FLOAT", "NONNEGATIVE_FLOAT", "SEED",
           "device_arg", "count"]


class CommandError(Exception):
    """A mistake on the command line or in the files it names: `ttfs` prints the message as one
    line, without a traceback (--debug shows it), and exits with status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with short errors: the command's own one-line usage, the message, a pointer to
    --help, and for a mistyped option the options it may have meant (not the whole option list)."""

    def short_usage(self) -> str:
        sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None:
            return f"{self.prog} [--debug] COMMAND [options]   (commands: {', '.join(sub.choices)})"
        positionals = [a.metavar or a.dest for a in self._actions if not a.option_strings]
        return " ".join([self.prog, "[options]", *positionals])

    def unrecognized(self, extras: list[str]) -> None:
        """The error for arguments this (sub)command does not take, with close matches."""
        options = [s for a in self._actions for s in a.option_strings]
        hints = {o: difflib.get_close_matches(o.split("=")[0], options, n=2, cutoff=0.6) for o in extras
                 if o.startswith("-")}
        hint = "; ".join(f"{o}: did you mean {' or '.join(m)}?" for o, m in hints.items() if m)
        self.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({hint})" if hint else ""))

    def error(self, message: str):
        self.exit(2, f"usage: {self.short_usage()}\n{self.prog}: error: {message}\n"
                     f"('{self.prog} --help' lists the options)\n")


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep the option spelling `old` one release: it sets the value of the option `new` (same
    type), with a warning naming `new`; hidden from --help."""
    import sys

    target = parser._option_string_actions[new]

    class Alias(argparse.Action):
        def __call__(self, p, namespace, values, option_string=None):
            print(f"{p.prog}: warning: {old} is deprecated, use {new}", file=sys.stderr)
            setattr(namespace, target.dest, values)

    parser.add_argument(old, dest=target.dest, type=target.type, nargs=target.nargs, action=Alias,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def new_folder(path: Path, option: str, say: Callable[[str], None]) -> Path:
    """Create an output folder; where folders above it are new too (a mistyped path?), say so
    through `say`, naming the option."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    if len(missing) > 1:
        say(f"note: {option} {path}: created the new folders {', '.join(str(p) for p in reversed(missing))}")
    return path


def report_file(out: str | Path, name: str, overwrite: bool, command: str) -> Path:
    """The file a command's report goes to: `name` in the folder --out (made by new_folder), or,
    the old spelling kept one release, --out FILE.json itself (its folder must exist). An
    existing report is replaced only with --overwrite."""
    import sys

    out = Path(out)
    if out.suffix == ".json":
        print(f"ttfs {command}: warning: --out FILE.json is deprecated, give the folder (it gets {name})",
              file=sys.stderr)
        if not out.parent.is_dir():
            raise CommandError(f"--out {out}: the folder {out.parent} does not exist")
        path = out
    else:
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} is a file; give a folder (the report is written to FOLDER/{name})")
        path = out / name
    if path.exists() and not overwrite:
        raise CommandError(f"{path} exists: replace it with --overwrite, or choose another --out")
    if path.parent == out:
        new_folder(path.parent, "--out", lambda m: print(f"ttfs {command}: {m}", file=sys.stderr))
    return path


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
