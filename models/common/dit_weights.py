"""The DiT's canonical weights: one parameter-name list, one seeded numpy init, and the fixed
tables (position embedding, timestep frequencies) both frameworks read from here.

Names, shapes and order are the reference's state dict (facebookresearch/DiT models.py with
timm's PatchEmbed, Attention and Mlp), so a reference checkpoint's tensors map one to one.
`pos_embed` is in the list, as in the reference, which counts it among its parameters: a
fixed 2-D sin-cos table, never trained (a buffer in both frameworks, `FIXED`).
"""
from collections import OrderedDict

import numpy as np

from .dit_spec import TIME_FREQUENCY_DIM, TIME_MAX_PERIOD, DiTSpec

DIT_INIT_SCHEMES = ("dit", "random")
# Tensors that are part of the canonical weights but never trained.
FIXED = ("pos_embed",)
LAYERNORM_EPS = 1e-6  # every LayerNorm of the reference (no affine parameters)


def dit_param_shapes(spec: DiTSpec):
    """OrderedDict name -> shape, in the reference's state-dict order."""
    D, s = spec.hidden_size, OrderedDict()

    def linear(name, n_in, n_out):
        s[f"{name}.weight"] = (n_out, n_in)
        s[f"{name}.bias"] = (n_out,)

    s["pos_embed"] = (1, spec.num_patches, D)
    s["x_embedder.proj.weight"] = (D, spec.in_channels, spec.patch_size, spec.patch_size)
    s["x_embedder.proj.bias"] = (D,)
    linear("t_embedder.mlp.0", TIME_FREQUENCY_DIM, D)
    linear("t_embedder.mlp.2", D, D)
    if spec.num_classes:
        s["y_embedder.embedding_table.weight"] = (spec.num_embeddings, D)
    for i in range(spec.depth):
        b = f"blocks.{i}"
        linear(f"{b}.attn.qkv", D, 3 * D)
        linear(f"{b}.attn.proj", D, D)
        linear(f"{b}.mlp.fc1", D, spec.mlp_hidden)
        linear(f"{b}.mlp.fc2", spec.mlp_hidden, D)
        linear(f"{b}.adaLN_modulation.1", D, 6 * D)
    linear("final_layer.linear", D, spec.patch_size ** 2 * spec.out_channels)
    linear("final_layer.adaLN_modulation.1", D, 2 * D)
    return s


def count_dit_params(spec: DiTSpec, trainable_only=False):
    """Parameters as the reference counts them (pos_embed included); trainable_only leaves
    the fixed tables out."""
    return int(sum(np.prod(v) for k, v in dit_param_shapes(spec).items()
                   if not (trainable_only and k in FIXED)))


def _1d_sincos(dim, pos):
    """(len(pos), dim): [sin(pos * w), cos(pos * w)], w_i = 10000^(-i / (dim/2))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(np.asarray(pos, dtype=np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_2d(dim, grid_size):
    """The reference's get_2d_sincos_pos_embed (from MAE), float64 (grid_size^2, dim).

    Tokens are row-major over the patch grid (row i, column j -> token i*grid+j, what
    flatten(2) of the patch convolution gives). The first dim/2 channels encode the column
    j, the last dim/2 the row i: the reference builds np.meshgrid(grid_w, grid_h), whose
    first array varies along columns, and calls that half "emb_h"."""
    if dim % 4:
        raise ValueError(f"position embedding dim={dim} is invalid: must be divisible by 4")
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    return np.concatenate([_1d_sincos(dim // 2, cols), _1d_sincos(dim // 2, rows)], axis=1)


def dit_pos_embed(spec: DiTSpec):
    """The fixed position embedding as stored: float32 (1, num_patches, hidden_size)."""
    return sincos_pos_embed_2d(spec.hidden_size, spec.grid_size)[None].astype(np.float32)


def dit_time_frequencies(freq_shift=0, dim=TIME_FREQUENCY_DIM, max_period=TIME_MAX_PERIOD):
    """Frequencies of the sinusoidal timestep embedding, float32 (dim/2,):
    f_i = exp(-ln(max_period) * i / (dim/2 - freq_shift)). The embedding is
    [cos(t f), sin(t f)] (the reference's order; diffusers' flip_sin_to_cos=True)."""
    half = dim // 2
    return np.exp(-np.log(float(max_period)) * np.arange(half, dtype=np.float64)
                  / (half - freq_shift)).astype(np.float32)


def _xavier(rng, shape):
    """xavier_uniform on a (fan_out, fan_in, ...) weight viewed as 2-D (fan_out, rest): for
    the patch convolution that is the reference's 'initialise like nn.Linear'."""
    fan_out, fan_in = shape[0], int(np.prod(shape[1:]))
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def init_dit_weights(spec: DiTSpec, seed=0, scheme="dit"):
    """Seeded canonical init, float32, every tensor of dit_param_shapes (pos_embed too).

    dit: the reference's initialize_weights: xavier_uniform Linear weights and zero Linear
         biases; the patch convolution's weight xavier on its (hidden, C*p*p) view and its
         bias left at PyTorch's Conv2d default, U(+-1/sqrt(C*p*p)), as the reference leaves
         it; label table and both timestep-MLP weights N(0, 0.02); every adaLN modulation
         layer (blocks and final) and the final linear zero, weight and bias.
    random: every trainable tensor random (no zero layers, biases too), for parity tests
         where a zero would hide a mismatch.
    pos_embed is the fixed sin-cos table in both.
    """
    if scheme not in DIT_INIT_SCHEMES:
        raise ValueError(f"init scheme={scheme!r} is invalid: one of {list(DIT_INIT_SCHEMES)}")
    rng = np.random.default_rng(seed)
    out = OrderedDict()
    for name, shape in dit_param_shapes(spec).items():
        if name == "pos_embed":
            w = dit_pos_embed(spec)
        elif scheme == "random":
            if name.endswith("embedding_table.weight"):
                w = rng.normal(0.0, 0.5, size=shape)
            elif name.endswith(".weight"):
                w = _xavier(rng, shape)
            else:
                w = rng.uniform(-0.1, 0.1, size=shape)
        elif name.startswith("t_embedder.") and name.endswith(".weight") \
                or name.endswith("embedding_table.weight"):
            w = rng.normal(0.0, 0.02, size=shape)
        elif ".adaLN_modulation." in name or name.startswith("final_layer.linear."):
            w = np.zeros(shape)
        elif name == "x_embedder.proj.bias":
            bound = 1.0 / np.sqrt(spec.in_channels * spec.patch_size ** 2)
            w = rng.uniform(-bound, bound, size=shape)
        elif name.endswith(".weight"):
            w = _xavier(rng, shape)
        else:
            w = np.zeros(shape)
        out[name] = np.asarray(w, dtype=np.float32)
    return out


__all__ = ["dit_param_shapes", "count_dit_params", "init_dit_weights", "dit_pos_embed",
           "sincos_pos_embed_2d", "dit_time_frequencies", "FIXED", "LAYERNORM_EPS",
           "DIT_INIT_SCHEMES"]
