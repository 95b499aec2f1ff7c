"""`harness.py fid RUN_DIR`: score the latest checkpoint of every `<fw>-train` cell of a
training run into a `<fw>-quality` cell, with the quality workload's own code
(bench/run/workloads.py `run_quality`: samples, FID/KID/IS records).

    python -m bench.tasks.fid --run-dir RUN --framework torch --quality-json '{...}'

One framework per process (harness.py fid starts one per framework).
"""
import argparse
import json
import os
import sys
import time

from bench.records.results import EVENTS, SUMMARY, RecordWriter, write_json_atomic
from bench.run.checkpoint import load_backend_from_checkpoint, read_checkpoint
from bench.run.workloads import run_quality
from bench.tasks.train import cell_dir as train_cell_dir


def evaluate_run(run_dir, framework, qcfg, threads=None):
    """The latest checkpoint of <fw>-train in a training run -> a <fw>-quality cell."""
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
    ap = argparse.ArgumentParser(prog="python -m bench.tasks.fid", description=__doc__,
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
