"""ttfs_ext.data.places365: the reader of the official layout, its errors, the corrupt-image
count through a DataLoader, the presets' values (against torchvision where it is installed)
and keyed augmentation. Every dataset here is written by make_synthetic_places365."""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttfs_ext.data import places365 as p365
from ttfs_ext.data import DatasetNotFoundError, Places365, collate_skipping, make_synthetic_places365, preset

CLASSES = ("/a/airfield", "/b/bedroom", "/s/swimming_pool/indoor", "/s/swimming_pool/outdoor", "/y/youth_hostel")

try:
    import torchvision  # noqa: F401
    from torchvision import transforms as T
    from torchvision.transforms import functional as TF
    HAVE_TORCHVISION = True
except ImportError:
    HAVE_TORCHVISION = False
needs_torchvision = pytest.mark.skipif(not HAVE_TORCHVISION, reason="torchvision is not installed (it installs "
                                                                     "only beside torch 2.14.1 here)")


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> Path:
    """A synthetic Places365 (nested classes, one corrupt training JPEG, Challenge too)."""
    return make_synthetic_places365(tmp_path_factory.mktemp("places365"), classes=CLASSES, train_per_class=4,
                                    val_per_class=2, test_count=3, size=(72, 60), corrupt=1, seed=11,
                                    challenge=True)


def copy_tree(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def pixel_image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Layout

def test_layout_round_trip(places):
    train = Places365(places, "train-standard")
    assert train.classes == list(CLASSES)
    assert train.class_to_idx == {name: i for i, name in enumerate(CLASSES)}
    expected = [(f"{name[1:]}/{k + 1:08d}.jpg", i) for i, name in enumerate(CLASSES) for k in range(4)]
    assert list(train.samples) == expected and train.targets.tolist() == [y for _, y in expected]
    assert train.image_dir == places / "data_256_standard"
    assert train.path(8) == places / "data_256_standard" / "s" / "swimming_pool" / "indoor" / "00000001.jpg"
    assert len(train) == 20 and train.targets.dtype == torch.int64

    val = Places365(places, "val")
    assert val.image_dir == places / "val_256"
    assert sorted(val.targets.tolist()) == sorted(list(range(len(CLASSES))) * 2)
    assert all(re.fullmatch(r"Places365_val_\d{8}\.jpg", path) for path, _ in val.samples)

    test = Places365(places, "test")
    assert test.targets.tolist() == [-1, -1, -1] and test.image_dir == places / "test_256"
    img, label = test[2]
    assert isinstance(img, Image.Image) and img.size == (72, 60) and img.mode == "RGB" and label == -1

    challenge = Places365(places, "train-challenge")
    assert challenge.image_dir == places / "data_256_challenge" and list(challenge.samples) == expected


def test_folder_names(tmp_path):
    root = make_synthetic_places365(tmp_path / "large", small=False, train_per_class=2, val_per_class=1,
                                    test_count=1, corrupt=0, seed=3)
    assert Places365(root, "train-standard", small=False).image_dir == root / "data_large_standard"
    assert Places365(root, "val", small=False).image_dir == root / "val_large"
    assert Places365(root, "test", small=False).image_dir == root / "test_large"
    # the name the official archive extracts to, before torchvision renames it
    (root / "data_large_standard").rename(root / "data_large")
    assert Places365(root, "train-standard", small=False).image_dir == root / "data_large"
    assert p365.image_folders("train-challenge", True) == ("data_256_challenge", "data_256")
    assert p365.image_folders("val", False) == ("val_large",)


# ---------------------------------------------------------------------------------------------
# Errors

def test_missing_files(places, tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"root folder .*nowhere.*places2\.csail\.mit\.edu/download"):
        Places365(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match=r"image folder .*data_large_standard.*\(nor data_large\)"):
        Places365(places, small=False)  # only the 256x256 images are there

    root = copy_tree(places, tmp_path / "copy")
    (root / "places365_val.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"the val list .*places365_val\.txt does not exist.*download"):
        Places365(root, "val")
    (root / "categories_places365.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"category list .*categories_places365\.txt"):
        Places365(root)


def test_missing_images(places, tmp_path):
    root = copy_tree(places, tmp_path / "copy")
    (root / "data_256_standard" / "b" / "bedroom" / "00000002.jpg").unlink()
    assert len(Places365(root)) == 20  # the default spot check sees only the first image
    with pytest.raises(DatasetNotFoundError, match=r"image 5 of places365_train_standard\.txt, .*bedroom/00000002"
                                                   r"\.jpg does not exist \(1 of the 20 listed images are missing\)"):
        Places365(root, verify=True)
    (root / "data_256_standard" / "a" / "airfield" / "00000001.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"image 0 .*airfield/00000001\.jpg does not exist \(is "
                                                   r"data_256_standard the 256x256 folder\? small=True\)"):
        Places365(root)


@pytest.mark.parametrize("file, line, text, error", [
    ("places365_train_standard.txt", 3, "/a/airfield/00000003.jpg", r"expected 'path label'"),
    ("places365_train_standard.txt", 7, "/b/bedroom/00000003.jpg seven", r"expected 'path label'"),
    ("places365_train_standard.txt", 2, "/a/airfield/00000002.jpg 5", r"label 5 is outside 0\.\.4"),
    ("places365_val.txt", 4, "Places365_val_00000004.jpg -1", r"label -1 is outside 0\.\.4"),
    ("places365_test.txt", 2, "Places365_test_00000002.jpg 3", r"expected 'path' \(no label\)"),
    ("categories_places365.txt", 5, "/y/youth_hostel 3", r"index 3 was given before to '/s/swimming_pool/outdoor'"),
    ("categories_places365.txt", 1, "/a/airfield", r"expected 'name index'"),
    ("places365_train_standard.txt", 2, "/a/airfield/00000002.jpg --1", r"expected 'path label'"),
    ("places365_train_standard.txt", 2, "/a/../../outside.jpg 0", r"the image path leaves the image folder"),
    ("places365_val.txt", 1, "../Places365_val_00000001.jpg 0", r"the image path leaves the image folder"),
])
def test_bad_lines(places, tmp_path, file, line, text, error):
    root = copy_tree(places, tmp_path / "copy")
    lines = (root / file).read_text().splitlines()
    lines[line - 1] = text
    (root / file).write_text("\n".join(lines) + "\n")
    split = {"places365_val.txt": "val", "places365_test.txt": "test"}.get(file, "train-standard")
    with pytest.raises(p365.Places365FormatError, match=re.escape(f"{root / file}:{line}: ") + error + ".*"
                       + re.escape(repr(text))):
        Places365(root, split)


def test_bad_arguments(places, tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of .*'train-standard'.*got 'train'"):
        Places365(places, "train")
    with pytest.raises(ValueError, match=r"decoder must be one of .*got 'cv2'"):
        Places365(places, decoder="cv2")
    root = copy_tree(places, tmp_path / "copy")
    (root / "categories_places365.txt").write_text("/a/airfield 0\n/b/bedroom 2\n")
    with pytest.raises(p365.Places365FormatError, match=r"class indices are not 0\.\.1: missing \[1\]"):
        Places365(root)
    with pytest.raises(TypeError, match=r"an index or \(index, seed\)"):
        Places365(places)[(1, 2, 3)]
    with pytest.raises(ValueError, match=r"preset must be 'torchvision' or 'caffe'"):
        preset("imagenet", True)
    with pytest.raises(ValueError, match=r"mean must have 3 values or shape \(3, 256, 256\)"):
        preset("caffe", True, mean=torch.zeros(3, 224, 224))


# ---------------------------------------------------------------------------------------------
# Corrupt images through a DataLoader

@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_images_are_counted(places, workers, caplog):
    transform = preset("torchvision", train=True, size=32)
    ds = Places365(places, transform=transform)
    keys = [(i, 1000 + i) for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=6, sampler=keys, num_workers=workers,
                                         collate_fn=ds.collate)
    n_good = n_bad = 0
    for (x, y, bad), size in zip(loader, [6, 6, 6, 2], strict=True):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64
        assert len(x) == len(y) == size - bad
        n_good, n_bad = n_good + len(x), n_bad + bad
    assert (n_good, n_bad) == (len(ds) - 1, 1)
    bad_path = [ds.path(i) for i in range(len(ds)) if ds[i] is None]
    assert len(bad_path) == 1 and str(bad_path[0]) in caplog.text


def test_collate_of_unreadable_batches():
    x, y, bad = collate_skipping([None, None], output_shape=(3, 224, 224))
    assert x.shape == (0, 3, 224, 224) and x.dtype == torch.float32 and y.shape == (0,) and bad == 2
    x, y, bad = functools.partial(collate_skipping, output_shape=(3, 8, 8))([None, (torch.ones(3, 8, 8), 4)])
    assert x.shape == (1, 3, 8, 8) and y.tolist() == [4] and bad == 1
    with pytest.raises(ValueError, match="pass output_shape"):
        collate_skipping([None])
    missing = Places365.__new__(Places365)
    missing.transform = preset("caffe", False)
    assert missing.collate([None])[0].shape == (0, 3, 224, 224)


# ---------------------------------------------------------------------------------------------
# Presets: exact values

@pytest.mark.parametrize("seed", [5, 6])
def test_caffe_preset_values(seed):
    img = pixel_image(256, 256, seed)  # 256x256: no resize, so the output is the pixels themselves
    bgr = torch.from_numpy(np.array(img)).permute(2, 0, 1).flip(0).float()
    mean = torch.tensor(p365.CAFFE_MEAN_BGR)[:, None, None]  # float32 maths, as the preset's

    out = preset("caffe", train=False)(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    assert torch.equal(out, bgr[:, 16:240, 16:240] - mean)

    # training: Caffe's draws (top, left, mirror) from the generator, per-pixel mean at the crop
    pixel_mean = 255 * torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    top, left = int(torch.randint(0, 33, (1,), generator=g)), int(torch.randint(0, 33, (1,), generator=g))
    flip = bool(torch.rand(1, generator=g) < 0.5)
    out = preset("caffe", train=True, mean=pixel_mean)(img, torch.Generator().manual_seed(seed))
    expected = bgr[:, top:top + 224, left:left + 224] - pixel_mean[:, top:top + 224, left:left + 224]
    assert torch.equal(out, expected.flip(-1) if flip else expected)

    small = pixel_image(64, 48, seed)  # resized to 256x256 by Pillow first
    resized = torch.from_numpy(np.array(small.resize((256, 256), Image.BILINEAR))).permute(2, 0, 1).flip(0)
    assert torch.equal(preset("caffe", False)(small), resized[:, 16:240, 16:240].float() - mean)


def test_torchvision_preset_values():
    mean = torch.tensor(p365.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(p365.IMAGENET_STD)[:, None, None]
    # a constant image stays constant through any resize and crop: (c / 255 - mean) / std exactly
    for train in (False, True):
        out = preset("torchvision", train)(Image.new("RGB", (300, 200), (10, 128, 250)), torch.Generator().manual_seed(1))
        expected = (torch.tensor([10.0, 128.0, 250.0])[:, None, None].div(255) - mean) / std
        assert out.shape == (3, 224, 224) and torch.equal(out, expected.expand(3, 224, 224))
    # evaluation: shorter side to 256 (long side int(256 * 500 / 300) = 426), then the centre 224
    img = pixel_image(500, 300, 3)
    resized = torch.from_numpy(np.array(img.resize((426, 256), Image.BILINEAR))).permute(2, 0, 1)
    top, left = round((256 - 224) / 2), round((426 - 224) / 2)
    expected = (resized[:, top:top + 224, left:left + 224].float().div(255) - mean) / std
    assert torch.equal(preset("torchvision", False)(img), expected)
    # RandomResizedCrop's fallback after 10 failed tries (a scale no crop can have): the central crop
    # of aspect 4/3 for this wide image, h = 100, w = round(100 * 4 / 3) = 133, left = (300 - 133) // 2
    t = preset("torchvision", True, scale=(2.0, 3.0))
    assert t.plan(300, 100, torch.Generator().manual_seed(0)).box == (0, 83, 100, 133)
    assert t.plan(100, 300, torch.Generator().manual_seed(0)).box == (83, 0, 133, 100)
    assert t.plan(100, 100, torch.Generator().manual_seed(0)).box == (0, 0, 100, 100)
    assert preset("torchvision", False, size=112).output_shape == (3, 112, 112)
    assert preset("torchvision", False, size=112).resize == 128


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_random_boxes_in_range(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(50):
        w, h = int(torch.randint(40, 400, (1,), generator=g)), int(torch.randint(40, 400, (1,), generator=g))
        top, left, bh, bw = p365.random_resized_crop_box(w, h, (0.08, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + bh <= h and 0 <= left and left + bw <= w and bh > 0 and bw > 0


@needs_torchvision
@pytest.mark.parametrize("seed", [31, 32, 33, 34])
def test_torchvision_preset_equals_torchvision(seed):
    img = pixel_image(int(100 + seed * 7), int(90 + seed * 3), seed)
    normalize = T.Normalize(p365.IMAGENET_MEAN, p365.IMAGENET_STD)
    reference = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    torch.manual_seed(seed)  # torchvision draws from the global RNG, ours from the key's generator
    expected = reference(img)
    assert torch.equal(preset("torchvision", True)(img, torch.Generator().manual_seed(seed)), expected)
    # the same boxes through torchvision's functional ops
    torch.manual_seed(seed)
    box = T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
    assert preset("torchvision", True).plan(*img.size, torch.Generator().manual_seed(seed)).box == box
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
    assert torch.equal(preset("torchvision", False)(img), reference(img))
    caffe = TF.center_crop(TF.resize(img, [256, 256]), [224, 224])
    bgr = torch.from_numpy(np.array(caffe)).permute(2, 0, 1).flip(0).float()
    mean = torch.tensor(p365.CAFFE_MEAN_BGR)[:, None, None]
    assert torch.equal(preset("caffe", False)(img), bgr - mean)


def test_apply_tensor_equals_pil_without_resizing():
    """The GPU path's geometry on the CPU: exact wherever no resize is involved (caffe on 256x256)."""
    img = pixel_image(256, 256, 41)
    chw = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    for train in (False, True):
        t = preset("caffe", train)
        assert torch.equal(t.apply_tensor(chw, torch.Generator().manual_seed(4)), t(img, torch.Generator().manual_seed(4)))
    t = preset("torchvision", False)
    close = (t.apply_tensor(chw) - t(img)).abs().max()
    assert close < 0.05, f"torch's antialiased bilinear vs Pillow's: {close}"


def test_read_caffe_mean(tmp_path):
    mean = torch.rand(3, 8, 6, generator=torch.Generator().manual_seed(51)) * 255

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)

    payload = mean.numpy().astype("<f4").tobytes()
    blob = b"".join(varint(k << 3) + varint(v) for k, v in ((1, 1), (2, 3), (3, 8), (4, 6)))
    blob += varint(5 << 3 | 2) + varint(len(payload)) + payload
    (tmp_path / "mean.binaryproto").write_bytes(blob)
    assert torch.equal(p365.read_caffe_mean(tmp_path / "mean.binaryproto"), mean)
    np.save(tmp_path / "mean.npy", mean.numpy()[None])
    assert torch.equal(p365.read_caffe_mean(tmp_path / "mean.npy"), mean)
    np.save(tmp_path / "square.npy", torch.arange(3 * 8 * 8.0).reshape(3, 8, 8).numpy())
    t = preset("caffe", False, size=4, resize=8, mean=str(tmp_path / "square.npy"))
    assert t.output_shape == (3, 4, 4)
    out = t(Image.new("RGB", (8, 8), (0, 0, 0)))  # minus the centre 4x4 of the per-pixel mean
    assert torch.equal(out, -torch.arange(3 * 8 * 8.0).reshape(3, 8, 8)[:, 2:6, 2:6])
    with pytest.raises(FileNotFoundError, match="mean file .*absent.npy"):
        p365.read_caffe_mean(tmp_path / "absent.npy")


# ---------------------------------------------------------------------------------------------
# Keyed augmentation

def test_keyed_augmentation_is_deterministic(places):
    ds = Places365(places, "train-standard", transform=preset("torchvision", True, size=32))
    state = torch.get_rng_state()
    a, b = ds[(3, 12345)], ds[(3, 12345)]
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert torch.equal(torch.get_rng_state(), state), "a keyed sample must not touch the global RNG"
    assert not torch.equal(ds[(3, 12346)][0], a[0])
    assert torch.equal(ds[[np.int64(3), np.int64(12345)]][0], a[0])


def test_keyed_augmentation_across_workers(places):
    ds = Places365(places, "train-standard", transform=preset("caffe", True, size=48, resize=56))
    g = torch.Generator().manual_seed(61)
    keys = [(int(i), int(s)) for i, s in zip(torch.randperm(len(ds), generator=g),
                                             torch.randint(0, 2**62, (len(ds),), generator=g))]

    def by_key(order, workers, batch):
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=order, num_workers=workers,
                                             collate_fn=list)
        return dict(zip(order, (sample for samples in loader for sample in samples)))

    one = by_key(keys, 0, 4)
    two = by_key(keys[::-1], 2, 3)
    assert one.keys() == two.keys()
    for k in keys:
        assert (one[k] is None) == (two[k] is None)
        if one[k] is not None:
            assert torch.equal(one[k][0], two[k][0]) and one[k][1] == two[k][1]


# ---------------------------------------------------------------------------------------------
# Optional decoders

@needs_torchvision
def test_torchvision_decoder(places):
    pil = Places365(places, "val")
    tv = Places365(places, "val", decoder="torchvision")
    for i in range(len(pil)):
        a, b = np.asarray(pil[i][0], dtype=np.int16), np.asarray(tv[i][0], dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1  # both libjpeg-turbo; IDCTs may differ by 1
    train = Places365(places, decoder="torchvision", transform=preset("caffe", True))
    assert sum(train[i] is None for i in range(len(train))) == 1


def test_optional_paths_fail_clearly(places):
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA device"):
            p365.decode_batch_cuda([], [], preset("torchvision", True))
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs NVIDIA DALI"):
            p365.dali_pipeline(Places365(places), 2, train=True)
    if not HAVE_TORCHVISION:
        with pytest.raises(ImportError, match="decoder='torchvision' needs torchvision"):
            Places365(places, decoder="torchvision")


@pytest.mark.needs_cuda
@needs_torchvision
def test_decode_batch_cuda(places):
    ds = Places365(places)  # with its corrupt JPEG
    encoded = [torchvision.io.read_file(str(ds.path(i))) for i in range(len(ds))]
    t = preset("torchvision", True, size=32)
    gens = [torch.Generator().manual_seed(i) for i in range(len(ds))]
    x, y, bad = p365.decode_batch_cuda(encoded, ds.targets.tolist(), t, gens)
    assert x.shape == (len(ds) - 1, 3, 32, 32) and x.is_cuda and bad == 1
    cpu = [(t(s[0], torch.Generator().manual_seed(i)), s[1]) for i, s in enumerate(ds[i] for i in range(len(ds)))
           if s is not None]
    assert y.tolist() == [label for _, label in cpu]
    # nvjpeg's IDCT and torch's resize against libjpeg-turbo and Pillow's: close, not equal
    assert (x.cpu() - torch.stack([img for img, _ in cpu])).abs().max() < 0.1


def test_imports_stay_lazy():
    code = ("import sys, ttfs_ext; assert 'ttfs_ext.data' not in sys.modules; import ttfs_ext.data; "
            "assert 'PIL' not in sys.modules and 'torchvision' not in sys.modules, sorted(sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_presets_name_the_range_of_their_outputs(tmp_path):
    """input_range bounds every output value (what a TTFS encoder's window must span)."""
    from ttfs_ext.data import places365 as P
    root = P.make_synthetic_places365(tmp_path, train_per_class=2, size=(70, 60), corrupt=0, seed=11)
    for name in ("torchvision", "caffe"):
        for train in (True, False):
            t = P.preset(name, train, size=48)
            low, high = t.input_range
            ds = P.Places365(root, "train-standard", transform=t)
            xs = torch.stack([ds[(i, 1000 + i)][0] for i in range(len(ds))])
            assert low <= float(xs.min()) and float(xs.max()) <= high, (name, train)
            assert high - low > 0.5 * (float(xs.max()) - float(xs.min()))
    torchvision_range = P.preset("torchvision", False).input_range
    assert torchvision_range == pytest.approx((-0.485 / 0.229, (1 - 0.406) / 0.225))
    caffe = P.preset("caffe", False).input_range
    assert caffe == pytest.approx((-P.CAFFE_MEAN_BGR[2], 255 - P.CAFFE_MEAN_BGR[0]))


def test_category_files_bom_crlf_encoding_and_empty(places, tmp_path):
    """A UTF-8 byte-order mark and CRLF endings are read as the plain file; a name that is not
    UTF-8 and an empty file are errors naming file:line (or the file) and what was expected."""
    root = copy_tree(places, tmp_path / "copy")
    cats = root / "categories_places365.txt"
    text = cats.read_bytes()
    cats.write_bytes(b"\xef\xbb\xbf" + text.replace(b"\n", b"\r\n"))
    assert Places365(root).classes == list(CLASSES)
    cats.write_bytes(text.replace(b"/b/bedroom", b"/b/bed\xffroom"))
    with pytest.raises(p365.Places365FormatError, match=re.escape(f"{cats}:2: ") + "the category name is not UTF-8"):
        Places365(root)
    cats.write_bytes(b"\n")
    with pytest.raises(p365.Places365FormatError, match=re.escape(f"{cats}: ") + "the category list is empty"):
        Places365(root)


def test_unreadable_files_of_any_kind_are_skipped(places, tmp_path):
    """A decompression bomb (a header declaring 65000x65000), a FIFO named .jpg and a folder
    named .jpg are skipped and counted like corrupt images: never a crash, never a hang."""
    import os
    root = copy_tree(places, tmp_path / "copy")
    ds = Places365(root, transform=preset("torchvision", train=False, size=32))
    bomb, fifo, folder = ds.path(0), ds.path(1), ds.path(2)
    # a PNG header (IHDR) declaring 65000 x 65000 pixels, and nothing else
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 65000, 65000, 8, 2, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                     + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    fifo.unlink()
    os.mkfifo(fifo)
    folder.unlink()
    folder.mkdir()
    for i in (0, 1, 2):
        assert ds[i] is None
    x, y, bad = ds.collate([ds[i] for i in range(4)])
    assert bad == 3 and len(x) == 1
