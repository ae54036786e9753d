"""MNIST and Fashion-MNIST: the IDX format and its loaders."""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .dataset import Dataset, PathLike
from .sources import locate

__all__ = ["read_idx", "load_mnist", "load_fashion_mnist"]

# IDX type code -> big-endian numpy dtype of the payload.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: PathLike) -> torch.Tensor:
    """Read an IDX file (the format of MNIST and Fashion-MNIST), raw or gzip-compressed.

    Compression is detected from the gzip magic bytes, not the suffix. The header is two zero
    bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double)
    and the number of dimensions, followed by the big-endian uint32 sizes. Returns a tensor of
    that shape and type (uint8, int8, int16, int32, float32, float64) in native byte order.

    Raises:
        ValueError: naming the file, for a bad magic number, an unknown type code, a payload
            whose size does not match the header, or a corrupt gzip stream.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt gzip data ({err})") from err
    return torch.from_numpy(_parse_idx(raw, str(path)))


def _parse_idx(raw: bytes, name: str) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{name}: not an IDX file: bad magic number 0x{raw[:4].hex()} "
                         "(expected two zero bytes, a type code and the number of dimensions)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({np.dtype(d).name})" for c, d in _IDX_DTYPES.items())
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = math.prod(shape)
    expected, actual = count * dtype.itemsize, len(raw) - header
    if actual != expected:
        what = "truncated file" if actual < expected else "trailing bytes"
        raise ValueError(f"{name}: IDX payload of {actual} bytes, but the header (shape {shape}, "
                         f"{dtype.name}) needs {expected} ({what})")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-order, writable copy


_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_EXPECTED = (", ".join(_IDX_FILES.values()) + " (each raw or .gz; the dotted names such as "
                 "train-images.idx3-ubyte work too)")


def _idx_names(base: str) -> tuple[str, ...]:
    """The accepted names of one IDX file: raw before gzip, the official name before the dotted one."""
    dotted = base.replace("-idx", ".idx", 1)
    return base, base + ".gz", dotted, dotted + ".gz"


def _find_idx(folder: Path) -> tuple[Optional[dict[str, Path]], str]:
    found: dict[str, Path] = {}
    missing = []
    for key, base in _IDX_FILES.items():
        path = next((folder / n for n in _idx_names(base) if (folder / n).is_file()), None)
        if path is None:
            missing.append(base)
        else:
            found[key] = path
    if not missing:
        return found, ""
    return None, f"lacks {', '.join(missing)}" if found else ""


def _idx_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, 28, 28), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if labels.dtype != torch.uint8 or labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} uint8 labels (one per image in "
                         f"{images_path.name}), got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) and int(labels.max()) > 9:
        raise ValueError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    return images.unsqueeze(1).to(torch.float32).div_(255.0), labels.to(torch.int64)


def _load_idx_dataset(name: str, root: Optional[PathLike], download: bool) -> Dataset:
    files = locate(name, root, download, _find_idx, _IDX_EXPECTED)
    x_train, y_train = _idx_split(files["x_train"], files["y_train"])
    x_test, y_test = _idx_split(files["x_test"], files["y_test"])
    return Dataset(name, x_train, y_train, x_test, y_test, classes=10, source=str(files["x_train"].parent))


def load_mnist(root: Optional[PathLike] = None, download: bool = False) -> Dataset:
    """MNIST handwritten digits: 60000 train / 10000 test images of shape (1, 28, 28), 10 classes.

    Looks for the four IDX files in ``root``, ``$TTFS_EXT_DATA[/mnist]``,
    ``~/.cache/ttfs_ext/mnist`` and ``/usr/share/datasets/mnist``; ``download=True`` fetches
    them (checking MD5) when they are in none of these. Raises DatasetNotFoundError otherwise.
    """
    return _load_idx_dataset("mnist", root, download)


def load_fashion_mnist(root: Optional[PathLike] = None, download: bool = False) -> Dataset:
    """Fashion-MNIST (Zalando): 60000 train / 10000 test images of shape (1, 28, 28), 10 classes.

    Looks for the four IDX files in ``root``, ``$TTFS_EXT_DATA[/fashion-mnist]``,
    ``~/.cache/ttfs_ext/fashion-mnist`` and ``/usr/share/datasets/fashion-mnist`` (Debian:
    ``apt-get install dataset-fashion-mnist``); ``download=True`` fetches them (checking MD5)
    when they are in none of these. Raises DatasetNotFoundError otherwise.
    """
    return _load_idx_dataset("fashion-mnist", root, download)

