"""Real training (`harness.py train`): one framework per process, checkpoints, exact resume.

The output is a results run (docs/ARCHITECTURE.md) whose cells are `<framework>-train`, so
`harness.py report` draws its loss curves and sample grids like any benchmark's:

    <run>/manifest.json
    <run>/cells/<fw>-train/events.jsonl      step / epoch / checkpoint / sample_grid records
    <run>/cells/<fw>-train/summary.json      written when the requested steps are done
    <run>/cells/<fw>-train/checkpoints/ckpt-<step>/
    <run>/cells/<fw>-train/samples/step-<step>.png

Every framework starts from the same canonical weights (seeded numpy init) and, through the
shared numpy data stream, sees the same batches, timesteps and noise, so the loss curves are
comparable step by step. Resume is exact: the data stream's RNG state is checkpointed and the
framework RNG (dropout) is reseeded from (seed, step) before every step, so 2 + resume + 2
steps equal 4 straight steps (tests/test_train.py).

    python -m bench.tasks.train --run-dir RUN --framework torch --steps N [--resume]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from tqdm import tqdm

from bench.data import loaders as datamod
from bench import REPO_ROOT
from bench.measure.env import child_env
from bench.measure.monitor import Monitor
from bench.measure.peak import record_peak
from bench.measure.timer import timed_train_step
from bench.quality.generate import generate
from bench.quality.images import save_grid
from bench.records.results import (EVENTS, MONITOR, SUMMARY, RecordWriter, read_records,
                                   write_json_atomic)
from bench.run.checkpoint import read_checkpoint, restore, save_checkpoint
from bench.run.config import build_specs
from bench.run.matrix import Cell
from bench.run.runner import exit_reason, resolved_threads, write_manifest
from bench.run.worker import peak_rss_bytes
from models.common.diffusion import sampler_plan
from models.common.flops import train_step_flops
from models.common.weights import init_weights
from models.registry import load_backend

CELLS = "cells"


def cell_dir(run_dir, framework):
    return os.path.join(run_dir, CELLS, f"{framework}-train")


def step_seed(seed, step):
    """The framework RNG seed for optimizer step `step` (dropout masks, native noise)."""
    return (seed * 1_000_003 + step) % (2 ** 31)


def _truncate_events(path, last_step):
    """After a resume from step k, drop records of steps > k (they will be run again)."""
    if not os.path.exists(path):
        return
    records, _ = read_records(path)
    keep = [r for r in records if r.get("step") is None or r["step"] <= last_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in keep:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def save_sample_grid(backend, cdir, cfg, out, num=36):
    """A DDIM grid from the EMA weights (fixed x_T, so grids over time are comparable).
    Drawing it moves the framework RNG; train() reseeds before every step, so no matter."""
    steps = cfg["train"]["sample_steps"]
    plan = sampler_plan(backend.diffusion_spec, "ddim", steps=steps, eta=0.0)
    images, _ = generate(backend, plan, num, num, seed=cfg["seed"] + 7, ema=True)
    path = os.path.join(cdir, "samples", f"step-{backend.step:08d}.png")
    save_grid(images, path, nrow=int(np.ceil(np.sqrt(num))), scale=2)
    out.write("sample_grid", step=backend.step, path=os.path.relpath(path, cdir),
              sampler="ddim", steps=steps, eta=0.0, ema=True)
    return path


def train(run_dir, framework, cfg, total_steps, resume=False, threads=None, progress=True):
    unet, diffusion, optim = build_specs(cfg)
    tc, dc, seed = cfg["train"], cfg["data"], cfg["seed"]
    bs, T = tc["batch_size"], diffusion.timesteps
    cdir = cell_dir(run_dir, framework)
    ckpt_root = os.path.join(cdir, "checkpoints")
    os.makedirs(ckpt_root, exist_ok=True)

    backend = load_backend(framework)(unet, diffusion, optim, device=cfg["device"],
                                      threads=threads, seed=seed,
                                      math_mode=cfg.get("math_mode", "fp32"))
    images = datamod.load_images(dc, unet.image_size, unet.in_channels, seed)
    train_images, val_images = datamod.split(images, dc["val_fraction"], seed)
    batches = datamod.SharedBatches(train_images, bs, T, seed, hflip=dc["hflip"])
    val = datamod.validation_batches(val_images, bs, tc["val_batches"], T, seed)
    steps_per_epoch = tc["steps_per_epoch"] or len(train_images) // bs

    events = os.path.join(cdir, EVENTS)
    if resume and os.path.isdir(ckpt_root) and os.listdir(ckpt_root):
        ckpt = read_checkpoint(ckpt_root)
        restore(backend, ckpt)
        batches.set_state(ckpt["state"]["stream"])
        _truncate_events(events, backend.step)
        resumed_from = ckpt["path"]
    else:
        if os.path.exists(events):
            os.remove(events)
        backend.load_weights(init_weights(unet, seed=seed))
        resumed_from = None
    backend.sync()

    every = tc["checkpoint_every"] or total_steps
    with RecordWriter(events) as out:
        out.write("start", framework=framework, workload="train", device=backend.device,
                  pid=os.getpid(), versions=backend.versions(), threads=threads,
                  resumed_from=resumed_from,
                  step=backend.step, train_images=len(train_images), batch_size=bs)
        # as a benchmark cell: the FLOPs of a step and the measured peak they are a share of
        out.write("train_info", loader="shared", train_images=len(train_images),
                  val_images=len(val_images), steps_per_epoch=steps_per_epoch,
                  batch_size=bs, flops_per_step=train_step_flops(unet, bs))
        record_peak(backend, cfg, out)
        started = time.time()
        losses, period_s, period_start = [], 0.0, time.time()
        bar = _progress(framework, backend.step, total_steps, progress)
        while backend.step < total_steps:
            backend.reseed(step_seed(seed, backend.step))
            loss_t, _, tm = timed_train_step(backend, batches)
            loss = backend.loss_value(loss_t)
            if not np.isfinite(loss):
                raise FloatingPointError(f"{framework}: training loss is {loss} at step {backend.step}")
            step = backend.step  # 1-based count of optimizer steps taken
            epoch = (step - 1) // steps_per_epoch + 1
            out.write("step", phase="compile" if step == 1 else "measure", epoch=epoch,
                      step=step, wall_s=tm.wall_s, data_wait_s=tm.data_wait_s,
                      compute_s=tm.compute_s, loss=loss, images=bs)
            losses.append(loss)
            period_s += tm.wall_s
            bar.update(1)
            if step % steps_per_epoch == 0 or step == total_steps:
                val_loss = float(np.mean([backend.eval_loss(backend.to_device(x0), t, backend.to_device(n))
                                          for x0, t, n in val])) if val else None
                # time_s: the period's training steps (validation, checkpoints, grids apart)
                out.write("epoch", epoch=epoch, step=step, mean_loss=float(np.mean(losses)),
                          val_loss=val_loss, steps=len(losses), time_s=period_s,
                          t_start=period_start, images=len(losses) * bs,
                          images_per_s=len(losses) * bs / period_s)
                losses, period_s = [], 0.0
            if step % every == 0 or step == total_steps:
                path = save_checkpoint(ckpt_root, backend, {"stream": batches.state(),
                                                            "seed": seed})
                out.write("checkpoint", step=step, path=os.path.relpath(path, cdir))
            if tc["sample_every"] and (step % tc["sample_every"] == 0 or step == total_steps):
                save_sample_grid(backend, cdir, cfg, out)
            if step % steps_per_epoch == 0:
                period_start = time.time()  # the next period's training starts now
        bar.close()
        out.write("memory", **backend.memory_stats(), peak_rss_bytes=peak_rss_bytes())
    summary = {"cell": f"{framework}-train", "framework": framework, "workload": "train",
               "variant": "", "status": "ok", "error": None, "started": started,
               "finished": time.time(),
               "metrics": {"steps_total": backend.step, "device": backend.device,
                           "checkpoint": os.path.relpath(read_checkpoint(ckpt_root)["path"], cdir)}}
    write_json_atomic(os.path.join(cdir, SUMMARY), summary)
    return backend


def run_training(cfg, run_dir, frameworks, total_steps, resume=False, argv=None):
    """`harness.py train`: each framework in a child process of its own, one after the other
    (never two heavy processes at once). Returns {framework: exit code}."""
    threads = resolved_threads(cfg)
    if not resume:
        os.makedirs(run_dir, exist_ok=True)
        # one process per framework, in cells/<fw>-train/ (not a benchmark's <cell>.r<k>)
        cells = [dict(Cell(framework=fw, workload="train").to_dict(),
                      unit=os.path.basename(cell_dir(run_dir, fw))) for fw in frameworks]
        write_manifest(run_dir, cfg, cells, argv)
    codes = {}
    for fw in frameworks:
        cmd = [sys.executable, "-m", "bench.tasks.train", "--run-dir", run_dir, "--framework", fw,
               "--steps", str(total_steps), "--threads", str(threads)]
        if resume:
            cmd.append("--resume")
        print(f"[train] {fw}: to step {total_steps}" + (" (resuming)" if resume else ""),
              flush=True)
        env = child_env(threads, cfg)
        os.makedirs(cell_dir(run_dir, fw), exist_ok=True)
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)
        # the same process monitor as a benchmark cell (CPU, RSS, NVML), appended on resume
        mon = Monitor(proc.pid, os.path.join(cell_dir(run_dir, fw), MONITOR),
                      cfg["monitor"]["interval_s"], use_gpu=cfg["device"] != "cpu", env=env) \
            if cfg["monitor"]["enabled"] else None
        if mon:
            mon.start()
        try:
            codes[fw] = proc.wait()
        except BaseException:  # Ctrl-C: no training left running behind the user's back
            proc.kill()
            proc.wait()
            raise
        finally:
            if mon:
                mon.stop()
        if codes[fw] != 0:
            print(f"[train] {fw}: FAILED (exit {codes[fw]}{exit_reason(codes[fw])}); "
                  "see the error above", flush=True)
    return codes


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(framework, start, total, enabled):
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    return tqdm(total=total, initial=start, desc=f"{framework} train", unit="step")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.tasks.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--framework", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    with open(os.path.join(args.run_dir, "manifest.json")) as f:
        cfg = json.load(f)["config"]
    train(args.run_dir, args.framework, cfg, args.steps, resume=args.resume, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
