"""The DDPM-paper UNet in PyTorch. Structure and parameter names come from
models.common.weights.unet_layout, shared with the Jittor implementation."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.common.specs import UNetSpec
from models.common.weights import GROUPNORM_EPS, time_embedding_frequencies, unet_layout

# Deliberate extra work for calibrating the A/B regression gate: benchmarks/measure_ab.py
# commits a non-zero value in a throwaway clone to make a real, known slowdown (each unit
# re-runs the first ResNet block's first convolution, forward and backward, and adds it
# times zero: the math is unchanged). Keep it 0; the same constant is in models/jt/unet.py.
INJECTED_EXTRA_CONVS = 0


def _norm(spec, c):
    return nn.GroupNorm(spec.norm_groups, c, eps=GROUPNORM_EPS)


class ResnetBlock(nn.Module):
    def __init__(self, spec, c_in, c_out):
        super().__init__()
        self.norm1 = _norm(spec, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(spec.temb_channels, c_out)
        self.norm2 = _norm(spec, c_out)
        self.dropout = nn.Dropout(spec.dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, spec, c, attention="bmm"):
        super().__init__()
        self.attention = attention  # bmm + softmax (matched) | sdpa (a variant)
        self.norm = _norm(spec, c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).permute(0, 2, 1)  # b, hw, c
        k = self.k(h).reshape(b, c, hh * ww)  # b, c, hw
        v = self.v(h).reshape(b, c, hh * ww)
        if self.attention == "sdpa":  # one head; the same 1/sqrt(c) scale
            h = F.scaled_dot_product_attention(q[:, None], k.permute(0, 2, 1)[:, None],
                                               v.permute(0, 2, 1)[:, None])
            h = h[:, 0].permute(0, 2, 1).reshape(b, c, hh, ww)
            return x + self.proj_out(h)
        w = torch.softmax(torch.bmm(q, k) * (1.0 / math.sqrt(c)), dim=2)  # b, hw(q), hw(k)
        h = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: block.N, attn.N, and downsample/upsample, as in the layout."""

    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleDict()  # keyed by block index: attention only where the layout says


class _Temb(nn.Module):
    def __init__(self, dense):
        super().__init__()
        self.dense = dense


class UNet(nn.Module):
    def __init__(self, spec: UNetSpec, attention="bmm"):
        super().__init__()
        self.spec = spec
        self.register_buffer("freqs", torch.from_numpy(time_embedding_frequencies(spec.base_channels)),
                             persistent=False)
        self.down = nn.ModuleList(_Level() for _ in spec.ch_mult)
        self.up = nn.ModuleList(_Level() for _ in spec.ch_mult)
        self.mid = nn.Module()
        dense = []
        for kind, name, args in unet_layout(spec):
            parts = name.split(".")
            if kind == "conv":
                setattr(self, name, nn.Conv2d(args[0], args[1], args[2], padding=1))
            elif kind == "linear":
                dense.append(nn.Linear(args[0], args[1]))
            elif kind == "norm":
                setattr(self, name, _norm(spec, args[0]))
            elif parts[0] == "mid":
                setattr(self.mid, parts[1], ResnetBlock(spec, *args) if kind == "res"
                        else AttnBlock(spec, *args, attention=attention))
            else:
                level = getattr(self, parts[0])[int(parts[1])]
                if kind == "res":
                    level.block.append(ResnetBlock(spec, *args))
                elif kind == "attn":
                    level.attn[parts[3]] = AttnBlock(spec, *args, attention=attention)
                elif kind == "down":
                    level.downsample = Downsample(*args)
                elif kind == "up":
                    level.upsample = Upsample(*args)
        self.temb = _Temb(nn.ModuleList(dense))

    def time_embedding(self, t):
        args = t.float()[:, None] * self.freqs[None, :]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
        return self.temb.dense[1](F.silu(self.temb.dense[0](emb)))

    @staticmethod
    def _blocks(level, h, temb, skips=None):
        for j, block in enumerate(level.block):
            if skips is not None:
                h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, temb)
            if str(j) in level.attn:
                h = level.attn[str(j)](h)
            yield h

    def forward(self, x, t):
        temb = self.time_embedding(t)
        hs = [self.conv_in(x)]
        for _ in range(INJECTED_EXTRA_CONVS):  # 0: nothing runs (see the constant)
            hs[0] = hs[0] + 0.0 * self.down[0].block[0].conv1(hs[0]).mean()
        for level in self.down:
            for h in self._blocks(level, hs[-1], temb):
                hs.append(h)
            if hasattr(level, "downsample"):
                hs.append(level.downsample(hs[-1]))
        h = self.mid.block_1(hs[-1], temb)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h, temb)
        for level in reversed(self.up):
            for h in self._blocks(level, h, temb, hs):
                pass
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
