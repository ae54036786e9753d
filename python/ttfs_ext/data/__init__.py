"""Datasets for training and evaluating TTFS networks, read from the official file formats.

* MNIST and Fashion-MNIST: the four IDX files (``train-images-idx3-ubyte`` ...; raw or gzip),
* CIFAR-10 and CIFAR-100: the official "python version" pickles, from the extracted folder
  (``cifar-10-batches-py`` / ``cifar-100-python``) or straight from the ``.tar.gz`` archive,
* digits: scikit-learn's bundled 8x8 digits (no files, no download),
* Places365: :class:`Places365` reads the official file lists and JPEG folders image by image
  (a torch Dataset with keyed augmentation; Pillow decodes), with :func:`preset` (the
  torchvision and Caffe preprocessing), :func:`collate_skipping` and
  :func:`make_synthetic_places365` (module places365).

Every loader but Places365 returns a :class:`Dataset`: float32 images in [0, 1] of shape (N, C, H, W) and
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
in :data:`MIRRORS`, whose entries may be changed to point at a mirror) into ``root`` or
``~/.cache/ttfs_ext/<name>``, checks their MD5 (:data:`CHECKSUMS`) and only then moves them into
place. When the files are nowhere and cannot be downloaded, a :class:`DatasetNotFoundError` (a
``FileNotFoundError``) says where they were looked for, which files are expected and how to get
them.

Usage::

    from ttfs_ext import data
    ds = data.load_dataset("fashion-mnist", download=True)
    for xb, yb in data.iterate_batches(ds.x_train, ds.y_train, 128, generator=torch.Generator().manual_seed(0)):
        ...

The modules: dataset (the Dataset type, errors, batching), sources (names, folders, URLs,
checksums, downloading), idx (MNIST, Fashion-MNIST), cifar, digits, places365.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from .cifar import load_cifar10, load_cifar100
from .dataset import ChecksumError, Dataset, DatasetNotFoundError, PathLike, iterate_batches, subset
from .digits import load_digits
from .idx import load_fashion_mnist, load_mnist, read_idx
from .places365 import Places365, collate_skipping, make_synthetic_places365, preset
from .sources import CHECKSUMS, DATASETS, ENV_VAR, MIRRORS, SYSTEM_DIRS, cache_dir, canonical_name, fetch

__all__ = [
    "Dataset", "DatasetNotFoundError", "ChecksumError", "DATASETS", "ENV_VAR", "MIRRORS", "CHECKSUMS",
    "SYSTEM_DIRS", "read_idx", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_cifar100",
    "load_digits", "load_dataset", "canonical_name", "fetch", "cache_dir", "iterate_batches", "subset",
    "Places365", "collate_skipping", "make_synthetic_places365", "preset",
]


def load_dataset(name: str, root: Optional[PathLike] = None, download: bool = False, **options: Any) -> Dataset:
    """Load a dataset by name: "digits", "mnist", "fashion-mnist" (or "fashion_mnist",
    "fmnist"), "cifar10" or "cifar100". ``options`` go to the loader (``labels="coarse"`` for
    CIFAR-100, ``test_fraction``/``seed`` for digits, which ignores ``root`` and ``download``)."""
    key = canonical_name(name)
    if key == "digits":
        return load_digits(**options)
    loaders: dict[str, Callable[..., Dataset]] = {
        "mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10, "cifar100": load_cifar100,
    }
    return loaders[key](root=root, download=download, **options)

