"""`harness.py sample` modes on a tiny trained checkpoint: valid PNGs, GIFs and npz files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from bench.run.config import load_config
from bench.tasks.train import cell_dir, run_training
from tests.conftest import REPO
from tests.test_train import TINY



@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    cfg_path = d / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(dict(TINY, train=dict(TINY["train"], sample_every=None))))
    cfg = load_config(str(cfg_path))
    run = str(d / "run")
    assert run_training(cfg, run, ["torch"], 2) == {"torch": 0}
    return os.path.join(cell_dir(run, "torch"), "checkpoints")


def sample(ckpt, out, *args):
    proc = subprocess.run([sys.executable, "-m", "bench.tasks.sample", ckpt, "--out", str(out),
                           "--steps", "5", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def test_sample_mode_writes_grid_and_uint8_npz(ckpt, tmp_path):
    m = sample(ckpt, tmp_path, "--mode", "sample", "--num", "6", "--batch-size", "4")
    images = np.load(tmp_path / "samples.npz")["images"]
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.uint8
    with Image.open(tmp_path / "grid.png") as im:
        im.verify()
    assert m["steps"] == 5 and m["framework"] == "torch"


def test_denoise_mode_writes_an_animated_gif(ckpt, tmp_path):
    m = sample(ckpt, tmp_path, "--mode", "denoise", "--num", "4", "--frames", "4",
               "--sampler", "ddpm", "--steps", "10")
    with Image.open(tmp_path / "denoise.gif") as im:
        assert im.is_animated and im.n_frames >= 2
    assert m["frames_at_steps"][0] == 0 and m["frames_at_steps"][-1] == 10


def test_progressive_and_interpolate(ckpt, tmp_path):
    sample(ckpt, tmp_path / "p", "--mode", "progressive", "--num", "2", "--frames", "4")
    with Image.open(tmp_path / "p" / "progressive.png") as im:
        assert im.size[0] > im.size[1]  # steps run left to right
    m = sample(ckpt, tmp_path / "i", "--mode", "interpolate", "--num", "2", "--t-level", "30",
               "--sampler", "ddpm", "--steps", "50")
    assert m["t"] == 30 and len(m["lambdas"]) == 11 and m["dataset"] == "synthetic"
    with Image.open(tmp_path / "i" / "interpolate.png") as im:
        assert im.size[0] > 4 * im.size[1]  # 2 rows of 13 tiles


@pytest.mark.parametrize("framework", ["jittor", "jax"])
def test_checkpoint_samples_in_the_other_framework(ckpt, tmp_path, framework):
    # Canonical weights: a torch-trained checkpoint loads into Jittor and JAX (whose kernels
    # are converted to HWIO), and with DDIM eta=0 from the same x_T they produce the same
    # images as torch (up to rounding to uint8).
    sample(ckpt, tmp_path / "t", "--mode", "sample", "--num", "4")
    m = sample(ckpt, tmp_path / "o", "--mode", "sample", "--num", "4", "--framework", framework)
    assert m["framework"] == framework
    a = np.load(tmp_path / "t" / "samples.npz")["images"].astype(int)
    b = np.load(tmp_path / "o" / "samples.npz")["images"].astype(int)
    assert np.abs(a - b).max() <= 1


def test_missing_checkpoint_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.tasks.sample", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no checkpoint here" in proc.stderr
