"""`make offline-bundle`: the folder an offline GPU host needs beside the working tree (docs/GPU.md,
"On an offline GPU host").

.offline/ (git-ignored), at most 60 MiB:
  wheels/    what such a host lacks: jittor 1.3.11 as a pure wheel built from its source
             distribution (with the numpy-2 patch below), its astunparse, torch-fidelity
  pyinclude-3.12.tar.gz   CPython 3.12's headers, for a host without python3.12-dev (Jittor
             compiles its core against Python.h at import); used only where the host has none
  run.sh     the one command to run there (a copy of tools/offline/run.sh)
  MANIFEST.txt  every file with its size and sha256

Why the patch: the GPU hosts run numpy 2.x (their torch, pandas and scipy are built for it),
and Jittor 1.3.11 reads a numpy array's item size through a hard-coded copy of numpy 1's
PyArray_Descr (src/pyjt/numpy.h: `arr->descr->elsize`); numpy 2 moved and widened that field,
so every array copied into Jittor would get a wrong byte size. Jittor's own later source
derives the size from the dtype instead (its type_num stays at the same offset); the patch
does the same, and imports numpy's C API from numpy._core where numpy.core is only a
deprecated alias. Nothing else in the wheel changes; its version stays 1.3.11.0.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIMIT_MIB = 60
JITTOR = "jittor==1.3.11"
# Pure-Python wheels the hosts lack (their torch, numpy, pandas, ... stay theirs).
PURE_WHEELS = ["astunparse==1.6.3", "torch-fidelity==0.4.0"]
PY_VERSION = "3.12"

# (file inside the jittor package, old text, new text[, times]): each old text must occur
# exactly `times` (default 1) or the build stops, so a different Jittor source cannot be
# patched silently wrong.
HELPER_CUDA = "jittor/extern/cuda/inc/helper_cuda.h"
JITTOR_PATCHES = [
    ("jittor/src/pyjt/numpy.h",
     "    size *= arr->descr->elsize;\n",
     "    // diffbench: numpy 2 moved and widened PyArray_Descr.elsize; type_num did not move,\n"
     "    // so the item size comes from Jittor's own dtype (as in Jittor's later source).\n"
     "    size *= get_type_str(arr).dsize();\n"),
    ("jittor/src/pyjt/numpy.cc",
     '    PyObjHolder np(PyImport_ImportModule("numpy.core.multiarray"), "numpy is not installed");\n',
     '    // diffbench: numpy 2 names it numpy._core (numpy.core is a deprecated alias).\n'
     '    PyObject* np_mod = PyImport_ImportModule("numpy._core.multiarray");\n'
     '    if (!np_mod) { PyErr_Clear(); np_mod = PyImport_ImportModule("numpy.core.multiarray"); }\n'
     '    PyObjHolder np(np_mod, "numpy is not installed");\n'),
    # CUDA 13 removed cudaDeviceProp::computeMode and ::clockRate (seen on an H200 host with
    # nvcc 13.0: "struct cudaDeviceProp has no member named computeMode", which stops Jittor's
    # core compile). cudaDeviceGetAttribute gives both on every CUDA version.
    (HELPER_CUDA,
     "#ifdef __CUDA_RUNTIME_H__\n// General GPU Device CUDA Initialization\n",
     "#ifdef __CUDA_RUNTIME_H__\n"
     "// diffbench: CUDA 13 has no cudaDeviceProp::computeMode / ::clockRate.\n"
     "inline int jt_device_attr(cudaDeviceAttr attr, int dev) {\n"
     "  int value = 0;\n  cudaDeviceGetAttribute(&value, attr, dev);\n  return value;\n}\n\n"
     "// General GPU Device CUDA Initialization\n"),
    (HELPER_CUDA,
     "  if (deviceProp.computeMode == cudaComputeModeProhibited) {\n",
     "  if (jt_device_attr(cudaDevAttrComputeMode, devID) == cudaComputeModeProhibited) {\n"),
    (HELPER_CUDA,
     "deviceProp.computeMode != cudaComputeModeProhibited",
     "jt_device_attr(cudaDevAttrComputeMode, current_device) != cudaComputeModeProhibited", 2),
    (HELPER_CUDA,
     "sm_per_multiproc * deviceProp.clockRate;",
     "sm_per_multiproc * jt_device_attr(cudaDevAttrClockRate, current_device);"),
    # CUDA 13's CUB, Thrust and libcu++ refuse C++14 ("CUB requires at least C++17"), and
    # Jittor compiles its CUDA ops with -std=c++14: its softmax kernel (other/code_softmax.py,
    # cub::BlockReduce; every attention layer on CUDA) failed to compile on an H200 host, and
    # its cub ops (argsort, cumsum, where, arg_reduce) were dropped at import. Jittor's CUDA
    # sources and those headers compile with -std=c++17 under nvcc 13.0 (checked: a Jittor op
    # header set + cub::BlockReduce, 0 errors with c++17, 6 with c++14). Host code keeps c++14.
    ("jittor/compiler.py",
     "if has_cuda:\n    nvcc_flags += cc_flags\n    def convert_nvcc_flags(nvcc_flags):\n",
     "if has_cuda:\n    nvcc_flags += cc_flags\n"
     "    # diffbench: CUDA 13's CUB/Thrust/libcu++ require C++17.\n"
     "    _nvcc_needs_cxx17 = jit_utils.get_int_version(nvcc_path)[0] >= 13\n"
     "    def convert_nvcc_flags(nvcc_flags):\n"),
    # ...at the very end of the conversion: before it, Jittor itself rewrites any -std=c++17
    # to "-std=c++14 -Xcompiler -std:c++14" (for Windows' cl, applied on every OS).
    ("jittor/compiler.py",
     '            nvcc_flags += " -G "\n        return nvcc_flags\n',
     '            nvcc_flags += " -G "\n'
     '        if _nvcc_needs_cxx17:\n'
     '            nvcc_flags = nvcc_flags.replace("-std=c++14", "-std=c++17")\n'
     '        return nvcc_flags\n'),
]


def run(cmd, **kw):
    print("[offline-bundle] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def pip(*args):
    run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"])


def patch_jittor_source(pkg_root):
    """Apply JITTOR_PATCHES under pkg_root (the sdist's python/ folder)."""
    for rel, old, new, *times in JITTOR_PATCHES:
        path = os.path.join(pkg_root, rel)
        with open(path) as f:
            text = f.read()
        want = times[0] if times else 1
        if text.count(old) != want:
            raise SystemExit(f"offline-bundle: {rel}: expected {old.strip()!r} {want} time(s), "
                             f"found {text.count(old)} (not Jittor 1.3.11's source?)")
        with open(path, "w") as f:
            f.write(text.replace(old, new))


def build_jittor_wheel(dest, work):
    pip("download", "--no-deps", "--no-binary", ":all:", JITTOR, "-d", work)
    sdist = next(os.path.join(work, n) for n in os.listdir(work) if n.endswith(".tar.gz"))
    with tarfile.open(sdist) as t:
        t.extractall(work, filter="data")
    src = next(os.path.join(work, n) for n in os.listdir(work)
               if n.startswith("jittor-") and os.path.isdir(os.path.join(work, n)))
    patch_jittor_source(os.path.join(src, "python"))
    setup_py = os.path.join(src, "setup.py")
    with open(setup_py) as f:
        text = f.read()
    # The wheel is installed with --no-deps; its metadata says what it now works with.
    with open(setup_py, "w") as f:
        f.write(text.replace('"numpy<2.0",', '"numpy",'))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q",
         "-w", dest, src])


def pack_python_headers(dest):
    """CPython 3.12's include/python3.12 from this machine (pyenv), for hosts without them."""
    out = subprocess.run(["pyenv", "prefix", PY_VERSION + ".1"], capture_output=True, text=True)
    candidates = [os.path.join(out.stdout.strip(), "include", "python" + PY_VERSION)] + \
        [f"/usr/include/python{PY_VERSION}"]
    inc = next((c for c in candidates if os.path.isfile(os.path.join(c, "Python.h"))), None)
    if inc is None:
        print(f"[offline-bundle] no CPython {PY_VERSION} headers here (pyenv {PY_VERSION}.1 or "
              f"python{PY_VERSION}-dev): the bundle relies on the host's own", flush=True)
        return
    with tarfile.open(os.path.join(dest, f"pyinclude-{PY_VERSION}.tar.gz"), "w:gz") as t:
        t.add(inc, arcname="python" + PY_VERSION)


def write_manifest(out):
    rows = []
    for root, _, files in os.walk(out):
        for name in sorted(files):
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            rows.append(f"{os.path.getsize(path):>10}  {digest}  {os.path.relpath(path, out)}")
    with open(os.path.join(out, "MANIFEST.txt"), "w") as f:
        f.write("\n".join(sorted(rows, key=lambda r: r.split()[-1])) + "\n")


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(r, n)) for r, _, fs in os.walk(path) for n in fs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, ".offline"))
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    tmp = out + ".building"
    shutil.rmtree(tmp, ignore_errors=True)
    wheels = os.path.join(tmp, "wheels")
    os.makedirs(wheels)
    with tempfile.TemporaryDirectory() as work:
        build_jittor_wheel(wheels, work)
    pip("download", "--no-deps", "--only-binary=:all:", "-d", wheels, *PURE_WHEELS)
    pack_python_headers(tmp)
    shutil.copy2(os.path.join(REPO, "tools", "offline", "run.sh"), os.path.join(tmp, "run.sh"))
    write_manifest(tmp)
    size = folder_bytes(tmp)
    if size > LIMIT_MIB * 2**20:
        raise SystemExit(f"offline-bundle: {size / 2**20:.1f} MiB is over the {LIMIT_MIB} MiB "
                         f"a host call carries ({tmp})")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)  # whole or not at all
    print(open(os.path.join(out, "MANIFEST.txt")).read(), end="")
    print(f"[offline-bundle] {out}: {size / 2**20:.1f} MiB (limit {LIMIT_MIB} MiB)")


if __name__ == "__main__":
    main()
