"""A fixed numpy workload that says how fast this machine is, for comparing across machines.

`calibration()` times the same small job every time (a BLAS matmul, a convolution written as
im2col + matmul, an elementwise pass: the three kinds of work a UNet step is made of) and
returns the median of a few repeats as `score_s`. A machine twice as slow gives roughly twice
the score, so `harness.py compare --normalize` divides each side's times by its own score.

It measures the CPU only (numpy's BLAS at the current thread settings): on a GPU the score
still says nothing about the GPU, and compare warns about that instead of pretending.

    python -m bench.measure.calibrate              # JSON of calibration()
    python -m bench.measure.calibrate --machine-id # slug naming baselines/micro-<machine>.json
"""
import argparse
import json
import os
import re
import resource
import sys
import time

import numpy as np
import psutil
from numpy.lib.stride_tricks import sliding_window_view

from bench.measure.env import cpu_model, gpu_info, usable_cpus

# Bumped whenever the workload changes: scores of different versions are not comparable.
CALIBRATION_VERSION = 1
DEFAULT_REPEATS = 7


def _inputs():
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((320, 320)).astype(np.float32),
        # a conv layer of the quick config's size: batch 8, 32 -> 32 channels, 16x16, 3x3
        "img": rng.standard_normal((8, 32, 18, 18)).astype(np.float32),  # padded input
        "w": rng.standard_normal((32, 32 * 9)).astype(np.float32),
        "v": rng.standard_normal(400_000).astype(np.float32),
    }


def _workload(x):
    """One repeat (~40-80 ms on a 2-core EPYC). Returns a checksum so nothing is skipped."""
    total = 0.0
    a = x["a"]
    for _ in range(4):  # BLAS, multithreaded like the frameworks' matmuls
        a = np.tanh(a @ x["a"] * 0.05)
    total += float(a[0, 0])
    for _ in range(6):  # im2col copy (memory bound) + GEMM, like a CPU conv
        cols = sliding_window_view(x["img"], (3, 3), axis=(2, 3))  # (8, 32, 16, 16, 3, 3)
        cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(8 * 16 * 16, 32 * 9)
        total += float((cols @ x["w"].T)[0, 0])
    v = x["v"]
    for _ in range(6):  # elementwise, single-threaded in numpy (like GroupNorm/SiLU glue)
        v = np.exp(-np.abs(v)) * 0.5 + v * 0.25
    total += float(v[0])
    return total


def calibration(repeats=DEFAULT_REPEATS):
    """Time the fixed workload: {"score_s": median seconds of one repeat, "times_s": [...],
    "repeats", "version", "numpy", "threads_env"}. Takes ~0.3-0.6 s on 2 cores."""
    x = _inputs()
    _workload(x)  # warm-up: page in the arrays, start BLAS threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _workload(x)
        times.append(time.perf_counter() - t0)
    return {"score_s": float(np.median(times)), "times_s": [float(t) for t in times],
            "repeats": repeats, "version": CALIBRATION_VERSION, "numpy": np.__version__,
            "threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",
                                                          "OPENBLAS_NUM_THREADS")
                            if os.environ.get(k)}}


class ForeignCpu:
    """How busy OTHER processes kept the CPUs while a child we waited for ran.

        with ForeignCpu() as meter:
            subprocess.run(...)
        meter.cores  # average CPUs used by everything except our children (0.0 = quiet)

    All busy CPU time of the machine (/proc/stat via psutil) minus the CPU time of our
    reaped children (getrusage), over the wall time. On a shared machine a benchmark whose
    threads had to share cores with someone else's job can be many times slower; this
    number is how compare can say so instead of calling it a regression.
    """

    def __enter__(self):
        self._busy0 = self._busy()
        self._child0 = self._children()
        self._t0 = time.perf_counter()
        self.cores = None
        return self

    def _busy(self):
        t = psutil.cpu_times()
        return sum(v for k, v in t._asdict().items() if k not in ("idle", "iowait", "steal",
                                                                   "guest", "guest_nice"))

    def _children(self):
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def __exit__(self, *exc):
        wall_s = time.perf_counter() - self._t0
        foreign_s = (self._busy() - self._busy0) - (self._children() - self._child0)
        self.cores = max(0.0, foreign_s / wall_s) if wall_s > 0 else 0.0
        return False


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", (text or "unknown").lower()).strip("-")[:40] or "unknown"


def hardware():
    """What makes two machines' timings (in)comparable: CPU model, usable CPUs, GPU names."""
    gpu = gpu_info()
    names = [d["name"] for d in gpu.get("devices", [])] if gpu.get("gpu") == "present" else []
    return {"cpu_model": cpu_model(), "cpu_count_usable": usable_cpus(), "gpu_names": names}


def machine_id(hw=None):
    """A file-name-safe machine slug, e.g. 'amd-epyc-2cpu' or 'amd-epyc-16cpu-nvidia-h100'."""
    hw = hw or hardware()
    parts = [_slug(hw.get("cpu_model")), f"{hw.get('cpu_count_usable')}cpu"]
    if hw.get("gpu_names"):
        parts.append(_slug(hw["gpu_names"][0]))
    return "-".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.measure.calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machine-id", action="store_true", help="print the machine slug only")
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    args = ap.parse_args(argv)
    if args.machine_id:
        print(machine_id())
        return 0
    print(json.dumps({"hardware": hardware(), "machine_id": machine_id(),
                      "calibration": calibration(args.repeats)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
