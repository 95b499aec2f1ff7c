"""`make cuda-rehearsal`: Jittor on the GPU hosts' CUDA 13.0 and cuDNN 9.19, rehearsed on a
machine without a GPU (docs/GPU.md, "The CUDA rehearsal"). Not part of `make test`.

1. lays out the GPU host's CUDA user space from PyPI's NVIDIA wheels (the versions of
   reports/reference/h200/probe.json: nvcc/crt/nvvm 13.0.88, cudart, CCCL 13.0.85, cuBLAS,
   cuRAND, cuDNN 9.19) as a CUDA root with the unversioned library names Jittor looks for
   (models/jt/runtime.py's jittor_cuda_home, the same code a GPU run uses);
2. unpacks PyPI's Jittor 1.3.11 with diffbench's patches (tools/patched_jittor.py: the Jittor
   `make setup` and the offline bundle install);
3. imports it against that root with cuda_archs=90: Jittor compiles its core and its cuBLAS,
   cuDNN and cuRAND ops for sm_90 (no device is needed for that);
4. for every item (tools/cuda_rehearsal/child.py: the CUB ops, the softmax code op, the UNet's
   and the DiT's training step and sampling steps, the no-cuDNN fallback) runs one process
   with a stand-in device (fake_device.c) under which Jittor generates and compiles with
   nvcc every kernel of the graph before it fails at the first launch;
5. prints a PASS/FAIL checklist with the first compiler error of each failure and writes it
   to --out (default reports/reference/cuda-rehearsal/), with each process's log.

What it cannot show (only a GPU can): the kernels running and their results, cuDNN's
algorithm choice at run time, timings.
"""
import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from models.jt.runtime import jittor_cuda_home  # noqa: E402
from tools import patched_jittor  # noqa: E402
from bench.records.errors import strip_ansi  # noqa: E402
from tools.cuda_rehearsal.child import ITEMS  # noqa: E402

# The GPU host's CUDA user space (reports/reference/h200/probe.json: nvcc 13.0.88; torch
# 2.11.0+cu130's cuDNN 91900 and the cuBLAS/cuRAND/cudart of the same CUDA 13.0 release).
WHEELS = ["nvidia-cuda-nvcc==13.0.88", "nvidia-cuda-crt==13.0.88", "nvidia-nvvm==13.0.88",
          "nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cccl==13.0.85",
          "nvidia-cublas==13.1.0.3", "nvidia-curand==10.4.0.35",
          "nvidia-cudnn-cu13==9.19.0.56"]
DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "diffbench", "cuda-rehearsal")
DEFAULT_OUT = os.path.join(REPO, "reports", "reference", "cuda-rehearsal")
ITEM_TIMEOUT_S = 1800  # a cold core compile plus a training step's kernels on 2 cores


def log(*parts):
    print("[cuda-rehearsal]", *parts, flush=True)


def digest(*texts):
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]


def toolkit(root):
    """The NVIDIA wheels installed under root/site (once); returns (nvcc, wheel folders)."""
    site = os.path.join(root, "site")
    stamp = os.path.join(site, ".wheels")
    want = "\n".join(WHEELS)
    if not (os.path.isfile(stamp) and open(stamp).read() == want):
        shutil.rmtree(site, ignore_errors=True)
        log("installing", len(WHEELS), "NVIDIA wheels (about 950 MB) into", site)
        # pip keeps the executables' mode bits (nvcc, ptxas, cicc), which an unzip would not
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                        "--disable-pip-version-check", "--target", site, *WHEELS], check=True)
        with open(stamp, "w") as f:
            f.write(want)
    nvidia = os.path.join(site, "nvidia")
    nvcc = os.path.join(nvidia, "cu13", "bin", "nvcc")
    return nvcc, [os.path.join(nvidia, "cu13"), os.path.join(nvidia, "cudnn")]


def patched_source(root):
    """PyPI's Jittor with diffbench's patches under root/jittor-src, unpacked anew when the
    patches change; returns the folder to put on PYTHONPATH (it holds jittor/ and
    jittor_utils/). The path stays the same, so Jittor's cache (keyed by it) recompiles only
    the files a patch changed."""
    key = digest(repr(patched_jittor.PATCHES))
    base = os.path.join(root, "jittor-src")
    stamp = os.path.join(base, ".patches")
    if not (os.path.isfile(stamp) and open(stamp).read() == key):
        tmp = base + ".building"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        src = patched_jittor.unpack_sdist(tmp)
        patched_jittor.patch_jittor_source(os.path.join(src, "python"))
        with open(os.path.join(src, ".patches"), "w") as f:
            f.write(key)
        shutil.rmtree(base, ignore_errors=True)
        os.rename(src, base)
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(base, "python")


def fake_device(root):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_device.c")
    lib = os.path.join(root, "libfakedev-" + digest(open(src).read()) + ".so")
    if not os.path.isfile(lib):
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", lib, src], check=True)
    return lib


def child_env(root, nvcc, pythonpath, shim, conv_opt):
    env = dict(os.environ)
    for key in ("LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES"):
        env.pop(key, None)
    env.update({
        "PYTHONPATH": os.pathsep.join([pythonpath, REPO]),
        # A Jittor cache of its own, the project's CPU cache untouched. Through HOME, not
        # JITTOR_HOME: Jittor writes a JITTOR_HOME it is given into ~/.cache/jittor/config.json
        # (jittor_utils.home()), and every later Jittor process of the user would use it.
        "HOME": os.path.join(root, "home"),
        "nvcc_path": nvcc, "cuda_archs": "90", "conv_opt": conv_opt,
        # what the offline GPU host sets (models/jt/runtime.py, tools/offline/host_run.py)
        "use_cutt": "0", "use_cutlass": "0", "use_nccl": "0", "use_mkl": "0", "use_mpi": "0",
        "FIX_TORCH_ERROR": "0", "log_silent": "1", "LD_PRELOAD": shim,
    })
    return env


def run_child(item, env, logs):
    t0 = time.time()
    path = os.path.join(logs, f"{item}.log")
    try:
        out = subprocess.run([sys.executable, "-m", "tools.cuda_rehearsal.child", item], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=ITEM_TIMEOUT_S)
        text = out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        text += f"\ntimed out after {ITEM_TIMEOUT_S} s"
    text = strip_ansi(text)
    # Jittor's progress counters rewrite one line with \r: keep their last state only
    text = "\n".join(l.rsplit("\r", 1)[-1] for l in text.splitlines())
    with open(path, "w") as f:
        f.write(text)
    line = next((l for l in text.splitlines() if l.startswith("RESULT ")), None)
    if line:
        result = json.loads(line[len("RESULT "):])
    else:
        tail = [l for l in text.splitlines() if l.strip()][-1:] or ["no output"]
        result = {"item": item, "status": "FAIL", "detail": {},
                  "error": f"the process ended without a result: {tail[0][:300]}"}
    result["seconds"] = round(time.time() - t0, 1)
    # Jittor's progress line counts the kernels of the graph it prepares (cached ones too)
    totals = [int(n) for n in re.findall(r"Compiling Operators\(\d+/(\d+)\)", text)]
    if totals:
        result["detail"]["graph_kernels"] = max(totals)
    return result


def describe(r):
    d = r["detail"]
    if r["item"] == "import" and d:
        return (f"cuda_archs {d.get('cuda_archs')}, cuBLAS {d.get('cublas')}, cuDNN "
                f"{d.get('cudnn')} (major {d.get('cudnn_major')}), cuRAND {d.get('curand')}, "
                f"CUB {d.get('cub')}; {r['seconds']} s")
    if "new_kernels" in d:
        graph = f"{d['graph_kernels']} kernels in its graph, " if "graph_kernels" in d else ""
        return (f"{graph}{d['new_kernels']} compiled now ({', '.join(d['kinds']) or '-'}), "
                f"{d['cached_kernels']} in the cache before; {r['seconds']} s")
    return f"{r['seconds']} s"


def checklist(results, facts):
    lines = ["# Jittor on CUDA 13.0 + cuDNN 9.19 for sm_90, rehearsed without a GPU", "",
             "`make cuda-rehearsal` (tools/cuda_rehearsal/run.py; docs/GPU.md). A PASS means "
             "Jittor generated every kernel of the item and nvcc compiled it for sm_90; running "
             "them needs a GPU.", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()] + [""]
    for r in results:
        title = "Jittor's import: core, cuBLAS, cuDNN, cuRAND for sm_90" \
            if r["item"] == "import" else ITEMS[r["item"]][0]
        lines.append(f"{r['status']}  {r['item']}: {title}")
        lines.append(f"      {describe(r)}")
        if r["error"]:
            lines.append(f"      first error: {r['error']}")
    passed = sum(r["status"] == "PASS" for r in results)
    lines += ["", f"{passed} passed, {len(results) - passed} failed"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=DEFAULT_ROOT, help="toolkit, patched Jittor and its cache")
    ap.add_argument("--out", default=DEFAULT_OUT, help="checklist.md and the logs go here")
    ap.add_argument("--only", nargs="+", choices=["import", *ITEMS], help="these items only")
    ap.add_argument("--fresh", action="store_true",
                    help="drop the rehearsal's compiled kernels first (every item's kernels "
                         "compile anew; Jittor's core stays compiled)")
    args = ap.parse_args(argv)
    root, out = os.path.abspath(args.root), os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    t0 = time.time()
    if args.fresh:
        for jit in glob.glob(os.path.join(root, "home", ".cache", "jittor", "**", "jit"),
                             recursive=True):
            shutil.rmtree(jit, ignore_errors=True)
    nvcc, wheel_dirs = toolkit(root)
    home = jittor_cuda_home(nvcc=nvcc, wheel_dirs=wheel_dirs, cache=os.path.join(root, "cuda-home"))
    pythonpath = patched_source(root)
    shim = fake_device(root)
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    facts = {"nvcc": (re.findall(r"release [^\n]*", version) or ["?"])[0],
             "CUDA root": home.rsplit("/bin/nvcc", 1)[0],
             "wheels": ", ".join(WHEELS),
             "Jittor": f"{patched_jittor.JITTOR} with patches {', '.join(patched_jittor.patch_ids())}",
             "machine": platform_line()}
    for k, v in facts.items():
        log(f"{k}: {v}")
    items = args.only or ["import", *ITEMS]
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    results = []
    for item in items:
        conv_opt = ITEMS[item][2] if item in ITEMS else "0"
        log(f"{item} ...")
        r = run_child(item, child_env(root, home, pythonpath, shim, conv_opt), logs)
        log(f"{r['status']}  {item}  {describe(r)}" + (f"\n      first error: {r['error']}"
                                                       if r["error"] else ""))
        results.append(r)
    facts["total"] = f"{time.time() - t0:.0f} s"
    text = checklist(results, facts)
    with open(os.path.join(out, "checklist.md"), "w") as f:
        f.write(text)
    print(text, end="")
    return 0 if all(r["status"] == "PASS" for r in results) else 1


def platform_line():
    import platform
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
