"""What a JAX process needs before and around `import jax`: the CPU thread limit, the GPU
allocator setting, XLA compile accounting and the versions. docs/JAX.md explains each.

Import this module before jax (models/jx/backend.py does): it sets the environment XLA
reads once at start-up.
"""
import contextlib
import os
import threading
import time

# XLA preallocates 75% of a GPU's memory at start-up unless told not to: the allocator's
# peak would then say nothing (docs/JAX.md "Memory"). A user's own setting wins.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # XLA's C++ start-up chatter


def limit_cpus(threads, slot=0):
    """Cap XLA's CPU threads by CPU affinity. XLA:CPU's thread pools are sized from the
    CPUs this process may run on, and its flags do not reliably cap them (docs/JAX.md);
    affinity is a hard limit: the process cannot use more cores than it is given. Call it
    before the first computation (threads made later inherit the mask). slot: the local rank
    of a data-parallel cell, whose ranks take disjoint CPUs (wrapping around when there are
    too few). Returns how the process is limited, in words, for the start record."""
    allowed = sorted(os.sched_getaffinity(0))
    if not threads or (int(threads) >= len(allowed) and not slot):
        return f"CPU affinity: all {len(allowed)} usable CPUs"
    n = min(int(threads), len(allowed))
    keep = [allowed[(slot * n + i) % len(allowed)] for i in range(n)]
    os.sched_setaffinity(0, keep)
    return f"CPU affinity: {len(keep)} of {len(allowed)} CPUs ({keep})"


# -- profile regions -----------------------------------------------------------------------
def scope(region):
    """A region (opcats.REGIONS) inside a jitted function: a jax.named_scope, which only
    names the HLO it encloses (the op_name metadata the profile classifies by), so it is on
    in every cell. Usable as a decorator."""
    import jax

    from models.common.opcats import REGION_PREFIX

    return jax.named_scope(REGION_PREFIX + region)


# -- compile accounting ------------------------------------------------------------------
# Every XLA compile of this process, from jax's own monitoring event: ahead-of-time ones
# (labelled with the function they compiled) and any implicit one (an eager op, a jit cache
# miss). The workloads compare the count before and after measured steps: a compile there
# fails the cell instead of being timed (bench/run/workloads.py).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"   # wraps a cache read too
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_log, _label, _hits = [], threading.local(), []


def _on_event(event, **_):
    if event == CACHE_HIT_EVENT:
        _hits.append(True)


def _on_duration(event, seconds, **_):
    if event == COMPILE_EVENT:
        _log.append({"function": getattr(_label, "name", None) or "implicit (jit or eager op)",
                     "seconds": float(seconds), "at": time.time(),
                     "persistent_cache_hit": bool(_hits)})
        _hits.clear()


def install_compile_listener():
    import jax

    if not getattr(install_compile_listener, "done", False):
        jax.monitoring.register_event_listener(_on_event)
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        install_compile_listener.done = True


# JAX's persistent compilation cache, the counterpart of Jittor's kernel cache and
# torch.compile's inductor cache: the first process compiles, later ones (the replicates, the
# next run) load the executable from disk. Only compiles over a second are written (jax's
# default). DIFFBENCH_JAX_CACHE=off turns it off; a path moves it.
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "diffbench", "jax-compile")


def compilation_cache():
    """Turn on the persistent compilation cache; returns its folder, or None when off."""
    import jax

    where = os.environ.get("DIFFBENCH_JAX_CACHE", DEFAULT_CACHE)
    if where.lower() in ("off", "0", "none", ""):
        return None
    os.makedirs(where, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", where)
    return where


def compile_log():
    return list(_log)


@contextlib.contextmanager
def compiling(name):
    """Label the compiles inside (an ahead-of-time compile of `name`)."""
    _label.name = name
    try:
        yield
    finally:
        _label.name = None


class AheadOfTime:
    """jax.jit(fn), lowered and compiled ahead of time once per signature key, the compile
    timed apart; calls then go to the compiled executable, which refuses arguments of any
    other shape or dtype (a TypeError) instead of recompiling behind the clock."""

    def __init__(self, fn, name, donate_argnums=(), static_argnums=()):
        import jax

        self.name = name
        self.static = tuple(static_argnums)
        self.jitted = jax.jit(fn, donate_argnums=donate_argnums, static_argnums=self.static)
        self.compiled = {}
        self.seconds = {}

    def __call__(self, key, *args):
        exe = self.compiled.get(key)
        if exe is None:
            t0 = time.perf_counter()
            with compiling(self.name):
                exe = self.jitted.lower(*args).compile()
            self.seconds[key] = time.perf_counter() - t0
            self.compiled[key] = exe
        # the executable takes the traced arguments only: static ones are compiled in
        return exe(*(a for i, a in enumerate(args) if i not in self.static))


def versions(device, thread_limit, math_mode, cache=None):
    import flax
    import jax
    import jaxlib
    import optax

    dev = device.platform
    info = {"framework": "jax", "version": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "optax": optax.__version__,
            "backend": jax.default_backend(), "device_kind": device.device_kind,
            "cuda_available": any(d.platform == "gpu" for d in _devices()),
            "layout": "NHWC inside the model (XLA's convolution layout), NCHW at the edges",
            "threads": len(os.sched_getaffinity(0)), "thread_limit": thread_limit,
            "math_mode": math_mode,
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "compilation_cache": cache or "off",
            "preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")}
    if dev == "gpu":
        try:
            from jax._src.lib import cuda_versions   # absent on CPU-only jaxlib builds
            info["cuda"] = cuda_versions.cuda_runtime_get_version()
            info["cudnn"] = cuda_versions.cudnn_get_version()
        except Exception:   # a version read must never fail a cell
            info["cuda"] = info["cudnn"] = None
    else:
        info["cuda"] = None
    return info


def _devices():
    import jax

    try:
        return jax.devices()
    except RuntimeError:
        return []
