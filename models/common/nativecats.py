"""Native (machine-code) classes for `perf` samples of a profiled step: which code a thread was
running, by shared object and symbol. Framework-free, like models/common/opcats.py.

The framework profilers time ops; the rest of a synced step ("framework overhead") is code no
op row holds: an executor scheduling and fusing ops, memory allocation, the Python interpreter.
A sampling profile of the same steps says how much of it each of those is. Each class is either
`inside` ops (code that runs within an op's timed span: kernels, oneDNN, the OpenMP runtime)
or `outside` them (the overhead's parts); the report adds the `outside` classes to the op total
for its native coverage figure. `unclassified` code counts for neither.

Rules per framework, first match wins, on (shared object basename, symbol):
- Jittor times only each op's compiled entry (`Profiler::record_and_run` around
  `jit_entry(op)`), so everything in jittor_core — run_sync, fusion (count_fuse,
  FusedOp::update_ops), JIT-key preparation, liveness, node destruction, the pyjt bindings —
  and the C library's malloc/free it calls are outside ops; kernels live in the compiled
  `*_op.so` / custom-op libraries, oneDNN (libdnnl and its JIT code, which perf shows as
  `[JIT] tid N`) and libgomp.
- torch's profiler times every ATen op at the dispatcher, so libtorch_cpu, libc10, oneDNN,
  MKL, libgomp and the C library's allocations (tensors are allocated inside ops) are inside;
  the interpreter and torch's Python bindings (argument parsing, before the dispatcher) are
  outside.
- JAX's Python thread only dispatches: XLA runs the compiled program's thunks on its own
  threads (the op profile times them there), so on the main thread jaxlib (`_jax.so`,
  `libjax_common.so`: PjRt dispatch, argument handling, waiting) is the executor, the C
  library's allocations are allocation, and XLA's kernels (YNNPACK/XNNPACK, Eigen, oneDNN,
  the compiled program, which perf shows as `[JIT]` or unknown) are op code should they run
  there.
- All: the OS kernel (page faults, syscalls) is outside; the profiler's own bookkeeping is
  outside for Jittor (key building before its timer starts) and inside for torch (its
  RecordFunction callbacks run within the op's span).
"""
import re

INSIDE, OUTSIDE = "inside", "outside"

# class -> (side, label)
CLASSES = {
    "op_code": (INSIDE, "op code (kernels, oneDNN, OpenMP)"),
    "executor": (OUTSIDE, "executor & graph (native)"),
    "alloc": (OUTSIDE, "memory allocation"),
    "python": (OUTSIDE, "Python interpreter & bindings"),
    "profiler": (OUTSIDE, "profiler bookkeeping"),
    "os": (OUTSIDE, "OS kernel (page faults, syscalls)"),
    "unclassified": (None, "unclassified native code"),
}
OUTSIDE_CLASSES = [c for c, (side, _) in CLASSES.items() if side == OUTSIDE]

_LIBC_ALLOC = r"malloc|free|memalign|unlink_chunk|consolidate|realloc|calloc|_int_"
_COMMON = [
    ("os", r"^\[kernel", None),
    ("python", r"^libpython|numpy", None),
]
RULES = {
    "jittor": _COMMON + [
        ("profiler", r"jittor_core", r"Profiler|get_marks"),
        ("alloc", r"jittor_core", r"Allocator|BlockPool"),
        ("executor", r"jittor_core|jit_utils_core|^libstdc\+\+", None),
        ("alloc", r"^libc\.so", _LIBC_ALLOC),
        ("op_code", r"_op\.so$|custom_ops|gen_ops|libdnnl|libmkldnn|^\[JIT\]|libgomp|^libm\.so"
                    r"|libmvec|^libc\.so", None),
    ],
    "jax": _COMMON + [
        ("profiler", r"libjax_common|_jax\.so|_profiler", r"profiler|TraceMe"),
        ("op_code", r"libjax_common|_jax\.so", r"ynn|xnn_|Eigen::|dnnl|__xla_cpu_runtime"),
        ("executor", r"libjax_common|_jax\.so|_xla\.so|^libstdc\+\+", None),
        ("alloc", r"^libc\.so", _LIBC_ALLOC),
        ("op_code", r"^\[JIT\]|^\[unknown\]|libgomp|libdnnl|^libm\.so|libmvec|^libc\.so", None),
    ],
    "torch": _COMMON + [
        ("python", r"^libtorch_python", None),
        ("op_code", r"^libtorch|^libc10|libgomp|libiomp|^\[JIT\]|libdnnl|libsleef|libmkl"
                    r"|^libc\.so|^libm\.so|libmvec|^libstdc\+\+|^ld-linux", None),
    ],
}
_COMPILED = {fw: [(c, re.compile(d), re.compile(s) if s else None) for c, d, s in rules]
             for fw, rules in RULES.items()}


def native_class(framework: str, dso: str, symbol: str) -> str:
    """The class of code at (shared object basename, symbol) for `framework`."""
    for cls, dso_re, sym_re in _COMPILED.get(framework, ()):
        if dso_re.search(dso) and (sym_re is None or sym_re.search(symbol)):
            return cls
    return "unclassified"


def is_spin(dso: str) -> bool:
    """A worker thread in the OpenMP runtime is waiting for work (spinning), not computing."""
    return "libgomp" in dso or "libiomp" in dso
