"""The matrix as Slurm jobs, through submitit (`harness.py bench --executor slurm`;
docs/CLUSTER.md).

The unit of a job is a sweep point with all its frameworks and replicates (a run without a
sweep is one job), so every ratio the report gives is measured on one node. The submitter
makes the run folder and its manifests as a local run does, submits one job per point and
waits; each job runs its cells one after another with the local runner (bench/run/runner.py
run_cell: the same worker processes, timeouts and records) into the run folder, which must be
on a file system the nodes share. A job first rewrites its point's manifest with the node's
own hardware (host, GPU, calibration) and its job id, so each point's report describes the
machine that measured it. A point with data-parallel cells over distributed.nnodes > 1
nodes gets that many nodes; their launchers reach the other nodes through srun
(bench/run/distributed.py).

A job that ends otherwise than COMPLETED (failed, timed out, preempted, cancelled, node lost)
leaves its unfinished cells failed with the job's state as the reason; `--resume` submits
only the cells without an ok summary. Ctrl-C cancels the run's jobs.
"""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time

from bench import REPO_ROOT
from bench.records import results as res
from bench.records.errors import log_tail

POLL_S = 2.0
JOBS_DIR = "slurm"   # submitit's scripts and logs, one folder per job, in the run folder


class SlurmError(ValueError):
    """Slurm cannot be used as asked (exit 2, nothing written)."""


def problem():
    """Why `--executor slurm` cannot work here, or None."""
    if shutil.which("sbatch") is None:
        return ("--executor slurm: sbatch is not on PATH (a Slurm client: Debian's slurm-client "
                "or slurm-wlm, or your cluster's module)")
    if importlib.util.find_spec("submitit") is None:
        return "--executor slurm: the submitit package is not installed (pip install submitit)"
    return None


def check(options, cfg, cells):
    """Refuse before anything is written: no Slurm client, no submitit, node placement the
    allocation decides (distributed.node_rank, mpirun_hosts) set by hand, or a job Slurm
    itself refuses (`sbatch --test-only`, Slurm's own message: an unknown partition or
    account, more nodes than the partition has)."""
    why = problem()
    if why:
        raise SlurmError(why)
    nodes = max(job_nodes(cfg, group) for _, group in groups(cells))
    d = cfg["distributed"]
    if nodes > 1 and (d["node_rank"] or d["mpirun_hosts"]):
        key = "node_rank" if d["node_rank"] else "mpirun_hosts"
        raise SlurmError(f"distributed.{key}: set by hand, but under --executor slurm the "
                         f"allocation places the {nodes} nodes' ranks (srun); leave it unset")
    argv = ["sbatch", "--test-only", "--wrap", "true", "--nodes", str(nodes)] + _flags(options)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        first = next((ln for ln in said if "error:" in ln), said[0] if said else
                     f"sbatch exited {proc.returncode}")
        raise SlurmError(f"--executor slurm: Slurm refused the job: {first.strip()}")


def _flags(options):
    out = []
    if options.get("partition"):
        out += ["--partition", options["partition"]]
    if options.get("account"):
        out += ["--account", options["account"]]
    if options.get("gpus_per_node"):
        out += [f"--gpus-per-node={options['gpus_per_node']}"]
    return out


def groups(cells):
    """[(point, [cells])] in run order: the jobs, one per sweep point ("" without a sweep)."""
    out = {}
    for c in cells:
        out.setdefault(c.point, []).append(c)
    return list(out.items())


def job_nodes(cfg, group):
    """The nodes a job asks for: distributed.nnodes when one of its cells is data-parallel
    over several nodes, else 1."""
    n = cfg["distributed"]["nnodes"]
    return n if n > 1 and any(c.options.get("world_size", 1) > 1 for c in group) else 1


def executor(run_dir, options, cpus, device="cpu", nodes=1):
    """submitit's executor for a job of `nodes` nodes. One node: the job's function runs as
    its one srun task. Several: it runs once, in the batch script on the first node, and the
    data-parallel launchers reach the other nodes through srun (bench/run/distributed.py)."""
    import submitit

    ex = submitit.SlurmExecutor(folder=os.path.join(run_dir, JOBS_DIR, "%j"),
                                max_num_timeout=0)
    params = {"nodes": nodes, "ntasks_per_node": 1, "cpus_per_task": cpus,
              "time": int(options["time_limit_min"]),
              "setup": [f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"]}
    if nodes > 1:
        params["use_srun"] = False
    for key in ("partition", "account", "gpus_per_node"):
        if options.get(key):
            params[key] = options[key]
    if device == "cuda" and not options.get("gpus_per_node"):
        params["gpus_per_node"] = 1   # a CUDA run's cells need a GPU on their node
    ex.update_parameters(**params)
    return ex


def run(cfg, cells, run_dir, options, *, resume=False, argv=None, progress=True):
    """runner.run's counterpart: the same run folder and manifests, the cells as Slurm jobs.
    Returns (exit code, list of summaries)."""
    from bench.run import runner

    manifest, _, _, prog = runner.open_run(cfg, cells, run_dir, resume=resume, argv=argv,
                                           progress=progress)
    try:
        summaries = submit_and_wait(run_dir, cfg, cells, options, prog, resume=resume)
    finally:
        prog.close()
    manifest = res.read_json(os.path.join(run_dir, res.MANIFEST))
    for cell in cells:   # the jobs are over: nothing else writes the manifests now
        runner.record_versions(run_dir, manifest, cell,
                               cells_root=res.cells_root(run_dir, cell.point))
    failed = [s for s in summaries if s.get("status") != "ok"]
    return (1 if failed else 0), summaries


def submit_and_wait(run_dir, cfg, cells, options, progress, *, resume=False):
    """Submit a job per point, wait for them all, mark the cells of failed jobs; returns
    [summary of every cell] in `cells` order. Ctrl-C cancels the jobs and re-raises."""
    from bench.run import runner

    todo = [(point, group) for point, group in groups(cells)
            if not resume or any(not _ok(run_dir, c) for c in group)]
    jobs = []
    try:
        for point, group in todo:
            nodes = job_nodes(cfg, group)
            ex = executor(run_dir, options, runner.resolved_threads(cfg), cfg["device"], nodes)
            jobs.append(ex.submit(run_job, run_dir, point, [c.to_dict() for c in group],
                                  resume))
            progress.line(f"[slurm] job {jobs[-1].job_id}: {point or 'the run'} "
                          f"({len(group)} processes" +
                          (f", {nodes} nodes)" if nodes > 1 else ")"))
        _record_jobs(run_dir, [(point, job, "SUBMITTED", None)
                               for (point, _), job in zip(todo, jobs)])
        states = {}
        while len(states) < len(jobs):
            time.sleep(POLL_S)
            for (point, group), job in zip(todo, jobs):
                if job.job_id in states:
                    continue
                state = job_state(job.job_id)
                if state in ACTIVE:
                    continue
                states[job.job_id] = state
                progress.line(f"[slurm] job {job.job_id} ({point or 'the run'}): {state}")
                _fail_unfinished(run_dir, group, job.job_id, state)
    except BaseException:
        for job in jobs:
            job.cancel(check=False)
        progress.line(f"[slurm] cancelled the run's {len(jobs)} job(s)")
        raise
    final = [(point, job, states[job.job_id], _node(run_dir, job))
             for (point, _), job in zip(todo, jobs)]
    manifest = res.read_json(os.path.join(run_dir, res.MANIFEST))
    manifest["slurm_jobs"] = _record_jobs(run_dir, final)
    res.write_json_atomic(os.path.join(run_dir, res.MANIFEST), manifest)
    return [_summary(run_dir, c) for c in cells]


# Slurm's job states while a job may still run; any other is final (COMPLETED, FAILED,
# TIMEOUT, CANCELLED, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY, BOOT_FAIL, DEADLINE).
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESV_DEL_HOLD", "STOPPED"}


def job_state(job_id):
    """The job's state from slurmctld (`scontrol show job`: no accounting database needed;
    finished jobs stay there MinJobAge seconds, 300 by default); LOST once it is gone."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True,
                          text=True, timeout=60)
    for field in proc.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    if "Invalid job id" in proc.stderr:
        return "LOST"
    return "PENDING"   # slurmctld busy or unreachable for a moment: ask again


def _ok(run_dir, cell):
    return res.ok_summary(res.cells_root(run_dir, cell.point), cell.unit_id) is not None


def _summary(run_dir, cell):
    return res.read_summary(res.cells_root(run_dir, cell.point), cell.unit_id) or \
        {"cell": cell.unit_id, "framework": cell.framework, "workload": cell.workload,
         "status": "failed", "error": "no summary"}


def _fail_unfinished(run_dir, group, job_id, state):
    """The job's cells that did not finish ok: failed, the reason the job's state with the
    last line of the job's own log (submitit's stderr file). A job that ended COMPLETED only
    marks the cells it never wrote a summary for: a cell that failed by itself keeps its
    reason. Any other end (cancelled, timed out, preempted, ...) is every unfinished cell's
    reason, before what the cell's own record says (a worker the job's end killed)."""
    from bench.run import runner

    why = f"slurm job {job_id} ended {state}"
    log = os.path.join(run_dir, JOBS_DIR, str(job_id), f"{job_id}_0_log.err")
    lines = [ln for ln in log_tail(log, 4000).splitlines() if ln.strip()]
    if lines and state != "COMPLETED":
        why += f" ({lines[-1].strip()[:300]})"
    for cell in group:
        root = res.cells_root(run_dir, cell.point)
        own = res.read_summary(root, cell.unit_id)
        if own is not None and (own.get("status") == "ok" or state == "COMPLETED"):
            continue
        d = res.cell_dir(root, cell.unit_id)
        os.makedirs(d, exist_ok=True)
        error = why + (f"; the cell's own record: {own.get('error')}" if own else "")
        summary = runner.failed_summary(cell, "failed", error, time.time(),
                                        os.path.join(d, res.STDERR))
        if cell.point:
            summary["point"] = cell.point
        summary["slurm_job"] = job_id
        res.write_json_atomic(os.path.join(d, res.SUMMARY), summary)


def _node_file(run_dir, job_id):
    """What a job wrote of its node on start (run_job), by job id."""
    return os.path.join(run_dir, JOBS_DIR, f"{job_id}.json")


def _node(run_dir, job):
    path = _node_file(run_dir, job.job_id)
    return res.read_json(path).get("node") if os.path.exists(path) else None


def _record_jobs(run_dir, rows):
    """Each job's point, id, state and node in slurm/jobs.json (kept over resumes); returns
    them all. The run manifest gets the list once every job has ended: a job rewrites its
    point's manifest on start, so the submitter stays out of the manifests until then."""
    path = os.path.join(run_dir, JOBS_DIR, "jobs.json")
    jobs = res.read_json(path)["slurm_jobs"] if os.path.exists(path) else []
    for point, job, state, node in rows:
        entry = next((j for j in jobs if j["job_id"] == job.job_id), None)
        if entry is None:
            entry = {"job_id": job.job_id, "point": point or None}
            jobs.append(entry)
        entry.update(state=state, node=node)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    res.write_json_atomic(path, {"slurm_jobs": jobs})
    return jobs


def run_job(run_dir, point, cell_dicts, resume):
    """On the node: describe it in the point's manifest, then run the cells in order."""
    from bench.measure.env import gpu_info, host_info
    from bench.run import runner

    where = res.cells_root(run_dir, point)
    job_id = os.environ.get("SLURM_JOB_ID")
    manifest_path = os.path.join(where, res.MANIFEST)
    manifest = res.read_json(manifest_path)
    cfg = manifest["config"]
    threads = runner.resolved_threads(cfg)
    node = {"job_id": job_id, "node": socket.gethostname(), "host": host_info(),
            "gpu": gpu_info() if cfg["device"] != "cpu" else manifest.get("gpu")}
    res.write_json_atomic(_node_file(run_dir, job_id), node)
    manifest.update(host=node["host"], gpu=node["gpu"], slurm={"job_id": job_id,
                                                              "node": node["node"]},
                    calibration=runner.machine_calibration(threads))
    res.write_json_atomic(manifest_path, manifest)
    progress = runner.Progress(len(cell_dicts), enabled=True)
    for d in cell_dicts:
        cell = runner.cell_from_dict(d)
        if resume and _ok(run_dir, cell):
            continue
        runner.run_cell(where, cfg, cell, progress)
        runner.record_versions(where, manifest, cell)
    print(json.dumps({"job": job_id, "cells": len(cell_dicts)}), file=sys.stderr)
    return job_id
