"""The DDPM-paper UNet in Flax (Linen), module for module models/pt/unet.py. Structure and
parameter names come from models.common.weights.unet_layout, shared with torch and Jittor:
every submodule is named with its canonical dotted path ("down.0.block.1", "temb.dense.0"),
so models/jx/layout.py maps the Flax tree to the canonical names by flattening it.

NHWC inside (XLA's natural layout for convolutions); the backend converts at the edges.
Torch's defaults are matched on purpose (docs/JAX.md): explicit (1, 1) padding, never
'SAME'; GroupNorm with eps 1e-6 and the two-pass variance (use_fast_variance=False);
the time embedding's [sin, cos] order and frequencies of the DDPM code.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.common.weights import GROUPNORM_EPS, time_embedding_frequencies, unet_layout

PAD1 = ((1, 1), (1, 1))
# Deliberate extra work for calibrating the A/B regression gate (benchmarks/measure_ab.py, as in
# models/pt/unet.py and models/jt/unet.py): each unit runs one more 3x3 convolution of the first
# feature map, forward and backward, and adds it times zero (XLA keeps float x*0: the math is
# unchanged). A lax.fori_loop whose carry feeds the next convolution, so XLA neither unrolls
# it into a huge program nor hoists it out of the loop. Keep it 0.
INJECTED_EXTRA_CONVS = 0


def injected_work(h, n):
    k = jnp.full((3, 3, h.shape[-1], h.shape[-1]), 1e-3, h.dtype)

    def body(_, acc):
        y = jax.lax.conv_general_dilated(h + acc * 0.0, k, (1, 1), PAD1,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return acc + jnp.mean(y)

    return h + 0.0 * jax.lax.fori_loop(0, n, body, jnp.zeros((), h.dtype))


def conv(c_out, k, name, stride=1, dtype=None):
    return nn.Conv(c_out, (k, k), strides=(stride, stride),
                   padding=PAD1 if k == 3 else "VALID", name=name, dtype=dtype)


def group_norm(spec, name):
    """Always float32 (statistics and output), also in the bf16 variant (as torch autocast)."""
    return nn.GroupNorm(num_groups=spec.norm_groups, epsilon=GROUPNORM_EPS,
                        use_fast_variance=False, dtype=jnp.float32, name=name)


class ResnetBlock(nn.Module):
    spec: object
    c_in: int
    c_out: int
    dtype: object = None   # the convolutions' and matmuls' compute dtype (None: float32)

    @nn.compact
    def __call__(self, x, temb, train):
        dt = self.dtype
        h = conv(self.c_out, 3, "conv1", dtype=dt)(nn.silu(group_norm(self.spec, "norm1")(x)))
        h = h + nn.Dense(self.c_out, name="temb_proj", dtype=dt)(nn.silu(temb))[:, None, None, :]
        h = nn.silu(group_norm(self.spec, "norm2")(h))
        h = nn.Dropout(self.spec.dropout, deterministic=not train)(h)
        h = conv(self.c_out, 3, "conv2", dtype=dt)(h)
        if self.c_in != self.c_out:
            x = conv(self.c_out, 1, "nin_shortcut", dtype=dt)(x)
        return x + h


class AttnBlock(nn.Module):
    """One-head self-attention over the H*W positions, 1x1-conv projections (as torch's
    bmm + softmax form)."""
    spec: object
    c: int
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        dt = self.dtype
        h = group_norm(self.spec, "norm")(x)
        q = conv(c, 1, "q", dtype=dt)(h).reshape(b, hh * ww, c)
        k = conv(c, 1, "k", dtype=dt)(h).reshape(b, hh * ww, c)
        v = conv(c, 1, "v", dtype=dt)(h).reshape(b, hh * ww, c)
        logits = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.float32)  # softmax in float32
        w = jax.nn.softmax(logits * (1.0 / math.sqrt(c)), axis=-1).astype(v.dtype)
        h = jnp.einsum("bqk,bkc->bqc", w, v).reshape(b, hh, ww, c)
        return x + conv(c, 1, "proj_out", dtype=dt)(h)


def upsample_nearest(x):
    with jax.named_scope("upsample"):   # names the HLO for the profile's resampling row
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UNet(nn.Module):
    spec: object
    dtype: object = None   # bf16 variant: convolutions and matmuls in bfloat16 (params f32)

    @nn.compact
    def __call__(self, x, t, train=False):
        """x: (B, H, W, C) float32, t: (B,) int timesteps -> the noise prediction, NHWC."""
        spec, dt = self.spec, self.dtype
        layout = {name: (kind, args) for kind, name, args in unet_layout(spec)}
        mods = {}
        for name, (kind, args) in layout.items():
            if kind == "conv":
                mods[name] = conv(args[1], args[2], name, dtype=dt)
            elif kind == "linear":
                mods[name] = nn.Dense(args[1], name=name, dtype=dt)
            elif kind == "norm":
                mods[name] = group_norm(spec, name)
            elif kind == "res":
                mods[name] = ResnetBlock(spec, *args, dtype=dt, name=name)
            elif kind == "attn":
                mods[name] = AttnBlock(spec, *args, dtype=dt, name=name)
            elif kind == "down":
                mods[name] = conv(args[0], 3, f"{name}.conv", stride=2, dtype=dt)
            elif kind == "up":
                mods[name] = conv(args[0], 3, f"{name}.conv", dtype=dt)

        freqs = jnp.asarray(time_embedding_frequencies(spec.base_channels))
        args_ = t.astype(jnp.float32)[:, None] * freqs[None, :]
        emb = jnp.concatenate([jnp.sin(args_), jnp.cos(args_)], axis=1)
        temb = mods["temb.dense.1"](nn.silu(mods["temb.dense.0"](emb)))

        def blocks(prefix, h, skips=None):
            j = 0
            while f"{prefix}.block.{j}" in mods:
                if skips is not None:
                    h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = mods[f"{prefix}.block.{j}"](h, temb, train)
                if f"{prefix}.attn.{j}" in mods:
                    h = mods[f"{prefix}.attn.{j}"](h)
                yield h
                j += 1

        hs = [mods["conv_in"](x)]
        if INJECTED_EXTRA_CONVS:  # 0: nothing runs (see the constant)
            hs[0] = injected_work(hs[0], INJECTED_EXTRA_CONVS)
        for i in range(len(spec.ch_mult)):
            for h in blocks(f"down.{i}", hs[-1]):
                hs.append(h)
            if f"down.{i}.downsample" in mods:
                hs.append(mods[f"down.{i}.downsample"](hs[-1]))
        h = mods["mid.block_1"](hs[-1], temb, train)
        h = mods["mid.attn_1"](h)
        h = mods["mid.block_2"](h, temb, train)
        for i in reversed(range(len(spec.ch_mult))):
            for h in blocks(f"up.{i}", h, hs):
                pass
            if f"up.{i}.upsample" in mods:
                h = mods[f"up.{i}.upsample"](upsample_nearest(h))
        return mods["conv_out"](nn.silu(mods["norm_out"](h)))
