"""Places365 (Standard and Challenge, 256x256 and high resolution) read from the official file
lists, its two preprocessing presets, and a writer of synthetic data in the same layout.

The layout under ``root`` (http://places2.csail.mit.edu/download.html), with torchvision's
folder names (torchvision.datasets.Places365 renames the archives' ``data_256``/``data_large``
to the ``_standard``/``_challenge`` names; both are accepted)::

    categories_places365.txt         /a/airfield 0            (365 lines, nested names: /s/swimming_pool/indoor)
    places365_train_standard.txt     /a/airfield/00000001.jpg 0
    places365_train_challenge.txt    the same, Challenge's 8M images
    places365_val.txt                Places365_val_00000001.jpg 165
    places365_test.txt               Places365_test_00000001.jpg      (no labels: label -1)
    data_256_standard/ (or data_256/)      a/airfield/00000001.jpg ...   (train, small=True)
    data_large_standard/ (or data_large/)  the same at full resolution  (small=False)
    data_256_challenge/, data_large_challenge/                          (train-challenge)
    val_256/, val_large/, test_256/, test_large/                          (flat folders)

torchvision's own class md5-checks the lists (so it rejects lists a test writes) and needs
torchvision; this reader needs Pillow only. An image that cannot be read or decoded makes
``dataset[key]`` return None (logged, never raised); :func:`collate_skipping` drops the Nones
and counts them, so a corrupt JPEG costs one sample, never a run.

Keys: ``dataset[i]`` or ``dataset[(i, seed)]``. With a seed every random choice of the
augmentation comes from ``torch.Generator().manual_seed(seed)``, so a sample is a pure function
of (index, seed): the same on every rank, with any number of workers and after a resume.

Presets (:func:`preset`): "torchvision" (ImageNet mean/std; RandomResizedCrop + flip for
training, Resize + CenterCrop for evaluation, torchvision's sampling) and "caffe" (CSAIL's
VGG16-places365: BGR, 0-255, mean subtraction, 256x256 then 224 crops, mirroring). Both are
written with Pillow and torch and match torchvision's functional ops on the same boxes.

GPU decoding (explicit, off by default, untested here: this machine has no GPU and no DALI):
:func:`decode_batch_cuda` (torchvision.io.decode_jpeg on the GPU, then the preset on the GPU)
and :func:`dali_pipeline` (NVIDIA DALI's file reader and mixed decoder).
"""
from __future__ import annotations

import logging
import math
import operator
import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

from .dataset import DatasetNotFoundError, PathLike

__all__ = [
    "Places365", "Places365FormatError", "SPLITS", "DOWNLOAD_URL", "CATEGORIES_FILE", "LIST_FILES",
    "image_folders", "preset", "TorchvisionPreset", "CaffePreset", "CAFFE_MEAN_BGR", "IMAGENET_MEAN",
    "IMAGENET_STD", "read_caffe_mean", "random_resized_crop_box", "collate_skipping", "make_synthetic_places365",
    "decode_batch_cuda", "dali_pipeline",
]

log = logging.getLogger(__name__)

DOWNLOAD_URL = "http://places2.csail.mit.edu/download.html"
SPLITS = ("train-standard", "train-challenge", "val", "test")
CATEGORIES_FILE = "categories_places365.txt"
LIST_FILES = {"train-standard": "places365_train_standard.txt", "train-challenge": "places365_train_challenge.txt",
              "val": "places365_val.txt", "test": "places365_test.txt"}
DECODERS = ("pil", "torchvision")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# B, G, R: the per-pixel mean of CSAIL's VGG16-places365 (CSAILVision/places365:places365CNN_mean.binaryproto,
# commit 0621862, 3x256x256, BGR as Caffe stores it) averaged over its pixels in float64, as CSAIL's
# demo scripts do (mean.mean(1).mean(1)); read_caffe_mean() reads that file itself for the per-pixel mean.
CAFFE_MEAN_BGR = (104.05100722, 112.51448911, 116.67603893)

# What Pillow and torchvision raise for a missing, truncated or undecodable image
# (PIL.UnidentifiedImageError is an OSError; torchvision's decoders raise RuntimeError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, RuntimeError)


class Places365FormatError(ValueError):
    """A line of a Places365 list file that is not ``path label`` (or whose label is out of range)."""


def _pil():
    try:
        from PIL import Image
    except ImportError as err:  # Pillow is optional for the rest of the package
        raise ImportError("Places365 needs Pillow to decode images: pip install pillow") from err
    return Image


def _missing(what: str, path: Path, hint: str = "") -> DatasetNotFoundError:
    return DatasetNotFoundError(f"Places365: {what} {path} does not exist{hint}; the official files are at "
                                f"{DOWNLOAD_URL} (the file lists are in filelist_places365-standard.tar / "
                                f"-challenge.tar)")


def image_folders(split: str, small: bool) -> tuple[str, ...]:
    """The folder names the images of ``split`` may have under root, in the order tried:
    torchvision's name, then (train only) the name the official archive extracts to."""
    size = "256" if small else "large"
    if split.startswith("train"):
        return f"data_{size}_{split.split('-')[1]}", f"data_{size}"
    return (f"{split}_{size}",)


def _read_lines(path: Path, what: str) -> Iterator[tuple[int, list[bytes]]]:
    """(line number, whitespace-separated fields) of every non-blank line; a UTF-8 byte-order
    mark at the start is dropped, and CRLF endings are whitespace like any other."""
    if not path.is_file():
        raise _missing(what, path)
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if n == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if fields := line.split():
                yield n, fields


def _bad_line(path: Path, n: int, fields: Sequence[bytes], why: str) -> Places365FormatError:
    text = b" ".join(fields).decode(errors="replace")
    return Places365FormatError(f"{path}:{n}: {why}: {text!r}")


def _read_categories(path: Path) -> list[str]:
    names: dict[int, str] = {}
    for n, fields in _read_lines(path, "the category list"):
        if len(fields) != 2 or not fields[1].isdigit():
            raise _bad_line(path, n, fields, "expected 'name index' like '/a/airfield 0'")
        index = int(fields[1])
        if index in names:
            raise _bad_line(path, n, fields, f"index {index} was given before to {names[index]!r}")
        try:
            names[index] = fields[0].decode()
        except UnicodeDecodeError:
            raise _bad_line(path, n, fields, "the category name is not UTF-8") from None
    if not names:
        raise Places365FormatError(f"{path}: the category list is empty (expected lines 'name index' like "
                                   f"'/a/airfield 0')")
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
        raise Places365FormatError(f"{path}: the class indices are not 0..{len(names) - 1}: missing {missing[:10]}")
    return [names[i] for i in range(len(names))]


def _read_file_list(path: Path, split: str, n_classes: int) -> tuple[np.ndarray, torch.Tensor]:
    """The relative image paths (bytes, leading '/' stripped) and labels (-1 for test)."""
    labelled = split != "test"
    paths, labels = [], []
    for n, fields in _read_lines(path, f"the {split} list"):
        if len(fields) != 1 + labelled or (labelled and not re.fullmatch(rb"-?[0-9]+", fields[1])):
            raise _bad_line(path, n, fields, "expected 'path label'" if labelled else "expected 'path' (no label)")
        label = int(fields[1]) if labelled else -1
        if labelled and not 0 <= label < n_classes:
            raise _bad_line(path, n, fields, f"label {label} is outside 0..{n_classes - 1} ({CATEGORIES_FILE})")
        relative = fields[0].lstrip(b"/")
        if b".." in relative.split(b"/"):  # the lists name files inside the image folder only
            raise _bad_line(path, n, fields, "the image path leaves the image folder ('..')")
        paths.append(relative)
        labels.append(label)
    if not paths:
        raise Places365FormatError(f"{path}: the list is empty")
    # One numpy bytes array and one tensor instead of millions of Python objects: DataLoader
    # workers would otherwise copy the pages their reference counts touch (pytorch issue 13246).
    return np.array(paths, dtype=bytes), torch.tensor(labels, dtype=torch.int64)


class _Samples(Sequence):
    """A read-only view ``(relative path, label)`` over the compact arrays of a Places365."""

    def __init__(self, paths: np.ndarray, labels: torch.Tensor) -> None:
        self._paths, self._labels = paths, labels

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self._paths[i].decode(), int(self._labels[i])


class Places365(torch.utils.data.Dataset):
    """Places365 from the official file lists (see the module's docstring for the layout).

    Args:
        root: the folder holding the lists and the image folders.
        split: "train-standard", "train-challenge", "val" or "test" (labels -1).
        small: the 256x256 images (``data_256_*``, ``val_256`` ...) or the high-resolution ones.
        transform: ``transform(img: PIL.Image, generator: Optional[torch.Generator]) -> Tensor``
            (e.g. :func:`preset`); None returns the RGB PIL image.
        decoder: "pil" (Pillow, always there) or "torchvision" (torchvision.io.decode_image on
            the CPU; the image then goes to the transform as a PIL image, so the transforms are
            the same for both decoders).
        verify: stat every listed image at construction (slow on millions of files); by default
            only the first listed image must exist (a wrong folder or ``small`` fails at once).

    Attributes: ``classes`` (names as in categories_places365.txt, ``classes[label]``),
    ``class_to_idx``, ``samples`` (a sequence of (path relative to :attr:`image_dir`, label)),
    ``targets`` (int64 tensor), ``root``, ``split``, ``small``, ``image_dir``.

    ``dataset[i]`` or ``dataset[(i, seed)]`` -> ``(transform(image), label)``, or None when the
    image cannot be read or decoded. Raises :class:`~ttfs_ext.data.DatasetNotFoundError` for a
    missing root, list or image folder, :class:`Places365FormatError` for a bad line.
    """

    def __init__(self, root: PathLike, split: str = "train-standard", small: bool = True, transform: Any = None,
                 decoder: str = "pil", verify: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "torchvision":
            _torchvision_io()  # fail now, not in every worker
        self.root, self.split, self.small = Path(root), split, small
        self.transform, self.decoder = transform, decoder
        if not self.root.is_dir():
            raise _missing("the root folder", self.root)
        self.classes = _read_categories(self.root / CATEGORIES_FILE)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self._paths, self.targets = _read_file_list(self.root / LIST_FILES[split], split, len(self.classes))
        self.samples = _Samples(self._paths, self.targets)
        folders = image_folders(split, small)
        found = [self.root / f for f in folders if (self.root / f).is_dir()]
        if not found:
            raise _missing("the image folder", self.root / folders[0],
                           f" (nor {', '.join(folders[1:])})" if len(folders) > 1 else "")
        self.image_dir = found[0]
        checked = range(len(self._paths)) if verify else range(1)
        missing = [i for i in checked if not self.path(i).is_file()]
        if missing:
            hint = (f" ({len(missing)} of the {len(self)} listed images are missing)" if verify else
                    f" (is {self.image_dir.name} the {'256x256' if small else 'high-resolution'} folder? small={small})")
            raise _missing(f"image {missing[0]} of {LIST_FILES[split]},", self.path(missing[0]), hint)

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, index: int) -> Path:
        """The image file of sample ``index``."""
        return self.image_dir / os.fsdecode(self._paths[index])

    def __getitem__(self, key: Union[int, tuple[int, int]]):
        index, generator = _split_key(key)
        path = self.path(index)
        try:
            img = _decode(path, self.decoder)
        except _DECODE_ERRORS as err:
            log.warning("Places365: skipping unreadable image %s: %s", path, err)
            return None
        label = int(self.targets[index])
        return (img if self.transform is None else self.transform(img, generator)), label

    def collate(self, batch: Sequence[Optional[tuple[torch.Tensor, int]]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """:func:`collate_skipping` with this dataset's transform's output shape (a picklable
        bound method: pass ``collate_fn=dataset.collate`` to a DataLoader)."""
        return collate_skipping(batch, getattr(self.transform, "output_shape", None))

    def __repr__(self) -> str:
        return (f"Places365(split={self.split!r}, small={self.small}, {len(self)} images, {len(self.classes)} classes, "
                f"images in {self.image_dir})")


def _split_key(key: Union[int, tuple[int, int]]) -> tuple[int, Optional[torch.Generator]]:
    """(index, None) for an int key; (index, a generator seeded with seed) for (index, seed)
    (a tuple, or a list as a key may come back from a saved sampler state)."""
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise TypeError(f"a Places365 key is an index or (index, seed), got {key!r}")
        return operator.index(key[0]), torch.Generator().manual_seed(operator.index(key[1]))
    return operator.index(key), None


def _torchvision_io():
    try:
        import torchvision.io
    except ImportError as err:
        raise ImportError("decoder='torchvision' needs torchvision (pip install torchvision matching your torch); "
                          "decoder='pil' needs Pillow only") from err
    return torchvision.io


def _decode(path: Path, decoder: str):
    """The RGB PIL image in the file, decoded by Pillow or torchvision. Only regular files are
    opened (a FIFO or a device named .jpg would block or never end); an image larger than
    Pillow's limit (PIL.Image.MAX_IMAGE_PIXELS, 89.5 megapixels by default; set it to change the
    limit) is refused as a decompression bomb. Both raise OSError: the image is skipped and
    counted like a corrupt one."""
    Image = _pil()
    if not path.is_file():
        raise OSError(f"not a regular file: {path}")
    if decoder == "pil":
        try:
            with Image.open(path) as img:
                return img.convert("RGB")  # decodes now: errors surface here, not in the transform
        except Image.DecompressionBombError as err:  # an Exception, not an OSError
            raise OSError(f"decompression bomb: {err}") from None
    io = _torchvision_io()
    chw = io.decode_image(io.read_file(str(path)), mode=io.ImageReadMode.RGB)
    return Image.fromarray(chw.permute(1, 2, 0).contiguous().numpy())


def collate_skipping(batch: Sequence[Optional[tuple[torch.Tensor, int]]],
                     output_shape: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(x, y, n_bad)``: the samples that are not None stacked (x float32 (N, C, H, W), y int64)
    and the number of Nones dropped. A batch of only Nones gives x of shape (0, *output_shape);
    pass the transform's ``output_shape`` for it (``functools.partial`` or
    :meth:`Places365.collate`), else such a batch raises ValueError."""
    good = [s for s in batch if s is not None]
    n_bad = len(batch) - len(good)
    if not good:
        if output_shape is None:
            raise ValueError("collate_skipping: every sample of the batch was unreadable; pass output_shape "
                             "(the transform's output_shape) to get an empty batch instead")
        return torch.empty(0, *output_shape), torch.empty(0, dtype=torch.int64), n_bad
    # default_collate stacks straight into shared memory inside a DataLoader worker, which spares
    # the copy into it that sending an ordinary tensor to the main process makes (19 MB a batch of 32)
    x, y = torch.utils.data.default_collate(good)
    return x.float(), y.to(torch.int64), n_bad


# ---------------------------------------------------------------------------------------------
# Presets. A sample's geometry is planned first (from the image size and the generator), then
# applied by Pillow (the CPU path) or by torch (decode_batch_cuda's GPU path).

@dataclass(frozen=True)
class _Plan:
    resize: Optional[tuple[int, int]]   # (width, height) to resize the whole image to, first
    box: tuple[int, int, int, int]      # (top, left, height, width) crop, after that resize
    out: Optional[tuple[int, int]]      # (width, height) to resize the crop to
    flip: bool                          # mirror left-right, last


def _uniform(a: float, b: float, g: Optional[torch.Generator]) -> float:
    return torch.empty(1).uniform_(a, b, generator=g).item()


def _randint(high: int, g: Optional[torch.Generator]) -> int:
    """A uniform integer in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=g).item())


def _coin(g: Optional[torch.Generator]) -> bool:
    return bool(torch.rand(1, generator=g).item() < 0.5)


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                            g: Optional[torch.Generator]) -> tuple[int, int, int, int]:
    """(top, left, height, width) as torchvision's RandomResizedCrop.get_params draws it, call
    for call (the same values from the same RNG state), with its 10 tries and central fallback."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], g)
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h + 1, g)
            return top, _randint(width - w + 1, g), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _to_chw(img) -> torch.Tensor:
    """uint8 (3, H, W), contiguous, from an RGB PIL image (the normalisation that follows runs
    twice as fast on a contiguous tensor as on the HWC array's permuted view)."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())


def _apply_pil(img, plan: _Plan) -> torch.Tensor:
    Image = _pil()
    if plan.resize is not None and plan.resize != img.size:
        img = img.resize(plan.resize, Image.BILINEAR)
    top, left, h, w = plan.box
    img = img.crop((left, top, left + w, top + h))
    if plan.out is not None and plan.out != img.size:
        img = img.resize(plan.out, Image.BILINEAR)
    return _to_chw(img)


def _resize_tensor(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased (Pillow's filter, as torchvision's tensor resize), rounded back to 0..255."""
    if (x.shape[-1], x.shape[-2]) == size:
        return x
    y = torch.nn.functional.interpolate(x[None].float(), size=(size[1], size[0]), mode="bilinear",
                                        align_corners=False, antialias=True)[0]
    return y.round_().clamp_(0, 255)


def _apply_tensor(x: torch.Tensor, plan: _Plan) -> torch.Tensor:
    if plan.resize is not None:
        x = _resize_tensor(x, plan.resize)
    top, left, h, w = plan.box
    x = x[:, top:top + h, left:left + w]
    return x if plan.out is None else _resize_tensor(x, plan.out)


class _Preset:
    """The common part of the presets: plan, geometry, normalisation, mirroring."""

    size: int
    train: bool

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every output."""
        return 3, self.size, self.size

    @property
    def input_range(self) -> tuple[float, float]:
        """The smallest and largest value an output can hold: the range a TTFS network's input
        encoder must span (ttfs_ext.train.vgg16.build_places365_model's input_range)."""
        raise NotImplementedError

    def plan(self, width: int, height: int, generator: Optional[torch.Generator] = None) -> _Plan:
        raise NotImplementedError

    def normalize(self, chw: torch.Tensor, plan: _Plan) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, img, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """float32 (3, size, size) of an RGB PIL image; the random choices come from ``generator``
        (the global RNG when None)."""
        plan = self.plan(*img.size, generator)
        x = self.normalize(_apply_pil(img, plan), plan)
        return x.flip(-1) if plan.flip else x  # elementwise maths commutes with the mirror

    def apply_tensor(self, chw: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The same on a uint8 (3, H, W) RGB tensor on any device (decode_batch_cuda's path): crops
        are equal, resizes use torch's antialiased bilinear filter (close to Pillow's, not equal)."""
        plan = self.plan(chw.shape[-1], chw.shape[-2], generator)
        x = self.normalize(_apply_tensor(chw, plan), plan)
        return x.flip(-1) if plan.flip else x


def _centre(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (round((H - size) / 2))."""
    if height < size or width < size:
        raise ValueError(f"centre crop {size} of a {width}x{height} image")
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0)), size, size


@dataclass(frozen=True)
class TorchvisionPreset(_Preset):
    """torchvision's (and CSAIL's PyTorch models') preprocessing, on RGB in [0, 1] normalised by
    ``mean``/``std``. Training: RandomResizedCrop(size, scale, ratio) with torchvision's sampling,
    then a horizontal flip with p=0.5; evaluation: Resize(resize) (the shorter side) and
    CenterCrop(size). Bilinear resizing by Pillow, as torchvision does on PIL images."""

    train: bool
    size: int = 224
    resize: int = 256
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def plan(self, width: int, height: int, generator: Optional[torch.Generator] = None) -> _Plan:
        if self.train:
            box = random_resized_crop_box(width, height, self.scale, self.ratio, generator)
            return _Plan(None, box, (self.size, self.size), _coin(generator))
        short, long = min(width, height), max(width, height)
        new_long = int(self.resize * long / short)  # torchvision's _compute_resized_output_size
        w, h = (self.resize, new_long) if width <= height else (new_long, self.resize)
        return _Plan((w, h), _centre(h, w, self.size), None, False)

    @property
    def input_range(self) -> tuple[float, float]:
        # normalize's own float32 arithmetic on the darkest and brightest pixel: a bound outputs meet exactly
        ends = self.normalize(torch.tensor([0.0, 255.0]).expand(3, 1, 2), None)
        return float(ends[..., 0].min()), float(ends[..., 1].max())

    def normalize(self, chw: torch.Tensor, plan: _Plan) -> torch.Tensor:
        # the order of torchvision's to_tensor and normalize: x / 255, then (x - mean) / std
        mean = torch.tensor(self.mean, device=chw.device)[:, None, None]
        std = torch.tensor(self.std, device=chw.device)[:, None, None]
        return chw.float().div(255).sub_(mean).div_(std)


@dataclass(frozen=True, eq=False)
class CaffePreset(_Preset):
    """CSAIL's Caffe VGG16-places365 preprocessing (train_val_vgg16.prototxt): the image resized
    to ``resize`` x ``resize`` (the 256x256 set already is; Caffe's lmdb was made so, by OpenCV,
    whose bilinear filter differs from Pillow's when shrinking), BGR on a 0-255 scale, minus the
    mean, then a ``size`` crop: random offsets and a mirror with p=0.5 for training, centred
    ((H - size) // 2, as Caffe) for evaluation. ``mean``: B, G, R means, or a per-pixel mean
    (3, resize, resize) in BGR (a tensor, or a .npy/.binaryproto path read by
    :func:`read_caffe_mean`) subtracted at the crop's place as Caffe does."""

    train: bool
    size: int = 224
    resize: int = 256
    mean: Union[Sequence[float], torch.Tensor, str, os.PathLike] = CAFFE_MEAN_BGR

    def __post_init__(self) -> None:
        mean = self.mean
        if isinstance(mean, (str, os.PathLike)):
            mean = read_caffe_mean(mean)
        mean = torch.as_tensor(mean, dtype=torch.float32)
        if mean.shape == (3,):
            mean = mean[:, None, None]
        elif mean.shape != (3, self.resize, self.resize):
            raise ValueError(f"CaffePreset: mean must have 3 values or shape (3, {self.resize}, {self.resize}) "
                             f"(resize={self.resize}), got {tuple(mean.shape)}")
        object.__setattr__(self, "_mean", mean)

    def plan(self, width: int, height: int, generator: Optional[torch.Generator] = None) -> _Plan:
        r, s = self.resize, self.size
        if self.train:  # Caffe's DataTransformer: h_off = Rand(H - crop + 1), then w_off, then Rand(2)
            top = _randint(r - s + 1, generator)
            box = (top, _randint(r - s + 1, generator), s, s)
            return _Plan((r, r), box, None, _coin(generator))
        return _Plan((r, r), ((r - s) // 2, (r - s) // 2, s, s), None, False)

    @property
    def input_range(self) -> tuple[float, float]:
        mean = self._mean.float()
        return float((0.0 - mean).min()), float((255.0 - mean).max())

    def normalize(self, chw: torch.Tensor, plan: _Plan) -> torch.Tensor:
        top, left, h, w = plan.box
        mean = self._mean.to(chw.device)
        if mean.shape[-1] > 1:
            mean = mean[:, top:top + h, left:left + w]
        return chw.flip(0).float().sub_(mean)  # RGB -> BGR


def preset(name: str, train: bool, size: int = 224, **options: Any) -> _Preset:
    """The preprocessing ``name`` ("torchvision" or "caffe") for training or evaluation, as a
    transform ``t(img, generator=None) -> float32 (3, size, size)`` with ``t.output_shape``.
    ``options`` go to :class:`TorchvisionPreset` / :class:`CaffePreset` (``resize``, ``mean``,
    ``std``, ``scale``, ``ratio``); ``resize`` defaults to round(size * 256 / 224)."""
    options.setdefault("resize", int(round(size * 256 / 224)))
    if name == "torchvision":
        return TorchvisionPreset(train=train, size=size, **options)
    if name == "caffe":
        return CaffePreset(train=train, size=size, **options)
    raise ValueError(f"preset must be 'torchvision' or 'caffe', got {name!r}")


def read_caffe_mean(path: PathLike) -> torch.Tensor:
    """A per-pixel Caffe mean as float32 (3, H, W) (BGR): a .npy file (e.g. CSAIL's mean converted
    with caffe.io.blobproto_to_array) or Caffe's .binaryproto itself (places365CNN_mean.binaryproto)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the Caffe mean file {path} does not exist")
    if path.suffix == ".npy":
        mean = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        return mean[0] if mean.dim() == 4 else mean
    return _read_binaryproto(path)


def _read_binaryproto(path: Path) -> torch.Tensor:
    """Caffe's BlobProto: varint fields num=1, channels=2, height=3, width=4, packed float data=5."""
    buf, pos, dims, data = path.read_bytes(), 0, {}, None

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(buf):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            dims[field] = varint()
        elif wire == 2:
            length = varint()
            if field == 5:
                data = np.frombuffer(buf, dtype="<f4", count=length // 4, offset=pos)
            pos += length
        else:
            raise ValueError(f"{path}: not a Caffe mean .binaryproto this reader knows (wire type {wire})")
    shape = (dims.get(2), dims.get(3), dims.get(4))
    if data is None or None in shape or data.size != shape[0] * shape[1] * shape[2]:
        raise ValueError(f"{path}: no (channels, height, width) float data in this .binaryproto")
    return torch.from_numpy(data.reshape(shape).copy())


# ---------------------------------------------------------------------------------------------
# GPU decoding: explicit, off by default. Neither can run on the machine this was written on
# (no GPU, no DALI): they are short and follow the libraries' documented calls.

def decode_batch_cuda(encoded: Sequence[torch.Tensor], labels: Sequence[int], transform: _Preset,
                      generators: Optional[Sequence[Optional[torch.Generator]]] = None,
                      device: Union[str, torch.device] = "cuda") -> tuple[torch.Tensor, torch.Tensor, int]:
    """The GPU counterpart of a Places365 batch through :func:`collate_skipping`: decode the JPEG
    files' bytes (uint8 CPU tensors, e.g. torchvision.io.read_file) with
    ``torchvision.io.decode_jpeg(device="cuda")``, apply ``transform`` (a preset) on the GPU
    (:meth:`_Preset.apply_tensor`, one CPU generator per image as the keys' seeds make them) and
    return ``(x, y, n_bad)`` on ``device``; a batch nvjpeg rejects is decoded image by image and
    the unreadable ones dropped and counted. Untested here (no GPU on the machine it was written on)."""
    if not torch.cuda.is_available():
        raise RuntimeError("decode_batch_cuda needs a CUDA device (torch.cuda.is_available() is False)")
    io = _torchvision_io()
    rgb = io.ImageReadMode.RGB
    try:
        images = io.decode_jpeg(list(encoded), mode=rgb, device=device)
    except RuntimeError:  # one bad file fails the whole batched call
        images = []
        for k, data in enumerate(encoded):
            try:
                images.append(io.decode_jpeg(data, mode=rgb, device=device))
            except RuntimeError as err:
                log.warning("Places365: skipping unreadable image %d of the batch: %s", k, err)
                images.append(None)
    generators = list(generators) if generators is not None else [None] * len(images)
    good = [k for k, x in enumerate(images) if x is not None]
    if not good:
        return (torch.empty(0, *transform.output_shape, device=device), torch.empty(0, dtype=torch.int64, device=device),
                len(images))
    x = torch.stack([transform.apply_tensor(images[k], generators[k]) for k in good])
    y = torch.tensor([int(labels[k]) for k in good], dtype=torch.int64, device=device)
    return x, y, len(images) - len(good)


def dali_pipeline(dataset: Places365, batch_size: int, train: bool, preset_name: str = "torchvision", size: int = 224,
                  shard_id: int = 0, num_shards: int = 1, device_id: int = 0, num_threads: int = 4, seed: int = 0):
    """An NVIDIA DALI pipeline over ``dataset``'s files: fn.readers.file(files=, labels=, shard_id=,
    num_shards=) (absolute paths: DALI reads a leading '/' in a list file as absolute),
    fn.decoders.image(device="mixed"), then the preset's crop/flip/normalisation with DALI's ops
    (its own sampling, not this module's keyed one; the "caffe" preset with per-channel means).
    Build and run: ``p = dali_pipeline(...); p.build(); images, labels = p.run()``. Needs
    nvidia-dali (e.g. nvidia-dali-cuda130); untested here (no GPU, no DALI)."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as err:
        raise ImportError("dali_pipeline needs NVIDIA DALI (pip install nvidia-dali-cuda130)") from err
    if preset_name not in ("torchvision", "caffe"):
        raise ValueError(f"preset must be 'torchvision' or 'caffe', got {preset_name!r}")
    files = [str(dataset.path(i)) for i in range(len(dataset))]
    labels = [int(t) for t in dataset.targets]
    resize = int(round(size * 256 / 224))
    caffe = preset_name == "caffe"

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed)
    def pipe():
        jpegs, label = fn.readers.file(files=files, labels=labels, shard_id=shard_id, num_shards=num_shards,
                                       random_shuffle=train, name="Reader")
        images = fn.decoders.image(jpegs, device="mixed", output_type=types.BGR if caffe else types.RGB)
        mirror = fn.random.coin_flip(probability=0.5) if train else 0
        if caffe:
            images = fn.resize(images, resize_x=resize, resize_y=resize)
            crop_pos = dict(crop_pos_x=fn.random.uniform(range=(0.0, 1.0)),
                            crop_pos_y=fn.random.uniform(range=(0.0, 1.0))) if train else {}
            mean, std = list(CAFFE_MEAN_BGR), [1.0, 1.0, 1.0]
        else:
            if train:
                images = fn.random_resized_crop(images, size=(size, size), random_area=(0.08, 1.0),
                                                random_aspect_ratio=(3 / 4, 4 / 3))
            else:
                images = fn.resize(images, resize_shorter=resize)
            crop_pos = {}
            mean, std = [255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD]
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", crop=(size, size),
                                          mean=mean, std=std, mirror=mirror, **crop_pos)
        return images, label.gpu()

    return pipe()


# ---------------------------------------------------------------------------------------------
# Synthetic data in the official layout, for tests and benchmarks.

DEFAULT_CLASSES = ("/a/airfield", "/b/bedroom", "/s/swimming_pool/indoor", "/s/swimming_pool/outdoor")


def _random_image(size: tuple[int, int], rng: np.random.Generator):
    """A smooth random RGB image (a coarse random grid, enlarged, plus mild noise), so that its
    JPEG is about as large as a photograph's and not as large as white noise's."""
    Image = _pil()
    w, h = size
    coarse = Image.fromarray(rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.int16)
    noisy = smooth + rng.integers(-12, 13, smooth.shape, dtype=np.int16)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def make_synthetic_places365(root: PathLike, classes: Sequence[str] = DEFAULT_CLASSES, train_per_class: int = 3,
                             val_per_class: int = 2, test_count: int = 4, size: Union[int, tuple[int, int]] = (64, 64),
                             corrupt: int = 1, small: bool = True, seed: int = 0, challenge: bool = False,
                             quality: int = 90) -> Path:
    """Write a tiny Places365 under ``root`` in the official layout: categories_places365.txt
    (``classes``, nested names allowed), the train-standard, val and test lists and image folders
    (``data_256_standard``, ``val_256``, ``test_256``; ``*_large*`` when not ``small``), and with
    ``challenge`` the train-challenge list and folder (the same images). Images are random JPEGs
    of ``size`` (width, height); ``corrupt`` training images (never the first listed, which
    Places365 checks) are truncated JPEGs no decoder reads. Returns root. Seeded by ``seed``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    size = (size, size) if isinstance(size, int) else tuple(size)
    if corrupt > len(classes) * train_per_class - 1:
        raise ValueError(f"corrupt={corrupt} needs more than {corrupt} training images")
    tag = "256" if small else "large"
    root.mkdir(parents=True, exist_ok=True)
    (root / CATEGORIES_FILE).write_text("".join(f"{name} {i}\n" for i, name in enumerate(classes)))

    def write(path: Path, bad: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _random_image(size, rng).save(path, "JPEG", quality=quality)
        if bad:  # cut inside the header: Pillow and libjpeg (torchvision) both give up
            path.write_bytes(path.read_bytes()[:100])

    train = [(f"{name}/{k + 1:08d}.jpg", i) for i, name in enumerate(classes) for k in range(train_per_class)]
    bad = set((1 + rng.permutation(len(train) - 1)[:corrupt]).tolist())
    lines = "".join(f"{p} {label}\n" for p, label in train)
    for variant in ("standard", "challenge") if challenge else ("standard",):
        (root / f"places365_train_{variant}.txt").write_text(lines)
        for k, (p, _) in enumerate(train):
            write(root / f"data_{tag}_{variant}" / p.lstrip("/"), bad=k in bad)
    val_labels = rng.permutation(np.repeat(np.arange(len(classes)), val_per_class)).tolist()
    val = [(f"Places365_val_{k + 1:08d}.jpg", label) for k, label in enumerate(val_labels)]
    (root / LIST_FILES["val"]).write_text("".join(f"{p} {label}\n" for p, label in val))
    for p, _ in val:
        write(root / f"val_{tag}" / p)
    test = [f"Places365_test_{k + 1:08d}.jpg" for k in range(test_count)]
    (root / LIST_FILES["test"]).write_text("".join(f"{p}\n" for p in test))
    for p in test:
        write(root / f"test_{tag}" / p)
    return root
