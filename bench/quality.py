"""Sample quality: FID (and KID, IS where possible) against the dataset, per DDIM step count.

Runs in a framework's process: it generates uint8 samples with the backend, saves them, and
hands them to `python -m bench.fid` in a child process (torch-fidelity imports torch, which
must never share a process with Jittor). Each result is one `fid` record:

    {type: fid, framework, sampler, steps, eta, num_images, sample_time_s, images_per_s,
     fid, kid_mean, kid_std, is_mean, is_std, extractor, num_reference, reference, notes}

Used by the `quality` workload of a benchmark matrix and by `harness.py fid RUN_DIR`, which
evaluates the latest checkpoint of every `<fw>-train` cell of a training run into
`<fw>-quality` cells.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from bench.env import REPO_ROOT
from bench.results import EVENTS, SUMMARY, RecordWriter, write_json_atomic


def fid_in_child(samples_npz, reference, num_reference, data_root=None, batch_size=64,
                 timeout_s=3600):
    """bench.fid's JSON for an npz of uint8 samples, computed in a process of its own."""
    cmd = [sys.executable, "-m", "bench.fid", samples_npz, "--reference", reference,
           "--num-reference", str(num_reference), "--batch-size", str(batch_size)]
    if data_root:
        cmd += ["--data-root", data_root]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"FID child failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def default_reference(data_cfg):
    """The held-out split of the training dataset (synthetic data has its own test split)."""
    return f"{data_cfg['source']}:test"


def run_quality(backend, qcfg, data_cfg, out, cell_dir, seed=0):
    """Generate and score samples for each configured step count. Returns summary metrics."""
    import numpy as np

    from bench.images import save_grid
    from bench.sample import generate
    from models.common.diffusion import sampler_plan

    reference = qcfg["reference"] or default_reference(data_cfg)
    samples_dir = os.path.join(cell_dir, "samples")
    os.makedirs(samples_dir, exist_ok=True)
    rows = []
    for steps in qcfg["steps"]:
        plan = sampler_plan(backend.diffusion_spec, qcfg["sampler"], steps=steps,
                            eta=qcfg["eta"], skip=qcfg["skip"])
        images, secs = generate(backend, plan, qcfg["num_images"], qcfg["batch_size"], seed,
                                ema=qcfg["ema"])
        tag = f"{qcfg['sampler']}-{len(plan):04d}"
        npz = os.path.join(samples_dir, f"{tag}.npz")
        np.savez(npz, images=images)
        save_grid(images[:64], os.path.join(samples_dir, f"{tag}.png"), scale=2)
        m = fid_in_child(npz, reference, qcfg["num_reference"], data_cfg.get("path"))
        rec = out.write("fid", framework=backend.name, sampler=qcfg["sampler"], steps=len(plan),
                        eta=qcfg["eta"] if qcfg["sampler"] == "ddim" else None,
                        num_images=len(images), sample_time_s=secs,
                        images_per_s=len(images) / secs,
                        **{k: m.get(k) for k in ("fid", "kid_mean", "kid_std", "is_mean",
                                                 "is_std", "extractor", "num_reference",
                                                 "reference", "notes")})
        rows.append({k: rec[k] for k in ("steps", "fid", "kid_mean", "is_mean", "num_images")})
    return {"fid": rows, "reference": reference}


def evaluate_run(run_dir, framework, qcfg, threads=None):
    """The latest checkpoint of <fw>-train in a training run -> a <fw>-quality cell."""
    from bench.checkpoint import read_checkpoint
    from bench.sample import load_backend_from_checkpoint
    from bench.train import cell_dir as train_cell_dir

    with open(os.path.join(run_dir, "manifest.json")) as f:
        cfg = json.load(f)["config"]
    ckpt = read_checkpoint(os.path.join(train_cell_dir(run_dir, framework), "checkpoints"))
    backend = load_backend_from_checkpoint(ckpt, framework, threads, cfg["device"], cfg["seed"])
    cdir = os.path.join(run_dir, "cells", f"{framework}-quality")
    os.makedirs(cdir, exist_ok=True)
    started = time.time()
    with RecordWriter(os.path.join(cdir, EVENTS)) as out:
        out.write("start", framework=framework, workload="quality", device=backend.device,
                  pid=os.getpid(), versions=backend.versions(), checkpoint=ckpt["path"],
                  step=int(ckpt["state"]["step"]))
        metrics = run_quality(backend, qcfg, cfg["data"], out, cdir, seed=cfg["seed"])
    metrics["checkpoint_step"] = int(ckpt["state"]["step"])
    write_json_atomic(os.path.join(cdir, SUMMARY), {
        "cell": f"{framework}-quality", "framework": framework, "workload": "quality",
        "variant": "", "status": "ok", "error": None, "started": started,
        "finished": time.time(), "metrics": metrics})
    return metrics


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--framework", required=True)
    ap.add_argument("--quality-json", required=True, help="the quality config section as JSON")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    evaluate_run(args.run_dir, args.framework, json.loads(args.quality_json), args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
