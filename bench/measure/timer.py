"""Honest clocks: synchronise the device before every clock read.

Frameworks queue work asynchronously (CUDA streams; Jittor builds a lazy graph even on the CPU)
so a clock read right after a call measures only how long it took to *enqueue* the work. Every
duration here is taken between two `backend.sync()` calls with time.perf_counter.

A step is split into
    data_wait_s  getting the next batch onto the device (loader + to_device), synced
    compute_s    train_step (forward, backward, clip, Adam, EMA), synced
    dispatch_s   the part of compute_s before the sync: how long the call took to return.
                 For eager CPU torch it is ~compute_s; for lazy Jittor or CUDA far less, which
                 is what proves the sync is doing real work (tests/test_timing.py).
"""
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class StepTiming:
    wall_s: float
    data_wait_s: float
    compute_s: float
    dispatch_s: float


def timed_train_step(backend, batches, inject_delay_s=0.0, sync=True, labels=None):
    """Fetch one batch and take one optimizer step. Returns (loss tensor, x0, StepTiming).

    inject_delay_s sleeps inside the compute window (a known, documented slowdown for the
    regression gate). sync=False exists only to demonstrate what an unsynced clock reads.
    labels: a class-conditional model's BenchmarkLabels (bench/data/loaders.py), drawn with
    the batch, inside the data window; None for a model without labels.
    """
    sync_fn = backend.sync if sync else (lambda: None)
    sync_fn()
    t0 = time.perf_counter()
    with backend.region("data"):  # a no-op outside profile cells
        x0, t, noise = next(batches)
        cond = labels.train(len(t) * labels.world_size) if labels is not None else {}
        if isinstance(x0, np.ndarray):  # shared loader: numpy -> device here, inside data-wait
            x0 = backend.to_device(x0)
        if noise is not None:
            noise = backend.to_device(noise)
        sync_fn()
    t1 = time.perf_counter()
    loss = backend.train_step(x0, t, noise, **cond)
    t_dispatch = time.perf_counter()
    if inject_delay_s:
        time.sleep(inject_delay_s)
    sync_fn()
    t2 = time.perf_counter()
    return loss, x0, StepTiming(wall_s=t2 - t0, data_wait_s=t1 - t0, compute_s=t2 - t1,
                                dispatch_s=t_dispatch - t1)


def timed_call(backend, call):
    """Seconds from calling call() to the backend's sync after it. The result stays
    referenced until the sync has returned: Jittor drops the work of an unreferenced one."""
    t0 = time.perf_counter()
    out = call()
    backend.sync()
    dt = time.perf_counter() - t0
    del out
    return dt


def timed_chain(backend, plan, batch_size, shape, ema=True, inject_delay_s=0.0, cond=None):
    """One full sampling chain from fresh x_T. Returns (seconds, x0). cond: a
    class-conditional model's labels (and guidance scale), BenchmarkLabels.sample's.

    x_T is drawn and synced before the clock starts; noise comes from the framework's RNG on
    the device (benchmark mode). One sync at the end, so consecutive steps can pipeline as
    they would in real use.
    """
    x = backend.randn((batch_size,) + tuple(shape))
    backend.sync()
    t0 = time.perf_counter()
    if inject_delay_s:
        for coeffs in plan:
            x, _ = backend.sample_step(x, coeffs, noise=None, ema=ema, **(cond or {}))
            time.sleep(inject_delay_s)
    else:   # BackendBase.sample: the step loop, or a backend's whole-chain variant
        x = backend.sample(x, plan, ema=ema, **(cond or {}))
    backend.sync()
    return time.perf_counter() - t0, x
