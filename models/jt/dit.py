"""DiT (Peebles & Xie 2023) in Jittor, the twin of models/pt/dit.py: the same modules, names
and arithmetic (models.common.dit_weights.dit_param_shapes lists the names). Keep the two
files side by side when changing either.

Jittor differences handled here: nn.LayerNorm computes the variance as E[x^2] - E[x]^2 (it
loses digits where the mean is large next to the spread, as in a residual stream): the layer
norm is written out as torch's two-pass form; torch.where is jt.ternary; the batched
attention products use the UNet's _bmm (cuBLAS on CUDA, one 2-D matmul per slice on the CPU).
"""
import math

from models.common.dit_spec import TIME_FREQUENCY_DIM, DiTSpec
from models.common.dit_weights import LAYERNORM_EPS, dit_pos_embed, dit_time_frequencies
from models.jt.runtime import import_jittor
from models.jt.unet import _bmm

jt = import_jittor()
from jittor import nn  # noqa: E402  (after import_jittor has set the environment)


def silu(x):
    return x * x.sigmoid()


def gelu_tanh(x):
    """GELU, tanh approximation (torch's approximate="tanh")."""
    return 0.5 * x * (1.0 + jt.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _layer_norm(x):
    """LayerNorm over the last axis, no affine parameters, biased variance of the centred
    values (torch's arithmetic)."""
    xc = x - x.mean(dim=-1, keepdims=True)
    var = (xc * xc).mean(dim=-1, keepdims=True)
    return xc / jt.sqrt(var + LAYERNORM_EPS)


class SiLU(nn.Module):
    def execute(self, x):
        return silu(x)


class PatchEmbed(nn.Module):
    def __init__(self, spec):
        self.proj = nn.Conv2d(spec.in_channels, spec.hidden_size, spec.patch_size,
                              stride=spec.patch_size)

    def execute(self, x):
        h = self.proj(x)
        b, d = h.shape[0], h.shape[1]
        return h.reshape(b, d, -1).transpose(0, 2, 1)


class TimestepEmbedder(nn.Module):
    def __init__(self, spec):
        self.mlp = nn.Sequential(nn.Linear(TIME_FREQUENCY_DIM, spec.hidden_size), SiLU(),
                                 nn.Linear(spec.hidden_size, spec.hidden_size))
        self._freqs = dit_time_frequencies(spec.freq_shift)  # numpy: not a parameter

    def execute(self, t):
        freqs = jt.array(self._freqs).stop_grad()
        args = t.float32().unsqueeze(1) * freqs.unsqueeze(0)
        return self.mlp(jt.concat([jt.cos(args), jt.sin(args)], dim=1))


class LabelEmbedder(nn.Module):
    def __init__(self, spec):
        self.num_classes = spec.num_classes
        self.dropout_prob = spec.class_dropout
        self.has_null = spec.has_null_class
        self.embedding_table = nn.Embedding(spec.num_embeddings, spec.hidden_size)

    def execute(self, labels, drop_ids=None):
        if drop_ids is None and self.is_training() and self.dropout_prob > 0:
            drop_ids = jt.rand(labels.shape[0]) < self.dropout_prob
        if drop_ids is not None:
            if not self.has_null:
                raise ValueError("dropping labels needs the null class: DiTSpec.class_dropout "
                                 "must be > 0")
            labels = jt.ternary(drop_ids.bool(), jt.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class Attention(nn.Module):
    def __init__(self, spec):
        self.num_heads = spec.num_heads
        self.qkv = nn.Linear(spec.hidden_size, 3 * spec.hidden_size)
        self.proj = nn.Linear(spec.hidden_size, spec.hidden_size)

    def execute(self, x):
        B, N, D = x.shape
        h = self.num_heads
        hd = D // h
        qkv = self.qkv(x).reshape(B, N, 3, h, hd).permute(2, 0, 3, 1, 4)
        q, k, v = (qkv[i].reshape(B * h, N, hd) for i in range(3))
        w = nn.softmax(_bmm(q, k.transpose(0, 2, 1)) * (1.0 / math.sqrt(hd)), dim=2)
        out = _bmm(w, v).reshape(B, h, N, hd)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, spec):
        self.fc1 = nn.Linear(spec.hidden_size, spec.mlp_hidden)
        self.fc2 = nn.Linear(spec.mlp_hidden, spec.hidden_size)

    def execute(self, x):
        return self.fc2(gelu_tanh(self.fc1(x)))


class DiTBlock(nn.Module):
    def __init__(self, spec):
        self.attn = Attention(spec)
        self.mlp = Mlp(spec)
        self.adaLN_modulation = nn.Sequential(SiLU(),
                                              nn.Linear(spec.hidden_size, 6 * spec.hidden_size))

    def execute(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(_layer_norm(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(_layer_norm(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, spec):
        self.linear = nn.Linear(spec.hidden_size, spec.patch_size ** 2 * spec.out_channels)
        self.adaLN_modulation = nn.Sequential(SiLU(),
                                              nn.Linear(spec.hidden_size, 2 * spec.hidden_size))

    def execute(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(_layer_norm(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, spec: DiTSpec):
        self.spec = spec
        # the fixed sin-cos table: a Var that never gets a gradient (Jittor lists every Var
        # attribute among the parameters; the backends train only those without stop_grad)
        self.pos_embed = jt.array(dit_pos_embed(spec)).stop_grad()
        self.x_embedder = PatchEmbed(spec)
        self.t_embedder = TimestepEmbedder(spec)
        self.y_embedder = LabelEmbedder(spec) if spec.num_classes else None
        self.blocks = nn.ModuleList([DiTBlock(spec) for _ in range(spec.depth)])
        self.final_layer = FinalLayer(spec)

    def unpatchify(self, x):
        c, p, g = self.spec.out_channels, self.spec.patch_size, self.spec.grid_size
        x = x.reshape(x.shape[0], g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(x.shape[0], c, g * p, g * p)

    def conditioning(self, t, y=None, drop_ids=None):
        c = self.t_embedder(t)
        if self.spec.num_classes:
            if y is None:
                raise ValueError(f"this DiT is class-conditional (num_classes="
                                 f"{self.spec.num_classes}): pass labels y")
            c = c + self.y_embedder(y, drop_ids)
        elif y is not None:
            raise ValueError("this DiT is unconditional (num_classes=0): labels y must be None")
        return c

    def execute(self, x, t, y=None, drop_ids=None, cfg_scale=None):
        if cfg_scale is not None:
            return self.guided(x, t, y, cfg_scale)
        c = self.conditioning(t, y, drop_ids)
        x = self.x_embedder(x) + self.pos_embed
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels=None):
        """See models/pt/dit.py: the reference's 2B-row classifier-free guidance call."""
        n = guided_channels or self.spec.in_channels
        half = x[: x.shape[0] // 2]
        out = self.execute(jt.concat([half, half], dim=0), t, y)
        eps, rest = out[:, :n], out[:, n:]
        b = eps.shape[0] // 2
        cond, uncond = eps[:b], eps[b:]
        guided = uncond + cfg_scale * (cond - uncond)
        parts = [jt.concat([guided, guided], dim=0)]
        if rest.shape[1]:
            parts.append(rest)
        return jt.concat(parts, dim=1) if len(parts) > 1 else parts[0]

    def guided(self, x, t, y, cfg_scale):
        if not self.spec.has_null_class:
            raise ValueError("classifier-free guidance needs the null class: a class-"
                             "conditional DiTSpec with class_dropout > 0")
        B = x.shape[0]
        null = jt.full_like(y, self.spec.num_classes)
        return self.forward_with_cfg(jt.concat([x, x], dim=0), jt.concat([t, t], dim=0),
                                     jt.concat([y, null], dim=0), cfg_scale)[:B]
