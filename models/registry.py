"""Framework name -> backend class. Adding a framework is one folder under models/ and one
line here. Importing this module imports no framework; load_backend imports exactly one."""
import importlib

BACKENDS = {
    "torch": "models.pt.backend",
    "jittor": "models.jt.backend",
}
FRAMEWORKS = tuple(BACKENDS)


def load_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"framework={name!r} is invalid: one of {list(FRAMEWORKS)}")
    return importlib.import_module(BACKENDS[name]).Backend
