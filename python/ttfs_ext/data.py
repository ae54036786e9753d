"""Datasets for training and evaluating TTFS networks, read from the official file formats.

* MNIST and Fashion-MNIST: the four IDX files (``train-images-idx3-ubyte`` ...; raw or gzip),
* CIFAR-10 and CIFAR-100: the official "python version" pickles, from the extracted folder
  (``cifar-10-batches-py`` / ``cifar-100-python``) or straight from the ``.tar.gz`` archive,
* digits: scikit-learn's bundled 8x8 digits (no files, no download).

Every loader returns a :class:`Dataset`: float32 images in [0, 1] of shape (N, C, H, W) and
int64 labels. No torchvision is needed.

Where the files are looked for: in ``root`` alone, when it is given (a folder that does not
hold them is an error, never silently replaced by another copy); otherwise in order, the first
folder holding all of them winning:

1. the folder named by the environment variable ``TTFS_EXT_DATA``: its subfolder named after
   the dataset (``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``), then the folder itself;
2. ``~/.cache/ttfs_ext/<name>``;
3. system folders: ``/usr/share/datasets/mnist`` and ``/usr/share/datasets/fashion-mnist``
   (Debian's ``apt-get install dataset-fashion-mnist`` installs the latter).

Nothing is downloaded unless asked: ``download=True`` fetches the official files (from the URLs
in :data:`MIRRORS`, which may be changed to point at a mirror) into ``root`` or
``~/.cache/ttfs_ext/<name>``, checks their MD5 (:data:`CHECKSUMS`) and only then moves them into
place. When the files are nowhere and cannot be downloaded, a :class:`DatasetNotFoundError` (a
``FileNotFoundError``) says where they were looked for, which files are expected and how to get
them.

Usage::

    from ttfs_ext import data
    ds = data.load_dataset("fashion-mnist", download=True)
    for xb, yb in data.iterate_batches(ds.x_train, ds.y_train, 128, generator=torch.Generator().manual_seed(0)):
        ...
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import io
import math
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch

__all__ = [
    "Dataset", "DatasetNotFoundError", "ChecksumError", "DATASETS", "ENV_VAR", "MIRRORS", "CHECKSUMS",
    "SYSTEM_DIRS", "read_idx", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_cifar100",
    "load_digits", "load_dataset", "canonical_name", "fetch", "cache_dir", "iterate_batches", "subset",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Environment variable naming a folder that holds the datasets (or their subfolders).
ENV_VAR = "TTFS_EXT_DATA"

#: Canonical dataset names accepted by :func:`load_dataset`.
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")

#: Base URLs of the official files; point them elsewhere (e.g. a ``file://`` folder) to use a mirror.
MIRRORS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
}

#: The files ``download=True`` fetches, with the MD5 of the official files.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
}

#: Folders searched last, after root, $TTFS_EXT_DATA and the cache (system-wide installs).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),  # Debian: apt-get install dataset-fashion-mnist
}

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_LOADERS = {"mnist": "load_mnist", "fashion-mnist": "load_fashion_mnist", "cifar10": "load_cifar10",
            "cifar100": "load_cifar100"}


# ----------------------------------------------------------------------------------------------
# Result and error types
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled image dataset split into train and test sets.

    Images are float32 tensors in [0, 1] of shape (N, C, H, W); labels are int64 tensors of
    shape (N,) with values in ``range(classes)``; ``source`` says where the data came from.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    source: str

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
                raise ValueError(f"{self.name} {split}: expected images (N, C, H, W) and labels (N,), "
                                 f"got {tuple(x.shape)} and {tuple(y.shape)}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train images {tuple(self.x_train.shape[1:])} and test images "
                             f"{tuple(self.x_test.shape[1:])} differ in shape")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    def summary(self) -> str:
        """One line: name, sizes, image shape, classes and source."""
        shape = "x".join(str(s) for s in self.input_shape)
        return (f"{self.name}: {self.n_train} train / {self.n_test} test images of {shape}, "
                f"{self.classes} classes (from {self.source})")

    def __repr__(self) -> str:
        return f"Dataset({self.summary()})"


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are in none of the searched folders and were not downloaded.

    The message lists the folders searched, the files expected and how to get them.
    """


class ChecksumError(DatasetNotFoundError):
    """A downloaded file does not have the expected MD5 checksum (it was not kept)."""


# ----------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Where the files are
# ----------------------------------------------------------------------------------------------

def cache_dir(name: Optional[str] = None) -> Path:
    """``~/.cache/ttfs_ext`` (or its subfolder ``name``): where ``download=True`` puts files."""
    base = Path.home() / ".cache" / "ttfs_ext"
    return base / name if name else base


def _search_dirs(name: str, root: Optional[PathLike]) -> list[tuple[Path, str]]:
    """The folders to look in, in order, each with a word on why it is searched: root alone
    when it is given."""
    if root is not None:
        return [(Path(root).expanduser(), "root")]
    dirs: list[tuple[Path, str]] = []
    env = os.environ.get(ENV_VAR)
    if env:
        base = Path(env).expanduser()
        dirs += [(base / name, f"${ENV_VAR}/{name}"), (base, f"${ENV_VAR}")]
    dirs.append((cache_dir(name), "cache"))
    dirs += [(Path(d), "system") for d in SYSTEM_DIRS.get(name, ())]
    seen: set[Path] = set()
    unique = []
    for d, why in dirs:
        if d not in seen:
            seen.add(d)
            unique.append((d, why))
    return unique


def _not_found(name: str, searched: list[tuple[Path, str]], notes: dict[Path, str], expected: str,
               cause: Optional[str] = None, error: type = DatasetNotFoundError) -> DatasetNotFoundError:
    """The error raised when a dataset is not found (or its download failed), saying how to get it."""
    title, loader = _TITLES[name], _LOADERS[name]
    urls = ", ".join(MIRRORS[name].rstrip("/") + "/" + f for f in CHECKSUMS[name])
    root = searched[0][0] if [why for _, why in searched] == ["root"] else None
    if cause:
        headline = f"{title}: {cause}"
    elif root is not None:
        headline = f"{title} not found in the given root {root}" + ("" if root.is_dir() else " (no such folder)")
    else:
        headline = f"{title} not found."
    lines = [headline, "Searched, in order:"]
    for d, why in searched:
        note = f": {notes[d]}" if d in notes else ("" if d.is_dir() else ": no such folder")
        lines.append(f"  {d} ({why}){note}")
    if [why for _, why in searched] == ["root"]:
        lines.append("  (a given root is the only folder searched)")
    elif not os.environ.get(ENV_VAR):
        lines.append(f"  (the environment variable {ENV_VAR} is not set)")
    lines += [
        f"Expected: {expected}.",
        "To get it:",
        f"  * ttfs_ext.data.{loader}(download=True) (or load_dataset({name!r}, download=True); ttfs train "
        f"--download) downloads {urls} into {root if root is not None else cache_dir(name)} and checks the MD5;",
        f"  * or download it yourself from {MIRRORS[name]} into " + (
            f"{root}." if root is not None else
            f"one of the folders above, or into a folder named by the environment variable {ENV_VAR} (or its "
            f"subfolder {name}/)."),
    ]
    if name == "fashion-mnist":
        lines.append("  * on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
                     "(installs the four .gz files in /usr/share/datasets/fashion-mnist).")
    return error("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------------------------

def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_file(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to a temporary file next to ``dest``; move it there only if its MD5 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumError(f"{url}: MD5 {digest.hexdigest()} does not match the expected {md5}; "
                                f"the download was discarded ({dest.name} was not written). "
                                f"Check ttfs_ext.data.MIRRORS[...] or fetch the file by hand.")
        os.replace(tmp, dest)  # atomic: dest is either absent or complete
    finally:
        tmp.unlink(missing_ok=True)


def fetch(name: str, root: Optional[PathLike] = None) -> Path:
    """Download the official files of ``name`` ("mnist", "fashion-mnist", "cifar10", "cifar100")
    from :data:`MIRRORS` into ``root`` or ``~/.cache/ttfs_ext/<name>``, checking each against
    :data:`CHECKSUMS`; files already there with the right checksum are kept. Returns the folder.

    Raises:
        ChecksumError: a file does not match its checksum (it is not kept).
        OSError: the download failed (urllib.error.URLError, no network, ...).
    """
    name = _canonical(name)
    if name not in CHECKSUMS:
        raise ValueError(f"{name!r} has no files to download (it is bundled with scikit-learn)")
    target = Path(root).expanduser() if root is not None else cache_dir(name)
    created = not target.exists()
    try:
        for filename, md5 in CHECKSUMS[name].items():
            dest = target / filename
            if dest.is_file() and _md5(dest) == md5:
                continue
            _fetch_file(MIRRORS[name].rstrip("/") + "/" + filename, dest, md5)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                target.rmdir()  # only if still empty: files already verified are kept
        raise
    return target


def _locate(name: str, root: Optional[PathLike], download: bool, find: Callable[[Path], tuple[Any, str]],
            expected: str) -> Any:
    """Search the folders for a dataset with ``find`` (folder -> (location or None, note)); with
    ``download``, fetch it when it is nowhere. Raises DatasetNotFoundError when it is still missing."""
    searched = _search_dirs(name, root)
    notes: dict[Path, str] = {}
    for d, _ in searched:
        if d.is_dir():
            location, note = find(d)
            if location is not None:
                return location
            if note:
                notes[d] = note
    if not download:
        raise _not_found(name, searched, notes, expected)
    try:
        target = fetch(name, root)
    except ChecksumError as err:
        raise _not_found(name, searched, notes, expected, cause=f"download failed: {err}", error=ChecksumError) from err
    except (OSError, http.client.HTTPException) as err:
        raise _not_found(name, searched, notes, expected, cause=f"download failed ({err}).") from err
    location, note = find(target)
    if location is None:
        raise _not_found(name, searched, {target: note} if note else {}, expected,
                         cause=f"the downloaded files in {target} are incomplete.")
    return location


# ----------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST
# ----------------------------------------------------------------------------------------------

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
    files = _locate(name, root, download, _find_idx, _IDX_EXPECTED)
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


# ----------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100 (the official "python version" pickles)
# ----------------------------------------------------------------------------------------------

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
    location = _locate(name, root, download, _find_cifar(layout), layout.expected())
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


# ----------------------------------------------------------------------------------------------
# scikit-learn's digits
# ----------------------------------------------------------------------------------------------

def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download): images / 16 of shape
    (N, 1, 8, 8), split by a permutation seeded with ``seed``: the first
    ``round(test_fraction * 1797)`` permuted images are the test set (as ``ttfs convert`` does)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:
        raise ImportError("load_digits needs scikit-learn (it bundles the digits): pip install scikit-learn") from err
    digits = sklearn_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], classes=10,
                   source="sklearn.datasets.load_digits (bundled with scikit-learn)")


# ----------------------------------------------------------------------------------------------
# Dispatch and helpers
# ----------------------------------------------------------------------------------------------

_ALIASES = {
    "digits": "digits", "mnist": "mnist",
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar100": "cifar100", "cifar-100": "cifar100",
}


def canonical_name(name: str) -> str:
    """The canonical name of a dataset ("FMNIST" -> "fashion-mnist"); ValueError for unknown names."""
    return _canonical(name)


def _canonical(name: str) -> str:
    try:
        return _ALIASES[name.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown dataset {name!r}; valid names: digits, mnist, fashion-mnist "
                         "(or fashion_mnist, fmnist), cifar10, cifar100") from None


def load_dataset(name: str, root: Optional[PathLike] = None, download: bool = False, **options: Any) -> Dataset:
    """Load a dataset by name: "digits", "mnist", "fashion-mnist" (or "fashion_mnist",
    "fmnist"), "cifar10" or "cifar100". ``options`` go to the loader (``labels="coarse"`` for
    CIFAR-100, ``test_fraction``/``seed`` for digits, which ignores ``root`` and ``download``)."""
    key = _canonical(name)
    if key == "digits":
        return load_digits(**options)
    loaders: dict[str, Callable[..., Dataset]] = {
        "mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10, "cifar100": load_cifar100,
    }
    return loaders[key](root=root, download=download, **options)


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True,
                    generator: Optional[torch.Generator] = None,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x[idx], y[idx])`` batches covering every sample once: in a random order drawn
    with ``torch.randperm(len(x), generator=generator)`` when ``shuffle`` (deterministic for a
    seeded generator), in order otherwise. ``drop_last`` skips a last, smaller batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
    n = len(x)
    stop = n - n % batch_size if drop_last else n
    order = torch.randperm(n, generator=generator) if shuffle else None
    return _batches(x, y, batch_size, stop, order)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, stop: int,
             order: Optional[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield x[idx.to(x.device)], y[idx.to(y.device)]


def subset(dataset: Dataset, n_train: Optional[int] = None, n_test: Optional[int] = None) -> Dataset:
    """The first ``n_train`` training and first ``n_test`` test samples (all when None), for quick runs."""
    for what, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and n < 0:
            raise ValueError(f"{what} must be non-negative, got {n}")
    return dataclasses.replace(dataset, x_train=dataset.x_train[:n_train], y_train=dataset.y_train[:n_train],
                               x_test=dataset.x_test[:n_test], y_test=dataset.y_test[:n_test])
