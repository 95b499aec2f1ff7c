"""One item of the CUDA rehearsal, in its own process (a graph that failed at run time leaves
Jittor unusable). Started by tools/cuda_rehearsal/run.py with the rehearsal's environment:
the patched Jittor first on PYTHONPATH, nvcc_path, cuda_archs=90, the offline switches,
a HOME of its own (Jittor's cache) and LD_PRELOAD=libfakedev.so.

    python -m tools.cuda_rehearsal.child ITEM

Prints one line `RESULT {json}`: status PASS where Jittor compiled every kernel of the item's
graph and failed only at run time (the fake device cannot run them), FAIL with the first
compiler error otherwise.
"""
import glob
import json
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from bench.records.errors import decisive_line  # noqa: E402

# Run-time failures that mean compiling went through: the executor runs a graph only after
# compiling all of it, and the fake device cannot copy or launch.
# (Jittor's handler of a failed op prints its memory table, which, with no device memory to
# count, ends in "GPU memory is overflow" and replaces the op's own message.)
RAN_PAST_COMPILE = ("Execute fused operator", "Execute operator", "cudaErrorInsufficientDriver",
                    "cudaErrorNoDevice", "CUDA error", "GPU memory is overflow")
COMPILE_FAILED = ("Error happend during compilation", "Compile fused operator",
                  "Compile operator", "Run cmd failed")


def first_error(text):
    return re.sub(r"/\S*/jittor/", "jittor/", decisive_line(text))


def import_jittor():
    # The rehearsal's fake device must interpose cudaGetDeviceCount, which RTLD_DEEPBIND
    # (Jittor's dlopen flag) would bind inside Jittor's own libraries first. Only here.
    os.RTLD_DEEPBIND = 0
    import jittor as jt
    return jt


def enable_fake_device(jt):
    os.environ["DIFFBENCH_FAKE_DEVICE"] = "1"
    # What a process on a GPU would have after its import (Jittor resets them without one).
    jt.has_cuda = jt.compiler.has_cuda = jt.compile_extern.has_cuda = True
    jt.flags.use_cuda = 1


def _backend(config, batch=2):
    from bench.run.config import build_specs, load_config
    from models.jt.backend import JittorBackend
    model, diffusion, optim = build_specs(load_config(os.path.join(REPO, config),
                                                      check_paths=False))
    return JittorBackend(model, diffusion, optim, device="cuda", seed=0), model, batch


def _inputs(be, model, batch, rng):
    import numpy as np
    shape = (batch, model.in_channels, model.image_size, model.image_size)
    return be.to_device(rng.standard_normal(shape).astype(np.float32))


def _labels(model, batch, rng):
    n = getattr(model, "num_classes", 0)
    return rng.integers(0, n, size=batch) if n else None


def train_step(config):
    """Builds the backend and one training step lazily; returns the sync that runs it."""
    def build(jt):
        import numpy as np
        rng = np.random.default_rng(0)
        be, model, batch = _backend(config)
        x0 = _inputs(be, model, batch, rng)
        t = rng.integers(0, be.diffusion_spec.timesteps, size=batch)
        y = _labels(model, batch, rng)
        drop = None if y is None else np.zeros(batch, dtype=bool)
        loss = be.train_step(x0, t, y=y, drop=drop)
        return lambda: loss.item()
    return build


def sample_step(config, sampler, eta=None, cfg_scale=None):
    """Builds the backend and one reverse step from the middle of a 10-step chain."""
    def build(jt):
        import numpy as np
        from models.common.diffusion import sampler_plan
        rng = np.random.default_rng(0)
        be, model, batch = _backend(config)
        plan = sampler_plan(be.diffusion_spec, sampler, steps=10, eta=eta)
        x = _inputs(be, model, batch, rng)
        y = _labels(model, batch, rng)
        x, _ = be.sample_step(x, plan[len(plan) // 2], y=y, cfg_scale=cfg_scale)
        return lambda: x.sum().item()
    return build


def op(make):
    """A single op's graph; ops whose output shape depends on the data (where) run at once,
    so everything happens in the sync."""
    return lambda jt: (lambda: make(jt).sum().item())


def _softmax_grad(jt):
    x = jt.randn(4, 4, 64, 64)
    return jt.grad(jt.nn.softmax(x, dim=-1).sqr().sum(), x)


def _depthwise_grad(jt):
    conv = jt.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    x = jt.randn(2, 8, 16, 16)
    return jt.grad(conv(x).sqr().sum(), conv.weight)


UNET, DIT = "configs/quick.yaml", "configs/dit-quick.yaml"
# id -> (title, what runs, conv_opt): conv_opt=1 is Jittor's own convolution kernels (no cuDNN)
ITEMS = {
    "softmax": ("softmax code op, forward and backward (attention; CUB BlockReduce)",
                op(_softmax_grad), "0"),
    # (2-D: Jittor takes cub_where for ndim > 1 or > 4096 elements, src/ops/where_op.cc:30)
    "where": ("where / nonzero (cub_where: CUB DeviceSelect, Thrust iterators)",
              op(lambda jt: jt.where(jt.randn(8, 64) > 0.0)[0]), "0"),
    "cumsum": ("cumsum (cub_cumsum: CUB BlockScan, DeviceScan)",
               op(lambda jt: jt.cumsum(jt.randn(4, 64), dim=1)), "0"),
    "argsort": ("argsort (cub_argsort: CUB DeviceSegmentedRadixSort)",
                op(lambda jt: jt.argsort(jt.randn(4, 64), dim=1)[0]), "0"),
    "arg-reduce": ("argmax / argmin (cub_arg_reduce: CUB DeviceSegmentedReduce)",
                   op(lambda jt: jt.argmax(jt.randn(4, 64), dim=1)[0]), "0"),
    "depthwise-conv": ("depthwise convolution backward (CUB WarpReduce; not in our models)",
                       op(_depthwise_grad), "0"),
    "unet-train": ("UNet training step, cuDNN convolutions (quick config: forward, loss, "
                   "backward, grad clip, Adam, EMA)", train_step(UNET), "0"),
    "unet-ddpm": ("UNet DDPM sampling step, cuDNN", sample_step(UNET, "ddpm"), "0"),
    "unet-ddim": ("UNet DDIM sampling step (eta 0), cuDNN", sample_step(UNET, "ddim", eta=0.0),
                  "0"),
    "dit-train": ("DiT training step (dit-quick: class labels, label dropout)", train_step(DIT),
                  "0"),
    "dit-ddim-cfg": ("DiT guided DDIM step (classifier-free guidance)",
                     sample_step(DIT, "ddim", eta=0.0, cfg_scale=4.0), "0"),
    "unet-train-no-cudnn": ("UNet training step on Jittor's own convolution kernels "
                            "(conv_opt=1: the fallback without cuDNN)", train_step(UNET), "1"),
}


def jit_dir():
    from jittor import flags
    return os.path.join(flags.cache_path, "jit")


def kernels(path):
    return set(glob.glob(os.path.join(path, "*.so")))


def import_item():
    t0 = time.time()
    jt = import_jittor()
    ce = jt.compile_extern
    loaded = {name: getattr(ce, name, None) is not None
              for name in ("cublas", "cudnn", "curand", "cub")}
    detail = {"import_s": round(time.time() - t0, 1), "cuda_archs": list(jt.flags.cuda_archs),
              "nvcc": jt.flags.nvcc_path, "cudnn_major": ce.cudnn_major()
              if hasattr(ce, "cudnn_major") else None, **loaded}
    want_cudnn = os.environ.get("conv_opt", "0") == "0"
    missing = [n for n in ("cublas", "curand") + (("cudnn",) if want_cudnn else ()) if not loaded[n]]
    if detail["cuda_archs"] != [90]:
        missing.append(f"cuda_archs {detail['cuda_archs']} (want [90])")
    return ("FAIL" if missing else "PASS"), detail, ("not loaded: " + ", ".join(missing)
                                                      if missing else "")


class syncs_deferred:
    """Jittor's own code syncs on the way (its Optimizer syncs the parameters it is given),
    which would run, and so end, a part of the graph before the item's step is built: while
    building, those syncs do nothing, and the one sync at the end compiles the whole graph."""

    NAMES = ("sync", "sync_all")

    def __init__(self, jt):
        self.jt = jt

    def __enter__(self):
        self.saved = [getattr(self.jt, n) for n in self.NAMES] + [self.jt.Var.sync]
        for n in self.NAMES:
            setattr(self.jt, n, lambda *a, **k: None)
        self.jt.Var.sync = lambda self, *a, **k: self

    def __exit__(self, *exc):
        for n, f in zip(self.NAMES, self.saved):
            setattr(self.jt, n, f)
        self.jt.Var.sync = self.saved[-1]


def run_item(name):
    title, build, _ = ITEMS[name]
    jt = import_jittor()
    enable_fake_device(jt)
    path = jit_dir()
    before = kernels(path)
    t0 = time.time()
    try:
        with syncs_deferred(jt):
            run = build(jt)
    except Exception as e:  # e.g. an .item() while building: the step's graph never ran whole
        text = str(e)
        print("EXCEPTION while building " + text, flush=True)
        status, error = "FAIL", "while building the graph, before its one sync: " + first_error(text)
    else:
        try:
            run()
            status, error = "FAIL", "ran to the end: the fake device should have stopped it"
        except Exception as e:  # Jittor raises RuntimeError for compile and run failures alike
            text = str(e)
            print("EXCEPTION " + text, flush=True)  # the log keeps the whole message
            if any(m in text for m in COMPILE_FAILED):
                status, error = "FAIL", first_error(text)
            elif any(m in text for m in RAN_PAST_COMPILE):
                status, error = "PASS", ""
            else:
                status, error = "FAIL", first_error(text)
    new = sorted(os.path.basename(p).split("__")[0] or "fused" for p in kernels(path) - before)
    detail = {"compile_s": round(time.time() - t0, 1), "new_kernels": len(new),
              "kinds": sorted(set(new)), "cached_kernels": len(before)}
    return status, detail, error


def main(argv=None):
    name = (argv or sys.argv[1:])[0]
    try:
        status, detail, error = import_item() if name == "import" else run_item(name)
    except Exception as e:
        status, detail, error = "FAIL", {}, first_error(f"{type(e).__name__}: {e}")
    print("RESULT " + json.dumps({"item": name, "status": status, "detail": detail,
                                  "error": error}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
