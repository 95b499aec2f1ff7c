"""Framework name -> backend class. Adding a framework is one folder under models/ and one
line here. Importing this module imports no framework; load_backend imports exactly one."""
import importlib

BACKENDS = {
    "torch": "models.pt.backend",
    "jittor": "models.jt.backend",
}
FRAMEWORKS = tuple(BACKENDS)
# CUDA float32 math every backend pins at construction (docs/GPU.md): fp32 = no TF32 anywhere
# (the matched comparison), tf32 = TF32 tensor cores for matmuls and convolutions.
MATH_MODES = ("fp32", "tf32")


def load_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"framework={name!r} is invalid: one of {list(FRAMEWORKS)}")
    return importlib.import_module(BACKENDS[name]).Backend
