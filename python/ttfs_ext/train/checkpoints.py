"""Checkpoints: atomic writes, and loads that never run code."""
from __future__ import annotations

import contextlib
import glob
import os
import pickle
import tempfile
from pathlib import Path
from typing import Union

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]


def save_checkpoint(path: Union[str, Path], state: dict) -> None:
    """torch.save to a temporary file in the same folder, then an atomic rename: a crash never
    leaves a half-written checkpoint. The temporary files of saves that were killed before
    their rename (path.name + ".*.tmp") are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class CheckpointError(ValueError):
    """A file that is not a checkpoint this library can load safely."""


def load_checkpoint(path: Union[str, Path]) -> dict:
    """A checkpoint written by save_checkpoint (fit, ttfs train), on the CPU. It is read with
    torch.load(weights_only=True): tensors, numbers, strings and containers only, so a file
    from an untrusted source cannot run code; anything else raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" if not path.exists()
                                else f"checkpoint {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if lines and lines[0].lower().startswith("weights only load failed"):
            # torch names what the file asks for ("unsupported GLOBAL posix.system ...").
            why = next((line for line in lines[1:] if "GLOBAL" in line or "global" in line), "")
            if why:  # a pickle that asks for a function or class: what code execution needs
                raise CheckpointError(f"{path}: refused: it holds more than tensors and plain data, and loading it "
                                      f"could run code (checkpoints load with weights_only=True): {why}") from None
            # Not a PyTorch file (JSON, a plain pickle, ...): torch names the byte it stopped at.
            text = str(err)
            after = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
            detail = next((line.strip() for line in after.splitlines() if line.strip()), lines[-1])
            raise CheckpointError(f"{path}: not a readable checkpoint (the safe loader stopped at: {detail})") \
                from None
        raise CheckpointError(f"{path}: not a readable checkpoint (UnpicklingError: {lines[0] if lines else ''})") \
            from None
    except Exception as err:  # noqa: BLE001  (a truncated or foreign file fails in many ways)
        lines = str(err).strip().splitlines()
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{lines[0] if lines else 'no message'})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state
