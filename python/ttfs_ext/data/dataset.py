"""The Dataset type of every loader, its errors, and batching."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import torch

__all__ = ["Dataset", "DatasetNotFoundError", "ChecksumError", "iterate_batches", "subset", "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]


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
