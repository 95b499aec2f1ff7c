"""The micro-benchmarks' inputs and calls, in one place for both ways of running them: the
pytest-benchmark suite (benchmarks/test_micro.py, one framework and one revision a process)
and the A/B gate's interleaved worker (bench/gate/interleaved.py, two revisions in one
process). Framework-free: the caller hands in a built backend and its revision's
`sampler_plan`.
"""
import numpy as np

from bench.data.loaders import benchmark_labels

INPUT_SEED = 0
SAMPLERS = ("ddpm", "ddim")


def micro_batch(unet, diffusion, batch_size, seed=INPUT_SEED):
    """A fixed batch in [-1, 1] and timesteps, made in numpy (the same numbers everywhere)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch_size, unet.in_channels, unet.image_size, unet.image_size))
    t = rng.integers(0, diffusion.timesteps, batch_size).astype(np.int64)
    return x.astype(np.float32), t


def micro_cond(unet, batch_size, seed=INPUT_SEED):
    """A class-conditional DiT's fixed labels ({"y": ...}, the workloads' seeded
    BenchmarkLabels); {} for any other model. Passed to every micro call, so a DiT config
    runs the same benchmarks."""
    labels = benchmark_labels(unet, seed)
    return labels.sample(batch_size) if labels is not None else {}


def middle_step(diffusion, sample_runs, sampler, sampler_plan):
    """(coefficients, chain length) of a step from the middle of the config's chain (DDPM: all
    T steps; DDIM: the config's first DDIM step count and eta). Every step costs the same; the
    middle one is typical."""
    if sampler == "ddpm":
        plan = sampler_plan(diffusion, "ddpm")
    else:
        runs = [r for r in sample_runs if r["sampler"] == "ddim"]
        steps = runs[0]["steps"][0] if runs else 10
        eta = runs[0]["eta"] if runs else 0.0
        plan = sampler_plan(diffusion, "ddim", steps, eta)
    return plan[len(plan) // 2], len(plan)


def micro_calls(backend, unet, diffusion, sample_runs, batch_size, sampler_plan):
    """{benchmark name: zero-argument call} for one built backend, named as the
    pytest-benchmark suite names them (test_train_step[torch], ...). A call's result must stay
    referenced until backend.sync() has returned (Jittor drops unreferenced results)."""
    x, t = micro_batch(unet, diffusion, batch_size)
    xd = backend.to_device(x)
    fw = backend.name
    # the names stay the UNet's ("unet_forward" is the model's forward): baselines carry over
    cond = micro_cond(unet, batch_size)
    calls = {f"test_unet_forward[{fw}]": lambda: backend.eps(xd, t, ema=False, **cond),
             f"test_train_step[{fw}]": lambda: backend.train_step(xd, t, **cond)}
    for sampler in SAMPLERS:
        coeffs, _ = middle_step(diffusion, sample_runs, sampler, sampler_plan)
        calls[f"test_sample_step[{fw}-{sampler}]"] = (
            lambda c=coeffs: backend.sample_step(xd, c, noise=None, ema=True, **cond))
    return calls
