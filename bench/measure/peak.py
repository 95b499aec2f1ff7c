"""The measured peak a cell's GFLOP/s is compared with: a dense float32 matmul on the cell's
device, timed by the cell's framework at cell start (docs/REPORT.md).

A fraction of this peak is a roofline-style figure on a CPU and an MFU-like one on a GPU;
it is only as good as the framework's own matmul, which is why each framework measures its
own (the report names the peak it used).
"""
import time

import numpy as np

from bench.measure.timer import timed_call

PEAK_N = 1024          # 2.1 GFLOP per product: long enough to time, short on 2 cores
PEAK_MIN_TIME_S = 0.3  # timed products after two warm-up ones
PEAK_MAX_REPEATS = 50


def measure_matmul_peak(backend, n=PEAK_N, min_time_s=PEAK_MIN_TIME_S):
    """{"peak_gflops", "n", "dtype", "device", "repeats", "median_s"} of an n x n x n matmul,
    each product synced and timed on its own; the best-of median is the peak."""
    a, b = backend.randn((n, n)), backend.randn((n, n))
    backend.sync()
    for _ in range(2):  # warm-up: kernel selection / JIT compile, caches
        backend.matmul(a, b)
        backend.sync()
    times, t_end = [], time.perf_counter() + min_time_s
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < PEAK_MAX_REPEATS):
        times.append(timed_call(backend, lambda: backend.matmul(a, b)))
    med = float(np.median(times))
    return {"peak_gflops": 2.0 * n ** 3 / med / 1e9, "n": n, "dtype": "float32",
            "device": backend.device, "repeats": len(times), "median_s": med}


def record_peak(backend, cfg, out):
    """Measure the peak when runner.peak_matmul_n asks for it and write it as a `peak`
    record (train and sample cells, and `harness.py train`). Returns the record or None."""
    n = cfg["runner"]["peak_matmul_n"]
    return out.write("peak", **measure_matmul_peak(backend, n)) if n else None

