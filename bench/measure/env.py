"""The environment a run was measured in, for manifest.json and `harness.py env`.

Framework versions come from `Backend.versions()` run in a tiny subprocess per framework
(never import two frameworks into one process), or, during a benchmark, from each cell's
`start` record, which costs nothing extra.
"""
import glob
import json
import os
import platform
import subprocess
import sys

import psutil

from bench import REPO_ROOT


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model():
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def cpu_has_bf16():
    """The CPU has bfloat16 arithmetic (avx512_bf16 or AMX): bf16 variants can pay off."""
    return bool({"avx512_bf16", "amx_bf16"} & set(_cpuinfo().split()))


def usable_cpus():
    """CPUs this process may run on (affinity / container limits), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def git_info(root=REPO_ROOT):
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def gpu_info():
    """GPU name/driver/CUDA/memory per device through NVML; {"gpu": "absent", ...} otherwise."""
    try:
        import pynvml  # optional (nvidia-ml-py): a machine without it has no GPU to report
    except ImportError:
        return {"gpu": "absent", "reason": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return {"gpu": "absent", "reason": f"NVML unavailable: {e}"}
    try:
        def text(v):
            return v.decode() if isinstance(v, bytes) else v

        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            devices.append({"index": i, "name": text(pynvml.nvmlDeviceGetName(h)),
                            "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total)})
        return {"gpu": "present" if devices else "absent",
                "driver": text(pynvml.nvmlSystemGetDriverVersion()),
                "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}",
                "devices": devices}
    finally:
        pynvml.nvmlShutdown()


def host_info():
    return {
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_usable": usable_cpus(),
        "cpu_bf16": cpu_has_bf16(),
        "memory_total_bytes": int(psutil.virtual_memory().total),
    }


_VERSIONS_CHILD = (
    "import json, sys; sys.path.insert(0, sys.argv[2]);"
    "from models.registry import load_backend;"
    "print('DIFFBENCH_VERSIONS ' + json.dumps(load_backend(sys.argv[1]).versions()))")


def framework_versions(name, timeout_s=300):
    """Backend.versions() of one framework, from a child process of its own."""
    try:
        out = subprocess.run([sys.executable, "-c", _VERSIONS_CHILD, name, REPO_ROOT],
                             capture_output=True, text=True, timeout=timeout_s,
                             env=child_env(None))
    except subprocess.TimeoutExpired:
        return {"framework": name, "error": f"timed out after {timeout_s} s"}
    for line in out.stdout.splitlines():
        if line.startswith("DIFFBENCH_VERSIONS "):
            return json.loads(line.split(" ", 1)[1])
    # Jittor's "please rerun" exits 0 having printed nothing of ours: report, don't pretend.
    tail = (out.stdout + out.stderr).strip().splitlines()[-3:]
    return {"framework": name, "error": f"exit {out.returncode}: " + " | ".join(tail)}


def child_env(threads, cfg=None):
    """Environment for a framework child process: same thread count for every framework.

    On CUDA, the same device numbering as NVML (CUDA_DEVICE_ORDER=PCI_BUS_ID, so the
    monitor watches the GPU the worker uses; a user's own setting wins) and, for
    `math_mode: fp32`, NVIDIA_TF32_OVERRIDE=0: cuBLAS and cuDNN then use no TF32 in this
    process whatever a framework asks for (Jittor's cuDNN convolutions run in cuDNN's
    default math, which permits TF32 on Ampere and later). `math_mode: tf32` removes the
    override, which would otherwise silently turn the variant back into fp32."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    mode = (cfg or {}).get("math_mode", "fp32")
    if mode == "fp32":
        env["NVIDIA_TF32_OVERRIDE"] = "0"
    else:
        env.pop("NVIDIA_TF32_OVERRIDE", None)
    return env


def cuda_device_present():
    """(True, None) or (False, why): is there a GPU a CUDA framework could use? Cheap and
    framework-free (config validation runs it before any cell): NVML's device count, else
    the /dev/nvidia<N> device nodes."""
    try:
        import pynvml  # optional (nvidia-ml-py)
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            reason = f"NVML unavailable ({e})"
        else:
            try:
                n = pynvml.nvmlDeviceGetCount()
            finally:
                pynvml.nvmlShutdown()
            return (True, None) if n else (False, "NVML sees no GPU")
    else:
        reason = "nvidia-ml-py not installed"
    if glob.glob("/dev/nvidia[0-9]*"):
        return True, None
    return False, f"{reason} and no /dev/nvidia<N> device"


def environment(frameworks=None):
    """Everything `harness.py env` prints; frameworks=None skips the per-framework children."""
    env = {"host": host_info(), "gpu": gpu_info(), "git": git_info()}
    if frameworks:
        env["frameworks"] = {name: framework_versions(name) for name in frameworks}
    return env
