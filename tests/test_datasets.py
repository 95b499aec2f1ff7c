"""bench/data/datasets.py on files written here in the real formats (idx raw/gz, CIFAR pickles and
tarball, PNG folders), plus the real Fashion-MNIST when its Debian package is installed."""
import gzip
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import datasets as ds

FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """An idx file written from the spec, independently of the reader under test."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def write_mnist_like(folder: Path, gz: bool, n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        img_name, lab_name = ds.IDX_FILES[split]
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{img_name}{suffix}", images, gz)
        write_idx(folder / f"{lab_name}{suffix}", labels, gz)
        arrays[split] = (images, labels)
    return arrays


@pytest.fixture(autouse=True)
def isolated_search(tmp_path, monkeypatch):
    """No $DIFFBENCH_DATA, and ./data is an empty folder: only what a test writes is found."""
    monkeypatch.delenv(ds.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ds, "REPO_ROOT", tmp_path / "no-repo")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_read_back_exactly(tmp_path, gz):
    arrays = write_mnist_like(tmp_path / "mnist", gz)
    for split in ("train", "test"):
        images = ds.load_dataset("mnist", root=tmp_path / "mnist", split=split)
        labels = ds.load_labels("mnist", root=tmp_path / "mnist", split=split)
        assert images.shape == (len(arrays[split][0]), 28, 28, 1) and images.dtype == np.uint8
        np.testing.assert_array_equal(images[..., 0], arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])
        assert labels.dtype == np.int64
    images[0, 0, 0, 0] = 7   # writable: callers may normalise in place


def test_search_order_root_then_env_then_data_dir(tmp_path, monkeypatch):
    in_root = write_mnist_like(tmp_path / "explicit", gz=True, seed=1)["train"][0]
    in_env = write_mnist_like(tmp_path / "env" / "fashion_mnist", gz=False, seed=2)["train"][0]
    in_data = write_mnist_like(tmp_path / "data" / "fashion_mnist", gz=True, seed=3)["train"][0]
    got = ds.load_dataset("fashion_mnist", root=tmp_path / "explicit")[..., 0]
    np.testing.assert_array_equal(got, in_root)
    monkeypatch.setenv(ds.DATA_ENV, str(tmp_path / "env"))
    np.testing.assert_array_equal(ds.load_dataset("fashion_mnist")[..., 0], in_env)
    monkeypatch.delenv(ds.DATA_ENV)
    np.testing.assert_array_equal(ds.load_dataset("fashion_mnist")[..., 0], in_data)


def test_torchvision_layout_is_found(tmp_path):
    arrays = write_mnist_like(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    got = ds.load_dataset("fashion_mnist", root=tmp_path / "tv", split="test")
    np.testing.assert_array_equal(got[..., 0], arrays["test"][0])


def test_missing_files_error_lists_places_and_names(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.DATA_ENV, str(tmp_path / "envroot"))
    with pytest.raises(FileNotFoundError) as err:
        ds.load_dataset("mnist", root=tmp_path / "nowhere", split="test")
    message = str(err.value)
    for expected in [str(tmp_path / "nowhere"), str(tmp_path / "envroot" / "mnist"),
                     str(tmp_path / "data" / "mnist"), "t10k-images-idx3-ubyte.gz", "http"]:
        assert expected in message, expected


def test_corrupt_idx_is_refused(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x08\x03\x00\x00" + bytes(10))
    with pytest.raises(ValueError, match="magic"):
        ds.load_dataset("mnist", root=folder)
    # right header, truncated data
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 28, 28)
    (folder / "train-images-idx3-ubyte").write_bytes(header + bytes(28 * 28))
    with pytest.raises(ValueError, match="data bytes"):
        ds.load_dataset("mnist", root=folder)


# ---- CIFAR-10 ---------------------------------------------------------------------------------

def cifar_rows(images_nhwc: np.ndarray) -> np.ndarray:
    """The CIFAR row layout from its description: 1024 red, 1024 green, 1024 blue bytes."""
    return np.concatenate([images_nhwc[..., c].reshape(len(images_nhwc), -1) for c in range(3)], axis=1)


def write_cifar(folder: Path, per_batch=2, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {"train": [], "test": []}
    for split, names in ds.CIFAR_FILES.items():
        for name in names:
            images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, per_batch)]
            batch = {b"batch_label": name.encode(), b"labels": labels,
                     b"data": cifar_rows(images), b"filenames": [b"x.png"] * per_batch}
            with open(folder / name, "wb") as f:
                pickle.dump(batch, f, protocol=2)
            written[split].append((images, labels))
    return {k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in written.items()}


def test_cifar_batches_read_back_exactly(tmp_path):
    written = write_cifar(tmp_path / "c" / ds.CIFAR_DIR)
    for split in ("train", "test"):
        images = ds.load_dataset("cifar10", root=tmp_path / "c", split=split)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(ds.load_labels("cifar10", root=tmp_path / "c", split=split),
                                      written[split][1])
    assert ds.load_dataset("cifar10", root=tmp_path / "c").shape == (10, 32, 32, 3)
    # root may also be the cifar-10-batches-py folder itself
    assert ds.load_dataset("cifar10", root=tmp_path / "c" / ds.CIFAR_DIR, split="test").shape == (2, 32, 32, 3)


def test_cifar_read_from_the_downloaded_tarball(tmp_path):
    written = write_cifar(tmp_path / "src" / ds.CIFAR_DIR)
    (tmp_path / "dl").mkdir()
    with tarfile.open(tmp_path / "dl" / ds.CIFAR_ARCHIVE, "w:gz") as tar:
        tar.add(tmp_path / "src" / ds.CIFAR_DIR, arcname=ds.CIFAR_DIR)
    np.testing.assert_array_equal(ds.load_dataset("cifar10", root=tmp_path / "dl", split="test"),
                                  written["test"][0])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    folder = tmp_path / ds.CIFAR_DIR
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        ds.load_dataset("cifar10", root=tmp_path, split="test")
    assert not (tmp_path / "pwned").exists()


# ---- image folder -----------------------------------------------------------------------------

def test_folder_resize_and_centre_crop(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    wide = np.zeros((20, 40, 3), np.uint8)     # H=20, W=40: the centre 20x20 is white
    wide[:, 10:30] = 255
    Image.fromarray(wide).save(folder / "a.png")
    tall = np.zeros((60, 30, 3), np.uint8)     # H=60, W=30: the centre 30x30 is red
    tall[15:45, :, 0] = 255
    Image.fromarray(tall).save(folder / "sub" / "b.jpg", quality=100)
    images = ds.load_dataset("folder", root=folder, image_size=10)
    assert images.shape == (2, 10, 10, 3) and images.dtype == np.uint8
    # only the centre kept; the outer pixel ring is blended with the cut-off part by the resize
    assert images[0, 1:-1, 1:-1].min() >= 250 and images[0].mean() > 240
    assert images[1, 1:-1, :, 0].min() >= 240 and images[1, 1:-1, :, 1:].max() <= 15
    gray = ds.load_dataset("folder", root=folder, image_size=10, channels=1)
    assert gray.shape == (2, 10, 10, 1)


def test_folder_splits_and_errors(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / "f" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(tmp_path / "f" / split / f"{i}.png")
    assert ds.load_dataset("folder", root=tmp_path / "f", split="test").shape == (2, 8, 8, 3)
    assert ds.load_dataset("folder", root=tmp_path / "f").shape == (3, 8, 8, 3)
    with pytest.raises(FileNotFoundError, match="test/"):
        ds.load_dataset("folder", root=tmp_path / "f" / "train", split="test")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "f" / "train" / "odd.png")
    with pytest.raises(ValueError, match="image_size"):
        ds.load_dataset("folder", root=tmp_path / "f")


# ---- helpers ----------------------------------------------------------------------------------

def test_model_range_round_trip_and_layout():
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    images[0, 0, 0] = (0, 255, 128)
    x = ds.to_model_range(images)
    assert x.shape == (3, 3, 5, 4) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(ds.from_model_range(x), images)
    clipped = ds.from_model_range(np.array([[[[-3.0, 3.0, 0.0]]]], np.float32))
    np.testing.assert_array_equal(clipped[0, 0, :, 0], [0, 255, 128])
    with pytest.raises(ValueError):
        ds.to_model_range(x)              # floats are not images in [0, 255]
    with pytest.raises(ValueError):
        ds.from_model_range(images)


def test_random_hflip():
    images = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3, 1)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(ds.random_hflip(images, rng, p=1.0), images[:, :, ::-1])
    np.testing.assert_array_equal(ds.random_hflip(images, rng, p=0.0), images)
    many = np.repeat(images[:1], 200, axis=0)
    flipped = ds.random_hflip(many, rng, p=0.5)
    n_flipped = int((flipped != many).any(axis=(1, 2, 3)).sum())
    assert 60 < n_flipped < 140
    nchw = images.transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(ds.random_hflip(nchw, rng, p=1.0, layout="NCHW"), nchw[..., ::-1])


def test_train_val_split_is_a_seeded_partition():
    images = np.arange(20)[:, None, None, None].astype(np.uint8)
    labels = np.arange(20) * 10
    train, val, train_labels, val_labels = ds.train_val_split(images, 0.25, seed=1, labels=labels)
    assert len(train) == 15 and len(val) == 5
    assert sorted(train.ravel().tolist() + val.ravel().tolist()) == list(range(20))
    np.testing.assert_array_equal(train_labels, train.ravel() * 10)
    again = ds.train_val_split(images, 0.25, seed=1)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(ds.train_val_split(images, 0.25, seed=2)[1], val)
    with pytest.raises(ValueError):
        ds.train_val_split(images, 1.0)


def test_info_synthetic_and_bad_names():
    assert ds.dataset_info("fashion_mnist").image_size == 28
    assert ds.dataset_info("cifar10").channels == 3
    a = ds.load_dataset("synthetic", count=6, image_size=12, seed=3)
    assert a.shape == (6, 12, 12, 1) and a.max() >= 128
    np.testing.assert_array_equal(a, ds.load_dataset("synthetic", count=6, image_size=12, seed=3))
    assert not np.array_equal(a, ds.load_dataset("synthetic", split="test", count=6, image_size=12, seed=3))
    with pytest.raises(ValueError, match="valid"):
        ds.load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        ds.load_dataset("mnist", split="val")


@pytest.mark.skipif(not (FMNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_system_location():
    train = ds.load_dataset("fashion_mnist", split="train")
    test = ds.load_dataset("fashion_mnist", split="test")
    labels = ds.load_labels("fashion_mnist", split="test")
    assert train.shape == (60000, 28, 28, 1) and train.dtype == np.uint8
    assert test.shape == (10000, 28, 28, 1)
    assert sorted(np.unique(labels).tolist()) == list(range(10))
    assert np.bincount(labels).tolist() == [1000] * 10
    assert 50 < train.mean() < 100     # garments on black: mostly dark, not noise (127.5)


def test_resize_and_channel_conversion_for_file_datasets(tmp_path):
    arrays = write_mnist_like(tmp_path / "m", gz=True)
    rgb16 = ds.load_dataset("mnist", root=tmp_path / "m", image_size=16, channels=3)
    assert rgb16.shape == (5, 16, 16, 3) and rgb16.dtype == np.uint8
    np.testing.assert_array_equal(rgb16[..., 0], rgb16[..., 2])     # gray replicated
    as_stored = ds.load_dataset("mnist", root=tmp_path / "m", image_size=28, channels=1)
    np.testing.assert_array_equal(as_stored[..., 0], arrays["train"][0])
    flat = np.full((2, 28, 28, 1), 77, np.uint8)                     # resizing keeps a flat image flat
    assert (ds.conform(flat, 16) == 77).all()
    write_cifar(tmp_path / "c" / ds.CIFAR_DIR)
    gray = ds.load_dataset("cifar10", root=tmp_path / "c", split="test", channels=1)
    assert gray.shape == (2, 32, 32, 1)
    with pytest.raises(ValueError, match="channels"):
        ds.load_dataset("cifar10", root=tmp_path / "c", channels=2)


def test_synthetic_images_take_any_channel_count():
    """A latent-space model (the DiT's 32x32x4) trains on synthetic 'latents'."""
    x = ds.load_dataset("synthetic", None, "train", image_size=8, channels=4, count=3)
    assert x.shape == (3, 8, 8, 4) and x.dtype == np.uint8 and x.max() > 0
    with pytest.raises(ValueError, match="channels=0 is invalid; valid: a positive integer"):
        ds.load_dataset("synthetic", None, "train", image_size=8, channels=0, count=3)
