"""What tools/offline/run.sh runs on an offline GPU host, inside one time budget (docs/GPU.md,
"On an offline GPU host").

1. probe (<= 30 s): one line each for the GPU, nvcc, g++, Python's headers, torch/CUDA/cuDNN,
   numpy and every module the project imports; stops at once, with what is missing, when
   nothing useful could run (no GPU, torch without CUDA, a missing module);
2. the steps, in order of value, each skipped with a note when the budget left would not hold
   its estimate: Jittor's CUDA compile, `harness.py gpu-check`, the paper UNet at batch 128
   (fp32 with a bf16 variant, then TF32), then any other GPU config that exists
   (configs/sweep-gpu.yaml, configs/dit-gpu.yaml);
3. packs the results into at most 8 files under --out (results.tar.gz with every run and
   report, gpu-check.md, probe.json, summary.md, run.log) and prints the summary last.

`--dry-run` runs the same sequence on a machine without a GPU (device cpu, tiny sizes), and
lists what it could not check there. `--only STEP ...` re-runs chosen steps (see --list).
"""
import argparse
import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from bench.records.errors import decisive_line, strip_ansi  # noqa: E402

MAX_FILE_BYTES = 16 * 2**20  # what one returned file may hold
# Modules the harness imports (beyond the standard library), and the frameworks.
PROJECT_MODULES = ["numpy", "scipy", "pandas", "matplotlib", "yaml", "jinja2", "psutil",
                   "pynvml", "tqdm", "PIL", "safetensors", "torch_fidelity"]
PACK_RESERVE_S = 20  # kept back for packing and the summary

# Every command runs from the repository, with the bundle's site folder first on the path.
JITTOR_WARM = """
import json, os, time
t0 = time.time()
from models.jt.runtime import import_jittor
jt = import_jittor(use_cuda={cuda})
t_import = time.time() - t0
jt.flags.use_cuda = {cuda_flag}
x = jt.randn(64, 64)
y = float((x @ x).sum().item())
conv = jt.nn.Conv2d(3, 8, 3, padding=1)
z = float(conv(jt.randn(2, 3, 16, 16)).sum().item())
print("WARM " + json.dumps({{"version": jt.__version__, "has_cuda": int(jt.has_cuda),
      "cudnn": jt.compile_extern.cudnn is not None, "conv_opt": os.environ.get("conv_opt"),
      "import_s": round(t_import, 1), "total_s": round(time.time() - t0, 1)}}))
"""


class Log:
    """Prints and keeps every line in run.log (the host returns files, not a terminal)."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def __call__(self, *parts):
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.f.write(line + "\n")


def sh(cmd, timeout=20):
    """First line of a quick command's output, or why there is none."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             shell=isinstance(cmd, str))
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e).splitlines()[0]
    text = (out.stdout or out.stderr).strip()
    return (text if out.returncode == 0 else None), text


TORCH_PROBE = """
import json, torch
r = {"torch": torch.__version__, "cuda": torch.version.cuda,
     "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available()}
if r["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    r.update(device=p.name, sm=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1))
print("PROBE " + json.dumps(r))
"""


def python_headers(bundle, site, log):
    """A python3.X-config that Jittor can ask for --includes and --extension-suffix: the
    host's own where its headers exist, else one pointing at the bundle's headers."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    inc = sysconfig.get_paths()["include"]
    own_config = [p for p in (os.path.join(os.path.dirname(sys.executable), f"python{ver}-config"),
                              f"/usr/bin/python{ver}-config",
                              f"/usr/local/bin/python{ver}-config")
                  if os.path.isfile(p)]
    if os.path.isfile(os.path.join(inc, "Python.h")) and own_config:
        return f"host's ({inc}, {own_config[0]})", True
    source = "host's"
    if not os.path.isfile(os.path.join(inc, "Python.h")):
        packed = os.path.join(bundle, f"pyinclude-{ver}.tar.gz")
        if not os.path.isfile(packed):
            return f"missing: no {inc}/Python.h and no {os.path.basename(packed)} in the bundle", False
        with tarfile.open(packed) as t:
            t.extractall(os.path.join(site, "_pyinclude"), filter="data")
        inc, source = os.path.join(site, "_pyinclude", f"python{ver}"), "the bundle's"
    config = os.path.join(site, "_pyinclude", f"python{ver}-config")
    os.makedirs(os.path.dirname(config), exist_ok=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    with open(config, "w") as f:  # the two questions Jittor asks (jittor_utils/__init__.py)
        f.write(f'#!/bin/sh\ncase "$1" in\n  --includes) echo "-I{inc}";;\n'
                f'  --extension-suffix) echo "{suffix}";;\n  *) echo "";;\nesac\n')
    os.chmod(config, 0o755)
    os.environ["python_config_path"] = config  # Jittor's own override
    return f"{source} headers at {inc}, python_config_path={config}", True


def probe(args, log):
    """One line per fact; returns (facts, list of essential things missing)."""
    facts, missing = {}, []
    t0 = time.time()
    gpu, text = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader"])
    facts["gpu"] = gpu or f"none ({text})"
    log(f"[probe] GPU: {facts['gpu']}")
    if not gpu and not args.dry_run:
        missing.append("a GPU (nvidia-smi)")
    nvcc, text = sh("nvcc --version | tail -n 2 | head -n 1")
    facts["nvcc"] = nvcc or f"none ({text})"
    log(f"[probe] nvcc: {facts['nvcc']}")
    gxx, text = sh(["g++", "--version"])
    facts["g++"] = gxx.splitlines()[0] if gxx else f"none ({text})"
    log(f"[probe] g++: {facts['g++']}")
    facts["python"] = f"{platform.python_version()} ({sys.executable})"
    log(f"[probe] python: {facts['python']}")
    facts["python_headers"], headers_ok = python_headers(args.bundle, args.site, log)
    log(f"[probe] Python headers: {facts['python_headers']}")
    try:
        out = subprocess.run([sys.executable, "-c", TORCH_PROBE], capture_output=True,
                             text=True, timeout=60, cwd=REPO)
        line = next((l for l in out.stdout.splitlines() if l.startswith("PROBE ")), None)
        facts["torch"] = json.loads(line[6:]) if line else {
            "error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    except subprocess.TimeoutExpired:
        facts["torch"] = {"error": "import timed out after 60 s"}
    log(f"[probe] torch: {facts['torch']}")
    if "error" in facts["torch"]:
        missing.append(f"torch ({facts['torch']['error']})")
    elif not facts["torch"]["cuda_available"] and not args.dry_run:
        missing.append("torch with CUDA (torch.cuda.is_available() is False)")
    modules = {}
    for name in PROJECT_MODULES + ["jittor"]:
        try:
            mod = __import__(name) if name != "jittor" else None
            if name == "jittor":  # importing it compiles: that is a step of its own
                import importlib.metadata as md
                modules[name] = md.version("jittor")
            else:
                modules[name] = getattr(mod, "__version__", "present")
        except Exception as e:  # ImportError, or a module that breaks on this numpy
            modules[name] = None
            missing.append(f"{name} ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    facts["modules"] = modules
    log("[probe] modules: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in modules.items()))
    facts["jittor_ready"] = bool(gxx and headers_ok and modules.get("jittor"))
    # JAX is optional (the bundle does not carry it; the GPU hosts have their own): its
    # steps run where jax, jaxlib, flax and optax are installed, are skipped otherwise
    import importlib.metadata as md
    facts["jax"] = {}
    for name in ("jax", "jaxlib", "flax", "optax"):
        try:
            facts["jax"][name] = md.version(name)
        except md.PackageNotFoundError:
            facts["jax"][name] = None
    facts["jax_ready"] = all(facts["jax"].values())
    log("[probe] jax: " + (", ".join(f"{k} {v}" for k, v in facts["jax"].items())
                           if facts["jax_ready"] else "not installed (its steps are skipped)"))
    if not facts["jittor_ready"]:
        log("[probe] Jittor cannot compile here (needs g++, Python's headers and the jittor "
            "wheel): its steps are skipped, torch's still run")
    facts["probe_s"] = round(time.time() - t0, 1)
    log(f"[probe] {facts['probe_s']} s")
    return facts, missing


def steps(args, facts):
    """(name, estimate_s, cap_s, frameworks used, command, name of the run it makes or None),
    in order of value. Estimates are for an H100/H200 with 16 cores (Jittor's first CUDA compile
    included in the first Jittor step); the dry run's are for 2 CPU cores and tiny sizes."""
    py, harness = sys.executable, os.path.join(REPO, "harness.py")
    cuda = not args.dry_run
    work = os.path.join(args.work, "results")
    # JAX has steps of its own, after the others: it never costs torch's and Jittor's steps
    # their budget
    fw = [f for f in args.frameworks if f != "jax"]
    fw_set = ["--set", "frameworks=[" + ",".join(fw) + "]"]
    out = [("jittor-compile", 240 if cuda else 150, 330, ["jittor"],
            [py, "-c", JITTOR_WARM.format(cuda=cuda, cuda_flag=int(cuda))], None)]
    if cuda:  # Jittor's own CUDA op tests: a failure names the op (tools/offline/jittor_op_tests.py)
        out.append(("jittor-op-tests", 90, 240, ["jittor"],
                    [py, os.path.join(REPO, "tools", "offline", "jittor_op_tests.py")], None))
    check = [py, harness, "gpu-check", "--out", os.path.join(args.work, "gpu-check.md")]
    if cuda:
        out.append(("gpu-check", 240, 420, ["torch", "jittor"], check, "quick-gpu"))
    else:  # no GPU: gpu-check answers so in one line; the quick-gpu config runs on the CPU
        out.append(("gpu-check", 5, 60, ["torch"], check, None))
        out.append(("quick-gpu", 60, 300, fw,
                    [py, harness, "bench", "configs/quick-gpu.yaml", "--results-dir", work,
                     "--set", "device=cpu", *fw_set, *DRY_SIZES], "quick-gpu"))
    paper = [py, harness, "bench", "configs/gpu-paper.yaml", "--results-dir", work, *fw_set]
    if not cuda:
        paper += ["--set", "device=cpu", *DRY_SIZES, "--set", "model.base_channels=16",
                  "--set", "model.norm_groups=8", "--set", "model.image_size=16"]
    out.append(("paper-fp32", 180 if cuda else 60, 360, fw, paper + ["--set", "variants=[]"],
                "gpu-paper"))
    out.append(("paper-tf32", 120 if cuda else 40, 300, fw,
                paper + ["--set", "math_mode=tf32", "--set", "variants=[]"], "gpu-paper"))
    out.append(("paper-bf16", 120 if cuda else 40, 300, fw, paper + ["--only", "*-bf16"],
                "gpu-paper"))
    for extra in ("sweep-gpu", "dit-gpu"):  # configs later work adds: run when present
        if os.path.isfile(os.path.join(REPO, "configs", extra + ".yaml")):
            cmd = [py, harness, "bench", f"configs/{extra}.yaml", "--results-dir", work, *fw_set]
            if not cuda:  # the sweep's mechanics at tiny sizes: its first point only, 8x8
                cmd += ["--set", "device=cpu", *DRY_SIZES, "--set", "model.image_size=8",
                        "--only", f"{first_point(extra)}/*"]
            out.append((extra, 300 if cuda else 60, 600, fw, cmd, extra))
    # JAX beside torch (docs/JAX.md): the quick model, then the paper's UNet in fp32
    jx = ["--set", "frameworks=[torch,jax]"]
    quick = [py, harness, "bench", "configs/quick-gpu.yaml", "--results-dir", work, *jx]
    if not cuda:
        quick += ["--set", "device=cpu", *DRY_SIZES]
    out.append(("jax-quick", 90 if cuda else 60, 300, ["jax"], quick, "quick-gpu"))
    out.append(("jax-paper-fp32", 180 if cuda else 60, 360, ["jax"],
                paper + jx + ["--set", "variants=[]"], "gpu-paper"))
    return out


def first_point(config_name):
    """The name of the first point of a sweep config (the list form)."""
    with open(os.path.join(REPO, "configs", config_name + ".yaml")) as f:
        return yaml.safe_load(f)["sweep"][0]["name"]


# The dry run's sizes: every cell runs, a few steps each, one process per cell.
DRY_SIZES = ["--set", "runner.replicates=1", "--set", "train.epochs=1",
             "--set", "train.steps_per_epoch=3", "--set", "train.warmup_steps=1",
             "--set", "train.batch_size=2", "--set", "train.val_batches=1",
             "--set", "data.num_samples=32", "--set", "sample.batch_sizes=[2]",
             "--set", "sample.repeats=1", "--set", "sample.warmup=0",
             "--set", "sample.runs=[{sampler: ddim, steps: [2], eta: 0.0, skip: uniform}]",
             "--set", "runner.peak_matmul_n=64", "--set", "monitor.interval_s=0.1"]


def jittor_cuda_environment(log):
    """What every Jittor process of the run inherits on the GPU host (models/jt/runtime.py sets
    the rest per process): the CUDA folder assembled from the host's nvcc and its torch's
    nvidia-* wheels (cuBLAS, cuRAND, cuDNN 9), the download switches, FIX_TORCH_ERROR=0, cuDNN
    on where the installed Jittor carries the cudnn9 patch. A ~/.cache/jittor/jtcuda folder (a
    CUDA Jittor once downloaded) would win over all of it and restart the process: it is moved
    aside."""
    from models.jt import runtime

    stale = os.path.join(os.path.expanduser("~"), ".cache", "jittor", "jtcuda")
    if os.path.isdir(stale):
        aside = f"{stale}.aside-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(stale, aside)
        log(f"[jittor] moved a stale {stale} aside ({aside}): it would override the host's CUDA")
    # Not prepare_environment() itself: its use_mpi=0 would reach the mpirun ranks of the
    # data-parallel cells, which need 1.
    env = {"FIX_TORCH_ERROR": "0", **runtime.cuda_defaults()}
    for key, value in env.items():
        os.environ.setdefault(key, value)
    home = os.path.dirname(os.path.dirname(os.environ.get("nvcc_path", "") or "/"))
    cudnn = sorted(os.path.basename(p) for p in glob.glob(os.path.join(home, "lib64", "libcudnn.so*")))
    log(f"[jittor] patches: {', '.join(runtime.jittor_patches() or ['none (stock Jittor)'])}")
    log(f"[jittor] nvcc_path={os.environ.get('nvcc_path') or 'none found'}; cuDNN there: "
        f"{', '.join(cudnn) or 'none'}; " + ", ".join(f"{k}={os.environ[k]}" for k in sorted(env)
                                                      if k != "nvcc_path"))


def run_step(name, cmd, timeout_s, log, args):
    """Runs one step in a process group of its own, output into <work>/<name>.log; on timeout
    the whole group goes (a harness run's workers too, so none holds the GPU afterwards).
    Returns (status, seconds, last line)."""
    shown = " ".join(a if len(a) < 60 else "<script>" for a in cmd[1:])
    log(f"[step] {name}: start (timeout {timeout_s:.0f} s): {shown[:200]}")
    t0 = time.time()
    path = os.path.join(args.work, f"{name}.log")
    with open(path, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout_s:.0f} s"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    took = time.time() - t0
    with open(path) as f:
        text = strip_ansi(f.read())
    lines = [l.rstrip() for l in text.splitlines() if l.strip()]
    for line in lines[-15:]:
        log(f"    {line[:300]}")
    # the summary's note: the decisive line of a failure, else the step's last line
    return status, took, (decisive_line(text) if status != "ok" else (lines[-1] if lines else ""))


def keep_gpu_check_logs(work):
    """gpu-check writes parity.log, bench.log and the parity records under the repository's
    results/gpu-check/: copy them where they are packed."""
    src = os.path.join(REPO, "results", "gpu-check")
    dest = os.path.join(work, "gpu-check-files")
    os.makedirs(dest, exist_ok=True)
    for name in ("parity.log", "bench.log", "parity"):
        path = os.path.join(src, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(dest, name), dirs_exist_ok=True)
        elif os.path.isfile(path):
            shutil.copy2(path, dest)


def manifests(roots):
    return set(m for r in roots for m in glob.glob(os.path.join(r, "*", "manifest.json")))


def new_run_dir(before, roots, results):
    """The run a step made, copied under `results` when it was written elsewhere (gpu-check
    writes into the repository's results/gpu-check/)."""
    made = sorted(manifests(roots) - before, key=os.path.getmtime)
    if not made:
        return None
    run_dir = os.path.dirname(made[-1])
    if os.path.dirname(run_dir) != results:
        dest = os.path.join(results, os.path.basename(run_dir))
        shutil.copytree(run_dir, dest)
        run_dir = dest
    return run_dir


def key_results(log_path):
    """The harness's own closing table (one line per cell: status, wall time, key result)."""
    lines = [l.rstrip() for l in open(log_path)]
    start = next((i for i, l in enumerate(lines) if l.lstrip().startswith("cell ")
                  and "status" in l and "key result" in l), None)
    if start is None:
        return []
    rows = []
    for line in lines[start + 1:]:
        if not line.strip() or line.lstrip().startswith("results:"):
            break
        rows.append("    " + line.strip())
    return rows


def report(run_dir, args, log):
    """harness.py report of one run; the headline rows of its report.md."""
    out = os.path.join(args.work, "reports", os.path.basename(run_dir))
    subprocess.run([sys.executable, os.path.join(REPO, "harness.py"), "report", run_dir,
                    "--out", out], cwd=REPO, capture_output=True, timeout=180)
    md = os.path.join(out, "report.md")
    if not os.path.isfile(md):
        return ["(no report)"]
    rows, inside = [], False
    for line in open(md):
        if line.startswith("## "):
            inside = line.strip() == "## Headline"
        elif inside and line.startswith("| ") and not line.startswith("|:") \
                and not line.startswith("| quantity"):
            rows.append(line.strip())
    return rows or ["(no headline rows: see the report)"]


def pack(args, log, summary_lines):
    """At most 8 files under --out, each <= 16 MiB."""
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(summary_lines) + "\n")
    for name in ("gpu-check.md", "probe.json"):
        src = os.path.join(args.work, name)
        if os.path.isfile(src):
            shutil.copy2(src, os.path.join(args.out, name))
    tar_path = os.path.join(args.out, "results.tar.gz")
    # Largest files go last and are dropped first if the archive would pass the limit.
    files = sorted((os.path.join(r, n) for r, _, fs in os.walk(args.work) for n in fs),
                   key=os.path.getsize)
    dropped = []
    with tarfile.open(tar_path, "w:gz") as t:
        for path in files:
            if os.path.getsize(path) > MAX_FILE_BYTES // 4 or \
                    os.path.getsize(tar_path) > MAX_FILE_BYTES * 0.8:
                dropped.append(os.path.relpath(path, args.work))
                continue
            t.add(path, arcname=os.path.relpath(path, args.work))
    if dropped:
        log(f"[pack] left out of results.tar.gz (size): {', '.join(dropped[:10])}"
            + (f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""))
    log.f.flush()
    shutil.copy2(os.path.join(args.work, "run.log"), os.path.join(args.out, "run.log"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=540, help="seconds for everything (540)")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(
        REPO, "results", "offline-" + time.strftime("%Y%m%d-%H%M%S")),
                    help="folder for the returned files (default $OUT, else results/offline-*)")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: the same sequence on the CPU at tiny sizes")
    ap.add_argument("--only", nargs="+", metavar="STEP", help="run just these steps")
    ap.add_argument("--frameworks", default="torch,jittor,jax")
    ap.add_argument("--list", action="store_true", help="print the steps and exit")
    ap.add_argument("--bundle", default=os.path.join(REPO, ".offline"))
    ap.add_argument("--site", required=True, help="the site folder run.sh installed into")
    ap.add_argument("--started", type=float, default=time.time(),
                    help="epoch seconds the budget counts from (run.sh's start)")
    args = ap.parse_args(argv)
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    deadline = args.started + args.budget
    args.out = os.path.abspath(args.out)
    args.work = os.path.join(os.path.dirname(args.site), "offline-work")
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(os.path.join(args.work, "results"))
    log = Log(os.path.join(args.work, "run.log"))
    log(f"[offline] diffbench at {REPO}, budget {args.budget:.0f} s"
        f"{' (dry run: no GPU, tiny sizes)' if args.dry_run else ''}, out {args.out}")
    facts, missing = probe(args, log)
    with open(os.path.join(args.work, "probe.json"), "w") as f:
        json.dump(facts, f, indent=1)
    summary = ["# diffbench offline host run", "",
               f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {facts['gpu']}, python "
               f"{platform.python_version()}, torch {facts['torch'].get('torch')} "
               f"(CUDA {facts['torch'].get('cuda')}, cuDNN {facts['torch'].get('cudnn')}), "
               f"numpy {facts['modules'].get('numpy')}, "
               + (f"jax {facts['jax']['jax']}" if facts["jax_ready"] else "jax: not installed"),
               "", "| step | status | seconds | note |",
               "|---|---|---:|---|"]
    if missing:
        log("[offline] STOP: essential parts missing: " + "; ".join(missing))
        summary.append(f"| probe | stopped | {facts['probe_s']} | missing: {'; '.join(missing)} |")
        pack(args, log, summary)
        print("\n".join(summary))
        return 3
    plan = steps(args, facts)
    if args.list:
        print("\n".join(f"{n}  (~{est} s, at most {cap} s)" for n, est, cap, *_ in plan))
        return 0
    if not args.dry_run and facts["jittor_ready"]:
        jittor_cuda_environment(log)
    results_root = os.path.join(args.work, "results")
    run_roots = [results_root, os.path.join(REPO, "results", "gpu-check")]
    failed, headlines = 0, []
    for name, est, cap, fws, cmd, run_name in plan:
        if args.only and name not in args.only:
            continue
        left = deadline - time.time() - PACK_RESERVE_S
        if "jittor" in fws and not facts["jittor_ready"]:
            fws = [f for f in fws if f != "jittor"]
            if not fws or name == "jittor-compile":
                summary.append(f"| {name} | skipped | 0 | Jittor cannot compile here (probe) |")
                continue
            cmd = cmd + ["--set", "frameworks=[" + ",".join(fws) + "]"]
        if "jax" in fws and not facts["jax_ready"]:
            summary.append(f"| {name} | skipped | 0 | jax: not installed |")
            continue
        if not set(fws) & set(args.frameworks):
            summary.append(f"| {name} | skipped | 0 | not in --frameworks |")
            continue
        if left < est * 0.5:  # a step needs at least half its estimate to be worth starting
            log(f"[step] {name}: skipped, {left:.0f} s left of the budget, ~{est} s needed")
            summary.append(f"| {name} | skipped | 0 | budget: {left:.0f} s left, ~{est} s needed |")
            continue
        before = manifests(run_roots)
        status, took, last = run_step(name, cmd, min(left, cap), log, args)
        if name == "jittor-compile" and status != "ok" and os.environ.get("conv_opt") == "0":
            # cuDNN is the likeliest part of a new CUDA to break Jittor's import: every later
            # step runs on Jittor's own convolution kernels instead (reported: 'cudnn': False)
            log("[jittor] the import with cuDNN failed: retrying with conv_opt=1 (Jittor's own "
                "convolution kernels, no cuDNN) for every later step")
            summary.append(f"| {name} (cuDNN) | {status} | {took:.0f} | "
                           f"{last[:160].replace('|', '/')} |")
            os.environ["conv_opt"] = "1"
            left = deadline - time.time() - PACK_RESERVE_S
            status, took, last = run_step(name, cmd, min(left, cap), log, args)
            last = "no cuDNN (conv_opt=1); " + last
        failed += status != "ok"
        note = last[:160].replace("|", "/")
        if name == "gpu-check":  # its own logs (parity, bench) live in the repository
            keep_gpu_check_logs(args.work)
        run_dir = new_run_dir(before, run_roots, results_root) if run_name else None
        if run_dir:
            rows = report(run_dir, args, log)
            headlines.append((name, rows, key_results(os.path.join(args.work, f"{name}.log"))))
            note = f"run {os.path.basename(run_dir)}; {note}"
        summary.append(f"| {name} | {status} | {took:.0f} | {note} |")
    if os.path.isfile(os.path.join(args.work, "gpu-check.md")):
        lines = open(os.path.join(args.work, "gpu-check.md")).read().splitlines()
        fails = [l for l in lines if "**FAIL**" in l]
        summary += ["", f"gpu-check: {sum('| PASS |' in l for l in lines)} PASS, "
                    f"{len(fails)} FAIL"] + fails
    for name, rows, cells in headlines:
        summary += ["", f"## {name}: headline (÷ torch)", ""] + rows
        if cells:
            summary += ["", "Per process (the harness's closing table):", ""] + cells
    if args.dry_run:
        summary += ["", "Not checked by a dry run (no GPU here): Jittor's CUDA import and "
                    "compile with nvcc, NVML on a real driver, torch and Jittor on CUDA, "
                    "parity on CUDA, GPU utilisation / memory / energy figures, TF32 and bf16 "
                    "on tensor cores."]
    log(f"[offline] done in {time.time() - args.started:.0f} s of {args.budget:.0f}")
    pack(args, log, summary)
    print("\n" + "\n".join(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
