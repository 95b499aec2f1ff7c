"""The DiT family (docs/DIT.md): spec and presets, the canonical weights and their init,
analytical FLOPs against torch's counter, parameter counts at the paper's configurations,
PyTorch and Jittor against each other at the UNet's tolerances (training, sampling,
classifier-free guidance), and diffusers' DiTTransformer2DModel as an independent model.

Tiny sizes throughout: the whole file runs in under a minute on 2 cores with Jittor's kernel
cache warm (a cold cache compiles the DiT's kernels once, a few minutes).
"""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models.common.dit_spec import PRESETS, DiTSpec, dit_preset, dit_spec_from_dict
from models.common.dit_weights import (FIXED, count_dit_params, dit_param_shapes,
                                       dit_time_frequencies, init_dit_weights)
from models.common.flops import forward_flops, train_step_flops
from models.common.weights import check_weights, count_params
from models.parity import (TINY_DIFFUSION, TINY_DIT, TINY_OPTIM, check, inert_gradients_are_zero,
                           rel_error, tolerance)
from tests.conftest import REPO

SEED = int.from_bytes(os.urandom(4), "little")
# The paper's ImageNet 256x256 models: 32x32x4 latents, 1000 classes + the null class (label
# dropout 0.1), learned sigma (8 output channels), as the reference's DiT_*(...) builds them.
PAPER = {"image_size": 32, "in_channels": 4, "num_classes": 1000, "class_dropout": 0.1,
         "learn_sigma": True}


# ------------------------------------------------------------------ spec and presets

def test_presets_are_the_papers_table():
    assert {"DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2", "DiT-XL/8", "DiT-T/2"} <= set(PRESETS)
    s = dit_preset("DiT-XL/2")
    assert (s.hidden_size, s.depth, s.num_heads, s.patch_size) == (1152, 28, 16, 2)
    assert dit_preset("DiT-S/4").patch_size == 4 and dit_preset("DiT-B/8").num_heads == 12
    assert dit_preset("DiT-T/2", num_classes=0, class_dropout=0).num_embeddings == 0
    assert dit_spec_from_dict({"preset": "DiT-L/2", "image_size": 16}) == dit_preset(
        "DiT-L/2", image_size=16)
    assert DiTSpec(**TINY_DIT.to_dict()) == TINY_DIT
    assert DiTSpec().out_channels == 4 and DiTSpec(learn_sigma=True).out_channels == 8


@pytest.mark.parametrize("kwargs, key, says", [
    ({"hidden_size": 100, "num_heads": 3}, "hidden_size", "divisible by num_heads=3"),
    ({"hidden_size": 6, "num_heads": 3}, "hidden_size", "divisible by 4"),
    ({"image_size": 30, "patch_size": 4}, "image_size", "divisible by patch_size=4"),
    ({"num_classes": -1}, "num_classes", ">= 0"),
    ({"num_classes": 0}, "class_dropout", "unconditional"),
    ({"class_dropout": 1.0}, "class_dropout", "[0, 1)"),
    ({"freq_shift": 128}, "freq_shift", "diffusers"),
    ({"learn_sigma": 1}, "learn_sigma", "true or false"),
    ({"depth": 0}, "depth", "positive integer"),
])
def test_invalid_specs_name_the_key_and_what_is_valid(kwargs, key, says):
    with pytest.raises(ValueError, match=f"DiTSpec.{key}=") as err:
        DiTSpec(**kwargs)
    assert says in str(err.value)


def test_unknown_preset_and_keys_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"preset='DiT-M/2' is invalid: one of \[.*DiT-XL/2"):
        dit_preset("DiT-M/2")
    with pytest.raises(ValueError, match="fixes"):
        dit_preset("DiT-S/2", depth=3)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['heads'\]; valid keys"):
        dit_spec_from_dict({"preset": "DiT-S/2", "heads": 3})


# ------------------------------------------------------------------ canonical weights

@pytest.mark.parametrize("name, params", [("DiT-S/2", 32_963_360), ("DiT-XL/2", 675_129_632)])
def test_paper_parameter_counts(name, params):
    """The reference's counts (sum over model.parameters(), pos_embed included), from the
    canonical shapes alone: no model is built."""
    spec = dit_preset(name, **PAPER)
    assert count_dit_params(spec) == params
    assert count_dit_params(spec, trainable_only=True) == params - 256 * spec.hidden_size


def test_b_and_l_counts_are_the_papers_rounded_figures():
    # Peebles & Xie, Table 1: DiT-B 130M and DiT-L 458M parameters (truncated)
    assert count_dit_params(dit_preset("DiT-B/2", **PAPER)) // 10 ** 6 == 130
    assert count_dit_params(dit_preset("DiT-L/2", **PAPER)) // 10 ** 6 == 458


def test_the_shared_weight_helpers_take_a_dit_spec():
    spec = dit_preset("DiT-XL/2", **PAPER)
    assert count_params(spec) == 675_129_632
    small = dit_preset("DiT-T/2", image_size=8)
    w = init_dit_weights(small)
    check_weights(small, w)
    del w["pos_embed"]
    with pytest.raises(ValueError, match=r"do not match the DiT spec: missing \['pos_embed'\]"):
        check_weights(small, w)


@pytest.mark.parametrize("name, gflops", [("DiT-S/2", 6.06), ("DiT-B/2", 23.01),
                                          ("DiT-L/2", 80.71), ("DiT-XL/2", 118.64),
                                          ("DiT-XL/4", 29.05), ("DiT-XL/8", 7.39)])
def test_forward_flops_are_the_papers_gflops(name, gflops):
    """Peebles & Xie, Table 4: Gflops of one 256x256 image, one multiply-add counted once:
    half our FLOPs (we count 2 per multiply-add, as torch does)."""
    spec = dit_preset(name, **PAPER)
    assert forward_flops(spec, 1)["total"] / 2e9 == pytest.approx(gflops, rel=1e-3)


def test_names_follow_the_reference_state_dict():
    shapes = dit_param_shapes(dit_preset("DiT-T/2", **PAPER))
    names = list(shapes)
    assert names[:4] == ["pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias",
                         "t_embedder.mlp.0.weight"]
    assert shapes["y_embedder.embedding_table.weight"] == (1001, 64)
    assert shapes["blocks.1.attn.qkv.weight"] == (192, 64)
    assert shapes["blocks.1.adaLN_modulation.1.weight"] == (384, 64)
    assert shapes["final_layer.linear.weight"] == (2 * 2 * 8, 64)
    assert names[-1] == "final_layer.adaLN_modulation.1.bias"
    unconditional = dit_param_shapes(dit_preset("DiT-T/2", num_classes=0, class_dropout=0))
    assert not any(n.startswith("y_embedder") for n in unconditional)
    # no null row without label dropout, as in the reference
    assert dit_param_shapes(dit_preset("DiT-T/2", class_dropout=0))[
        "y_embedder.embedding_table.weight"] == (1000, 64)


def reference_pos_embed(embed_dim, grid_size):
    """facebookresearch/DiT models.py get_2d_sincos_pos_embed (from MAE), transcribed."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64)
        omega /= dim / 2.0
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])],
                          axis=1)


def test_init_follows_the_reference_initialize_weights():
    spec = dit_preset("DiT-T/2", image_size=16, in_channels=4, num_classes=10)
    w = init_dit_weights(spec, seed=3)
    check_weights(spec, w)
    assert all(v.dtype == np.float32 for v in w.values())
    np.testing.assert_allclose(w["pos_embed"][0], reference_pos_embed(64, 8), atol=1e-7)
    for name, v in w.items():
        if ".adaLN_modulation." in name or name.startswith("final_layer.linear."):
            assert not v.any(), f"{name} must start at zero (adaLN-Zero)"
        elif name.endswith(".bias") and name != "x_embedder.proj.bias":
            assert not v.any(), f"{name}: Linear biases start at zero"
    for name in ("t_embedder.mlp.0.weight", "t_embedder.mlp.2.weight",
                 "y_embedder.embedding_table.weight"):
        assert w[name].std() == pytest.approx(0.02, rel=0.15), name
    qkv = w["blocks.0.attn.qkv.weight"]  # xavier_uniform: U(+-sqrt(6 / (fan_in + fan_out)))
    bound = np.sqrt(6 / (64 + 192))
    assert np.abs(qkv).max() <= bound and qkv.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
    conv = w["x_embedder.proj.weight"]  # xavier on the (hidden, C*p*p) view
    assert np.abs(conv).max() <= np.sqrt(6 / (16 + 64)) and conv.std() > 0.8 * np.sqrt(2 / 80)
    assert 0 < np.abs(w["x_embedder.proj.bias"]).max() <= 1 / np.sqrt(16)  # torch's default
    again, other = init_dit_weights(spec, seed=3), init_dit_weights(spec, seed=4)
    assert all(np.array_equal(w[k], again[k]) for k in w)
    assert not np.array_equal(w["blocks.0.mlp.fc1.weight"], other["blocks.0.mlp.fc1.weight"])
    random = init_dit_weights(spec, seed=3, scheme="random")
    assert all(random[k].any() for k in random), "the parity init leaves no tensor at zero"
    assert np.array_equal(random["pos_embed"], w["pos_embed"]) and FIXED == ("pos_embed",)


def test_timestep_frequencies_reference_and_diffusers():
    half = np.arange(128)
    np.testing.assert_allclose(dit_time_frequencies(0), np.exp(-np.log(10000) * half / 128),
                               rtol=1e-6)
    np.testing.assert_allclose(dit_time_frequencies(1), np.exp(-np.log(10000) * half / 127),
                               rtol=1e-6)


# ------------------------------------------------------------------ the torch model, in process

def _torch_dit(spec, seed=0, scheme="random"):
    import torch

    from models.pt.dit import DiT

    model = DiT(spec)
    weights = init_dit_weights(spec, seed=seed, scheme=scheme)
    with torch.no_grad():
        for name, p in model.state_dict(keep_vars=True).items():
            p.copy_(torch.from_numpy(weights[name]))
    return model, weights


@pytest.mark.parametrize("spec", [
    dit_preset("DiT-T/2", image_size=8, in_channels=3, num_classes=10),
    dit_preset("DiT-T/4", image_size=16, in_channels=4, num_classes=0, class_dropout=0,
               learn_sigma=True, mlp_ratio=2.0),
], ids=["conditional", "unconditional-learn-sigma"])
def test_flops_match_torch_flop_counter(spec):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = _torch_dit(spec)
    batch = 3
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size)
    t = torch.randint(0, 1000, (batch,))
    y = {"y": torch.randint(0, spec.num_classes, (batch,))} if spec.num_classes else {}
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x, t, **y)
    with FlopCounterMode(display=False) as step:
        model(x, t, **y).pow(2).mean().backward()
    assert forward_flops(spec, batch)["total"] == fwd.get_total_flops()
    assert train_step_flops(spec, batch) == step.get_total_flops()


def test_guidance_is_the_conditional_and_unconditional_mix():
    import torch

    spec = TINY_DIT
    model, _ = _torch_dit(spec, seed=SEED)
    model.eval()
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(4, spec.in_channels, spec.image_size, spec.image_size, generator=g)
    t, y = torch.tensor([3, 50, 70, 99]), torch.tensor([0, 3, 9, 3])
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, spec.num_classes))
        for s in (0.0, 1.0, 4.0):
            want = uncond + s * (cond - uncond)
            got = model(x, t, y, cfg_scale=s)
            assert rel_error(got.numpy(), want.numpy()) < 1e-5, f"cfg_scale={s}"
        # forward_with_cfg: the reference's 2B-row call, both halves the guided output
        both = model.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]),
                                      torch.cat([y, torch.full_like(y, 10)]), 4.0)
        assert torch.equal(both[:4], both[4:])
        # explicit label dropout = the null class; training without it draws its own
        dropped = model(x, t, y, drop_ids=torch.tensor([True, False, True, False]))
        assert torch.allclose(dropped[0], uncond[0]) and torch.allclose(dropped[1], cond[1])


def test_backend_trains_and_samples_a_learn_sigma_dit_with_labels():
    """The backend's DiT paths in one framework: learned-sigma outputs cut to the noise
    prediction, labels with random dropout in training, guided sampling, unconditional."""
    from models.common.diffusion import sampler_plan
    from models.pt.backend import TorchBackend

    spec = dit_preset("DiT-T/2", image_size=8, in_channels=2, num_classes=5, learn_sigma=True)
    be = TorchBackend(spec, TINY_DIFFUSION, TINY_OPTIM, device="cpu", seed=SEED)
    be.load_weights(init_dit_weights(spec, seed=SEED))
    x0 = be.to_device(np.random.default_rng(SEED).uniform(-1, 1, (4, 2, 8, 8)))
    y = np.array([0, 1, 4, 2])
    losses = [be.loss_value(be.train_step(x0, np.array([5, 50, 90, 10]), y=y)) for _ in range(2)]
    assert np.isfinite(losses).all()
    assert tuple(be.eps(x0, np.array([1, 2, 3, 4]), y=y).shape) == (4, 2, 8, 8)
    plan = sampler_plan(TINY_DIFFUSION, "ddim", steps=3, eta=0.0)
    out = be.to_numpy(be.sample(x0, plan, y=y, cfg_scale=2.0))
    assert out.shape == (4, 2, 8, 8) and np.isfinite(out).all()
    exported = be.export_weights()
    assert list(exported) == list(dit_param_shapes(spec))
    assert np.array_equal(exported["pos_embed"], init_dit_weights(spec)["pos_embed"])
    with pytest.raises(ValueError, match="pass labels y"):
        be.eps(x0, np.array([1, 2, 3, 4]))
    plain = TorchBackend(dit_preset("DiT-T/2", image_size=8, in_channels=2, num_classes=0,
                                    class_dropout=0), TINY_DIFFUSION, TINY_OPTIM, device="cpu")
    assert np.isfinite(plain.loss_value(plain.train_step(x0, np.array([1, 2, 3, 4]))))
    with pytest.raises(ValueError, match="class-conditional DiT"):
        plain.eps(x0, np.array([1, 2, 3, 4]), y=y)


# ------------------------------------------------------------------ diffusers, independently

def _to_diffusers(weights, spec):
    """Our canonical weights as diffusers' DiTTransformer2DModel state dict. diffusers keeps
    a timestep and label embedder (and the adaLN linear) inside every block's norm1: each
    gets our one embedder; its q, k, v are three Linears where ours is one qkv."""
    D, out = spec.hidden_size, {}
    out["pos_embed.proj.weight"] = weights["x_embedder.proj.weight"]
    out["pos_embed.proj.bias"] = weights["x_embedder.proj.bias"]
    for i in range(spec.depth):
        d, o = f"transformer_blocks.{i}.", f"blocks.{i}."
        emb = d + "norm1.emb."
        for ours, theirs in (("t_embedder.mlp.0", "timestep_embedder.linear_1"),
                             ("t_embedder.mlp.2", "timestep_embedder.linear_2")):
            out[f"{emb}{theirs}.weight"] = weights[f"{ours}.weight"]
            out[f"{emb}{theirs}.bias"] = weights[f"{ours}.bias"]
        out[emb + "class_embedder.embedding_table.weight"] = weights[
            "y_embedder.embedding_table.weight"]
        pairs = (("adaLN_modulation.1", "norm1.linear"), ("attn.proj", "attn1.to_out.0"),
                 ("mlp.fc1", "ff.net.0.proj"), ("mlp.fc2", "ff.net.2"))
        for ours, theirs in pairs:
            for p in ("weight", "bias"):
                out[f"{d}{theirs}.{p}"] = weights[f"{o}{ours}.{p}"]
        for j, name in enumerate(("to_q", "to_k", "to_v")):
            for p in ("weight", "bias"):
                out[f"{d}attn1.{name}.{p}"] = weights[f"{o}attn.qkv.{p}"][j * D:(j + 1) * D]
    for ours, theirs in (("final_layer.adaLN_modulation.1", "proj_out_1"),
                         ("final_layer.linear", "proj_out_2")):
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = weights[f"{ours}.{p}"]
    return out


def test_diffusers_dit_gives_the_same_output():
    diffusers = pytest.importorskip(
        "diffusers", reason="diffusers is not installed: the cross-check against its "
        "DiTTransformer2DModel needs it (pip install diffusers)")
    import torch

    # diffusers' sinusoids divide by half - 1 (downscale_freq_shift=1): our freq_shift=1
    spec = dit_preset("DiT-T/2", image_size=8, in_channels=4, num_classes=10,
                      class_dropout=0.1, learn_sigma=True, freq_shift=1)
    ours, weights = _torch_dit(spec, seed=SEED)
    theirs = diffusers.DiTTransformer2DModel(
        num_attention_heads=spec.num_heads, attention_head_dim=spec.head_dim,
        in_channels=spec.in_channels, out_channels=spec.out_channels, num_layers=spec.depth,
        sample_size=spec.image_size, patch_size=spec.patch_size,
        num_embeds_ada_norm=spec.num_classes, norm_eps=1e-6)  # the reference's LayerNorm eps
    # their position table is computed, not loaded: it must already be ours
    np.testing.assert_allclose(theirs.pos_embed.pos_embed.numpy(), weights["pos_embed"],
                               atol=1e-6)
    missing, unexpected = theirs.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
         _to_diffusers(weights, spec).items()}, strict=True)
    assert not missing and not unexpected
    ours.eval(), theirs.eval()
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(4, spec.in_channels, spec.image_size, spec.image_size, generator=g)
    t, y = torch.tensor([0, 17, 500, 999]), torch.tensor([1, 10, 4, 9])  # 10: the null class
    with torch.no_grad():
        want = theirs(x, timestep=t, class_labels=y).sample
        got = ours(x, t, y)
    err = rel_error(got.numpy(), want.numpy())
    print(f"diffusers {diffusers.__version__}: relative error {err:.2e}")
    assert err <= 1e-5
    # the frequency shift is what bridges the two: the reference's (0) is far off
    reference, _ = _torch_dit(dataclasses.replace(spec, freq_shift=0), seed=SEED)
    with torch.no_grad():
        assert rel_error(reference.eval()(x, t, y).numpy(), want.numpy()) > 1e-2


# ------------------------------------------------------------------ both frameworks

PARITY_FRAMEWORKS = ("torch", "jittor", "jax")   # each compared with the first


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    return check(PARITY_FRAMEWORKS, seed=SEED, workdir=str(
        tmp_path_factory.mktemp("dit-parity")), specs=(TINY_DIT, TINY_DIFFUSION, TINY_OPTIM))


CATEGORIES = ["forward", "loss", "grad", "params_after_steps", "ddim_eta0", "ddim_eta1", "ddpm",
              "ddim_cfg"]


@pytest.mark.process
@pytest.mark.parametrize("framework", PARITY_FRAMEWORKS[1:])
@pytest.mark.parametrize("category", CATEGORIES)
def test_framework_matches_torch(parity, category, framework):
    err, key = parity[1][framework][category]
    print(f"{framework} {category}: {err:.3e} at {key}")
    assert err <= tolerance(category), (
        f"seed {SEED}: {framework} {category} relative error {err:.3e} > "
        f"{tolerance(category):g} at {key}")


@pytest.mark.process
def test_every_gradient_and_weight_is_compared(parity):
    outs, errors = parity
    trainable = {k: v for k, v in dit_param_shapes(TINY_DIT).items() if k not in FIXED}
    for fw in PARITY_FRAMEWORKS:
        out = outs[fw]
        assert float(out["roundtrip_max_abs_diff"]) == 0.0
        assert {k[5:]: v.shape for k, v in out.items() if k.startswith("grad.")} == trainable
        exported = {k[len("params_after_steps."):]: v.shape for k, v in out.items()
                    if k.startswith("params_after_steps.")}
        assert exported == dict(dit_param_shapes(TINY_DIT)), f"{fw}: names or shapes"
        assert inert_gradients_are_zero(out), f"{fw}: attention key-bias gradient not ~0"
        # the fixed table is never trained
        assert np.array_equal(out["params_after_steps.pos_embed"], out["ema_after_steps.pos_embed"])
        # the null class's row was trained (a dropped label in the first batch)
        assert np.abs(out["grad.y_embedder.embedding_table.weight"][-1]).max() > 0
    assert len(set(np.round(outs["torch"]["train_losses"], 7))) == 3
    assert all(errors[fw]["grad"][0] > 0 for fw in PARITY_FRAMEWORKS[1:])


@pytest.mark.process
@pytest.mark.parametrize("framework", ["jittor", "jax"])
def test_framework_runs_an_unconditional_learn_sigma_dit(framework):
    spec = dit_preset("DiT-T/4", image_size=8, in_channels=1, num_classes=0, class_dropout=0,
                      learn_sigma=True)
    proc = subprocess.run([sys.executable, "-m", "models.parity", "describe", "--framework",
                           framework, "--dit", json.dumps(spec.to_dict()), "--forward"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["forward_shape"] == [1, 1, 8, 8]  # the noise part of the 2 output channels
    assert info["shapes"] == {k: list(v) for k, v in dit_param_shapes(spec).items()}
