"""`harness.py bench --executor slurm` (bench/run/slurm.py) on a real Slurm started for these
tests (tests/slurm_cluster.py; one node, and two nodes on this machine): a sweep through
Slurm gives the report a local run gives, a cancelled job fails its cells and --resume
submits only what is missing, Ctrl-C cancels the run's jobs, data-parallel cells span a
job's two nodes through srun, and bad input is refused before anything is written."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, harness, run_dirs, tiny_config, write_config
from tests.real_runs import data_parallel_config
from tests.slurm_cluster import Cluster, missing
from tests.test_distributed import HAS_MPI, assert_two_ranks_trained_the_one_process_model

pytestmark = pytest.mark.process

needs_slurm = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Nodes n1 and n2, each its own slurmd on this machine."""
    c = Cluster(tmp_path_factory.mktemp("slurm2"), nodes=2).start()
    yield c
    c.stop()


def sweep_config(results_dir, **kw):
    """Two points, torch and Jittor, one training cell each: 4 processes."""
    cfg = tiny_config(results_dir, frameworks=["torch", "jittor"], workloads=["train"],
                      sweep=[{"name": "small"}, {"name": "wide", "model": {"base_channels": 16}}],
                      **kw)
    cfg["runner"]["replicates"] = 1
    return cfg


def _headings(md):
    return [line for line in md.splitlines() if line.startswith("## ")]


@pytest.fixture(scope="module")
def cancelled_and_resumed(cluster, tmp_path_factory):
    """A two-point sweep through Slurm whose first job is cancelled while it runs, then
    resumed: the run folder, the config, both commands' outputs, the cancelled job's id, and
    the jobs and the first point's summaries as the first command left them."""
    tmp = tmp_path_factory.mktemp("cancel")
    path = write_config(tmp / "s.yaml", sweep_config(tmp / "results"))
    bench = subprocess.Popen([sys.executable, "harness.py", "bench", path, "--executor",
                              "slurm", "--time-limit", "20"], cwd=REPO, env=cluster.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = _first_running_job(cluster)
    subprocess.run(["scancel", victim], env=cluster.env, check=True)
    out, err = bench.communicate(timeout=900)
    (run_dir,) = run_dirs(tmp / "results")
    jobs_then = json.load(open(os.path.join(run_dir, "manifest.json")))["slurm_jobs"]
    cells = os.path.join(run_dir, "points", "small", "cells")
    summaries_then = [json.load(open(os.path.join(cells, u, "summary.json")))
                      for u in os.listdir(cells)]
    resumed = harness("bench", "--resume", run_dir, "--executor", "slurm", timeout=900,
                      env=cluster.env)
    return dict(run_dir=run_dir, config=path, first=(bench.returncode, out + err),
                resumed=resumed, victim=victim, jobs_then=jobs_then,
                summaries_then=summaries_then)


@needs_slurm
@pytest.mark.slow
def test_a_cancelled_job_fails_its_cells_and_resume_runs_only_those(cancelled_and_resumed):
    r = cancelled_and_resumed
    code, said = r["first"]
    assert code == 1, said[-3000:]
    assert re.search(r"\[slurm\] job \d+: small \(2 processes\)", said), said[-3000:]
    states = {j["point"]: j["state"] for j in r["jobs_then"]}
    assert states == {"small": "CANCELLED", "wide": "COMPLETED"}, states
    failed = [s for s in r["summaries_then"] if s["status"] != "ok"]
    assert failed and all(f"slurm job {r['victim']} ended CANCELLED" in s["error"]
                          for s in failed)
    proc = r["resumed"]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"\[slurm\] job \d+: small", proc.stderr)
    assert not re.search(r"\[slurm\] job \d+: wide", proc.stderr)   # wide was complete
    jobs = json.load(open(os.path.join(r["run_dir"], "manifest.json")))["slurm_jobs"]
    assert [j["state"] for j in jobs] == ["CANCELLED", "COMPLETED", "COMPLETED"]
    for point in ("small", "wide"):   # each point's manifest: the job that measured it last
        job = [j for j in jobs if j["point"] == point][-1]
        pm = json.load(open(os.path.join(r["run_dir"], "points", point, "manifest.json")))
        assert pm["slurm"] == {"job_id": job["job_id"], "node": job["node"]}
        assert pm["host"]["cpu_model"]


@needs_slurm
@pytest.mark.slow
def test_a_sweep_through_slurm_reports_like_a_local_one(cancelled_and_resumed, tmp_path):
    """The (resumed) Slurm run and the same sweep run here have the same report sections."""
    r = cancelled_and_resumed
    assert r["resumed"].returncode == 0, r["resumed"].stderr[-2000:]
    local = harness("bench", r["config"], "--quiet", "--results-dir", tmp_path / "local",
                    timeout=900)
    assert local.returncode == 0, local.stderr[-3000:]
    reports = {}
    for kind, run in (("slurm", r["run_dir"]), ("local", run_dirs(tmp_path / "local")[0])):
        out = tmp_path / f"report-{kind}"
        rep = harness("report", run, "--out", out)
        assert rep.returncode == 0, rep.stderr[-2000:]
        reports[kind] = (out / "report.md").read_text()
    assert _headings(reports["slurm"]) == _headings(reports["local"])
    assert "## How the gap changes with size" in reports["slurm"]


def _first_running_job(cluster, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = [j for j, state in cluster.jobs() if state == "RUNNING"]
        if running:
            time.sleep(2)   # into its first cell
            return running[0]
        time.sleep(0.3)
    raise AssertionError(f"no job started: {cluster.jobs()}")


@needs_slurm
def test_ctrl_c_cancels_the_runs_jobs(tmp_path, cluster):
    path = write_config(tmp_path / "s.yaml", sweep_config(tmp_path / "results"))
    bench = subprocess.Popen([sys.executable, "harness.py", "bench", path, "--executor",
                              "slurm"], cwd=REPO, env=cluster.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _first_running_job(cluster)
    bench.send_signal(signal.SIGINT)
    _, err = bench.communicate(timeout=120)
    assert bench.returncode != 0 and "cancelled the run's 2 job(s)" in err, err[-2000:]
    deadline = time.time() + 30
    while cluster.jobs() and time.time() < deadline:
        time.sleep(0.5)
    assert cluster.jobs() == []


@needs_slurm
def test_an_unknown_partition_is_slurms_own_refusal(tmp_path, cluster):
    path = write_config(tmp_path / "s.yaml", sweep_config(tmp_path / "results"))
    proc = harness("bench", path, "--executor", "slurm", "--partition", "nope", env=cluster.env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: --executor slurm: Slurm refused the job: sbatch: error: invalid partition")
    assert not (tmp_path / "results").exists()


def test_no_sbatch_on_path_is_refused(tmp_path):
    path = write_config(tmp_path / "s.yaml", sweep_config(tmp_path / "results"))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))
    proc = harness("bench", path, "--executor", "slurm", env=env)
    assert proc.returncode == 2 and "sbatch is not on PATH" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()


def test_no_submitit_is_refused(tmp_path):
    """Without submitit (hidden from this process by a sitecustomize) the line says so."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['submitit'] = None\n")
    bin_dir = tmp_path / "bin"   # an sbatch that is never run: the check stops before it
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(hide), PATH=f"{bin_dir}:{os.environ['PATH']}")
    path = write_config(tmp_path / "s.yaml", sweep_config(tmp_path / "results"))
    proc = harness("bench", path, "--executor", "slurm", env=env)
    assert proc.returncode == 2 and "submitit package is not installed" in proc.stderr, \
        proc.stderr
    assert not (tmp_path / "results").exists()


def _start_node(cells_root, cell, rank):
    folder = os.path.join(cells_root, "cells", f"{cell}.r1", *([f"rank{rank}"] if rank else []))
    with open(os.path.join(folder, "events.jsonl")) as f:
        return next(json.loads(ln) for ln in f if '"type": "start"' in ln)["node"]


@needs_slurm
@pytest.mark.slow
@pytest.mark.skipif(not HAS_MPI, reason="Jittor's ranks need Open MPI (make setup installs it)")
def test_data_parallel_cells_span_the_jobs_nodes_through_srun(tmp_path, two_nodes):
    """distributed.nnodes: 2 makes the job ask for two nodes; torch's torchrun starts on each
    through srun, Jittor's mpirun places a rank on each through Slurm, and the 2-rank cells
    train the single-process model."""
    cfg = data_parallel_config(tmp_path / "results", ["torch", "jittor"])
    cfg["distributed"] = {"nnodes": 2}
    path = write_config(tmp_path / "dp.yaml", cfg)
    proc = harness("bench", path, "--executor", "slurm", "--time-limit", "20", timeout=900,
                   env=two_nodes.env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\[slurm\] job \d+: the run \(4 processes, 2 nodes\)", proc.stderr)
    (run_dir,) = run_dirs(tmp_path / "results")
    for fw in ("torch", "jittor"):
        assert [_start_node(run_dir, f"{fw}-train-ws2", r) for r in (0, 1)] == ["n1", "n2"]
    assert_two_ranks_trained_the_one_process_model(run_dir, ["torch", "jittor"])


@needs_slurm
def test_more_nodes_than_the_partition_has_is_slurms_refusal(tmp_path, cluster):
    cfg = data_parallel_config(tmp_path / "results", ["torch"])
    cfg["distributed"] = {"nnodes": 2}
    proc = harness("bench", write_config(tmp_path / "dp.yaml", cfg), "--executor", "slurm",
                   env=cluster.env)
    assert proc.returncode == 2, proc.stderr
    assert "Slurm refused the job: allocation failure: Requested node configuration is not " \
        "available" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()


@needs_slurm
def test_node_placement_by_hand_is_refused_under_slurm(tmp_path):
    """Refused before Slurm is asked: no cluster needed."""
    cfg = data_parallel_config(tmp_path / "results", ["torch"])
    cfg["distributed"] = {"nnodes": 2, "node_rank": 1}
    proc = harness("bench", write_config(tmp_path / "dp.yaml", cfg), "--executor", "slurm")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: distributed.node_rank: set by hand, but under --executor slurm"), proc.stderr
    assert not (tmp_path / "results").exists()


@needs_slurm
@pytest.mark.slow
def test_a_hanging_rank_on_the_second_node_times_out_and_leaves_nothing_running(tmp_path,
                                                                                two_nodes):
    """The runner's timeout kills srun, and with it Slurm ends the step's ranks on the
    other node (they are slurmstepd's children there, not srun's); the job's next cell
    runs."""
    from tests.test_distributed import _leftovers

    cfg = data_parallel_config(tmp_path / "results", ["torch"])
    cfg["train"]["world_size"] = [2]
    cfg["distributed"] = {"nnodes": 2}
    cfg["workloads"] = ["train", "sample"]
    cfg["sample"] = {"runs": [{"sampler": "ddim", "steps": [1], "eta": 0.0}], "repeats": 1,
                     "warmup": 0}
    cfg["debug"] = dict(cfg.get("debug", {}), fail_rank=1, fail_mode="hang", fail_at_step=2)
    cfg["runner"]["timeout_s"] = 20
    proc = harness("bench", write_config(tmp_path / "h.yaml", cfg), "--executor", "slurm",
                   timeout=900, env=two_nodes.env)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run_dir,) = run_dirs(tmp_path / "results")
    cells = os.path.join(run_dir, "cells")
    with open(os.path.join(cells, "torch-train-ws2.r1", "summary.json")) as f:
        assert json.load(f)["status"] == "timeout"
    with open(os.path.join(cells, "torch-sample.r1", "summary.json")) as f:
        assert json.load(f)["status"] == "ok"     # the next cell ran
    time.sleep(1.0)
    assert not _leftovers(str(tmp_path)), _leftovers(str(tmp_path))
