"""UNetSpec / DiffusionSpec / OptimSpec validation and the canonical parameter list."""
import numpy as np
import pytest

from models.common.specs import DiffusionSpec, OptimSpec, UNetSpec, spec_from_dict
from models.common.weights import (check_weights, count_params, init_weights, load_weights,
                                   param_shapes, save_weights)

PAPER_CIFAR10_PARAMS = 35_746_307  # "35.7M" in Ho et al. 2020, table 1 / appendix B


def test_paper_cifar10_config_has_35_7m_parameters():
    assert UNetSpec() == UNetSpec(image_size=32, in_channels=3, base_channels=128,
                                  ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                                  attn_resolutions=(16,), dropout=0.1)
    assert count_params(UNetSpec()) == PAPER_CIFAR10_PARAMS


@pytest.mark.parametrize("kwargs, field, hint", [
    (dict(attn_resolutions=(3,)), "attn_resolutions", "never reached"),
    (dict(image_size=28), "image_size", "divisible by 2^(levels-1) = 8"),
    (dict(ch_mult=()), "ch_mult", "non-empty"),
    (dict(norm_groups=48), "norm_groups", "must divide"),
    (dict(dropout=1.5), "dropout", "[0, 1)"),
    (dict(base_channels=0), "base_channels", "positive integer"),
])
def test_invalid_unet_spec_names_the_field(kwargs, field, hint):
    with pytest.raises(ValueError) as e:
        UNetSpec(**kwargs)
    assert field in str(e.value) and hint in str(e.value)


@pytest.mark.parametrize("kwargs, field, hint", [
    (dict(beta_schedule="sigmoid"), "beta_schedule", "'linear', 'cosine', 'quadratic'"),
    (dict(loss="l3"), "loss", "'huber'"),
    (dict(variance="learned"), "variance", "fixed_small"),
    (dict(timesteps=1), "timesteps", ">= 2"),
    (dict(beta_start=0.5, beta_end=0.1), "beta_start/beta_end", "beta_start <= beta_end"),
    (dict(clip_x0="yes"), "clip_x0", "true or false"),
])
def test_invalid_diffusion_spec_names_the_field(kwargs, field, hint):
    with pytest.raises(ValueError) as e:
        DiffusionSpec(**kwargs)
    assert field in str(e.value) and hint in str(e.value)


def test_spec_from_dict_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['chmult'\].*'ch_mult'"):
        spec_from_dict(UNetSpec, {"chmult": [1, 2]}, where="model")
    assert spec_from_dict(UNetSpec, {"ch_mult": [1, 2], "attn_resolutions": [16]}).ch_mult == (1, 2)


def test_fashion_mnist_shape_is_valid_with_three_levels():
    spec = UNetSpec(image_size=28, in_channels=1, base_channels=32, ch_mult=(1, 2, 2),
                    attn_resolutions=(14,), norm_groups=8)
    assert spec.resolutions() == [28, 14, 7]
    shapes = param_shapes(spec)
    assert shapes["conv_in.weight"] == (32, 1, 3, 3) and shapes["conv_out.weight"] == (1, 32, 3, 3)


def test_warmup_is_linear_then_constant():
    o = OptimSpec(lr=2e-4, warmup_steps=4)
    assert [o.lr_at(s) for s in (1, 2, 4, 10)] == pytest.approx([5e-5, 1e-4, 2e-4, 2e-4])
    assert OptimSpec(warmup_steps=0).lr_at(1) == OptimSpec().lr


def test_init_is_seeded_and_follows_the_ddpm_scheme():
    spec = UNetSpec(image_size=8, base_channels=8, ch_mult=(1, 2), num_res_blocks=1,
                    attn_resolutions=(4,), norm_groups=4)
    a, b = init_weights(spec, seed=1), init_weights(spec, seed=1)
    c = init_weights(spec, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv_in.weight"], c["conv_in.weight"])
    assert np.abs(a["conv_out.weight"]).max() < 1e-4  # near-zero output layer (DDPM init)
    assert np.all(a["norm_out.weight"] == 1) and np.all(a["conv_in.bias"] == 0)
    r = init_weights(spec, seed=1, scheme="random")
    assert np.abs(r["conv_in.bias"]).max() > 0  # "random" leaves no zero a mismatch could hide in


@pytest.mark.parametrize("ext", ["safetensors", "npz"])
def test_weight_files_round_trip_without_pickle(tmp_path, ext):
    spec = UNetSpec(image_size=8, base_channels=8, ch_mult=(1, 2), num_res_blocks=1,
                    attn_resolutions=(4,), norm_groups=4)
    w = init_weights(spec, seed=3, scheme="random")
    path = tmp_path / f"w.{ext}"
    save_weights(path, w, metadata={"spec": spec.to_dict()} if ext == "safetensors" else None)
    back, meta = load_weights(path)
    check_weights(spec, back)
    assert all(np.array_equal(w[k], back[k]) for k in w)
    if ext == "safetensors":
        assert UNetSpec(**meta["spec"]) == spec
    back.pop("conv_in.bias")
    with pytest.raises(ValueError, match="missing \\['conv_in.bias'\\]"):
        check_weights(spec, back)
    with pytest.raises(ValueError, match="use .safetensors or .npz"):
        save_weights(tmp_path / "w.pkl", w)
