"""`make gpu-check` / `harness.py gpu-check`: prove the CUDA paths on a GPU machine (docs/GPU.md).

Runs, in about 10 minutes at most, each in a process of its own:
  1. NVML answers and names the GPU the monitor would watch for a worker
  2. torch runs on CUDA, and the GPU it uses is the one the monitor watches (UUID)
  3. Jittor runs on CUDA offline (no downloads: models/jt/runtime.py); JAX on CUDA where
     it is installed ("jax: not installed" in one line where not)
  4. parity on CUDA (every installed framework against torch): same weights and inputs, every error within its tolerance, math_mode fp32
  5. configs/quick-gpu.yaml through the normal `harness.py bench` + `harness.py report`
  6. its steps: synced compute longer than the dispatch (the clocks wait for the GPU)
  7. its monitor: GPU utilisation, own memory and energy measured in every ok cell
prints a checklist (PASS / FAIL per line), writes it as markdown (--out) and exits 1 if any
line failed. harness.py answers "no GPU" in one line (exit 0) before this runs at all.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.measure.env import child_env  # noqa: E402  (after the path is set)
from bench.measure.monitor import open_nvml  # noqa: E402
from bench.records.errors import (DECISIVE_LOG_CHARS, decisive_line, failure_line,  # noqa: E402
                                  log_tail, strip_ansi)
from bench.records.results import STDERR, cell_dir, load_run  # noqa: E402

CONFIG = "configs/quick-gpu.yaml"
FP32 = {"math_mode": "fp32"}

TORCH_CHILD = """
import json, torch
from models.pt.backend import pin_math_mode, math_settings
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
pin_math_mode("fp32")
p = torch.cuda.get_device_properties(0)
x = torch.randn(256, 256, device="cuda")
y = float((x @ x).sum().item())
print("GPUCHECK " + json.dumps({"name": p.name, "uuid": "GPU-" + str(p.uuid),
      "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), **math_settings()}))
"""

JITTOR_CHILD = """
import json
from models.jt.runtime import import_jittor, math_settings, pin_math_mode
jt = import_jittor(use_cuda=True)
assert jt.has_cuda, "jittor has no CUDA (jt.has_cuda is 0)"
jt.flags.use_cuda = 1
pin_math_mode(jt, "fp32")
x = jt.randn(64, 64)
y = float((x @ x).sum().item())
conv = jt.nn.Conv2d(3, 8, 3, padding=1)
z = float(conv(jt.randn(2, 3, 16, 16)).sum().item())
print("GPUCHECK " + json.dumps({"version": jt.__version__, **math_settings(jt)}))
"""

JAX_CHILD = """
import json
from models.jx import runtime  # XLA's start-up environment (no preallocation)
import jax, jax.numpy as jnp
gpu = jax.devices("gpu")[0]
jax.config.update("jax_default_matmul_precision", "float32")
x = jax.device_put(jnp.ones((64, 64)), gpu)
y = float((x @ x).sum())
k = jax.device_put(jnp.ones((3, 3, 3, 8)), gpu)
z = float(jax.lax.conv_general_dilated(jnp.ones((2, 16, 16, 3)), k, (1, 1), "SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC")).sum())
print("GPUCHECK " + json.dumps({"version": jax.__version__, "device": gpu.device_kind,
                               "peak_bytes_in_use": gpu.memory_stats().get("peak_bytes_in_use")}))
"""


def _child(code, timeout_s, env=None):
    """(ok, parsed GPUCHECK json or the error's last line) of `python -c code`."""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=timeout_s, cwd=REPO, env=env or child_env(None, FP32))
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout_s} s"
    for line in out.stdout.splitlines():
        if line.startswith("GPUCHECK "):
            return True, json.loads(line.split(" ", 1)[1])
    # the decisive line: a failed compile's `error:`, not the g++ command Jittor's exception quotes
    return False, f"exit {out.returncode}: {decisive_line(out.stdout + out.stderr) or 'no output'}"


def _run(cmd, timeout_s, env=None, log=None):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO,
                             env=env or child_env(None, FP32))
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s} s"
    text = strip_ansi(out.stdout + out.stderr)
    if log:
        with open(log, "w") as f:
            f.write(text)
    return out.returncode, text.strip().splitlines()


def _outcome(rc, lines):
    """A command's line for the checklist: its last line when it passed, else the decisive
    one (a timeout's words as they are)."""
    if not isinstance(lines, list):
        return lines
    return (lines[-1] if lines else "no output") if rc == 0 else decisive_line("\n".join(lines))


class Checklist:
    """PASS/FAIL lines, written to `out` after each one: a check killed part-way (a host's time
    budget) still leaves the lines it had."""

    def __init__(self, out=None, started=None):
        self.lines, self.out, self.started = [], out, started or time.time()

    def add(self, ok, name, detail):
        self.lines.append((bool(ok), name, strip_ansi(str(detail))))
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
        if self.out:
            with open(self.out, "w") as f:
                f.write(self.markdown(self.started))

    def markdown(self, started):
        rows = "\n".join(f"| {'PASS' if ok else '**FAIL**'} | {name} | "
                         f"{detail.replace('|', '/')} |"
                         for ok, name, detail in self.lines)
        return (f"# gpu-check\n\n{time.strftime('%Y-%m-%d %H:%M:%S')}, "
                f"{time.time() - started:.0f} s\n\n| | check | detail |\n|---|---|---|\n"
                f"{rows}\n")


def bench_checks(check, run_dir, watched_uuid):
    """Lines 6 and 7, from the records of the quick-gpu run."""
    run = load_run(run_dir)
    # judged on the processes that finished ok: a failed one's steps prove nothing
    finished = set(run.summaries.loc[run.summaries["status"] == "ok", "unit"])
    steps = run.steps[(run.steps.get("phase") == "measure") & run.steps["unit"].isin(finished)] \
        if not run.steps.empty else run.steps
    for cell, g in steps.groupby("cell") if not steps.empty else []:
        compute, dispatch = g["compute_s"].median(), g["dispatch_s"].median()
        check.add(compute > dispatch, f"synced step longer than its dispatch ({cell})",
                  f"median compute {compute * 1e3:.2f} ms vs dispatch {dispatch * 1e3:.2f} ms "
                  f"over {len(g)} measured steps")
    for _, s in run.summaries.iterrows():
        m = s.get("metrics") if isinstance(s.get("metrics"), dict) else {}
        unit = s.get("unit") or s.get("cell")
        if s.get("status") != "ok":
            log = log_tail(os.path.join(cell_dir(run_dir, unit), STDERR), DECISIVE_LOG_CHARS)
            check.add(False, f"GPU figures measured ({unit})",
                      f"cell {s.get('status')}: {failure_line(_text(s.get('error')), log)}")
            continue
        watched = (m.get("gpu_watched") or {}).get("uuid")
        missing = [k for k in ("gpu_util_percent_mean", "proc_gpu_mem_peak_bytes",
                               "energy_j_measured") if m.get(k) is None]
        ok = m.get("gpu") == "present" and not missing and (
            watched_uuid is None or watched == watched_uuid)
        check.add(ok, f"GPU figures measured ({unit})",
                  f"watched {watched} ({(m.get('gpu_watched') or {}).get('resolved_by')}), "
                  f"util {m.get('gpu_util_percent_mean')} {m.get('gpu_util_note') or ''}, "
                  f"own memory {m.get('proc_gpu_mem_peak_bytes')} B, energy/image "
                  f"{m.get('energy_j_per_image')} J ({m.get('energy_source')})"
                  + (f"; missing {missing}" if missing else ""))


def _text(value):
    """A summary's text field ('' where pandas left NaN)."""
    return value if isinstance(value, str) else ""


def main(argv=None):
    ap = argparse.ArgumentParser(prog="harness.py gpu-check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "results", "gpu-check.md"))
    ap.add_argument("--skip-bench", action="store_true", help="lines 1-4 only (~2 min)")
    args = ap.parse_args(argv)
    started = time.time()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    check = Checklist(args.out, started)
    work = os.path.join(REPO, "results", "gpu-check")
    os.makedirs(work, exist_ok=True)

    nvml, status = open_nvml(True, child_env(None, FP32))
    if nvml is not None:
        sample = nvml.sample({os.getpid()})
        nvml.close()
    check.add(nvml is not None, "NVML reachable, watched GPU",
              {k: v for k, v in status.items() if k != "gpu"} if nvml is not None
              else status.get("reason"))
    if nvml is not None:
        check.add(sample.get("gpu_mem_used_bytes") is not None and
                  sample.get("power_w") is not None, "NVML samples memory and power",
                  {k: sample.get(k) for k in ("gpu_util_percent", "gpu_mem_used_bytes",
                                              "power_w", "energy_j_counter")})

    ok, torch_info = _child(TORCH_CHILD, 180)
    check.add(ok, "torch on CUDA (math_mode fp32)", torch_info)
    watched = status.get("uuid") if nvml is not None else None
    if ok and watched:
        check.add(torch_info["uuid"] == watched, "the monitor watches torch's GPU",
                  f"torch {torch_info['uuid']} vs NVML {watched}")

    ok_jt, jt_info = _child(JITTOR_CHILD, 420)
    check.add(ok_jt, "Jittor on CUDA, offline (math_mode fp32)", jt_info)

    # JAX is optional on a GPU host (the offline bundle does not carry it): one line either way
    from models.registry import installed

    if installed("jax"):
        ok_jx, jx_info = _child(JAX_CHILD, 180)
        check.add(ok_jx, "JAX on CUDA (matmul precision float32)", jx_info)
    else:
        check.add(True, "JAX on CUDA", "jax: not installed (skipped; docs/JAX.md)")

    if ok and ok_jt:
        env = dict(child_env(None, FP32), DIFFBENCH_PARITY_DEVICE="cuda")
        rc, lines = _run([sys.executable, "-m", "models.parity", "check", "--record-dir",
                          os.path.join(work, "parity")], 300, env,
                         log=os.path.join(work, "parity.log"))
        check.add(rc == 0, "parity on CUDA under math_mode fp32",
                  f"{_outcome(rc, lines)} (results/gpu-check/parity.log)")
    else:
        check.add(False, "parity on CUDA under math_mode fp32", "not run: a framework is not "
                  "on CUDA")

    if not args.skip_bench:
        run_file = os.path.join(work, ".last-run")
        rc, lines = _run([sys.executable, "harness.py", "bench", CONFIG, "--quiet",
                          "--run-dir-file", run_file], 480, log=os.path.join(work, "bench.log"))
        run_dir = open(run_file).read().strip() if os.path.isfile(run_file) else None
        check.add(rc == 0, f"{CONFIG} through harness.py bench",
                  f"exit {rc}, {run_dir} (results/gpu-check/bench.log)")
        if run_dir:
            rc2, lines2 = _run([sys.executable, "harness.py", "report", run_dir], 120)
            check.add(rc2 == 0, "its report", _outcome(rc2, lines2))
            bench_checks(check, run_dir, watched)
    with open(args.out, "w") as f:
        f.write(check.markdown(started))
    failed = sum(not ok for ok, _, _ in check.lines)
    print(f"gpu-check: {len(check.lines) - failed}/{len(check.lines)} passed in "
          f"{time.time() - started:.0f} s; checklist: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
