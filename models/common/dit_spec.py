"""The DiT model family (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"),
independent of any framework: a frozen dataclass validated on creation, and the paper's
named configurations.

Defaults are the reference code's DiT-XL/2 on 256x256 ImageNet latents (facebookresearch/DiT,
models.py: 32x32x4 input, patch 2, hidden 1152, depth 28, 16 heads, 1000 classes, label
dropout 0.1), except `learn_sigma`: False here (the model predicts the noise only, as every
diffbench model does; True adds the reference's variance channels). See docs/DIT.md.
"""
from dataclasses import asdict, dataclass

from .specs import _fail, spec_from_dict

# The sinusoidal timestep embedding's width before the MLP (the reference's
# frequency_embedding_size) and its period: constants of the architecture, not spec keys.
TIME_FREQUENCY_DIM = 256
TIME_MAX_PERIOD = 10000

# The paper's Table 1 (hidden size, depth, heads) x patch sizes 2, 4, 8, plus "DiT-T", a tiny
# model for CPU tests that the paper does not have.
_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16),
          "T": (64, 2, 2)}
PRESETS = {f"DiT-{size}/{p}": {"hidden_size": h, "depth": d, "num_heads": n, "patch_size": p}
           for size, (h, d, n) in _SIZES.items() for p in (2, 4, 8)}


@dataclass(frozen=True)
class DiTSpec:
    """A DiT: patchify, `depth` adaLN-Zero transformer blocks, a final adaLN layer, unpatchify."""

    image_size: int = 32        # input height = width (latent or pixel)
    in_channels: int = 4
    patch_size: int = 2         # tokens = (image_size / patch_size)^2
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0      # MLP hidden width = int(hidden_size * mlp_ratio)
    num_classes: int = 1000     # 0 = unconditional (no label embedder)
    class_dropout: float = 0.1  # training-time label dropout (classifier-free guidance);
    #                             > 0 adds the null class, index num_classes
    learn_sigma: bool = False   # True: 2*in_channels outputs (eps, then the variance channels)
    freq_shift: float = 0       # timestep frequencies exp(-ln(10000) i / (128 - freq_shift)):
    #                             0 = the reference, 1 = diffusers (downscale_freq_shift)

    def __post_init__(self):
        n = "DiTSpec"
        for name in ("image_size", "in_channels", "patch_size", "hidden_size", "depth",
                     "num_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                _fail(n, name, v, "a positive integer")
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) \
                or self.num_classes < 0:
            _fail(n, "num_classes", self.num_classes, "an integer >= 0 (0 = unconditional)")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) \
                or self.mlp_ratio <= 0 or int(self.hidden_size * self.mlp_ratio) < 1:
            _fail(n, "mlp_ratio", self.mlp_ratio,
                  "a positive number with int(hidden_size * mlp_ratio) >= 1")
        p = self.class_dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            _fail(n, "class_dropout", self.class_dropout, "a probability in [0, 1)")
        if self.num_classes == 0 and self.class_dropout > 0:
            _fail(n, "class_dropout", self.class_dropout,
                  "must be 0 for an unconditional model (num_classes=0): there are no labels "
                  "to drop")
        if not isinstance(self.learn_sigma, bool):
            _fail(n, "learn_sigma", self.learn_sigma, "true or false")
        half = TIME_FREQUENCY_DIM // 2
        if isinstance(self.freq_shift, bool) or not isinstance(self.freq_shift, (int, float)) \
                or not 0 <= self.freq_shift < half:
            _fail(n, "freq_shift", self.freq_shift,
                  f"a number in [0, {half}) (0 = the reference DiT, 1 = diffusers)")
        if self.hidden_size % self.num_heads:
            _fail(n, "hidden_size", self.hidden_size,
                  f"must be divisible by num_heads={self.num_heads} (each head gets "
                  f"hidden_size / num_heads channels)")
        if self.hidden_size % 4:
            _fail(n, "hidden_size", self.hidden_size,
                  "must be divisible by 4 (the 2-D sin-cos position embedding gives each "
                  "axis half the channels, as sin/cos pairs)")
        if self.image_size % self.patch_size:
            _fail(n, "image_size", self.image_size,
                  f"must be divisible by patch_size={self.patch_size} (whole patches only)")

    # -- derived sizes -------------------------------------------------------------------
    @property
    def out_channels(self):
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def grid_size(self):
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self):
        """Tokens per image."""
        return self.grid_size ** 2

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self):
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def has_null_class(self):
        """A label-embedding row for "no class" (index num_classes): the reference adds it
        exactly when labels are dropped in training, which classifier-free guidance needs."""
        return self.num_classes > 0 and self.class_dropout > 0

    @property
    def num_embeddings(self):
        """Rows of the label-embedding table (0: no label embedder)."""
        return self.num_classes + int(self.has_null_class) if self.num_classes else 0

    def to_dict(self):
        return asdict(self)


def dit_preset(name, **overrides):
    """The named configuration ("DiT-XL/2"...) with any other spec keys overridden."""
    if name not in PRESETS:
        raise ValueError(f"DiT preset={name!r} is invalid: one of {list(PRESETS)}")
    bad = sorted(set(PRESETS[name]) & set(overrides))
    if bad:
        raise ValueError(f"DiT preset={name!r} fixes {bad}; drop them from the overrides or "
                         f"give every key without a preset")
    return DiTSpec(**PRESETS[name], **overrides)


def dit_spec_from_dict(data, where="dit"):
    """A DiTSpec from a mapping: either every key, or "preset" plus keys the preset leaves
    open. Unknown keys are rejected with the list of valid ones."""
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is None:
        return spec_from_dict(DiTSpec, data, where)
    unknown = sorted(set(data) - set(DiTSpec.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: "
                         f"{['preset'] + list(DiTSpec.__dataclass_fields__)}")
    return dit_preset(preset, **data)


__all__ = ["DiTSpec", "PRESETS", "dit_preset", "dit_spec_from_dict", "TIME_FREQUENCY_DIM",
           "TIME_MAX_PERIOD"]
