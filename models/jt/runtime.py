"""Importing Jittor the way diffbench needs it: quiet, offline, and without dragging torch in.

Every Jittor import in the project goes through `import_jittor()` so the environment is set
before Jittor's import-time compiler runs (those variables are read once, at import).

On CUDA (docs/GPU.md, "Jittor on CUDA, offline"): Jittor 1.3.11's first CUDA import would
download cutt, cutlass and (with mpicc on PATH) nccl, and it looks for cuBLAS/cuRAND/cuDNN
headers and libraries next to nvcc only. `prepare_environment(use_cuda=True)` switches the
downloads off and points Jittor at a CUDA folder assembled from the toolkit and the nvidia-*
wheels that torch's CUDA build installs (`jittor_cuda_home`). cuDNN is on where the installed
Jittor carries diffbench's cuDNN 9 patch (tools/patched_jittor.py, which `make setup` and the
offline bundle install); a stock Jittor 1.3.11 knows only cuDNN 8 and runs its own
convolution kernels instead (conv_opt=1). Every variable is a default: one the user set wins.
"""
import ctypes
import glob
import hashlib
import importlib.util
import os
import shutil
import tempfile

from models.registry import MATH_MODES

# Jittor 1.3.11 import-time switches that would otherwise fetch code from the internet
# (compile_extern.py: setup_cutt 419-426 -> install_cutt 368-389, setup_cutlass 509-516 ->
# install_cutlass 460, setup_nccl 565-571 -> install_nccl, when mpicc exists).
CUDA_OFFLINE_DEFAULTS = {"use_cutt": "0", "use_cutlass": "0", "use_nccl": "0"}
# The file in the jittor package that lists the patches it was built with (one id a line).
PATCH_MARKER = "DIFFBENCH_PATCHES"


def jittor_patches():
    """The diffbench patches the importable jittor carries ([] for a stock Jittor, None where
    none is installed), read without importing it (that compiles)."""
    spec = importlib.util.find_spec("jittor")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], PATCH_MARKER)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return f.read().split()


def cudnn_usable():
    """cuDNN only with the cudnn9 patch: a stock Jittor 1.3.11 loads cuDNN 8's library names
    and compiles cuDNN's v6 RNN calls, which cuDNN 9 (every CUDA 13 wheel) removed
    (compile_extern.py 295; extern/cuda/cudnn/ops/cudnn_rnn_op.cc; Jittor issue #666). Without
    it, conv_opt=1 keeps only cuBLAS and cuRAND (compile_extern.py 232-233) and convolutions
    run on Jittor's own kernels; the report's environment says which ('cudnn')."""
    return "cudnn9" in (jittor_patches() or [])


# Libraries Jittor's CUDA ops link against by name; preloaded so the dynamic linker finds
# them without LD_LIBRARY_PATH (Jittor adds -L but no rpath).
PRELOAD = ("libcudart.so", "libcublasLt.so", "libcublas.so", "libcurand.so", "libcudnn.so")


def gpu_present():
    """A CUDA device node exists. Cheap, and true exactly where jittor can find libcudart."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _toolkit_nvcc():
    """The real nvcc of a CUDA toolkit (not a wrapper script elsewhere on PATH: Jittor takes
    the include/ and lib64/ beside the nvcc it is given)."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for home in homes:
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return os.path.realpath(os.path.join(home, "bin", "nvcc"))
    found = shutil.which("nvcc")
    return os.path.realpath(found) if found else None


def nvidia_wheel_dirs():
    """site-packages/nvidia/<pkg>/ folders of the nvidia-* wheels (cuBLAS, cuRAND, cuDNN...),
    found without importing torch."""
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations \
        else []
    return sorted(d for r in roots for d in glob.glob(os.path.join(r, "*"))
                  if os.path.isdir(os.path.join(d, "include")) or os.path.isdir(os.path.join(d, "lib")))


def _link_all(src_dir, dst_dir):
    """Symlink every entry of src_dir into dst_dir; an existing name keeps its first source."""
    if not os.path.isdir(src_dir):
        return
    for name in sorted(os.listdir(src_dir)):
        dst = os.path.join(dst_dir, name)
        if not os.path.lexists(dst):
            os.symlink(os.path.join(src_dir, name), dst)


def jittor_cuda_home(nvcc=None, wheel_dirs=None, cache=None):
    """A CUDA folder Jittor can use offline; returns the path of its bin/nvcc.

    <cache>/<hash>/bin/nvcc is a two-line script running the toolkit's nvcc (so Jittor's
    "include/ and lib64/ next to nvcc" finds ours); include/ and lib64/ hold symlinks to the
    toolkit's own entries first, then to the nvidia-* wheels' (cublas_v2.h, libcublas.so.13,
    ...), plus the unversioned names (libcublas.so -> libcublas.so.13) Jittor searches for.
    Built once per toolkit + wheel set, atomically; None without a toolkit nvcc."""
    nvcc = nvcc or _toolkit_nvcc()
    if not nvcc:
        return None
    toolkit = os.path.dirname(os.path.dirname(nvcc))
    wheel_dirs = nvidia_wheel_dirs() if wheel_dirs is None else list(wheel_dirs)
    cache = cache or os.path.join(os.path.expanduser("~"), ".cache", "diffbench", "jittor-cuda")
    key = hashlib.sha256("\n".join([nvcc] + wheel_dirs).encode()).hexdigest()[:12]
    home = os.path.join(cache, key)
    wrapper = os.path.join(home, "bin", "nvcc")
    if os.path.isfile(wrapper):
        return wrapper
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=cache, prefix=".build-")
    for sub in ("bin", "include", "lib64"):
        os.makedirs(os.path.join(tmp, sub))
    with open(os.path.join(tmp, "bin", "nvcc"), "w") as f:
        f.write(f'#!/bin/sh\nexec "{nvcc}" "$@"\n')
    os.chmod(os.path.join(tmp, "bin", "nvcc"), 0o755)
    _link_all(os.path.join(toolkit, "include"), os.path.join(tmp, "include"))
    _link_all(os.path.join(toolkit, "lib64"), os.path.join(tmp, "lib64"))
    for d in wheel_dirs:
        _link_all(os.path.join(d, "include"), os.path.join(tmp, "include"))
        _link_all(os.path.join(d, "lib"), os.path.join(tmp, "lib64"))
    lib64 = os.path.join(tmp, "lib64")
    for name in sorted(os.listdir(lib64)):  # libcublas.so.13 -> also libcublas.so
        if ".so." in name:
            plain = os.path.join(lib64, name.split(".so.", 1)[0] + ".so")
            if not os.path.lexists(plain):
                os.symlink(name, plain)
    try:
        os.rename(tmp, home)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return wrapper


def cuda_defaults():
    """The variables a CUDA import of Jittor needs offline: the download switches, cuDNN on or
    off (`cudnn_usable`), and nvcc_path to the assembled CUDA folder unless one is set.
    prepare_environment sets them as defaults in each process; the offline host run exports
    them once for all its steps (tools/offline/host_run.py)."""
    env = dict(CUDA_OFFLINE_DEFAULTS, conv_opt="0" if cudnn_usable() else "1")
    if "nvcc_path" not in os.environ:
        nvcc = jittor_cuda_home()
        if nvcc:
            env["nvcc_path"] = nvcc
    return env


def prepare_environment(use_cuda=None):
    """Set the variables Jittor reads at import. Existing user settings win."""
    # Jittor imports torch itself unless told not to: that costs ~0.7 s and ~170 MB RSS and
    # would pollute a Jittor-only process's memory figures.
    os.environ.setdefault("FIX_TORCH_ERROR", "0")
    os.environ.setdefault("log_silent", "1")
    # With mpicc on PATH Jittor compiles and loads its MPI ops at every import; only a rank
    # started by mpirun needs them (docs/DISTRIBUTED.md): the rest stay as without MPI.
    os.environ.setdefault("use_mpi", "1" if "OMPI_COMM_WORLD_SIZE" in os.environ else "0")
    if use_cuda is None:
        use_cuda = gpu_present()
    if not use_cuda:
        # nvcc exists on the CPU machines without a CUDA runtime; with it visible Jittor
        # crashes looking for libcudart.
        os.environ.setdefault("nvcc_path", "")
        return
    for key, value in cuda_defaults().items():
        os.environ.setdefault(key, value)
    if not onednn_prepared():
        # Without the oneDNN folder tools/setup.sh fills, Jittor's import would try to
        # download oneDNN (compile_extern.py: setup_mkl -> install_mkl, not caught) and fail
        # offline. Its oneDNN ops are CPU convolutions, which a CUDA run does not use.
        os.environ.setdefault("use_mkl", "0")
    _preload(os.path.join(os.path.dirname(os.path.dirname(os.environ.get("nvcc_path") or "/")),
                          "lib64"))


def onednn_prepared():
    """Jittor's oneDNN folder exists (~/.cache/jittor/mkl/dnnl_*: tools/setup.sh links a
    oneDNN 2.x there, docs/SETUP.md), so its import will not try to download one."""
    return bool(glob.glob(os.path.join(os.path.expanduser("~"), ".cache", "jittor", "mkl",
                                       "dnnl_*", "lib")))


def _preload(lib64):
    for name in PRELOAD:
        path = os.path.join(lib64, name)
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass  # Jittor reports what it cannot load, with its own message


def import_jittor(use_cuda=None):
    prepare_environment(use_cuda)
    import jittor

    _die_on_segfault()
    return jittor


def _die_on_segfault():
    """Replace the SIGSEGV handler Jittor installs at import (src/utils/log.cc,
    segfault_sigaction) with Python's faulthandler over the default action: a segfault dumps
    the Python stacks and ends the process with -11, at once.

    Jittor's handler attaches gdb to print a C++ trace and then calls exit(1) from the
    crashed thread. When that thread is one of its op-compile threads (a race in its parallel
    compiler, "thread_name: 'C1'": rare, twice in some hundreds of fresh processes on the
    2-core VM, in VarRelayManager::get_relay_src), exit() waits for a mutex the crashed
    thread holds and the process hangs until the runner's timeout; from the main thread it
    ended in "double free" and abort. Either way a cell failed late, or not at all, instead
    of at once with the reason."""
    import faulthandler
    import signal
    import sys

    faulthandler.disable()  # re-enabled below: enable() is a no-op while already enabled
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)  # what faulthandler chains to
    stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    faulthandler.enable(file=stream, all_threads=True)


def onednn_enabled():
    """True when Jittor's oneDNN (mkl) conv ops are compiled and loaded."""
    import jittor

    return getattr(jittor, "mkl_ops", None) is not None


def pin_math_mode(jt, mode):
    """CUDA float32 math (docs/GPU.md). Jittor's one switch is the `use_tensorcore` flag
    (src/init.cc:23, default 0). At 0, cuBLAS runs CUBLAS_COMPUTE_32F
    (extern/cuda/cublas/ops/cublas_matmul_op.cc:90) and cuDNN convolutions keep cuDNN's
    default math type (cudnn_conv_op.cc:174 sets one only when the flag is on), which permits
    TF32 on Ampere and later: NVIDIA_TF32_OVERRIDE=0 (set for fp32 by the runner's
    child_env) closes that. At 1, cuBLAS uses CUBLAS_COMPUTE_32F_FAST_TF32 (:96) and cuDNN
    CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION. Jittor has no cudnn.benchmark switch: it always
    times the algorithms of a new convolution shape (cudnnFind*Ex, cudnn_conv_op.cc:219-244,
    for the first 100 shapes: cudnn_wrapper.cc:13)."""
    if mode not in MATH_MODES:
        raise ValueError(f"math_mode={mode!r} is invalid: one of {list(MATH_MODES)}")
    jt.flags.use_tensorcore = 1 if mode == "tf32" else 0


def math_settings(jt):
    """What Jittor's math-mode settings are now, for versions()."""
    n = int(jt.flags.use_tensorcore)
    extern = getattr(jt, "compile_extern", None)
    cudnn = getattr(extern, "cudnn", None) is not None
    return {"math_mode": {0: "fp32", 1: "tf32"}.get(n, f"use_tensorcore={n}"),
            "use_tensorcore": n, "cudnn": cudnn,
            "cudnn_algo_search": "always (cudnnFind, per shape)" if cudnn else None,
            "nvidia_tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE"),
            "conv_opt": os.environ.get("conv_opt"), "patches": jittor_patches()}
