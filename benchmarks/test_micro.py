"""Micro-benchmarks of one framework (chosen by --framework; see conftest.py).

Every timed call ends with backend.sync(): Jittor (and CUDA) queue work lazily, so a clock
read without it measures only how long the graph took to build. Warm-up rounds run first and
are never measured (Jittor compiles its kernels on the first calls). One call per round, so
each round is one sample for the regression gate's Mann-Whitney test.
"""
import time

import pytest

from bench.measure.micro import micro_batch, micro_cond, middle_step


def timed(backend, delay_s, slowdown, work, unslowed_calls=0):
    """work() followed by sync(), plus the debug slowdowns when asked for (not in the first
    `unslowed_calls` calls: the warm-up rounds, with --micro-inject-skip-warmup)."""
    calls = [0]

    def call():
        calls[0] += 1
        t0 = time.perf_counter()
        out = work()  # kept referenced until after sync: Jittor drops unreferenced results
        backend.sync()
        if calls[0] > unslowed_calls:
            if slowdown:
                time.sleep(slowdown * (time.perf_counter() - t0))
            if delay_s:
                time.sleep(delay_s)
        return out

    return call


def run(benchmark, backend, micro, work, **extra):
    benchmark.extra_info.update(framework=backend.name, device=backend.device,
                                batch_size=micro.batch_size, **extra)
    delay_s, slowdown = micro.injection(benchmark.name)
    if delay_s or slowdown:
        benchmark.extra_info.update(inject_delay_s=delay_s, inject_slowdown=slowdown)
    # pedantic runs the warm-up rounds first, one call each (iterations=1)
    unslowed = micro.warmup_rounds if micro.inject_skip_warmup else 0
    benchmark.pedantic(timed(backend, delay_s, slowdown, work, unslowed), rounds=micro.rounds,
                       warmup_rounds=micro.warmup_rounds, iterations=1)


@pytest.fixture(scope="module")
def inputs(backend, micro):
    """A fixed batch in [-1, 1] and timesteps, made in numpy (same numbers everywhere)."""
    x, t = micro_batch(micro.unet, micro.diffusion, micro.batch_size)
    return backend.to_device(x), t, micro_cond(micro.unet, micro.batch_size)


def _middle_step(micro, sampler):
    from models.common.diffusion import sampler_plan

    return middle_step(micro.diffusion, micro.cfg["sample"]["runs"], sampler, sampler_plan)


def test_unet_forward(benchmark, framework, backend, micro, inputs):
    x, t, cond = inputs
    run(benchmark, backend, micro, lambda: backend.eps(x, t, ema=False, **cond), what="UNet forward, "
        "eval mode, no grad")


def test_train_step(benchmark, framework, backend, micro, inputs):
    x0, t, cond = inputs
    run(benchmark, backend, micro, lambda: backend.train_step(x0, t, **cond),
        what="forward + backward + grad clip + Adam + EMA (noise from the framework RNG)")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_step(benchmark, framework, backend, micro, inputs, sampler):
    x, _, cond = inputs
    coeffs, chain_steps = _middle_step(micro, sampler)
    run(benchmark, backend, micro, lambda: backend.sample_step(x, coeffs, noise=None, ema=True,
                                                                **cond),
        what=f"one {sampler.upper()} reverse step (EMA weights)", sampler=sampler,
        t=coeffs.t, chain_steps=chain_steps, stochastic=coeffs.sigma > 0)
