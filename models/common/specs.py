"""What a model is, independent of any framework: plain dataclasses, validated on creation.

Every invalid field raises ValueError naming the field and what would be valid, so a bad
config fails before any framework is imported.
"""
from dataclasses import asdict, dataclass, fields

BETA_SCHEDULES = ("linear", "cosine", "quadratic")
LOSSES = ("l1", "l2", "huber")
VARIANCES = ("fixed_large", "fixed_small")


def _fail(cls, name, value, valid):
    raise ValueError(f"{cls}.{name}={value!r} is invalid: {valid}")


@dataclass(frozen=True)
class UNetSpec:
    """The DDPM-paper UNet (Ho et al. 2020, appendix B). Defaults are its CIFAR-10 model."""

    image_size: int = 32
    in_channels: int = 3
    base_channels: int = 128
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (16,)
    dropout: float = 0.1
    norm_groups: int = 32

    def __post_init__(self):
        # Lists arrive from YAML/JSON; keep the spec hashable and comparable.
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        n = "UNetSpec"
        for name in ("image_size", "in_channels", "base_channels", "num_res_blocks", "norm_groups"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                _fail(n, name, v, "a positive integer")
        if not self.ch_mult or any(not isinstance(m, int) or m <= 0 for m in self.ch_mult):
            _fail(n, "ch_mult", self.ch_mult, "a non-empty list of positive integers")
        if not 0.0 <= float(self.dropout) < 1.0:
            _fail(n, "dropout", self.dropout, "a probability in [0, 1)")
        levels = len(self.ch_mult)
        if self.image_size % (2 ** (levels - 1)):
            _fail(n, "image_size", self.image_size,
                  f"must be divisible by 2^(levels-1) = {2 ** (levels - 1)} for "
                  f"ch_mult={list(self.ch_mult)} ({levels} resolution levels)")
        reached = self.resolutions()
        for r in self.attn_resolutions:
            if r not in reached:
                _fail(n, "attn_resolutions", list(self.attn_resolutions),
                      f"resolution {r} is never reached; the UNet works at {reached}")
        for c in self.channel_counts():
            if c % self.norm_groups:
                _fail(n, "norm_groups", self.norm_groups,
                      f"must divide every channel count {sorted(set(self.channel_counts()))}")
        if self.base_channels % 2:
            _fail(n, "base_channels", self.base_channels,
                  "must be even (sinusoidal time embedding)")

    def resolutions(self):
        """Feature-map sizes of the levels, e.g. [32, 16, 8, 4]."""
        return [self.image_size // 2 ** i for i in range(len(self.ch_mult))]

    def channel_counts(self):
        return [self.base_channels * m for m in self.ch_mult]

    @property
    def temb_channels(self):
        return self.base_channels * 4

    def to_dict(self):
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d


@dataclass(frozen=True)
class DiffusionSpec:
    """The forward process and the training objective. Defaults are the DDPM paper's."""

    timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_s: float = 0.008
    loss: str = "l2"
    variance: str = "fixed_large"
    clip_x0: bool = True

    def __post_init__(self):
        n = "DiffusionSpec"
        if not isinstance(self.timesteps, int) or isinstance(self.timesteps, bool) or self.timesteps < 2:
            _fail(n, "timesteps", self.timesteps, "an integer >= 2")
        if self.beta_schedule not in BETA_SCHEDULES:
            _fail(n, "beta_schedule", self.beta_schedule, f"one of {list(BETA_SCHEDULES)}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            _fail(n, "beta_start/beta_end", (self.beta_start, self.beta_end),
                  "need 0 < beta_start <= beta_end < 1")
        if self.loss not in LOSSES:
            _fail(n, "loss", self.loss, f"one of {list(LOSSES)}")
        if self.variance not in VARIANCES:
            _fail(n, "variance", self.variance, f"one of {list(VARIANCES)}")
        if not isinstance(self.clip_x0, bool):
            _fail(n, "clip_x0", self.clip_x0, "true or false")

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class OptimSpec:
    """Adam with linear learning-rate warm-up, global grad-norm clipping and EMA (DDPM paper)."""

    lr: float = 2e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 5000
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.9999  # 0 disables EMA

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        n = "OptimSpec"
        if not self.lr > 0:
            _fail(n, "lr", self.lr, "a positive number")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            _fail(n, "betas", list(self.betas), "two numbers in [0, 1)")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            _fail(n, "warmup_steps", self.warmup_steps, "an integer >= 0")
        if self.grad_clip < 0:
            _fail(n, "grad_clip", self.grad_clip, "a number >= 0 (0 = off)")
        if not 0 <= self.ema_decay < 1:
            _fail(n, "ema_decay", self.ema_decay, "a number in [0, 1) (0 = off)")

    def lr_at(self, step):
        """Learning rate for optimizer step `step` (1-based): linear warm-up, then constant."""
        if self.warmup_steps == 0:
            return self.lr
        return self.lr * min(1.0, step / self.warmup_steps)

    def to_dict(self):
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def spec_from_dict(cls, data, where="spec"):
    """Build a spec from a mapping, rejecting unknown keys with the list of valid ones."""
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
    return cls(**data)


__all__ = ["UNetSpec", "DiffusionSpec", "OptimSpec", "spec_from_dict",
           "BETA_SCHEDULES", "LOSSES", "VARIANCES"]
