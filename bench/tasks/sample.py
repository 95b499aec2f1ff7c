"""Sampling from a checkpoint (`harness.py sample`): grids, denoising GIFs, progressive x0
strips and the DDPM paper's interpolation. One framework per process.

    python -m bench.tasks.sample CKPT --mode sample|denoise|progressive|interpolate
        [--framework torch|jittor|jax] [--sampler ddpm|ddim] [--steps N] [--eta E]
        [--num N] [--batch-size B] [--out DIR] [--seed S] [--no-ema]

CKPT is a checkpoint dir (or a dir holding ckpt-*: the latest is used). Weights are canonical,
so a checkpoint trained in one framework samples in the other (--framework).
Outputs (under --out, default <ckpt>/samples-<mode>/): PNG/GIF files and, for mode=sample,
samples.npz (uint8 NHWC, what FID takes), plus manifest.json describing what was done.
"""
import argparse
import json
import os
import sys

import numpy as np

from bench.data.datasets import load_dataset
from bench.quality.generate import generate, interpolate, trajectory
from bench.quality.images import make_grid, save_gif, save_grid, save_strip
from bench.run.checkpoint import load_backend_from_checkpoint, read_checkpoint
from models.common.diffusion import sampler_plan
from models.registry import FRAMEWORKS

MODES = ("sample", "denoise", "progressive", "interpolate")


def run(args):
    ckpt = read_checkpoint(args.checkpoint)
    backend = load_backend_from_checkpoint(ckpt, args.framework, args.threads, args.device,
                                           args.seed)
    plan = sampler_plan(backend.diffusion_spec, args.sampler, steps=args.steps, eta=args.eta,
                        skip=args.skip)
    out_dir = args.out or os.path.join(ckpt["path"], f"samples-{args.mode}")
    os.makedirs(out_dir, exist_ok=True)
    ema = not args.no_ema
    files, info = [], {}
    if args.mode == "sample":
        images, secs = generate(backend, plan, args.num, args.batch_size, args.seed, ema)
        files.append(str(save_grid(images[:64], os.path.join(out_dir, "grid.png"), scale=2)))
        npz = os.path.join(out_dir, "samples.npz")
        np.savez(npz, images=images)
        files.append(npz)
        info = {"seconds": secs, "images_per_s": len(images) / secs}
    elif args.mode in ("denoise", "progressive"):
        shown, xs, x0s = trajectory(backend, plan, min(args.num, 16), args.seed, ema, args.frames)
        if args.mode == "denoise":
            frames = [make_grid(x, nrow=4) for x in xs]
            files.append(str(save_gif(frames, os.path.join(out_dir, "denoise.gif"), scale=2)))
            files.append(str(save_grid(xs[-1], os.path.join(out_dir, "final.png"), nrow=4, scale=2)))
        else:
            strip = np.stack([x0 for x0 in x0s if x0 is not None])  # (frames, B, H, W, C)
            files.append(str(save_strip(strip[:, :8], os.path.join(out_dir, "progressive.png"),
                                        scale=2)))
        info = {"frames_at_steps": shown}
    else:  # interpolate
        source = args.dataset or ckpt_dataset(ckpt)
        images = load_dataset(source, args.data_path, "test")
        rng = np.random.default_rng(args.seed)
        pairs = min(args.num, 8)
        idx = rng.choice(len(images), size=2 * pairs, replace=False)
        a, b = images[idx[:pairs]], images[idx[pairs:]]
        lambdas = np.linspace(0, 1, 11)
        mixes, t = interpolate(backend, a, b, plan, args.t_level, lambdas, args.seed, ema)
        rows = np.concatenate([a[:, None], mixes, b[:, None]], axis=1)  # source, 11 mixes, source
        grid = rows.reshape(-1, *rows.shape[2:])
        files.append(str(save_grid(grid, os.path.join(out_dir, "interpolate.png"),
                                   nrow=rows.shape[1], scale=2)))
        info = {"t": t, "lambdas": lambdas.tolist(), "dataset": source}
    manifest = {"checkpoint": ckpt["path"], "framework": backend.name, "mode": args.mode,
                "sampler": args.sampler, "steps": len(plan), "eta": args.eta, "ema": ema,
                "seed": args.seed, "files": files, **info}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    for path in files:
        print(path)
    return 0


def ckpt_dataset(ckpt):
    """The dataset the checkpoint's run trained on, from its run manifest, if findable."""
    run_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(ckpt["path"]))))
    try:
        with open(os.path.join(run_dir, "manifest.json")) as f:
            return json.load(f)["config"]["data"]["source"]
    except (OSError, KeyError, ValueError):
        raise ValueError("interpolate: --dataset is required (the checkpoint's run manifest "
                         "was not found)") from None


def build_parser():
    ap = argparse.ArgumentParser(prog="harness.py sample", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="checkpoint dir, or a dir holding ckpt-<step>/ dirs")
    ap.add_argument("--mode", choices=MODES, default="sample")
    ap.add_argument("--framework", choices=FRAMEWORKS, default=None,
                    help="default: the framework that trained the checkpoint")
    ap.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim")
    ap.add_argument("--steps", type=int, default=None, help="default: T (all timesteps)")
    ap.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    ap.add_argument("--skip", choices=("uniform", "quadratic"), default="uniform")
    ap.add_argument("--num", type=int, default=64, help="images (pairs for interpolate, <= 8)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=24, help="GIF / strip frames")
    ap.add_argument("--t-level", type=int, default=500, help="interpolate: noise level t")
    ap.add_argument("--dataset", default=None, help="interpolate: source dataset name")
    ap.add_argument("--data-path", default=None, help="interpolate: dataset root")
    ap.add_argument("--out", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--no-ema", action="store_true", help="use the raw (non-EMA) weights")
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.num < 1 or args.batch_size < 1:
        ap.error("--num and --batch-size must be >= 1")
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
