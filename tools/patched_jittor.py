"""The one Jittor diffbench installs everywhere: PyPI's jittor 1.3.11 source distribution with the
patches below, built here into a pure wheel (`make setup` installs it into .venv; `make
offline-bundle` carries it to an offline GPU host). docs/SETUP.md, "Jittor's patches".

Jittor 1.3.11 is the newest Jittor on PyPI and upstream, and it predates numpy 2, CUDA 13
(CCCL 3) and cuDNN 9. Each patch names what broke and where it was seen; each edit's old text
must occur exactly as often as stated, or the build stops, so a different Jittor source cannot
be patched silently wrong. The installed package lists the patches it carries in
`jittor/DIFFBENCH_PATCHES` (one id a line), which the run's manifest and report name.

    python tools/patched_jittor.py --wheel-dir DIR     # build the wheel into DIR
    python tools/patched_jittor.py --list              # the patches, one line each
"""
import argparse
import os
import subprocess
import sys
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from models.jt.runtime import PATCH_MARKER as MARKER  # noqa: E402  (the runtime reads it)

JITTOR = "jittor==1.3.11"

HELPER_CUDA = "jittor/extern/cuda/inc/helper_cuda.h"
COMPILE_EXTERN = "jittor/compile_extern.py"
# setup_cuda_lib's compile of a CUDA library's sources (the one with link_flags)
CUDNN_COMPILE = (r'    culib = compile_custom_ops(culib_src_files, return_module=True,' '\n'
                 r'        extra_flags=f" -I\"{jt_cuda_include}\" -I\"{jt_culib_include}\" '
                 r'{link_flags} {extra_flags} ")' '\n')

# (id, why, [(file inside the sdist's python/ folder, old text, new text[, times]), ...])
PATCHES = [
    ("numpy2-descr",
     "numpy 2 moved and widened PyArray_Descr.elsize (src/pyjt/numpy.h read numpy 1's layout: "
     "every array copied into Jittor got a wrong byte size); numpy.core is numpy._core",
     [("jittor/src/pyjt/numpy.h",
       "    size *= arr->descr->elsize;\n",
       "    // diffbench: numpy 2 moved and widened PyArray_Descr.elsize; type_num did not move,\n"
       "    // so the item size comes from Jittor's own dtype (as in Jittor's later source).\n"
       "    size *= get_type_str(arr).dsize();\n"),
      ("jittor/src/pyjt/numpy.cc",
       '    PyObjHolder np(PyImport_ImportModule("numpy.core.multiarray"), "numpy is not installed");\n',
       '    // diffbench: numpy 2 names it numpy._core (numpy.core is a deprecated alias).\n'
       '    PyObject* np_mod = PyImport_ImportModule("numpy._core.multiarray");\n'
       '    if (!np_mod) { PyErr_Clear(); np_mod = PyImport_ImportModule("numpy.core.multiarray"); }\n'
       '    PyObjHolder np(np_mod, "numpy is not installed");\n')]),
    ("numpy2-copyinto",
     "numpy 2 moved PyArray_CopyInto from C-API slot 82 to 50 (numpy 2.4's __multiarray_api.h); "
     "Jittor calls it for every non-contiguous or converted array",
     [("jittor/src/pyjt/numpy.cc",
       "    fill(PyArray_CopyInto, 82);\n",
       "    // diffbench: numpy 2 (C feature version >= 0x12) moved PyArray_CopyInto to slot 50.\n"
       "    fill(PyArray_CopyInto, PyArray_GetNDArrayCFeatureVersion() >= 0x12 ? 50 : 82);\n")]),
    ("numpy2-int-index",
     "a numpy integer used as an index (x[np.int64(3)]) went through PyArray_CastScalarToCtype "
     "with a stack-made descriptor that only numpy 1 accepts; Python's int() is version-free",
     [("jittor/src/pyjt/py_converter.h",
       "        PyArrayDescr_Proxy array_descr;\n"
       "        array_descr.type_num = 5; // 5: int32\n"
       "        int value;\n"
       "        PyArray_CastScalarToCtype(obj, &value, &array_descr);\n"
       "        var_slice->set_int(value);\n",
       "        // diffbench: numpy 2 needs a real descriptor there; int(obj) needs none.\n"
       "        PyObjHolder as_int(PyNumber_Long(obj));\n"
       "        var_slice->set_int(PyLong_AsLong(as_int.obj));\n")]),
    ("cuda13-device-prop",
     "CUDA 13 removed cudaDeviceProp::computeMode and ::clockRate (an H200 host with nvcc 13.0: "
     "Jittor's core did not compile); cudaDeviceGetAttribute gives both on every CUDA",
     [(HELPER_CUDA,
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
       "sm_per_multiproc * jt_device_attr(cudaDevAttrClockRate, current_device);")]),
    # Jittor rewrites any -std=c++17 to "-std=c++14 -Xcompiler -std:c++14" inside the
    # conversion (for Windows' cl, on every OS), so the switch goes at its very end.
    ("cuda13-cxx17",
     "CUDA 13's CUB, Thrust and libcu++ refuse C++14 and Jittor compiles CUDA with -std=c++14 "
     "(an H200 host: the softmax kernel failed, the cub ops were dropped); CUDA code now "
     "compiles with -std=c++17 where nvcc >= 13, host code keeps C++14",
     [("jittor/compiler.py",
       "if has_cuda:\n    nvcc_flags += cc_flags\n    def convert_nvcc_flags(nvcc_flags):\n",
       "if has_cuda:\n    nvcc_flags += cc_flags\n"
       "    # diffbench: CUDA 13's CUB/Thrust/libcu++ require C++17.\n"
       "    _nvcc_needs_cxx17 = jit_utils.get_int_version(nvcc_path)[0] >= 13\n"
       "    def convert_nvcc_flags(nvcc_flags):\n"),
      ("jittor/compiler.py",
       '            nvcc_flags += " -G "\n        return nvcc_flags\n',
       '            nvcc_flags += " -G "\n'
       '        if _nvcc_needs_cxx17:\n'
       '            nvcc_flags = nvcc_flags.replace("-std=c++14", "-std=c++17")\n'
       '        return nvcc_flags\n')]),
    ("cccl3-softmax-max",
     "CCCL 3 (CUDA 13) removed cub::Max(), which the softmax code op (other/code_softmax.py, "
     "every attention layer on CUDA) reduces with; a local max functor works with every CUB",
     [("jittor/other/code_softmax.py",
       "#include <type/fp16_compute.h>\n''', cuda_src=f'''\n",
       "#include <type/fp16_compute.h>\n"
       "// diffbench: CCCL 3 has no cub::Max().\n"
       "struct jt_cub_max {{ template <class T> __device__ __forceinline__ "
       "T operator()(const T& a, const T& b) const {{ return a < b ? b : a; }} }};\n"
       "''', cuda_src=f'''\n"),
      ("jittor/other/code_softmax.py",
       "Reduce(v1, cub::Max());",
       "Reduce(v1, jt_cub_max());")]),
    ("cccl3-where-iterators",
     "CCCL 3 removed cub::CountingInputIterator and cub::TransformInputIterator (cub_where, "
     "jt.where/nonzero on CUDA); Thrust's iterators do the same with every CUB",
     [("jittor/extern/cuda/cub/ops/cub_where_op.cc",
       "#include <thrust/transform.h>\n",
       "#include <thrust/transform.h>\n"
       "#include <thrust/iterator/counting_iterator.h>\n"
       "#include <thrust/iterator/transform_iterator.h>\n"),
      ("jittor/extern/cuda/cub/ops/cub_where_op.cc",
       "    cub::CountingInputIterator<To> counting_itr(0);\n"
       "    cub::TransformInputIterator<bool, NonZeroOp<Ti>, Ti*> itr(cond->ptr<Ti>(), NonZeroOp<Ti>());\n",
       "    // diffbench: CCCL 3 removed CUB's counting/transform input iterators.\n"
       "    thrust::counting_iterator<To> counting_itr(0);\n"
       "    thrust::transform_iterator<NonZeroOp<Ti>, Ti*, bool> itr(cond->ptr<Ti>(), NonZeroOp<Ti>());\n")]),
    ("cccl3-lane-id",
     "CCCL 3 removed cub::LaneId() (depthwise convolution's backward); the PTX %laneid register "
     "is what it read",
     [("jittor/depthwise_conv.py",
       "    if (cub::LaneId() == 0) \n",
       "    unsigned lane_id;  // diffbench: CCCL 3 has no cub::LaneId()\n"
       "    asm(\"mov.u32 %0, %%laneid;\" : \"=r\"(lane_id));\n"
       "    if (lane_id == 0) \n")]),
    ("cuda-no-npp",
     "src/misc/cuda_limits.h included NPP's npp.h for eight integer limits, and NPP's headers "
     "are not in every CUDA (pip's nvidia wheels have none): every CUDA kernel that includes it "
     "(reductions, arg-reduce, cumsum, where...) failed with 'npp.h: No such file' (seen in the "
     "CUDA 13 rehearsal); the limits are now defined where NPP does not",
     [("jittor/src/misc/cuda_limits.h",
       "#ifdef IS_CUDA\n#include <npp.h>\n#include <math_constants.h>\n#else\n#include <limits>\n",
       "#ifdef IS_CUDA\n// diffbench: no npp.h (not in every CUDA); its limits are defined below.\n"
       "#include <math_constants.h>\n#endif\n#ifndef NPP_MAX_32U\n#include <limits>\n"),
      ("jittor/src/misc/cuda_limits.h",
       "#define     CUDART_INF_F  std::numeric_limits<float>::infinity()\n"
       "#define     CUDART_INF    std::numeric_limits<double>::infinity()\n#endif\n",
       "#endif\n#ifndef CUDART_INF_F\n"
       "#define     CUDART_INF_F  std::numeric_limits<float>::infinity()\n"
       "#define     CUDART_INF    std::numeric_limits<double>::infinity()\n#endif\n")]),
    ("cudnn9",
     "cuDNN 9 renamed its libraries (Jittor preloaded cuDNN 8's libcudnn_ops_infer.so and "
     "friends, and stopped the import without them) and removed the v6 RNN API that Jittor's "
     "cuDNN RNN sources call (upstream issue #666): cuDNN 9 loads its own libraries, and the "
     "RNN sources are left out (Jittor's RNNs then run on its own kernels)",
     [(COMPILE_EXTERN,
       "def setup_cuda_lib(lib_name, link=True, extra_flags=\"\"):\n",
       "def cudnn_major():\n"
       "    # diffbench: cuDNN's major version from the cudnn_version.h Jittor compiles against.\n"
       "    import re\n"
       "    for d in (cuda_include, os.path.join(cuda_include, '..', 'targets', 'x86_64-linux', 'include'), '/usr/include'):\n"
       "        path = os.path.join(d, 'cudnn_version.h')\n"
       "        if os.path.isfile(path):\n"
       "            m = re.search(r'#define CUDNN_MAJOR\\s+(\\d+)', open(path).read())\n"
       "            if m: return int(m.group(1))\n"
       "    return 0\n\n"
       "def setup_cuda_lib(lib_name, link=True, extra_flags=\"\"):\n"),
      (COMPILE_EXTERN,
       "            if nvcc_version >= (11,0,0):\n"
       "                libs = [\"libcudnn_ops_infer.so\", \"libcudnn_ops_train.so\", \"libcudnn_cnn_infer.so\", \"libcudnn_cnn_train.so\"]\n",
       "            if nvcc_version >= (11,0,0):\n"
       "                libs = [\"libcudnn_ops_infer.so\", \"libcudnn_ops_train.so\", \"libcudnn_cnn_infer.so\", \"libcudnn_cnn_train.so\"]\n"
       "                if cudnn_major() >= 9:  # diffbench: cuDNN 9's own split\n"
       "                    libs, prefer_version = [\"libcudnn_graph.so\", \"libcudnn_ops.so\", \"libcudnn_cnn.so\"], (\"9\",)\n"),
      (COMPILE_EXTERN,
       CUDNN_COMPILE,
       '    if lib_name == "cudnn" and cudnn_major() >= 9:  # diffbench: no v6 RNN API in cuDNN 9\n'
       '        culib_src_files = [f for f in culib_src_files if "rnn" not in os.path.basename(f)]\n'
       + CUDNN_COMPILE)]),
    ("optional-cufft-cusparse",
     "with cuDNN on, Jittor stopped its import where cuFFT or cuSPARSE was missing; diffbench's "
     "models use neither, so their absence is a warning",
     [(COMPILE_EXTERN,
       "            LOG.f(msg)\n",
       "            if lib_name in (\"cufft\", \"cusparse\"):  # diffbench: optional\n"
       "                LOG.w(msg)\n"
       "                continue\n"
       "            LOG.f(msg)\n")]),
]


def patch_ids():
    return [pid for pid, _, _ in PATCHES]


def patch_jittor_source(pkg_root):
    """Apply PATCHES under pkg_root (the sdist's python/ folder) and write the marker file."""
    for pid, _, edits in PATCHES:
        for rel, old, new, *times in edits:
            path = os.path.join(pkg_root, rel)
            with open(path) as f:
                text = f.read()
            want = times[0] if times else 1
            if text.count(old) != want:
                raise SystemExit(f"patched_jittor: {pid}: {rel}: expected {old.strip()[:80]!r} "
                                 f"{want} time(s), found {text.count(old)} "
                                 f"(not Jittor 1.3.11's source?)")
            with open(path, "w") as f:
                f.write(text.replace(old, new))
    with open(os.path.join(pkg_root, "jittor", MARKER), "w") as f:
        f.write("\n".join(patch_ids()) + "\n")


def run(cmd, **kw):
    print("[patched-jittor] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


SDIST_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "diffbench", "jittor-sdist")


def sdist_path():
    """PyPI's jittor source distribution, downloaded once into SDIST_CACHE."""
    found = [n for n in os.listdir(SDIST_CACHE) if n.endswith(".tar.gz")] \
        if os.path.isdir(SDIST_CACHE) else []
    if not found:
        tmp = tempfile.mkdtemp(prefix="jittor-sdist-")
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-q", JITTOR, "-d", tmp])
        os.makedirs(SDIST_CACHE, exist_ok=True)
        for n in os.listdir(tmp):
            os.replace(os.path.join(tmp, n), os.path.join(SDIST_CACHE, n))
        os.rmdir(tmp)
        found = [n for n in os.listdir(SDIST_CACHE) if n.endswith(".tar.gz")]
    return os.path.join(SDIST_CACHE, found[0])


def unpack_sdist(work):
    """The unpatched source, unpacked under work; returns its folder (holding python/)."""
    with tarfile.open(sdist_path()) as t:
        t.extractall(work, filter="data")
    return next(os.path.join(work, n) for n in os.listdir(work)
                if n.startswith("jittor-") and os.path.isdir(os.path.join(work, n)))


def build_jittor_wheel(dest, work=None):
    """The patched wheel in dest; returns its path."""
    with tempfile.TemporaryDirectory() as tmp:
        work = work or tmp
        src = unpack_sdist(work)
        patch_jittor_source(os.path.join(src, "python"))
        setup_py = os.path.join(src, "setup.py")
        with open(setup_py) as f:
            text = f.read()
        # numpy 2 works now (the numpy2-* patches); the metadata says so.
        with open(setup_py, "w") as f:
            f.write(text.replace('"numpy<2.0",', '"numpy",'))
        os.makedirs(dest, exist_ok=True)
        before = set(os.listdir(dest))
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q",
             "--disable-pip-version-check", "-w", dest, src])
        made = sorted(set(os.listdir(dest)) - before) or \
            [n for n in os.listdir(dest) if n.startswith("jittor-")]
        return os.path.join(dest, made[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel-dir", help="build the patched wheel into this folder")
    ap.add_argument("--list", action="store_true", help="print the patches")
    args = ap.parse_args(argv)
    if args.list:
        for pid, why, edits in PATCHES:
            print(f"{pid} ({len(edits)} edit{'s' if len(edits) > 1 else ''}): {why}")
        return 0
    if not args.wheel_dir:
        ap.error("give --wheel-dir DIR or --list")
    print(build_jittor_wheel(os.path.abspath(args.wheel_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
