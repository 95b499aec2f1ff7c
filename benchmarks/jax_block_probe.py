"""Why JAX is where it is on a CPU: the quick UNet's training step split into forward +
backward and the update, then one ResNet block's pieces, forward + backward, in torch and in
JAX (each in its own process, 2 threads), at the quick UNet's shapes.

    .venv/bin/python benchmarks/jax_block_probe.py [--threads 2] [--batch 8]

Step split (configs/quick.yaml's UNet, batch 8, the backends' own code): fwd+bwd (torch:
loss and backward; JAX: the jitted loss-and-gradients function), torch's update (clip, Adam,
EMA: separate foreach kernels), and the whole step (JAX: one program with the update fused).
Then, per framework, the median of 30 timed calls (after 5 untimed) of:
  conv      one 3x3 convolution, 64 -> 64 channels at 8x8 (and 32 -> 32 at 16x16), fwd+bwd
  block     GroupNorm -> SiLU -> conv -> GroupNorm -> SiLU -> conv (+ residual), fwd+bwd
torch runs eagerly (one kernel per op, dispatched from Python); JAX runs each as one jitted
XLA program. A conv that is slower in XLA but a block that is faster says the gap is XLA's
fusion of the elementwise and normalisation ops against torch's per-op dispatch.
docs/JAX.md quotes its output.
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
import numpy as np
fw, threads, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SHAPES = [(32, 16), (64, 8)]   # (channels, resolution) of the quick UNet's levels
REPEATS, WARMUP = 30, 5

def median_time(call, sync):
    for _ in range(WARMUP):
        sync(call())
    ts = []
    for _ in range(REPEATS):
        t0 = time.perf_counter(); sync(call()); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))

out = {}
if fw == "torch":
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    for c, r in SHAPES:
        x = torch.randn(batch, c, r, r, requires_grad=True)
        w1, w2 = (torch.randn(c, c, 3, 3, requires_grad=True) for _ in range(2))
        def conv():
            y = F.conv2d(x, w1, padding=1); y.sum().backward(); return y
        def block():
            h = F.conv2d(F.silu(F.group_norm(x, 8)), w1, padding=1)
            h = F.conv2d(F.silu(F.group_norm(h, 8)), w2, padding=1)
            y = x + h; y.sum().backward(); return y
        out[f"conv {c}ch {r}x{r}"] = median_time(conv, lambda y: None)
        out[f"block {c}ch {r}x{r}"] = median_time(block, lambda y: None)
else:
    from models.jx import runtime
    runtime.limit_cpus(threads)
    import jax, jax.numpy as jnp
    import flax.linen as nn
    gn = nn.GroupNorm(num_groups=8, use_fast_variance=False)
    for c, r in SHAPES:
        x = jnp.asarray(np.random.randn(batch, r, r, c), jnp.float32)
        w1, w2 = (jnp.asarray(np.random.randn(3, 3, c, c), jnp.float32) for _ in range(2))
        gp = gn.init(jax.random.PRNGKey(0), x)
        cv = lambda h, w: jax.lax.conv_general_dilated(h, w, (1, 1), ((1, 1), (1, 1)),
                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
        conv = jax.jit(jax.grad(lambda x, w: cv(x, w).sum(), argnums=(0, 1)))
        def blk(x, w1, w2):
            h = cv(jax.nn.silu(gn.apply(gp, x)), w1)
            h = cv(jax.nn.silu(gn.apply(gp, h)), w2)
            return (x + h).sum()
        block = jax.jit(jax.grad(blk, argnums=(0, 1, 2)))
        ready = lambda y: jax.block_until_ready(y)
        out[f"conv {c}ch {r}x{r}"] = median_time(lambda: conv(x, w1), ready)
        out[f"block {c}ch {r}x{r}"] = median_time(lambda: block(x, w1, w2), ready)
print("PROBE " + json.dumps(out))
"""


STEP_CHILD = r"""
import sys, time, json, numpy as np
fw = sys.argv[1]
sys.path.insert(0, ".")
from bench.run.config import load_config, build_specs
from models.registry import load_backend
from models.common.weights import init_weights
cfg = load_config("configs/quick.yaml"); u, d, o = build_specs(cfg)
be = load_backend(fw)(u, d, o, device="cpu", threads=2)
be.load_weights(init_weights(u, seed=0))
rng = np.random.default_rng(0)
x = be.to_device(rng.uniform(-1, 1, (8, 3, 16, 16))); n = be.to_device(rng.standard_normal((8, 3, 16, 16)))
t = rng.integers(0, 1000, 8)
def med(f, k=30):
    for _ in range(5): f()
    ts = []
    for _ in range(k):
        be.sync(); t0 = time.perf_counter(); f(); be.sync(); ts.append(time.perf_counter() - t0)
    return np.median(ts) * 1e3
if fw == "torch":
    import torch
    def fb():
        be.model.train(); be.opt.zero_grad(set_to_none=True)
        be._training_loss(x, t, n).backward()
    full = lambda: be.train_step(x, t, n)
    def upd():
        torch.nn.utils.clip_grad_norm_(be.params, 1.0); be.opt.step()
        ema = list(be.ema_model.parameters()); torch._foreach_mul_(ema, 0.9999); torch._foreach_add_(ema, be.params, alpha=1e-4)
    fb(); r = {"fwd+bwd": med(fb), "update (clip+adam+ema)": med(upd), "whole step": med(full)}
else:
    import jax
    key = be._key_of("grads", x, {})
    def fb():
        return be._out("x", *be._grads(key, be.params, be.buffers, x, n, np.asarray(t, np.int32), be._ab(t), {}, be._dropout_base, np.uint32(0)))
    r = {"fwd+bwd": med(fb), "whole step": med(lambda: be.train_step(x, t, n))}
print("STEP " + json.dumps(r))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo, OMP_NUM_THREADS=str(args.threads))
    steps = {}
    for fw in ("torch", "jax"):
        proc = subprocess.run([sys.executable, "-c", STEP_CHILD, fw], cwd=repo, env=env,
                              capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("STEP ")), None)
        if line is None:
            sys.exit(f"{fw} failed:\n{proc.stderr[-2000:]}")
        steps[fw] = json.loads(line[5:])
    print("the quick UNet's training step, batch 8 (ms, median of 30)")
    for part in ("fwd+bwd", "update (clip+adam+ema)", "whole step"):
        print(f"{part:24s} " + "  ".join(f"{fw} {steps[fw][part]:7.2f}" if part in steps[fw]
                                          else f"{fw} (fused)" for fw in steps))
    results = {}
    for fw in ("torch", "jax"):
        proc = subprocess.run([sys.executable, "-c", CHILD, fw, str(args.threads),
                               str(args.batch)], cwd=repo, env=env, capture_output=True,
                              text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("PROBE ")), None)
        if line is None:
            sys.exit(f"{fw} failed:\n{proc.stderr[-2000:]}")
        results[fw] = json.loads(line[6:])
    print(f"median of 30 fwd+bwd calls, batch {args.batch}, {args.threads} threads (ms)")
    print(f"{'':22s} {'torch':>8s} {'jax':>8s}  jax/torch")
    for k in results["torch"]:
        a, b = results["torch"][k] * 1e3, results["jax"][k] * 1e3
        print(f"{k:22s} {a:8.2f} {b:8.2f}  {b / a:.2f}x")


if __name__ == "__main__":
    main()
