"""CIFAR-10 and CIFAR-100: the official "python version" pickles, from the extracted folder
or straight from the .tar.gz archive."""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional

import numpy as np
import torch

from .dataset import Dataset, PathLike
from .sources import locate

__all__ = ["load_cifar10", "load_cifar100"]

import numpy as np
import torch

@dataclass(frozen=True)
class _CifarLayout:
    folder: str                 # the folder inside the archive
    archive: str                # the official archive
    train: tuple[str, ...]      # batch files of the training set
    test: tuple[str, ...]

    @property
    def members(self) -> tuple[str, ...]:
        return self.train + self.test

    def expected(self) -> str:
        return (f"the folder {self.folder} (with {', '.join(self.members)}) or the archive {self.archive}")


_CIFAR = {
    "cifar10": _CifarLayout("cifar-10-batches-py", "cifar-10-python.tar.gz",
                            tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)),
    "cifar100": _CifarLayout("cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",)),
}

# What the CIFAR pickles may refer to: numpy arrays (any numpy version's pickle) and bytes.
# Anything else is refused, since unpickling can otherwise run arbitrary code.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")
        return super().find_class(module, name)


def _unpickle(data: bytes, name: str) -> dict:
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # any failure of a corrupt or foreign pickle
        raise ValueError(f"{name}: not a CIFAR batch ({type(err).__name__}: {err})") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{name}: not a CIFAR batch (a {type(batch).__name__}, not a dict)")
    return batch


def _find_cifar(layout: _CifarLayout) -> Callable[[Path], tuple[Optional[Path], str]]:
    def find(d: Path) -> tuple[Optional[Path], str]:
        notes = []
        for folder in (d / layout.folder, d):  # the extracted folder, or root pointing into it
            present = [m for m in layout.members if (folder / m).is_file()]
            if len(present) == len(layout.members):
                return folder, ""
            if present:
                missing = sorted(set(layout.members) - set(present))
                notes.append(f"{folder} lacks {', '.join(missing)}")
        if (d / layout.archive).is_file():
            return d / layout.archive, ""
        return None, "; ".join(notes)
    return find


def _read_cifar(location: Path, layout: _CifarLayout) -> dict[str, dict]:
    """The unpickled batches, from the extracted folder or from the .tar.gz (read in memory)."""
    if location.is_dir():
        return {m: _unpickle((location / m).read_bytes(), str(location / m)) for m in layout.members}
    batches = {}
    try:
        with tarfile.open(location, "r:*") as tar:
            for info in tar:
                member = PurePosixPath(info.name)
                if info.isfile() and member.parent.name == layout.folder and member.name in layout.members:
                    f = tar.extractfile(info)
                    assert f is not None
                    batches[member.name] = _unpickle(f.read(), f"{location}:{info.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{location}: corrupt archive ({err})") from err
    missing = [m for m in layout.members if m not in batches]
    if missing:
        raise ValueError(f"{location}: the archive lacks {', '.join(layout.folder + '/' + m for m in missing)}")
    return batches


def _field(batch: dict, key: str) -> Any:
    """batch[b"key"] (the official Python 2 pickles), or batch["key"] (re-pickled in Python 3)."""
    if key.encode() in batch:
        return batch[key.encode()]
    if key in batch:
        return batch[key]
    raise KeyError(key)


def _cifar_split(batches: dict[str, dict], names: tuple[str, ...], label_key: str, classes: int,
                 where: Path) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for member in names:
        try:
            data, labels = np.asarray(_field(batches[member], "data")), np.asarray(_field(batches[member], label_key))
        except KeyError as err:
            raise ValueError(f"{where}: batch {member} has no {err.args[0]!r} entry") from err
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{where}: batch {member}: expected uint8 data of shape (N, 3072), "
                             f"got {data.dtype} {data.shape}")
        if not np.issubdtype(labels.dtype, np.integer):  # never truncate 3.7 to 3
            raise ValueError(f"{where}: batch {member}: {label_key} must be integers, got {labels.dtype}")
        if labels.ndim != 1 or len(labels) != len(data):
            raise ValueError(f"{where}: batch {member}: {labels.shape} {label_key} for {len(data)} images")
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"{where}: batch {member}: {label_key} must be 0..{classes - 1}, "
                             f"found {labels.min()}..{labels.max()}")
        xs.append(data)
        ys.append(labels.astype(np.int64))
    # Each row holds the 1024 red, then green, then blue values of a 32x32 image, row-major.
    x = torch.from_numpy(np.concatenate(xs).reshape(-1, 3, 32, 32)).to(torch.float32).div_(255.0)
    return x, torch.from_numpy(np.concatenate(ys))


def _load_cifar(name: str, root: Optional[PathLike], download: bool, label_key: str, classes: int,
                dataset_name: str) -> Dataset:
    layout = _CIFAR[name]
    location = locate(name, root, download, _find_cifar(layout), layout.expected())
    batches = _read_cifar(location, layout)
    x_train, y_train = _cifar_split(batches, layout.train, label_key, classes, location)
    x_test, y_test = _cifar_split(batches, layout.test, label_key, classes, location)
    return Dataset(dataset_name, x_train, y_train, x_test, y_test, classes=classes, source=str(location))


def load_cifar10(root: Optional[PathLike] = None, download: bool = False) -> Dataset:
    """CIFAR-10: 50000 train / 10000 test images of shape (3, 32, 32), 10 classes.

    Reads the official "python version": the folder ``cifar-10-batches-py`` or the archive
    ``cifar-10-python.tar.gz`` (read in memory, not extracted), found in ``root``,
    ``$TTFS_EXT_DATA[/cifar10]`` or ``~/.cache/ttfs_ext/cifar10``; ``download=True`` fetches the
    archive (checking MD5) when it is in none of these. Raises DatasetNotFoundError otherwise.
    """
    return _load_cifar("cifar10", root, download, "labels", 10, "cifar10")


def load_cifar100(root: Optional[PathLike] = None, download: bool = False, labels: str = "fine") -> Dataset:
    """CIFAR-100: 50000 train / 10000 test images of shape (3, 32, 32), with the 100 ``"fine"``
    labels or the 20 ``"coarse"`` (superclass) labels (then the dataset is named "cifar100-coarse").

    Reads the official "python version": the folder ``cifar-100-python`` or the archive
    ``cifar-100-python.tar.gz``, found in ``root``, ``$TTFS_EXT_DATA[/cifar100]`` or
    ``~/.cache/ttfs_ext/cifar100``; ``download=True`` fetches the archive (checking MD5) when it
    is in none of these. Raises DatasetNotFoundError otherwise.
    """
    if labels == "fine":
        return _load_cifar("cifar100", root, download, "fine_labels", 100, "cifar100")
    if labels == "coarse":
        return _load_cifar("cifar100", root, download, "coarse_labels", 20, "cifar100-coarse")
    raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")

