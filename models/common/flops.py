"""Analytical FLOP counts of the UNet, from its spec alone (no framework).

What is counted is what `torch.utils.flop_counter.FlopCounterMode` counts, so the two can be
checked against each other (tests/test_flops.py): the matrix-multiply class of ops, 2 FLOPs
per multiply-add - convolutions, linear layers and attention's two batched matmuls. Bias
adds, normalisation, activations, softmax, the loss and the optimizer are not counted (on the
quick model they are ~1% of the arithmetic; they are memory-bound, and a "% of matmul peak"
is only meaningful for the counted kind anyway).

Backward counts both products a matmul's gradient needs - the input gradient and the weight
gradient, each as many FLOPs as the forward product - except the input gradients nobody asks
for: those of the first convolution (its input is the noisy image) and of the first
time-embedding layer (its input is the sinusoidal embedding). Frameworks skip them too.

The DiT (models/common/dit_spec.py) is counted the same way (`dit_forward_flops`,
`dit_backward_flops`, at the end); forward_flops, backward_flops, train_step_flops and
sample_step_flops take either spec.
"""
from models.common.dit_spec import TIME_FREQUENCY_DIM, DiTSpec
from models.common.specs import UNetSpec
from models.common.weights import unet_layout


def _conv(batch, res_out, c_in, c_out, k):
    return 2 * batch * res_out * res_out * c_out * c_in * k * k


def _linear(batch, n_in, n_out):
    return 2 * batch * n_in * n_out


def forward_flops(spec: UNetSpec, batch: int) -> dict:
    """FLOPs of one forward pass over `batch` images, by kind: conv, linear, attention (the
    two batched matmuls; attention's 1x1 q/k/v/proj convolutions count as conv), total."""
    if isinstance(spec, DiTSpec):
        return dit_forward_flops(spec, batch)
    temb, res = spec.temb_channels, spec.image_size
    n = {"conv": 0, "linear": 0, "attention": 0}
    for kind, name, args in unet_layout(spec):
        if kind == "conv":
            n["conv"] += _conv(batch, res, args[0], args[1], args[2])
        elif kind == "linear":
            n["linear"] += _linear(batch, args[0], args[1])
        elif kind == "res":
            c_in, c_out = args
            n["conv"] += _conv(batch, res, c_in, c_out, 3) + _conv(batch, res, c_out, c_out, 3)
            if c_in != c_out:
                n["conv"] += _conv(batch, res, c_in, c_out, 1)
            n["linear"] += _linear(batch, temb, c_out)
        elif kind == "attn":
            (c,) = args
            n["conv"] += 4 * _conv(batch, res, c, c, 1)
            hw = res * res
            n["attention"] += 2 * (2 * batch * hw * hw * c)  # q.k and v.w
        elif kind == "down":
            res //= 2  # a stride-2 convolution: counted at its output resolution
            n["conv"] += _conv(batch, res, args[0], args[0], 3)
        elif kind == "up":
            res *= 2  # nearest upsampling, then a convolution at the new resolution
            n["conv"] += _conv(batch, res, args[0], args[0], 3)
    n["total"] = n["conv"] + n["linear"] + n["attention"]
    assert res == spec.image_size  # every downsample undone
    return n


def backward_flops(spec: UNetSpec, batch: int) -> int:
    """FLOPs of the backward pass: twice the forward, less the two unneeded input gradients."""
    if isinstance(spec, DiTSpec):
        return dit_backward_flops(spec, batch)
    skipped = (_conv(batch, spec.image_size, spec.in_channels, spec.base_channels, 3)
               + _linear(batch, spec.base_channels, spec.temb_channels))
    return 2 * forward_flops(spec, batch)["total"] - skipped


def train_step_flops(spec: UNetSpec, batch: int) -> int:
    """One training step: forward and backward (the optimizer's elementwise work is not
    counted, as above)."""
    return forward_flops(spec, batch)["total"] + backward_flops(spec, batch)


def sample_step_flops(spec: UNetSpec, batch: int) -> int:
    """One sampling step: one forward pass (DDPM and DDIM alike; their update is elementwise)."""
    return forward_flops(spec, batch)["total"]


# -- DiT --------------------------------------------------------------------------------------

def dit_forward_flops(spec: DiTSpec, batch: int) -> dict:
    """FLOPs of one DiT forward pass over `batch` images, by kind: conv (the patch
    embedding), linear (timestep MLP, per block qkv, proj, fc1, fc2 and the adaLN modulation,
    the final adaLN and linear; the label embedding is a lookup), attention (per block the
    two batched matmuls q.k^T and w.v over all heads: 2 x 2*B*N*N*hidden), total."""
    B, N, D, p = batch, spec.num_patches, spec.hidden_size, spec.patch_size
    H = spec.mlp_hidden
    conv = _conv(B, spec.grid_size, spec.in_channels, D, p)
    linear = _linear(B, TIME_FREQUENCY_DIM, D) + _linear(B, D, D)
    per_block = (_linear(B * N, D, 3 * D) + _linear(B * N, D, D) + _linear(B * N, D, H)
                 + _linear(B * N, H, D) + _linear(B, D, 6 * D))
    linear += spec.depth * per_block
    linear += _linear(B, D, 2 * D) + _linear(B * N, D, p * p * spec.out_channels)
    attention = spec.depth * 2 * (2 * B * N * N * D)
    return {"conv": conv, "linear": linear, "attention": attention,
            "total": conv + linear + attention}


def dit_backward_flops(spec: DiTSpec, batch: int) -> int:
    """Twice the forward, less the input gradients nobody asks for: the patch convolution's
    (its input is the noisy image) and the first timestep-MLP layer's (the sinusoids)."""
    skipped = (_conv(batch, spec.grid_size, spec.in_channels, spec.hidden_size, spec.patch_size)
               + _linear(batch, TIME_FREQUENCY_DIM, spec.hidden_size))
    return 2 * dit_forward_flops(spec, batch)["total"] - skipped
