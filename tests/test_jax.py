"""JAX, the third framework (models/jx/, docs/JAX.md): what is particular to it.

Parity with torch is in test_parity.py and test_dit.py, resume in test_train.py, beside the
other frameworks'. Here: the thread cap by CPU affinity, the compile accounting (ahead of
time, apart from the steps; a compile during measured steps fails the cell), a real harness
run of torch and JAX with its report, and the refusal of a framework that is not installed.
Every JAX computation runs in a child process: the backend sets the process's CPU affinity.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bench.records.results import read_records
from tests.conftest import REPO, bench_and_report, tiny_config

pytestmark = pytest.mark.process

PRELUDE = """
import json, os, resource, sys, time
import numpy as np
from models.registry import load_backend
from models.parity import TINY_UNET, TINY_DIFFUSION, TINY_OPTIM
from models.common.weights import init_weights
"""


def run_child(code, timeout=600):
    """Run `code` (after PRELUDE) in a fresh Python; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_threads_are_capped_by_cpu_affinity():
    """threads=1: the process may run on one CPU, so XLA's pools cannot use more than one
    core whatever their size; the CPU time of the training steps is at most their wall time
    (with two or more CPUs, an uncapped XLA would spend more)."""
    got = run_child("""
        be = load_backend("jax")(TINY_UNET, TINY_DIFFUSION, TINY_OPTIM, device="cpu", threads=1)
        be.load_weights(init_weights(TINY_UNET, seed=0))
        x = be.to_device(np.random.default_rng(0).uniform(-1, 1, (4, 3, 16, 16)))
        t = np.array([1, 20, 40, 60])
        be.loss_value(be.train_step(x, t))          # compile outside the measured window
        cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(8):
            be.loss_value(be.train_step(x, t))
        cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        print(json.dumps({"affinity": sorted(os.sched_getaffinity(0)), "cpu": cpu,
                          "wall": wall1 - wall0, "limit": be.versions()["thread_limit"]}))
    """)
    assert len(got["affinity"]) == 1
    assert got["limit"].startswith("CPU affinity")
    # one CPU: CPU time cannot exceed wall time (10 ms of clock granularity allowed)
    assert got["cpu"] <= got["wall"] + 0.01, got


def test_compiles_are_timed_apart_and_a_new_shape_is_caught():
    """The training step compiles once, ahead of time (timed in compile_seconds); a step
    at a new batch size compiles again, which the workloads' check turns into a failure;
    and the compiled step refuses an argument of another shape under its old key."""
    got = run_child("""
        from bench.run.workloads import no_compile_in
        be = load_backend("jax")(TINY_UNET, TINY_DIFFUSION, TINY_OPTIM, device="cpu", threads=2)
        be.load_weights(init_weights(TINY_UNET, seed=0))
        rng = np.random.default_rng(0)
        x4 = be.to_device(rng.uniform(-1, 1, (4, 3, 16, 16)))
        x2 = be.to_device(rng.uniform(-1, 1, (2, 3, 16, 16)))
        for _ in range(3):
            be.loss_value(be.train_step(x4, np.array([1, 2, 3, 4])))
        before = len(be.compile_events())
        be.loss_value(be.train_step(x4, np.array([5, 6, 7, 8])))
        same_shape_compiles = len(be.compile_events()) - before
        before = len(be.compile_events())
        be.loss_value(be.train_step(x2, np.array([1, 2])))
        try:
            no_compile_in(be, before, "measured training step 9")
            caught = None
        except RuntimeError as e:
            caught = str(e)
        key = be._key_of("train", x4, {})
        try:   # batch-2 arguments under the batch-4 executable: refused, not recompiled
            be._train(key, be.params, be.opt_state, be.ema, be.buffers, x2, x2,
                      np.array([1, 2], np.int32), be._ab(np.array([1, 2])), np.float32(1e-3),
                      be._dropout_base, np.uint32(be.step), {})
            refused = None
        except (TypeError, ValueError) as e:
            refused = type(e).__name__
        print(json.dumps({"same_shape_compiles": same_shape_compiles, "caught": caught,
                          "refused": refused, "seconds": be.compile_seconds()}))
    """)
    assert got["same_shape_compiles"] == 0
    assert got["caught"] and "train step" in got["caught"] and "measured training step 9" \
        in got["caught"]
    assert got["refused"] is not None
    assert got["seconds"]["train step"] > 0


def test_whole_chain_scan_equals_the_step_loop():
    """The sample_loop=scan variant runs the same chain as the matched step loop: with the
    same given noises (DDIM eta 1) and without noise (DDIM eta 0), the same x_0."""
    got = run_child("""
        from models.common.diffusion import sampler_plan
        from models.common.variants import VariantSpec
        rng = np.random.default_rng(1)
        w = init_weights(TINY_UNET, seed=1, scheme="random")
        x_T = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
        out = {}
        for eta in (0.0, 1.0):
            plan = sampler_plan(TINY_DIFFUSION, "ddim", steps=6, eta=eta)
            noises = rng.standard_normal((6, 2, 3, 16, 16)).astype(np.float32)
            res = []
            for v in (None, VariantSpec(name="scan", sample_loop="scan")):
                be = load_backend("jax")(TINY_UNET, TINY_DIFFUSION, TINY_OPTIM, device="cpu",
                                         threads=2, variant=v)
                be.load_weights(w)
                given = [be.to_device(n) for n in noises] if eta > 0 else None
                res.append(be.to_numpy(be.sample(be.to_device(x_T), plan, given, ema=False)))
                names = sorted(be.compile_seconds())
            out[str(eta)] = float(np.abs(res[0] - res[1]).max() / np.abs(res[0]).max())
        out["scan_functions"] = names
        print(json.dumps(out))
    """)
    assert got["0.0"] < 1e-5 and got["1.0"] < 1e-5, got
    assert got["scan_functions"] == ["sampling chain (lax.scan)"]


def test_bf16_variant_computes_in_bf16_and_keeps_float32_state():
    """precision=bf16: the compiled training step convolves in bfloat16, while parameters,
    Adam's moments and the loss stay float32, and its first losses stay near fp32's."""
    got = run_child("""
        from models.common.variants import VariantSpec
        rng = np.random.default_rng(2)
        x = rng.uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32)
        noise = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
        t = np.array([5, 30, 60, 90])
        out = {}
        for v in (None, VariantSpec(name="bf16", precision="bf16")):
            be = load_backend("jax")(TINY_UNET, TINY_DIFFUSION, TINY_OPTIM, device="cpu",
                                     threads=2, variant=v)
            be.load_weights(init_weights(TINY_UNET, seed=0))
            losses = [be.loss_value(be.train_step(be.to_device(x), t, be.to_device(noise)))
                      for _ in range(3)]
            hlo = next(iter(be._train.compiled.values())).as_text()
            out[v.precision if v else "fp32"] = {
                "losses": losses, "bf16_conv": "bf16" in hlo and "convolution" in hlo,
                "param_dtypes": sorted({str(p.dtype) for p in
                                        __import__("jax").tree.leaves(be.params)}),
                "moment_dtypes": sorted({str(m.dtype) for m in
                                         __import__("jax").tree.leaves(be.opt_state.mu)})}
        print(json.dumps(out))
    """)
    fp32, bf16 = got["fp32"], got["bf16"]
    assert not fp32["bf16_conv"] and bf16["bf16_conv"]
    assert bf16["param_dtypes"] == bf16["moment_dtypes"] == ["float32"]
    assert np.allclose(bf16["losses"], fp32["losses"], rtol=0.05), got


def test_torch_and_jax_run_and_report(tmp_path):
    """A real harness run of both loaders and both samplers in torch and JAX: every cell
    ok, JAX's ahead-of-time compile recorded apart from its steps, no compile during the
    measured ones, and the report's tables and environment name JAX."""
    cfg = tiny_config(tmp_path / "results", frameworks=["torch", "jax"],
                      data={"loader": ["shared", "native"]},
                      variants=[{"name": "bf16", "precision": "bf16", "frameworks": ["jax"]},
                                {"name": "scan", "sample_loop": "scan"}])
    proc, run_dir, report, tmp = bench_and_report(tmp_path, cfg, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert report.returncode == 0, report.stderr[-2000:]
    cells = sorted(os.listdir(os.path.join(run_dir, "cells")))
    assert [c for c in cells if c.startswith("jax-")] == \
        ["jax-sample-bf16.r1", "jax-sample-scan.r1", "jax-sample.r1", "jax-train-bf16.r1",
         "jax-train-native.r1", "jax-train-scan.r1", "jax-train-shared.r1"]
    # the variants are JAX's alone: torch offers no sample_loop, and bf16 was named for jax
    assert not [c for c in cells if c.startswith("torch-") and ("bf16" in c or "scan" in c)]
    for cell in cells:
        with open(os.path.join(run_dir, "cells", cell, "summary.json")) as f:
            assert json.load(f)["status"] == "ok", cell
    cell = os.path.join(run_dir, "cells", "jax-train-shared.r1")
    recs, _ = read_records(os.path.join(cell, "events.jsonl"))
    start = next(r for r in recs if r["type"] == "start")
    assert start["versions"]["framework"] == "jax"
    assert start["versions"]["thread_limit"].startswith("CPU affinity")
    with open(os.path.join(cell, "summary.json")) as f:
        metrics = json.load(f)["metrics"]
    assert metrics["aot_compile_s"]["train step"] > 0
    steps = [r for r in recs if r["type"] == "step"]
    # iteration 0 holds the compile: it is the longest step
    assert steps[0]["phase"] == "compile" and steps[0]["wall_s"] == max(s["wall_s"] for s in steps)
    text = open(tmp / "report" / "report.md").read()
    for words in ("| jax-train-native | jax | train | native | 1/1 | ok |",
                  "jax (shared) ÷ torch", "| version | 2.", "NHWC inside the model",
                  "sample_loop=scan", "precision=bf16"):
        assert words in text, words
    with open(os.path.join(run_dir, "cells", "jax-sample-scan.r1", "summary.json")) as f:
        scan = json.load(f)["metrics"]
    assert scan["runs"] and all(r["time_median_s"] > 0 for r in scan["runs"])

