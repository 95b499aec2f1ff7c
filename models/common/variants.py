"""Variants: named settings under which a framework runs the same model "at its best"
(precision, compilation, memory format, attention kernel, framework flags), beside the
matched fp32 eager comparison. Framework-free: the spec, which framework offers which
setting, and which precision runs where. Each backend applies a spec (models/*/backend.py);
the config layer expands them into cells (bench/run/config.py, docs/VARIANTS.md).
"""
from dataclasses import dataclass, field

PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
ATTENTION = ("bmm", "sdpa")
# How a sampling chain runs: python = one compiled (or eager) step per call, looped in Python
# (the matched comparison); scan = the whole chain as one compiled loop (JAX: lax.scan)
SAMPLE_LOOPS = ("python", "scan")

# Jittor flags a variant may set: each changes how Jittor executes, never the math (the
# dtype, the op graph's result). Anything else is refused at config time.
JITTOR_FLAGS = {
    "try_use_32bit_index": "32-bit index arithmetic in generated kernels when it cannot "
                           "overflow (Jittor's own docs: faster kernels)",
    # measured (Jittor 1.3.11, CPU): the training loss is NaN at step 0 with it on, so the
    # cell fails; kept so that anyone can see it for themselves (docs/VARIANTS.md)
    "use_nfef_allocator": "never-free exact-fit allocator instead of sfrl",
    "lazy_execution": "1 (default) lazy graph execution; 0 = eager, op by op",
}

# The settings each framework offers (a variant naming one a framework lacks does not run on
# that framework; naming the framework explicitly is a config error).
SUPPORTED = {
    "torch": {"precision", "compile", "channels_last", "attention", "debug_output_scale"},
    "jittor": {"precision", "jittor_flags", "debug_output_scale"},
    "jax": {"precision", "sample_loop", "debug_output_scale"},
}

# Precisions per (framework, device). torch's CPU autocast runs bf16 and fp16 (fp16 without
# hardware support is emulated: slow, but it runs). Jittor's CPU kernels for bf16/fp16 are
# generic loops (no oneDNN): measured on the quick model, a bf16 training step took 3.1 s
# against 0.2 s in fp32 and its loss was NaN by step 10 (docs/VARIANTS.md), so Jittor runs
# them on CUDA only. On CUDA bf16 needs compute capability >= 8.0 (both frameworks).
PRECISION_DEVICES = {
    ("torch", "cpu"): PRECISIONS, ("torch", "cuda"): PRECISIONS,
    ("jittor", "cpu"): ("fp32",), ("jittor", "cuda"): PRECISIONS,
    ("jax", "cpu"): ("fp32", "bf16"), ("jax", "cuda"): ("fp32", "bf16"),
}
UNSUPPORTED_WHY = {
    ("jittor", "cpu"): "Jittor's CPU bf16/fp16 kernels are generic loops without oneDNN "
                       "(~15x slower than fp32 here) and its low-precision training went NaN "
                       "within 10 steps; Jittor's mixed precision is for CUDA",
}


@dataclass(frozen=True)
class VariantSpec:
    """What a variant changes; the defaults are the matched fp32 eager comparison."""

    name: str = ""
    precision: str = "fp32"
    compile: str = None            # torch.compile mode; None = eager
    channels_last: bool = False    # torch: NHWC memory format for weights and inputs
    attention: str = "bmm"         # torch: bmm + softmax (matched) | sdpa
    jittor_flags: dict = field(default_factory=dict)
    sample_loop: str = "python"    # JAX: python | scan (the whole chain in one lax.scan)
    # A deliberately broken variant for testing the quality guard: the network's noise
    # prediction is multiplied by this. 1.0 = unchanged; never set it outside tests.
    debug_output_scale: float = 1.0

    @classmethod
    def from_dict(cls, d):
        d = dict(d or {})
        d.pop("frameworks", None)
        return cls(**{k: v for k, v in d.items() if v is not None or k == "compile"})

    def changed(self):
        """The settings that differ from the matched comparison, by name."""
        base = VariantSpec()
        return {k: getattr(self, k) for k in ("precision", "compile", "channels_last",
                                               "attention", "jittor_flags", "sample_loop",
                                               "debug_output_scale")
                if getattr(self, k) != getattr(base, k)}

    def describe(self):
        """One short line: 'precision=bf16, compile=default'."""
        return ", ".join(f"{k}={v}" for k, v in self.changed().items()) or "matched fp32 eager"


MATCHED = VariantSpec()
