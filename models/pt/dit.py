"""DiT (Peebles & Xie 2023) in PyTorch, module for module the reference's
(facebookresearch/DiT models.py, with timm's PatchEmbed, Attention and Mlp), so parameter
names are the reference's and models.common.dit_weights.dit_param_shapes lists them. The
Jittor twin is models/jt/dit.py; keep the two files side by side when changing either.

forward(x, t, y=None, drop_ids=None, cfg_scale=None) -> (B, out_channels, H, W): the noise
prediction first (in_channels), then, with learn_sigma, the variance channels. Labels are
dropped to the null class where `drop_ids` is true; without drop_ids, in training with
class_dropout > 0, they are dropped at random (torch's RNG), as the reference does.
cfg_scale: classifier-free guidance (`guided`). docs/DIT.md describes it all.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.common.dit_spec import TIME_FREQUENCY_DIM, DiTSpec
from models.common.dit_weights import LAYERNORM_EPS, dit_pos_embed, dit_time_frequencies


def modulate(x, shift, scale):
    """adaLN: x * (1 + scale) + shift, (B, D) conditioning broadcast over the tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _layer_norm(x):
    return F.layer_norm(x, (x.shape[-1],), eps=LAYERNORM_EPS)  # no affine parameters


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D): a convolution with stride = kernel = patch, tokens
    row-major over the patch grid."""

    def __init__(self, spec):
        super().__init__()
        self.proj = nn.Conv2d(spec.in_channels, spec.hidden_size, spec.patch_size,
                              stride=spec.patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """[cos(t f), sin(t f)] over 256 frequencies -> Linear -> SiLU -> Linear."""

    def __init__(self, spec):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_FREQUENCY_DIM, spec.hidden_size), nn.SiLU(),
                                 nn.Linear(spec.hidden_size, spec.hidden_size))
        self.register_buffer("freqs", torch.from_numpy(dit_time_frequencies(spec.freq_shift)),
                             persistent=False)

    def forward(self, t):
        args = t.float()[:, None] * self.freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; row num_classes is the null class (when class_dropout > 0)."""

    def __init__(self, spec):
        super().__init__()
        self.num_classes = spec.num_classes
        self.dropout_prob = spec.class_dropout
        self.embedding_table = nn.Embedding(spec.num_embeddings, spec.hidden_size)

    def forward(self, labels, drop_ids=None):
        if drop_ids is None and self.training and self.dropout_prob > 0:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        if drop_ids is not None:
            if self.embedding_table.num_embeddings == self.num_classes:
                raise ValueError("dropping labels needs the null class: DiTSpec.class_dropout "
                                 "must be > 0")
            labels = torch.where(drop_ids.bool(), torch.full_like(labels, self.num_classes),
                                 labels)
        return self.embedding_table(labels)


class Attention(nn.Module):
    """Multi-head self-attention: one qkv Linear (with bias), softmax(q k^T / sqrt(d)) v per
    head, an output projection. attention="sdpa" uses torch's fused kernel (a variant)."""

    def __init__(self, spec, attention="bmm"):
        super().__init__()
        self.num_heads, self.attention = spec.num_heads, attention
        self.qkv = nn.Linear(spec.hidden_size, 3 * spec.hidden_size)
        self.proj = nn.Linear(spec.hidden_size, spec.hidden_size)

    def forward(self, x):
        B, N, D = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3, h, D // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, head_dim)
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            w = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(D // h)),
                              dim=-1)
            out = torch.matmul(w, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.fc1 = nn.Linear(spec.hidden_size, spec.mlp_hidden)
        self.fc2 = nn.Linear(spec.mlp_hidden, spec.hidden_size)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """adaLN-Zero: SiLU -> Linear(6D) gives shift/scale/gate for attention and for the MLP;
    x += gate * branch(modulate(LayerNorm(x), shift, scale))."""

    def __init__(self, spec, attention="bmm"):
        super().__init__()
        self.attn = Attention(spec, attention)
        self.mlp = Mlp(spec)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(),
                                              nn.Linear(spec.hidden_size, 6 * spec.hidden_size))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(_layer_norm(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(_layer_norm(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.linear = nn.Linear(spec.hidden_size, spec.patch_size ** 2 * spec.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(),
                                              nn.Linear(spec.hidden_size, 2 * spec.hidden_size))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(_layer_norm(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, spec: DiTSpec, attention="bmm"):
        super().__init__()
        self.spec = spec
        # the fixed sin-cos table: a buffer (never trained), in the state dict as in the
        # reference; the backends load and export it with the parameters
        self.register_buffer("pos_embed", torch.from_numpy(dit_pos_embed(spec)))
        self.x_embedder = PatchEmbed(spec)
        self.t_embedder = TimestepEmbedder(spec)
        if spec.num_classes:
            self.y_embedder = LabelEmbedder(spec)
        self.blocks = nn.ModuleList(DiTBlock(spec, attention) for _ in range(spec.depth))
        self.final_layer = FinalLayer(spec)

    def unpatchify(self, x):
        """(B, N, p*p*C) -> (B, C, H, W)."""
        c, p, g = self.spec.out_channels, self.spec.patch_size, self.spec.grid_size
        x = x.reshape(x.shape[0], g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)  # n c h p w q
        return x.reshape(x.shape[0], c, g * p, g * p)

    def conditioning(self, t, y=None, drop_ids=None):
        """c = timestep embedding (+ label embedding): what every adaLN layer reads."""
        c = self.t_embedder(t)
        if self.spec.num_classes:
            if y is None:
                raise ValueError(f"this DiT is class-conditional (num_classes="
                                 f"{self.spec.num_classes}): pass labels y")
            c = c + self.y_embedder(y, drop_ids)
        elif y is not None:
            raise ValueError("this DiT is unconditional (num_classes=0): labels y must be None")
        return c

    def forward(self, x, t, y=None, drop_ids=None, cfg_scale=None):
        """cfg_scale: classifier-free guidance for this batch (`guided`); None = plain."""
        if cfg_scale is not None:
            return self.guided(x, t, y, cfg_scale)
        c = self.conditioning(t, y, drop_ids)
        x = self.x_embedder(x) + self.pos_embed
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels=None):
        """The reference's classifier-free guidance call: x, t, y of 2B rows, the second half
        of y the null class; the first half of x is run twice, with the two label halves,
        and eps = uncond + cfg_scale * (cond - uncond) is returned for both halves (rows
        2B). guided_channels: how many leading channels are guided; None = in_channels, the
        standard form (the reference's default guides 3, "for exact reproducibility");
        the rest come from the conditional half."""
        n = guided_channels or self.spec.in_channels
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        eps, rest = out[:, :n], out[:, n:]
        cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)

    def guided(self, x, t, y, cfg_scale):
        """Classifier-free guidance for a batch of B: [x; x] with labels [y; null] through
        forward_with_cfg, the first B rows back."""
        if not self.spec.has_null_class:
            raise ValueError("classifier-free guidance needs the null class: a class-"
                             "conditional DiTSpec with class_dropout > 0")
        B = x.shape[0]
        null = torch.full_like(y, self.spec.num_classes)
        return self.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]),
                                     torch.cat([y, null]), cfg_scale)[:B]
