"""Framework name -> backend class. Adding a framework is one folder under models/ and one
line here. Importing this module imports no framework; load_backend imports exactly one."""
import importlib
import importlib.util

# framework -> (its backend module, the package it needs: checked without importing it)
BACKENDS = {
    "torch": ("models.pt.backend", "torch"),
    "jittor": ("models.jt.backend", "jittor"),
    "jax": ("models.jx.backend", "jax"),
}
FRAMEWORKS = tuple(BACKENDS)
# Frameworks whose first call of each step compiles it (ahead of time, timed apart): a
# sampling benchmark needs at least one warm-up chain (bench/run/config.py).
COMPILES_AHEAD = ("jax",)
# Workloads a framework does not run yet: framework -> {workload: why}. A config asking for
# one is refused (bench/run/config.py) instead of recording a cell that can only fail.
# "data-parallel" stands for train.world_size > 1.
UNAVAILABLE = {}
# CUDA float32 math every backend pins at construction (docs/GPU.md): fp32 = no TF32 anywhere
# (the matched comparison), tf32 = TF32 tensor cores for matmuls and convolutions.
MATH_MODES = ("fp32", "tf32")


def installed(name):
    """Whether the framework's package can be imported here (without importing it)."""
    return importlib.util.find_spec(BACKENDS[name][1]) is not None


def installed_frameworks():
    return tuple(fw for fw in FRAMEWORKS if installed(fw))


def load_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"framework={name!r} is invalid: one of {list(FRAMEWORKS)}")
    return importlib.import_module(BACKENDS[name][0]).Backend
