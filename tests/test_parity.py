"""PyTorch, Jittor and JAX run the same model: identical names/shapes, and identical numbers on
fresh random weights and inputs (a new seed every run; it is printed on failure).

Each framework runs in its own process (models/parity.py). Error = ||a - b|| / ||b||.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models.common.specs import UNetSpec
from models.common.weights import param_shapes
from tests.conftest import REPO
from models.parity import TOLERANCES, check, inert_gradients_are_zero

SEED = int.from_bytes(os.urandom(4), "little")
FRAMEWORKS = ["torch", "jittor", "jax"]
OTHERS = FRAMEWORKS[1:]  # each compared with torch


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    return check(FRAMEWORKS, seed=SEED, workdir=str(tmp_path_factory.mktemp("parity")))


@pytest.mark.parametrize("framework", OTHERS)
@pytest.mark.parametrize("category", sorted(TOLERANCES))
def test_framework_matches_torch(parity, category, framework):
    err, key = parity[1][framework][category]
    assert err <= TOLERANCES[category], (
        f"seed {SEED}: {framework} {category} relative error {err:.3e} > "
        f"{TOLERANCES[category]:g} at {key}")


def test_every_parameter_gradient_and_update_is_compared(parity):
    outs, errors = parity
    names = [k for k in outs["torch"] if k.startswith("grad.")]
    assert len(names) == len(param_shapes(UNetSpec(**json_spec()))), "a gradient is missing"
    for fw in OTHERS:
        assert sorted(k for k in outs[fw] if k.startswith("grad.")) == sorted(names)
        # a real comparison happened, not two copies of one array
        assert errors[fw]["grad"][0] > 0
    for fw in FRAMEWORKS:
        assert inert_gradients_are_zero(outs[fw]), f"{fw}: attention key-bias gradient not ~0"


def test_weights_round_trip_exactly_and_training_moves_them(parity):
    outs, _ = parity
    for fw in FRAMEWORKS:
        assert float(outs[fw]["roundtrip_max_abs_diff"]) == 0.0
    # the three steps see different batches and a changing model: three different losses
    assert len(set(np.round(outs["torch"]["train_losses"], 7))) == 3


def json_spec():
    from models.parity import TINY_UNET

    return TINY_UNET.to_dict()


def describe(framework, spec, forward=False):
    cmd = [sys.executable, "-m", "models.parity", "describe", "--framework", framework,
           "--unet", json.dumps(spec.to_dict())] + (["--forward"] if forward else [])
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_paper_config_names_and_shapes_match_the_canonical_list(framework):
    spec = UNetSpec()  # DDPM CIFAR-10: 35.7M parameters
    got = describe(framework, spec)["shapes"]
    want = {k: list(v) for k, v in param_shapes(spec).items()}
    assert got == want
    assert sum(int(np.prod(s)) for s in got.values()) == 35_746_307


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fashion_mnist_sized_model_runs(framework):
    spec = UNetSpec(image_size=28, in_channels=1, base_channels=16, ch_mult=(1, 2, 2),
                    num_res_blocks=1, attn_resolutions=(14,), dropout=0.0, norm_groups=4)
    info = describe(framework, spec, forward=True)
    assert info["forward_shape"] == [1, 1, 28, 28]
    assert info["shapes"] == {k: list(v) for k, v in param_shapes(spec).items()}
