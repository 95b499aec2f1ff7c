"""The DDPM-paper UNet in Jittor. Structure and parameter names come from
models.common.weights.unet_layout, shared with the PyTorch implementation; keep the two files
side by side when changing either."""
import math

from models.common.specs import UNetSpec
from models.common.weights import GROUPNORM_EPS, time_embedding_frequencies, unet_layout
from models.jt.runtime import import_jittor

jt = import_jittor()
from jittor import nn  # noqa: E402  (after import_jittor has set the environment)

# Deliberate extra work for calibrating the A/B regression gate: benchmarks/measure_ab.py
# commits a non-zero value in a throwaway clone to make a real, known slowdown (each unit
# re-runs the first ResNet block's first convolution, forward and backward, and adds it
# times zero: the math is unchanged). Keep it 0; the same constant is in models/pt/unet.py.
INJECTED_EXTRA_CONVS = 0


def _norm(spec, c):
    return nn.GroupNorm(spec.norm_groups, c, eps=GROUPNORM_EPS)


def silu(x):
    return x * x.sigmoid()


class ResnetBlock(nn.Module):
    def __init__(self, spec, c_in, c_out):
        self.norm1 = _norm(spec, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(spec.temb_channels, c_out)
        self.norm2 = _norm(spec, c_out)
        self.dropout = nn.Dropout(spec.dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def execute(self, x, temb):
        h = self.conv1(silu(self.norm1(x)))
        h = h + self.temb_proj(silu(temb)).unsqueeze(2).unsqueeze(3)
        h = self.conv2(self.dropout(silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, spec, c):
        self.norm = _norm(spec, c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def execute(self, x):
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).permute(0, 2, 1)  # b, hw, c
        k = self.k(h).reshape(b, c, hh * ww)  # b, c, hw
        v = self.v(h).reshape(b, c, hh * ww)
        w = nn.softmax(_bmm(q, k) * (1.0 / math.sqrt(c)), dim=2)  # b, hw(q), hw(k)
        h = _bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


def _bmm(a, b):
    """Batched a @ b. On CUDA nn.bmm is cuBLAS's batched kernel. On the CPU it is a
    broadcast-multiply-reduce whose backward materialises every product (b x n x m x k):
    one oneDNN 2-D matmul per image is the faster Jittor form there (the profile showed
    this op as the largest part of Jittor's training gap; docs/REPORT.md).

    The slices come from jt.split, not a[i]: the backward of each a[i] is a zero tensor of
    a's whole shape with the slice set in, and the b of them are added up, so the glue grew
    with the square of the batch (the batch sweep's profile: 190 ms of a 560 ms step at
    batch 64, reports/reference/sweep-batch-cpu). Measured fwd + bwd of the UNet attention's
    two products (64 tokens, 64 channels, 2 threads): batch 8 2.0 -> 1.7 ms, 16 4.9 -> 3.2,
    64 82 -> 29 (nn.bmm: 5.6, 11.9, 46). Without gradients (sampling) a[i] is the cheaper
    slice: 3% a sampling step at batch 8 (the A/B gate)."""
    if jt.flags.use_cuda:
        return nn.bmm(a, b)
    if jt.flags.no_grad:
        return jt.stack([jt.matmul(a[i], b[i]) for i in range(a.shape[0])])
    return jt.stack([jt.matmul(x.squeeze(0), y.squeeze(0))
                     for x, y in zip(jt.split(a, 1, 0), jt.split(b, 1, 0))])


class Downsample(nn.Module):
    def __init__(self, c):
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def execute(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c):
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def execute(self, x):
        return self.conv(nn.interpolate(x, scale_factor=2, mode="nearest"))


class _Named(nn.Module):
    """A container whose children are attributes named "0", "1"... (Jittor has no ModuleDict)."""

    def __contains__(self, key):
        return getattr(self, key, None) is not None

    def __getitem__(self, key):
        return getattr(self, key)


class _Level(nn.Module):
    def __init__(self):
        self.block = nn.ModuleList()
        self.attn = _Named()
        self.downsample = None
        self.upsample = None


class _Temb(nn.Module):
    def __init__(self, dense):
        self.dense = dense


class UNet(nn.Module):
    def __init__(self, spec: UNetSpec):
        self.spec = spec
        self._freqs = time_embedding_frequencies(spec.base_channels)
        self.down = nn.ModuleList([_Level() for _ in spec.ch_mult])
        self.up = nn.ModuleList([_Level() for _ in spec.ch_mult])
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
                setattr(self.mid, parts[1], ResnetBlock(spec, *args) if kind == "res" else AttnBlock(spec, *args))
            else:
                level = getattr(self, parts[0])[int(parts[1])]
                if kind == "res":
                    level.block.append(ResnetBlock(spec, *args))
                elif kind == "attn":
                    setattr(level.attn, parts[3], AttnBlock(spec, *args))
                elif kind == "down":
                    level.downsample = Downsample(*args)
                elif kind == "up":
                    level.upsample = Upsample(*args)
        self.temb = _Temb(nn.ModuleList(dense))

    def time_embedding(self, t):
        # A fresh constant each call: a stored Var would be listed among the parameters.
        freqs = jt.array(self._freqs).stop_grad()
        args = t.float32().unsqueeze(1) * freqs.unsqueeze(0)
        emb = jt.concat([jt.sin(args), jt.cos(args)], dim=1)
        return self.temb.dense[1](silu(self.temb.dense[0](emb)))

    @staticmethod
    def _blocks(level, h, temb, skips=None):
        for j, block in enumerate(level.block):
            if skips is not None:
                h = jt.concat([h, skips.pop()], dim=1)
            h = block(h, temb)
            if str(j) in level.attn:
                h = level.attn[str(j)](h)
            yield h

    def execute(self, x, t):
        temb = self.time_embedding(t)
        hs = [self.conv_in(x)]
        for _ in range(INJECTED_EXTRA_CONVS):  # 0: nothing runs (see the constant)
            hs[0] = hs[0] + 0.0 * self.down[0].block[0].conv1(hs[0]).mean()
        for level in self.down:
            for h in self._blocks(level, hs[-1], temb):
                hs.append(h)
            if level.downsample is not None:
                hs.append(level.downsample(hs[-1]))
        h = self.mid.block_1(hs[-1], temb)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h, temb)
        for level in reversed(self.up):
            for h in self._blocks(level, h, temb, hs):
                pass
            if level.upsample is not None:
                h = level.upsample(h)
        return self.conv_out(silu(self.norm_out(h)))
