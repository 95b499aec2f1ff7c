"""One cell in its own process: `python -m bench.run.worker --cell-dir DIR --spec-json FILE`.

Builds one framework's backend (the only framework this process ever imports), loads the
canonical seeded weights, runs the workload, streams records to events.jsonl and, on success
only, writes summary.json atomically. On any failure it records an `error` record and exits
nonzero; the runner then writes the failed summary. A worker that exits without a summary
(Jittor's silent "please rerun" exit, a kill) is therefore always a failed cell.
"""
import argparse
import ctypes
import fnmatch
import json
import os
import resource
import signal
import sys
import time
import traceback

import numpy as np

from bench.measure.peak import record_peak
from bench.records.errors import strip_ansi
from bench.records.results import EVENTS, SUMMARY, RecordWriter, write_json_atomic
from bench.run import workloads
from bench.run.distributed import node_name, rank_dir
from bench.run.checkpoint import read_checkpoint, restore
from bench.run.config import build_specs
from models.common.distributed import rank_env
from models.common.variants import VariantSpec
from models.common.weights import count_params, init_weights
from models.registry import load_backend


def _die_with_parent():
    """Linux: get SIGKILL when the runner dies, so a killed benchmark leaves no orphan
    worker burning the CPU the next measurement needs."""
    try:
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def peak_rss_bytes():
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _runs_guard(cfg, cell):
    """The variant quality guard runs (once per framework and variant, matched included) in
    the train cells when there are any, else in the sample cells; only with variants."""
    if not cfg.get("variants"):
        return False
    return cell["workload"] == ("train" if "train" in cfg["workloads"] else "sample")


def run_cell(cell_dir, spec):
    cfg, cell = spec["config"], spec["cell"]
    started = time.time()
    rank, world, _ = rank_env()  # data-parallel cells: torchrun's or mpirun's variables
    cell_dir = rank_dir(cell_dir, rank)  # rank k > 0 writes rank<k>/ (docs/DISTRIBUTED.md)
    os.makedirs(cell_dir, exist_ok=True)
    backend = None
    with RecordWriter(os.path.join(cell_dir, EVENTS)) as out:
        try:
            names = [cell["cell"]] + ([f"{cell['point']}/{cell['cell']}"]
                                      if cell.get("point") else [])
            for pattern in cfg["debug"]["raise_in"]:
                if any(fnmatch.fnmatch(n, pattern) for n in names):
                    raise RuntimeError(f"debug.raise_in: cell {cell['cell']} matches "
                                       f"{pattern!r} (deliberate failure)")
            unet, diffusion, optim = build_specs(cfg)
            if cell["workload"] == "profile":
                # JAX: XLA's GPU command buffers run many kernels as one graph, which the
                # trace cannot split by HLO instruction (read at XLA's start; no effect on a
                # CPU); and no persistent compilation cache, whose key leaves the HLO's
                # metadata out: an executable cached by older code would carry its op_names,
                # which the profile classifies by
                os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                           " --xla_gpu_enable_command_buffer=").strip()
                os.environ["DIFFBENCH_JAX_CACHE"] = "off"
            Backend = load_backend(cell["framework"])  # the one framework this process imports
            math_mode = cfg.get("math_mode", "fp32")
            setting = cell["options"].get("setting")
            variant = VariantSpec.from_dict(next(v for v in cfg["variants"]
                                                 if v["name"] == setting)) if setting else None
            backend = Backend(unet, diffusion, optim, device=cfg["device"],
                              threads=spec["threads"], seed=cfg["seed"], math_mode=math_mode,
                              variant=variant)
            out.write("start", framework=cell["framework"], workload=cell["workload"],
                      variant=cell["variant"], replicate=cell.get("replicate", 1),
                      setting=setting, settings=variant.changed() if variant else {},
                      options=cell["options"], device=backend.device,
                      math_mode=math_mode if backend.device == "cuda"
                      else f"{math_mode} (CUDA only; not applicable on {backend.device})",
                      pid=os.getpid(), versions=backend.versions(), threads=spec["threads"],
                      params=count_params(unet), rank=rank, world_size=world,
                      node=node_name())
            backend.load_weights(init_weights(unet, seed=cfg["seed"]))
            backend.sync()
            backend.reset_peak_memory()

            # the measured peak GFLOP/s are a fraction of: before the workload, so the
            # workload's memory peak is its own
            # (not with N ranks: each would time it on a share of the machine)
            peak = record_peak(backend, cfg, out) if cell["workload"] in ("train", "sample") \
                and world == 1 else None
            if cell["workload"] == "train":
                metrics = workloads.run_train(backend, cfg, cell["options"].get("loader",
                                                                                "shared"), out)
                if world > 1:
                    metrics["allreduce_s"] = workloads.time_allreduce(
                        backend, out, threads=spec["threads"])["allreduce_s"]
                if cfg["debug"]["save_final_weights"] and rank == 0:
                    np.savez(os.path.join(cell_dir, "final_weights.npz"),
                             **backend.export_weights())
            elif cell["workload"] == "sample":
                metrics = workloads.run_sample(backend, cfg, out)
            elif cell["workload"] == "profile":
                metrics = workloads.run_profile(backend, cfg, out, cell_dir)
            elif cell["workload"] == "quality":
                if cfg["quality"]["checkpoint"]:
                    restore(backend, read_checkpoint(cfg["quality"]["checkpoint"]))
                metrics = workloads.run_quality(backend, cfg["quality"], cfg["data"], out, cell_dir,
                                      seed=cfg["seed"])
            else:
                raise ValueError(f"unknown workload {cell['workload']!r}")

            if peak is not None:
                metrics["peak_gflops"] = peak["peak_gflops"]
            mem = dict(backend.memory_stats())
            mem["peak_rss_bytes"] = peak_rss_bytes()
            out.write("memory", **mem)
            metrics.update(mem)
            metrics["device"] = backend.device
            if _runs_guard(cfg, cell) and world == 1:  # after the memory record: the peak is the workload's
                metrics["guard"] = workloads.run_guard(backend, cfg, out)
        except BaseException as e:  # noqa: BLE001 - record everything, incl. SystemExit
            if isinstance(e, SystemExit):
                # Jittor's "please rerun your command" is sys.exit(0) from inside its import.
                message = f"SystemExit({e.code}) raised inside the worker (framework exited)"
            else:
                message = f"{type(e).__name__}: {e}"
            # plain text: a framework's coloured log line would carry its escape codes into
            # every report and summary that shows this record
            out.write("error", message=strip_ansi(message),
                      traceback=strip_ansi(traceback.format_exc()))
            traceback.print_exc()
            return 1
        finally:
            if backend is not None:
                backend.close()  # leaves the process group (data-parallel cells)
    summary = {"cell": cell["cell"], "replicate": cell.get("replicate", 1),
               **({"point": cell["point"]} if cell.get("point") else {}),
               "unit": cell.get("unit", cell["cell"]), "framework": cell["framework"],
               "workload": cell["workload"], "variant": cell["variant"],
               "setting": cell["options"].get("setting"), "world_size": world, "rank": rank,
               "status": "ok",
               "error": None, "started": started, "finished": time.time(), "metrics": metrics}
    write_json_atomic(os.path.join(cell_dir, SUMMARY), summary)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.run.worker", description=__doc__)
    ap.add_argument("--cell-dir", required=True)
    ap.add_argument("--spec-json", required=True,
                    help="path to the cell's spec.json: {cell, config, threads}")
    args = ap.parse_args(argv)
    _die_with_parent()
    with open(args.spec_json) as f:
        spec = json.load(f)
    rc = run_cell(args.cell_dir, spec)
    if rc and rank_env()[1] > 1:
        # a failed rank leaves at once: a normal exit would finalize MPI / the process
        # group and wait there for peers that are blocked in their next collective, and
        # the launcher would never learn that this rank failed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
