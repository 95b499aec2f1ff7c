"""DiT (Peebles & Xie 2023) in Flax (Linen), module for module models/pt/dit.py (the
reference's facebookresearch/DiT models.py): submodules carry the reference's dotted names
("blocks.3.attn.qkv", "t_embedder.mlp.0"), so models/jx/layout.py maps the Flax tree to the
canonical names. Keep it side by side with models/pt/dit.py and models/jt/dit.py.

NHWC images in and out (tokens are row-major over the patch grid either way). Matched on
purpose (docs/JAX.md): LayerNorm eps 1e-6 without affine parameters and the two-pass
variance; GELU's tanh form (jax.nn.gelu's default, torch's approximate="tanh"); the time
embedding's [cos, sin] order. The fixed pos_embed table is not a parameter: it lives in the
"buffers" collection, loaded and exported with the weights, never trained.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.common.dit_weights import LAYERNORM_EPS, dit_time_frequencies


def modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def layer_norm():
    """The reference's LayerNorm: no affine parameters, eps 1e-6, E[(x - mean)^2]; float32
    also in the bf16 variant."""
    return nn.LayerNorm(epsilon=LAYERNORM_EPS, use_bias=False, use_scale=False,
                        use_fast_variance=False, dtype=jnp.float32)


class Attention(nn.Module):
    spec: object
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        B, N, D = x.shape
        h, dt = self.spec.num_heads, self.dtype
        qkv = nn.Dense(3 * D, name="qkv", dtype=dt)(x).reshape(B, N, 3, h, D // h).transpose(
            2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, head_dim)
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)  # softmax in f32
        w = jax.nn.softmax(logits * (1.0 / math.sqrt(D // h)), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bhkd->bhqd", w, v)
        return nn.Dense(D, name="proj", dtype=dt)(out.transpose(0, 2, 1, 3).reshape(B, N, D))


class DiTBlock(nn.Module):
    spec: object
    dtype: object = None

    @nn.compact
    def __call__(self, x, c):
        D, dt = self.spec.hidden_size, self.dtype
        mod = nn.Dense(6 * D, name="adaLN_modulation.1", dtype=dt)(nn.silu(c))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=1)
        x = x + gate_msa[:, None] * Attention(self.spec, dt, name="attn")(
            modulate(layer_norm()(x), shift_msa, scale_msa))
        h = modulate(layer_norm()(x), shift_mlp, scale_mlp)
        h = nn.Dense(D, name="mlp.fc2", dtype=dt)(jax.nn.gelu(
            nn.Dense(self.spec.mlp_hidden, name="mlp.fc1", dtype=dt)(h), approximate=True))
        return x + gate_mlp[:, None] * h


class DiT(nn.Module):
    spec: object
    dtype: object = None   # bf16 variant: matmuls and the patch conv in bfloat16 (params f32)

    def setup(self):
        spec, D, dt = self.spec, self.spec.hidden_size, self.dtype
        p = spec.patch_size
        self.pos_embed = self.variable("buffers", "pos_embed", jnp.zeros,
                                       (1, spec.num_patches, D))
        self.proj = nn.Conv(D, (p, p), strides=(p, p), padding="VALID",
                            name="x_embedder.proj", dtype=dt)
        self.t_mlp0 = nn.Dense(D, name="t_embedder.mlp.0", dtype=dt)
        self.t_mlp2 = nn.Dense(D, name="t_embedder.mlp.2", dtype=dt)
        if spec.num_classes:
            self.y_table = nn.Embed(spec.num_embeddings, D,
                                    name="y_embedder.embedding_table", dtype=dt)
        self.blocks = [DiTBlock(spec, dt, name=f"blocks.{i}") for i in range(spec.depth)]
        self.final_mod = nn.Dense(2 * D, name="final_layer.adaLN_modulation.1", dtype=dt)
        self.final_norm = layer_norm()
        self.final_linear = nn.Dense(p * p * spec.out_channels, name="final_layer.linear",
                                     dtype=dt)

    def conditioning(self, t, y, drop_ids, train):
        spec = self.spec
        args = t.astype(jnp.float32)[:, None] * jnp.asarray(dit_time_frequencies(spec.freq_shift))[None]
        c = self.t_mlp2(nn.silu(self.t_mlp0(jnp.concatenate([jnp.cos(args), jnp.sin(args)], -1))))
        if spec.num_classes:
            if y is None:
                raise ValueError(f"this DiT is class-conditional (num_classes={spec.num_classes})"
                                 ": pass labels y")
            if drop_ids is None and train and spec.class_dropout > 0:
                # the reference's random label dropout, keyed like the UNet's dropout
                drop_ids = jax.random.uniform(self.make_rng("dropout"), y.shape) < spec.class_dropout
            if drop_ids is not None:
                if not spec.has_null_class:
                    raise ValueError("dropping labels needs the null class: DiTSpec."
                                     "class_dropout must be > 0")
                y = jnp.where(drop_ids, spec.num_classes, y)
            c = c + self.y_table(y)
        elif y is not None:
            raise ValueError("this DiT is unconditional (num_classes=0): labels y must be None")
        return c

    def unpatchify(self, x):
        """(B, N, p*p*C) -> (B, H, W, C)."""
        c, p, g = self.spec.out_channels, self.spec.patch_size, self.spec.grid_size
        x = x.reshape(x.shape[0], g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)  # n h p w q c
        return x.reshape(x.shape[0], g * p, g * p, c)

    def forward(self, x, t, y=None, drop_ids=None, train=False):
        c = self.conditioning(t, y, drop_ids, train)
        h = self.proj(x)
        h = h.reshape(h.shape[0], -1, h.shape[-1]) + self.pos_embed.value
        for block in self.blocks:
            h = block(h, c)
        shift, scale = jnp.split(self.final_mod(nn.silu(c)), 2, axis=1)
        return self.unpatchify(self.final_linear(modulate(self.final_norm(h), shift, scale)))

    def __call__(self, x, t, y=None, drop_ids=None, cfg_scale=None, train=False):
        """cfg_scale: classifier-free guidance (models/pt/dit.py `guided`); None = plain."""
        if cfg_scale is None:
            return self.forward(x, t, y, drop_ids, train)
        if not self.spec.has_null_class:
            raise ValueError("classifier-free guidance needs the null class: a class-"
                             "conditional DiTSpec with class_dropout > 0")
        # the reference's forward_with_cfg on [x; x] with labels [y; null]: the conditional
        # and unconditional halves, eps = uncond + s (cond - uncond) on the in_channels
        B, n = x.shape[0], self.spec.in_channels
        out = self.forward(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                           jnp.concatenate([y, jnp.full_like(y, self.spec.num_classes)]))
        eps, rest = out[..., :n], out[..., n:]
        cond, uncond = eps[:B], eps[B:]
        return jnp.concatenate([uncond + cfg_scale * (cond - uncond), rest[:B]], axis=-1)
