"""Canonical weights: one parameter-name list, one seeded numpy init, one file format.

`param_shapes(spec)` is the contract every framework's UNet must meet exactly (names, shapes,
order); tests check both. Weights are made here once and loaded into each framework, so two
frameworks start from bit-identical parameters. Files are safetensors (or .npz read with
allow_pickle=False): never pickle.
"""
import json
import os
from collections import OrderedDict

import numpy as np

from .dit_spec import DiTSpec
from .dit_weights import dit_param_shapes, init_dit_weights
from .specs import UNetSpec

INIT_SCHEMES = ("ddpm", "random")


def _conv(shapes, name, c_in, c_out, k):
    shapes[f"{name}.weight"] = (c_out, c_in, k, k)
    shapes[f"{name}.bias"] = (c_out,)


def _norm(shapes, name, c):
    shapes[f"{name}.weight"] = (c,)
    shapes[f"{name}.bias"] = (c,)


def _resblock(shapes, name, c_in, c_out, temb):
    _norm(shapes, f"{name}.norm1", c_in)
    _conv(shapes, f"{name}.conv1", c_in, c_out, 3)
    shapes[f"{name}.temb_proj.weight"] = (c_out, temb)
    shapes[f"{name}.temb_proj.bias"] = (c_out,)
    _norm(shapes, f"{name}.norm2", c_out)
    _conv(shapes, f"{name}.conv2", c_out, c_out, 3)
    if c_in != c_out:
        _conv(shapes, f"{name}.nin_shortcut", c_in, c_out, 1)


def _attn(shapes, name, c):
    _norm(shapes, f"{name}.norm", c)
    for proj in ("q", "k", "v", "proj_out"):
        _conv(shapes, f"{name}.{proj}", c, c, 1)


def unet_layout(spec: UNetSpec):
    """The UNet's blocks level by level, shared by the name list and both implementations:
    a list of (kind, name, args) in construction order."""
    C, temb = spec.base_channels, spec.temb_channels
    layout = [("conv", "conv_in", (spec.in_channels, C, 3)),
              ("linear", "temb.dense.0", (C, temb)),
              ("linear", "temb.dense.1", (temb, temb))]
    res = spec.image_size
    block_in = C
    skips = [C]
    for i, mult in enumerate(spec.ch_mult):
        block_out = C * mult
        for j in range(spec.num_res_blocks):
            layout.append(("res", f"down.{i}.block.{j}", (block_in, block_out)))
            block_in = block_out
            if res in spec.attn_resolutions:
                layout.append(("attn", f"down.{i}.attn.{j}", (block_in,)))
            skips.append(block_in)
        if i != len(spec.ch_mult) - 1:
            layout.append(("down", f"down.{i}.downsample", (block_in,)))
            res //= 2
            skips.append(block_in)
    layout += [("res", "mid.block_1", (block_in, block_in)),
               ("attn", "mid.attn_1", (block_in,)),
               ("res", "mid.block_2", (block_in, block_in))]
    for i in reversed(range(len(spec.ch_mult))):
        block_out = C * spec.ch_mult[i]
        for j in range(spec.num_res_blocks + 1):
            layout.append(("res", f"up.{i}.block.{j}", (block_in + skips.pop(), block_out)))
            block_in = block_out
            if res in spec.attn_resolutions:
                layout.append(("attn", f"up.{i}.attn.{j}", (block_in,)))
        if i != 0:
            layout.append(("up", f"up.{i}.upsample", (block_in,)))
            res *= 2
    assert not skips  # every skip connection consumed
    layout += [("norm", "norm_out", (block_in,)),
               ("conv", "conv_out", (block_in, spec.in_channels, 3))]
    return layout


def param_shapes(spec: UNetSpec):
    """OrderedDict name -> shape, in the order parameters are created."""
    shapes = OrderedDict()
    temb = spec.temb_channels
    for kind, name, args in unet_layout(spec):
        if kind == "conv":
            _conv(shapes, name, args[0], args[1], args[2])
        elif kind == "linear":
            shapes[f"{name}.weight"] = (args[1], args[0])
            shapes[f"{name}.bias"] = (args[1],)
        elif kind == "res":
            _resblock(shapes, name, args[0], args[1], temb)
        elif kind == "attn":
            _attn(shapes, name, args[0])
        elif kind in ("down", "up"):
            _conv(shapes, f"{name}.conv", args[0], args[0], 3)
        elif kind == "norm":
            _norm(shapes, name, args[0])
    return shapes


def count_params(spec: UNetSpec):
    """Parameters of the spec's model (a UNetSpec or a DiTSpec: its fixed pos_embed counts,
    as the DiT reference counts it)."""
    return int(sum(np.prod(s) for s in model_param_shapes(spec).values()))


def _is_norm(name):
    return ".norm" in name or name.startswith("norm")


def _is_final(name):
    # Layers the DDPM code initialises at scale 1e-10: each residual branch's last conv and
    # the output conv start near zero, so every block starts close to the identity.
    return name.endswith(("conv2.weight", "proj_out.weight")) or name == "conv_out.weight"


def init_weights(spec: UNetSpec, seed=0, scheme="ddpm"):
    """Seeded canonical init in float32 (a DiTSpec: models/common/dit_weights.py's, its
    "dit" scheme for "ddpm").

    ddpm: the DDPM code's variance_scaling(fan_avg, uniform), zero biases, unit norms, final
          layers at scale 1e-10.
    random: every tensor random (biases and norm affines too, no near-zero layers), for
          parity tests where a zero would hide a mismatch.
    """
    if isinstance(spec, DiTSpec):   # the DiT's own init: its "dit" scheme is the default
        return init_dit_weights(spec, seed, "dit" if scheme == "ddpm" else scheme)
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme={scheme!r} is invalid: one of {list(INIT_SCHEMES)}")
    rng = np.random.default_rng(seed)
    out = OrderedDict()
    for name, shape in param_shapes(spec).items():
        if name.endswith(".weight") and len(shape) > 1:
            receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
            fan_avg = (shape[0] + shape[1]) * receptive / 2
            scale = 1e-10 if (scheme == "ddpm" and _is_final(name)) else 1.0
            bound = np.sqrt(3 * scale / fan_avg)
            w = rng.uniform(-bound, bound, size=shape)
        elif scheme == "random":
            w = (1.0 if (_is_norm(name) and name.endswith("weight")) else 0.0) + rng.uniform(
                -0.1, 0.1, size=shape)
        else:
            w = np.ones(shape) if (_is_norm(name) and name.endswith("weight")) else np.zeros(shape)
        out[name] = w.astype(np.float32)
    return out


def model_param_shapes(spec):
    """The canonical name -> shape list of either model family: a UNetSpec's or a
    DiTSpec's (models/common/dit_weights.py)."""
    return dit_param_shapes(spec) if isinstance(spec, DiTSpec) else param_shapes(spec)


def check_weights(spec, weights, where="weights"):
    """Raise ValueError unless `weights` has exactly the canonical names and shapes of the
    spec's model (a UNetSpec or a DiTSpec)."""
    want = model_param_shapes(spec)
    missing = [n for n in want if n not in weights]
    extra = [n for n in weights if n not in want]
    bad = [f"{n}: {tuple(weights[n].shape)} != {want[n]}"
           for n in want if n in weights and tuple(weights[n].shape) != tuple(want[n])]
    if missing or extra or bad:
        kind = "DiT" if isinstance(spec, DiTSpec) else "UNet"
        raise ValueError(f"{where} do not match the {kind} spec: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}, wrong shape {bad[:5]}")


def save_weights(path, weights, metadata=None):
    """Write name -> float array to .safetensors or .npz, atomically (temp file, rename)."""
    path = str(path)
    tmp = path + ".tmp"
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    if path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
        save_file(arrays, tmp, metadata=meta)
    elif path.endswith(".npz"):
        if metadata:
            raise ValueError(f"{path}: metadata needs .safetensors; .npz stores arrays only")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    else:
        raise ValueError(f"{path}: unknown weight format; use .safetensors or .npz")
    os.replace(tmp, path)


def load_weights(path):
    """Read a weight file written by save_weights: (OrderedDict name -> array, metadata)."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: weight file not found")
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            return OrderedDict((k, f.get_tensor(k)) for k in f.keys()), meta
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return OrderedDict((k, z[k]) for k in z.files), {}
    raise ValueError(f"{path}: unknown weight format; use .safetensors or .npz")


# Architecture constants both implementations read from here, so they cannot drift apart.
GROUPNORM_EPS = 1e-6  # the DDPM code's value (frameworks default to 1e-5)


def time_embedding_frequencies(channels):
    """Frequencies of the sinusoidal time embedding (Transformer-style, as in the DDPM code):
    emb(t) = [sin(t * f), cos(t * f)], f_i = exp(-log(10000) * i / (half - 1))."""
    half = channels // 2
    return np.exp(np.arange(half, dtype=np.float64) * -(np.log(10000.0) / (half - 1))).astype(
        np.float32)
