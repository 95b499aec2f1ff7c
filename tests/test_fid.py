"""bench/quality/fid.py: input guards (no torch needed) and, with the offline FID Inception present
(tools/get_fid_weights.py), FID(a, a) ~ 0, FID growing with noise, and the reference cache.

Inception at 299x299 costs ~0.1-0.4 s per image on 2 CPU cores, and every FID another ~2-4 s
(the eigenvalues of a 2048 x 2048 matrix, whatever the number of images): 8 images per set, and
the FID(a, a) and noise-ladder metrics are computed once per module (`ladder`) and shared.
"""
import json
import os

import numpy as np
import pytest

from bench.quality import fid
from bench.data.datasets import synthetic_images

# FIDs and KIDs from fixed seeds: deterministic. 8 images keep FID(a, a) ~ 1e-4 and |KID(a, a)|
# ~ 0.03 (4 would bring KID to ~0.04, too near the 0.05 bound), with the noise ladder in order.
NUM_IMAGES = 8
SIGMAS = (0, 10, 40, 80)   # additive Gaussian noise in grey levels


def require_torchscript_inception():
    try:
        return fid.find_torchscript_inception()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must fetch the FID Inception in setup: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def images():
    # learnable-looking shapes, grayscale 28x28 like Fashion-MNIST (exercises the 1 -> 3 channels path)
    return synthetic_images(NUM_IMAGES, image_size=28, channels=1, seed=0)


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fid-stats")


@pytest.fixture(autouse=True)
def no_standard_weights(tmp_path, monkeypatch):
    """Pin the offline path: no torch-fidelity weights file visible, whatever this machine has."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("DIFFBENCH_INCEPTION_WEIGHTS", raising=False)


@pytest.mark.parametrize("bad, error", [
    (np.zeros((4, 28, 28, 1), np.float32), TypeError),          # [-1, 1] or [0, 1] floats: refused
    (np.zeros((4, 28, 28, 1), np.float64), TypeError),
    (np.zeros((4, 1, 28, 28), np.uint8), ValueError),           # NCHW
    (np.zeros((4, 28, 28), np.uint8), ValueError),
    (np.zeros((1, 28, 28, 3), np.uint8), ValueError),
    ([[0]], TypeError),
])
def test_refuses_anything_but_uint8_nhwc(bad, error):
    with pytest.raises(error):
        fid.compute_metrics(bad, reference=np.zeros((4, 28, 28, 1), np.uint8))


def test_float_reference_refused_too(images):
    require_torchscript_inception()
    with pytest.raises(TypeError, match="from_model_range"):
        fid.compute_metrics(images, reference=images.astype(np.float32) / 127.5 - 1, use_cache=False)


def test_cli_exit_2_on_float_input(tmp_path, capsys):
    np.save(tmp_path / "samples.npy", np.zeros((4, 8, 8, 1), np.float32))
    assert fid.main([str(tmp_path / "samples.npy"), "--reference", "synthetic"]) == 2
    assert "uint8" in capsys.readouterr().err


def test_weight_lookup(tmp_path, monkeypatch):
    assert fid.find_standard_weights() is None
    ckpt = tmp_path / "torch-home" / "hub" / "checkpoints" / fid.STANDARD_WEIGHTS_FILE
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    assert fid.find_standard_weights() == ckpt
    with pytest.raises(FileNotFoundError):
        fid.find_standard_weights(tmp_path / "missing.pth")
    monkeypatch.setenv("DIFFBENCH_FID_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="get_fid_weights"):
        fid.find_torchscript_inception()


@pytest.fixture(scope="module")
def ladder(images, stats_dir):
    """FID(a, a) (which computes and caches the reference features), then the noisy sets
    against the same reference (read from the cache): computed once, read by two tests."""
    require_torchscript_inception()
    identical = fid.compute_metrics(images, reference=images, batch_size=NUM_IMAGES,
                                    stats_dir=stats_dir)
    rng = np.random.default_rng(0)
    noisy = []
    for sigma in SIGMAS[1:]:
        im = np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)
        noisy.append(fid.compute_metrics(im, reference=images, batch_size=NUM_IMAGES, isc=False,
                                         stats_dir=stats_dir))
    return identical, noisy


@pytest.mark.slow  # ladder: ~20-40 s of Inception and FIDs, shared with the next test
def test_fid_of_identical_sets_is_zero(ladder):
    m, _ = ladder
    assert abs(m["fid"]) < 1e-3, m
    assert abs(m["kid_mean"]) < 0.05
    assert m["extractor"] == fid.TORCHSCRIPT_EXTRACTOR
    assert m["num_images"] == m["num_reference"] == NUM_IMAGES
    assert m["is_mean"] is None and any("IS needs" in n for n in m["notes"])


@pytest.mark.slow  # ladder
def test_fid_grows_with_noise_and_reference_is_cached(ladder, stats_dir):
    identical, noisy = ladder
    # sigma 0 is FID(a, a) itself: the first computation, which wrote the reference cache
    assert not identical["reference_cache_hit"]
    ladder_metrics = [identical, *noisy]
    fids = [m["fid"] for m in ladder_metrics]
    kids = [m["kid_mean"] for m in ladder_metrics]
    cache_hits = [m["reference_cache_hit"] for m in noisy]
    assert all(b > a for a, b in zip(fids, fids[1:])), fids
    assert abs(fids[0]) < 1e-3 and fids[1] > 1.0
    assert kids[-1] > kids[1]
    assert all(cache_hits), "the reference features should come from the cache"
    assert len(list(stats_dir.glob("*.npz"))) == 1


def test_dataset_reference_resized_and_cached_by_name(images, tmp_path):
    require_torchscript_inception()
    small = synthetic_images(8, image_size=16, channels=1, seed=5)
    first = fid.compute_metrics(small, reference="synthetic:test", num_reference=8, kid=False,
                                stats_dir=tmp_path)
    assert any("resized from 28x28 to 16x16" in n for n in first["notes"])
    assert first["reference"] == "synthetic:test" and not first["reference_cache_hit"]
    (entry,) = tmp_path.glob("*.npz")
    assert entry.name.startswith("synthetic-test-n8-seed0-16x16-diffbench-inception-ts")
    again = fid.compute_metrics(small, reference="synthetic:test", num_reference=8, kid=False,
                                stats_dir=tmp_path)
    assert again["reference_cache_hit"] and again["fid"] == pytest.approx(first["fid"], rel=1e-6)


def test_extractor_grayscale_equals_replicated_rgb(images):
    path = require_torchscript_inception()
    import torch

    fid._register_torchscript_extractor()
    # torch-fidelity's create_feature_extractor, through the per-process cache compute_metrics
    # uses (same key): the network the metric tests above already loaded and ran
    extractor = fid._feature_extractor(fid.TORCHSCRIPT_EXTRACTOR, (fid.POOL3,), False,
                                       {"feature_extractor_weights_path": str(path)})
    gray = torch.from_numpy(images[:2].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        (f_gray,) = extractor(gray)
        (f_rgb,) = extractor(gray.repeat(1, 3, 1, 1))
        with pytest.raises(ValueError, match="uint8"):
            extractor(gray.float())
    assert f_gray.shape == (2, 2048)
    torch.testing.assert_close(f_gray, f_rgb)


def test_cli_prints_one_json_line(tmp_path, capsys, monkeypatch):
    require_torchscript_inception()
    samples = synthetic_images(4, image_size=16, channels=1, seed=9)
    np.savez(tmp_path / "samples.npz", images=samples)
    code = fid.main([str(tmp_path / "samples.npz"), "--reference", "synthetic:test",
                     "--num-reference", "4", "--no-kid", "--stats-dir", str(tmp_path / "stats")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1
    result = json.loads(out[-1])
    assert result["num_images"] == 4 and result["fid"] > 0 and result["kid_mean"] is None
    assert list((tmp_path / "stats").glob("synthetic-test-n4-*.npz"))
