"""Real datasets in their own file formats -> uint8 arrays (N, H, W, C). numpy + PIL only.

    images = load_dataset("fashion_mnist", split="train")   # (60000, 28, 28, 1) uint8
    x = to_model_range(images[:8])                           # (8, 1, 28, 28) float32 in [-1, 1]

Where files are looked for, in order (docs/DATA.md):
    1. the explicit `root` argument
    2. $DIFFBENCH_DATA/<name>
    3. ./data/<name> (the current directory), then <repo>/data/<name>
    4. system locations (/usr/share/datasets/fashion-mnist: Debian package dataset-fashion-mnist)
A missing dataset raises FileNotFoundError listing every place searched, the exact file names
expected there, and where to download them.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import bench

REPO_ROOT = Path(bench.REPO_ROOT)
DATA_ENV = "DIFFBENCH_DATA"
SPLITS = ("train", "test")

IDX_UBYTE = 0x08  # idx type code for unsigned bytes, the only one these datasets use
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    image_size: int | None          # None: chosen by the caller (folder, synthetic)
    channels: int
    num_classes: int | None
    split_sizes: dict = field(default_factory=dict)
    download: str = ""              # where users with internet get the files
    system_dirs: tuple = ()


DATASETS = {
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 28, 1, 10, {"train": 60000, "test": 10000},
        "https://github.com/zalandoresearch/fashion-mnist#get-the-data "
        "(or Debian/Ubuntu: apt-get install dataset-fashion-mnist)",
        ("/usr/share/datasets/fashion-mnist",)),
    "mnist": DatasetInfo(
        "mnist", 28, 1, 10, {"train": 60000, "test": 10000},
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of yann.lecun.com/exdb/mnist)",
        ("/usr/share/datasets/mnist",)),
    "cifar10": DatasetInfo(
        "cifar10", 32, 3, 10, {"train": 50000, "test": 10000},
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpack it, or leave the .tar.gz)"),
    "folder": DatasetInfo("folder", None, 3, None, {}, "any folder of PNG/JPEG images"),
    "synthetic": DatasetInfo("synthetic", None, 1, None, {}, "generated, nothing to download"),
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"dataset {name!r} is unknown; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def search_dirs(name: str, root=None) -> list[Path]:
    """The folders searched for `name`, in order (duplicates dropped)."""
    dirs = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]).expanduser() / name)
    dirs += [Path("data") / name, REPO_ROOT / "data" / name]
    dirs += [Path(d) for d in dataset_info(name).system_dirs]
    unique = []
    for d in dirs:
        if all(d.resolve() != u.resolve() for u in unique):
            unique.append(d)
    return unique


def _not_found(name: str, dirs: list[Path], expected: list[str]) -> FileNotFoundError:
    info = dataset_info(name)
    searched = "\n".join(f"  {d.resolve()}" for d in dirs)
    return FileNotFoundError(
        f"dataset {name!r}: files not found. Searched, in order:\n{searched}\n"
        f"expected in one of them: {', '.join(expected)}\n"
        f"put them in ./data/{name}/ or point ${DATA_ENV} at a folder holding {name}/, "
        f"or pass root=...; download: {info.download}")


# ---- idx (MNIST, Fashion-MNIST) ---------------------------------------------------------------

def read_idx(path) -> np.ndarray:
    """Parse an idx file (raw or gzip, detected by content): 2 zero bytes, a type byte
    (0x08 = uint8), the number of dims, then each dim as a big-endian uint32, then the data."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic {raw[:4].hex()})")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != IDX_UBYTE:
        raise ValueError(f"{path}: idx type 0x{dtype_code:02x} unsupported; valid: 0x08 (uint8)")
    header_bytes = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header_bytes])
    count = int(np.prod(shape))
    if len(raw) - header_bytes != count:
        raise ValueError(f"{path}: idx header says shape {shape} ({count} bytes) "
                         f"but the file holds {len(raw) - header_bytes} data bytes")
    # a copy: frombuffer over bytes is read-only, and callers may flip/normalise in place
    return np.frombuffer(raw, np.uint8, count, header_bytes).reshape(shape).copy()


# torchvision keeps its downloads in <root>/FashionMNIST/raw/ and <root>/MNIST/raw/: accept those too.
TORCHVISION_SUBDIRS = {"fashion_mnist": "FashionMNIST/raw", "mnist": "MNIST/raw"}


def _find_idx(name: str, stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for folder in (d, d / TORCHVISION_SUBDIRS[name]):
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    return candidate
    return None


def _load_idx_split(name: str, root, split: str, want_labels: bool) -> np.ndarray:
    image_stem, label_stem = IDX_FILES[split]
    stem = label_stem if want_labels else image_stem
    dirs = search_dirs(name, root)
    path = _find_idx(name, stem, dirs)
    if path is None:
        expected = [f"{s}.gz (or {s})" for s in IDX_FILES[split]]
        raise _not_found(name, dirs, expected)
    array = read_idx(path)
    if want_labels:
        return array.astype(np.int64)
    if array.ndim != 3:
        raise ValueError(f"{path}: expected idx3 images (N, H, W), got shape {array.shape}")
    return array[..., None]


# ---- CIFAR-10 (python pickles) ----------------------------------------------------------------

class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's python version IS a set of pickles (its authors' format; there is no other
    official copy). Unpickling can run arbitrary code, so allow only what those files hold:
    dicts, lists, bytes and numpy arrays. Anything else raises UnpicklingError."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),   # how Python 3 writes bytes at protocol 2 (harmless: str -> bytes)
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR batch may not reference {module}.{name}")


def _read_cifar_batch(stream, label: str) -> tuple[np.ndarray, np.ndarray]:
    # encoding="bytes": the files were written by Python 2, their keys are byte strings.
    batch = _ArraysOnlyUnpickler(stream, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{label}: not a CIFAR-10 batch (a dict with b'data' and b'labels')")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{label}: data has shape {data.shape}; expected (N, 3072)")
    # Each row is the red plane, then green, then blue, 32x32 each, row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(batch[b"labels"], dtype=np.int64)


def _load_cifar_split(root, split: str) -> tuple[np.ndarray, np.ndarray]:
    dirs = search_dirs("cifar10", root)
    names = CIFAR_FILES[split]
    for d in dirs:
        for folder in (d / CIFAR_DIR, d):
            if all((folder / n).is_file() for n in names):
                parts = []
                for n in names:
                    with open(folder / n, "rb") as f:
                        parts.append(_read_cifar_batch(f, str(folder / n)))
                return _concat(parts)
        archive = d / CIFAR_ARCHIVE
        if archive.is_file():   # read straight from the download, no unpacking needed
            with tarfile.open(archive, "r:gz") as tar:
                parts = []
                for n in names:
                    member = tar.extractfile(f"{CIFAR_DIR}/{n}")
                    parts.append(_read_cifar_batch(io.BytesIO(member.read()), f"{archive}:{n}"))
                return _concat(parts)
    expected = [f"{CIFAR_DIR}/{n}" for n in names] + [f"(or {CIFAR_ARCHIVE})"]
    raise _not_found("cifar10", dirs, expected)


def _concat(parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---- image folder -----------------------------------------------------------------------------

def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def load_image_folder(folder, image_size: int | None = None, channels: int = 3) -> np.ndarray:
    """Every image under `folder` (recursive, sorted by path) as uint8 (N, S, S, C): the shorter
    side resized to `image_size` (bicubic), then centre-cropped. image_size=None keeps the files'
    size, which must then be the same for all."""
    from PIL import Image  # only for image files: keeps the import of this module light

    if channels not in (1, 3):
        raise ValueError(f"channels={channels} is invalid; valid: 1 (grayscale) or 3 (RGB)")
    folder = Path(folder)
    files = _image_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    mode = "L" if channels == 1 else "RGB"
    images = []
    for path in files:
        with Image.open(path) as im:
            im = im.convert(mode)
            if image_size is not None:
                im = _resize_center_crop(im, image_size)
            array = np.asarray(im, dtype=np.uint8)
        if images and array.shape != images[0].shape:
            raise ValueError(f"{path}: size {array.shape[:2]} differs from {files[0]} "
                             f"{images[0].shape[:2]}; pass image_size to resize them all")
        images.append(array)
    stacked = np.stack(images)
    return stacked[..., None] if channels == 1 else stacked


def _resize_center_crop(im, size: int):
    from PIL import Image  # only for image files: keeps the import of this module light

    w, h = im.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return im.crop((left, top, left + size, top + size))


def _load_folder_split(root, split: str, image_size, channels) -> np.ndarray:
    dirs = search_dirs("folder", root)
    for d in dirs:
        if (d / split).is_dir():     # <root>/train, <root>/test when the folder has splits
            return load_image_folder(d / split, image_size, channels)
        if split == "train" and d.is_dir() and _image_files(d):
            return load_image_folder(d, image_size, channels)
    expected = [f"{split}/ with images" if split != "train" else "images (or a train/ subfolder)"]
    raise _not_found("folder", dirs, expected)


# ---- synthetic --------------------------------------------------------------------------------

def synthetic_images(count: int, image_size: int = 28, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Learnable stand-in data: one bright disc or square per image on a dark background,
    random size/position/brightness, seeded. uint8 (N, S, S, C)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:image_size, :image_size]
    images = np.zeros((count, image_size, image_size, channels), np.uint8)
    for i in range(count):
        cy, cx = rng.uniform(0.3, 0.7, 2) * image_size
        radius = rng.uniform(0.15, 0.3) * image_size
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        else:
            mask = (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
        images[i][mask] = rng.integers(128, 256, channels, dtype=np.uint8)
    return images


# ---- public entry points ----------------------------------------------------------------------

def load_dataset(name: str, root=None, split: str = "train", *, image_size: int | None = None,
                 channels: int | None = None, count: int = 1000, seed: int = 0) -> np.ndarray:
    """uint8 images (N, H, W, C) of a dataset split.

    image_size / channels (None = as stored): images of another size are resized (bicubic; a
    folder's are also centre-cropped), grayscale is replicated to RGB and RGB turned to luma
    when the model wants the other. count/seed apply only to `synthetic`."""
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid; valid: {', '.join(SPLITS)}")
    if name == "synthetic":
        # any channel count: a latent-space model (the DiT's 32x32x4) trains on synthetic
        # "latents"; a different seed per split so test images are not the training images
        if channels is not None and (not isinstance(channels, int) or channels < 1):
            raise ValueError(f"channels={channels} is invalid; valid: a positive integer")
        return synthetic_images(count, image_size or 28, channels or info.channels,
                                seed=seed + (0 if split == "train" else 1_000_003))
    if channels not in (None, 1, 3):
        raise ValueError(f"channels={channels} is invalid; valid: 1 (grayscale) or 3 (RGB)")
    if name in ("fashion_mnist", "mnist"):
        return conform(_load_idx_split(name, root, split, want_labels=False), image_size, channels)
    if name == "cifar10":
        return conform(_load_cifar_split(root, split)[0], image_size, channels)
    if name == "folder":
        return _load_folder_split(root, split, image_size, channels or info.channels)
    raise ValueError(f"dataset {name!r} has no reader")  # pragma: no cover - dataset_info knows


def conform(images: np.ndarray, image_size: int | None = None, channels: int | None = None) -> np.ndarray:
    """Square uint8 NHWC images resized to image_size (PIL bicubic) and converted to `channels`
    (1 -> 3 replicates the plane; 3 -> 1 is PIL's ITU-R 601-2 luma). None keeps what is there."""
    from PIL import Image  # only for image files: keeps the import of this module light

    n, h, w, c = images.shape
    if channels == 3 and c == 1:
        images = np.repeat(images, 3, axis=3)
    if (image_size is None or (h, w) == (image_size, image_size)) and (channels in (None, images.shape[3])):
        return images
    out = []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        if channels == 1 and pil.mode != "L":
            pil = pil.convert("L")
        if image_size is not None and pil.size != (image_size, image_size):
            pil = pil.resize((image_size, image_size), Image.BICUBIC)
        out.append(np.asarray(pil, dtype=np.uint8))
    stacked = np.stack(out)
    return stacked[..., None] if stacked.ndim == 3 else stacked


def load_labels(name: str, root=None, split: str = "train") -> np.ndarray:
    """int64 class labels (N,) for fashion_mnist, mnist, cifar10, in the order of load_dataset."""
    dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid; valid: {', '.join(SPLITS)}")
    if name in ("fashion_mnist", "mnist"):
        return _load_idx_split(name, root, split, want_labels=True)
    if name == "cifar10":
        return _load_cifar_split(root, split)[1]
    raise ValueError(f"dataset {name!r} has no labels; labelled: fashion_mnist, mnist, cifar10")


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) in [0, 255] -> float32 (N, C, H, W) in [-1, 1]."""
    _check_uint8_nhwc(images)
    return (images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(127.5)) - np.float32(1.0)


def from_model_range(x: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] (model outputs; clipped) -> uint8 (N, H, W, C)."""
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"from_model_range expects float (N, C, H, W); got {x.dtype} {x.shape}")
    scaled = np.rint((np.clip(x, -1.0, 1.0) + 1.0) * 127.5)
    return np.ascontiguousarray(scaled.astype(np.uint8).transpose(0, 2, 3, 1))


def random_hflip(images: np.ndarray, rng: np.random.Generator, p: float = 0.5,
                 layout: str = "NHWC") -> np.ndarray:
    """Mirror each image left-right with probability p (a copy; the input is untouched)."""
    width_axis = {"NHWC": 2, "NCHW": 3}.get(layout)
    if width_axis is None:
        raise ValueError(f"layout={layout!r} is invalid; valid: NHWC, NCHW")
    flip = rng.random(len(images)) < p
    out = images.copy()
    out[flip] = np.flip(images[flip], axis=width_axis)
    return out


def train_val_split(images: np.ndarray, val_fraction: float = 0.1, seed: int = 0, labels=None):
    """Seeded random split -> (train, val) or, with labels, (train, val, train_labels, val_labels)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} is invalid; valid: strictly between 0 and 1")
    order = np.random.default_rng(seed).permutation(len(images))
    num_val = max(1, int(round(len(images) * val_fraction)))
    val_idx, train_idx = np.sort(order[:num_val]), np.sort(order[num_val:])
    if labels is None:
        return images[train_idx], images[val_idx]
    labels = np.asarray(labels)
    return images[train_idx], images[val_idx], labels[train_idx], labels[val_idx]


def _check_uint8_nhwc(images) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"expected uint8 images (N, H, W, C); got {got}")
