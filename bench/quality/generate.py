"""Sampling images from a backend: the primitives every producer of images shares.

`generate` (N images in batches, as FID needs them), `trajectory` (x_t and predicted x0 along
one chain, for denoising GIFs and progressive strips) and `interpolate` (Ho et al. 2020's
latent interpolation). They drive any backend through its interface, so they never import a
framework. Used by the quality workload (bench/run/workloads.py), `harness.py sample`
(bench/tasks/sample.py) and the sample grids of `harness.py train`.
"""
import time

import numpy as np

from bench.data.datasets import from_model_range, to_model_range
from bench.quality.images import denoise_frame_indices


def _x_T(backend, n, seed):
    u = backend.unet_spec
    rng = np.random.default_rng(seed)
    return backend.to_device(rng.standard_normal((n, u.in_channels, u.image_size, u.image_size),
                                                 dtype=np.float32))


def _uint8(backend, x):
    return from_model_range(backend.to_numpy(x))


def generate(backend, plan, num, batch_size, seed, ema=True):
    """num images (uint8 NHWC) in batches; returns (images, seconds)."""
    out, t0 = [], time.perf_counter()
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        backend.reseed(seed + start)
        out.append(_uint8(backend, backend.sample(_x_T(backend, n, seed + start), plan, ema=ema)))
    backend.sync()
    return np.concatenate(out), time.perf_counter() - t0


def trajectory(backend, plan, num, seed, ema=True, frames=16):
    """x_t and predicted x0 at coarse-to-fine frames of one chain: (steps shown, x_t, x0)."""
    keep = set(denoise_frame_indices(len(plan) + 1, frames))  # 0 = x_T ... len(plan) = x_0
    x = _x_T(backend, num, seed)
    backend.reseed(seed)
    xs, x0s, shown = [], [], []
    if 0 in keep:
        xs.append(_uint8(backend, x))
        x0s.append(None)
        shown.append(0)
    for i, coeffs in enumerate(plan, start=1):
        x, x0 = backend.sample_step(x, coeffs, ema=ema)
        if i in keep:
            xs.append(_uint8(backend, x))
            x0s.append(_uint8(backend, x0))
            shown.append(i)
    return shown, xs, x0s


def interpolate(backend, images_a, images_b, plan, t_level, lambdas, seed, ema=True):
    """Ho et al. 2020 sec. 4.3: noise both sources to x_t with the same noise, mix the latents
    linearly, decode each mix with the reverse process from t. -> uint8 (pairs, len(lambdas))."""
    sub = [c for c in plan if c.t <= t_level]
    t = sub[0].t  # the plan's nearest timestep at or below the requested level
    a, b = backend.schedule.q_sample_coefficients([t])
    rng = np.random.default_rng(seed)
    x0a, x0b = to_model_range(images_a), to_model_range(images_b)
    noise = rng.standard_normal(x0a.shape, dtype=np.float32)
    xa, xb = a[0] * x0a + b[0] * noise, a[0] * x0b + b[0] * noise
    rows = []
    for lam in lambdas:
        backend.reseed(seed + 1)  # the same reverse-process noise for every mix
        x = backend.sample(backend.to_device((1 - lam) * xa + lam * xb), sub, ema=ema)
        rows.append(_uint8(backend, x))
    return np.stack(rows, axis=1), t
