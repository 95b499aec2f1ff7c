"""Data-parallel training (docs/DISTRIBUTED.md): rank discovery and launch commands, config
checks, and real 2-rank runs in both frameworks (torch DDP under torchrun with gloo, Jittor
under mpirun): parity with one process on the same global batch, the records and the report
section, and faults (a rank that raises or hangs fails its cell; no rank or launcher is left
running; the next cell runs)."""
import os
import time

import numpy as np
import psutil
import pytest

from tests.conftest import harness, run_dirs, write_config
from tests.real_runs import data_parallel_config, dp_config
from bench.run import distributed as dist_run
from models.common.distributed import rank_env

HAS_MPI = dist_run.mpi_problem() is None
needs_mpi = pytest.mark.skipif(not HAS_MPI, reason="Open MPI (openmpi-bin, libopenmpi-dev) "
                               "is not installed: make setup installs it as root")


# ------------------------------------------------------------------ ranks and launchers

def test_rank_env_reads_torchrun_then_open_mpi():
    assert rank_env({}) == (0, 1, 0)
    assert rank_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    assert rank_env({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
                     "OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == (3, 4, 1)


def test_launch_commands():
    cfg = {"distributed": {"master_addr": "127.0.0.1", "master_port": 29511, "nnodes": 1,
                           "node_rank": 0, "mpirun_hosts": None, "threads_per_rank": None}}
    worker = ["python", "-m", "bench.run.worker", "--cell-dir", "d", "--spec-json", "s"]
    assert dist_run.launch_argv("torch", 1, worker, cfg, {}) == worker
    t = dist_run.launch_argv("torch", 2, worker, cfg, {})
    assert t[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=2" in t
    assert "--master-port=29511" in t and t[-6:] == ["--module", *worker[2:]]
    j = dist_run.launch_argv("jittor", 2, worker, cfg, {"OMP_NUM_THREADS": "1"})
    assert j[1:3] == ["-np", "2"] and j[-5:] == worker[2:] and j[-6] == "-m" and "OMP_NUM_THREADS" in j
    assert "PYTHONPATH" not in j  # only variables that are set are forwarded
    env = {}   # JAX: torchrun starts the ranks, JAX's coordinator gets a port of its own
    x = dist_run.launch_argv("jax", 2, worker, cfg, env)
    assert x[1:3] == ["-m", "torch.distributed.run"] and "--master-port=29511" in x
    assert env["DIFFBENCH_JAX_COORDINATOR"] == "127.0.0.1:29512"
    assert dist_run.threads_per_rank(cfg, 2, 2) == 1 and dist_run.threads_per_rank(cfg, 2, 4) == 1


def test_launch_commands_in_a_slurm_allocation_of_nnodes(monkeypatch):
    """The batch script of a 2-node job: torchrun on each node through srun (node rank from
    $SLURM_NODEID, rendezvous at the first node), mpirun an equal share of ranks per node; in
    a job step, or with another node count, the launchers are placed by hand as before."""
    cfg = {"distributed": {"master_addr": "127.0.0.1", "master_port": 29511, "nnodes": 2,
                           "node_rank": 0, "mpirun_hosts": None, "threads_per_rank": None}}
    worker = ["python", "-m", "bench.run.worker", "--cell-dir", "d", "--spec-json", "s"]
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    monkeypatch.setattr(dist_run, "slurm_first_node_address", lambda: "10.0.0.1")
    t = dist_run.launch_argv("torch", 4, worker, cfg, {})
    assert t[:5] == ["srun", "--overlap", "--nodes=2", "--ntasks-per-node=1",
                     "--kill-on-bad-exit=1"]
    assert '--node-rank="$SLURM_NODEID"' in t[7] and "--master-addr=10.0.0.1" in t
    assert "--nproc-per-node=2" in t and t[-6:] == ["--module", *worker[2:]]
    j = dist_run.launch_argv("jittor", 4, worker, cfg, {})
    assert j[1:3] == ["-np", "4"] and j[j.index("--map-by") + 1] == "ppr:2:node"
    env = {}
    dist_run.launch_argv("jax", 4, worker, cfg, env)
    assert env["DIFFBENCH_JAX_COORDINATOR"] == "10.0.0.1:29512"
    assert dist_run.local_ranks(cfg, 4) == [0, 1, 2, 3]   # their records meet on node 0
    assert dist_run.threads_per_rank(cfg, 4, 4) == 2      # 2 ranks on each node's 4 threads
    monkeypatch.setenv("SLURM_STEP_ID", "0")               # inside srun: placed by hand
    assert dist_run.launch_argv("torch", 4, worker, cfg, {})[1:3] == \
        ["-m", "torch.distributed.run"]
    assert dist_run.local_ranks(cfg, 4) == [0, 1]


# ------------------------------------------------------------------ config checks

def _config(tmp_path, **sections):
    return dp_config(tmp_path / "results", **sections)


@pytest.mark.parametrize("change, message", [
    ({"train": {"world_size": [1, 3]}}, "train.batch_size: 4 is not divisible by world size 3"),
    ({"train": {"world_size": [2]}, "data": {"loader": "native"}},
     "train.world_size: data-parallel cells use the shared loader"),
])
def test_bad_data_parallel_configs_exit_2(tmp_path, change, message):
    cfg = _config(tmp_path)
    for k, v in change.items():
        cfg[k] = {**cfg[k], **v}
    proc = harness("bench", write_config(tmp_path / "c.yaml", cfg))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "results")


def test_jittor_without_open_mpi_names_the_packages(tmp_path):
    cfg = _config(tmp_path, frameworks=["jittor"])
    cfg["train"]["world_size"] = [2]
    env = dict(os.environ, PATH=str(tmp_path))  # no mpirun/mpicc on this PATH
    proc = harness("bench", write_config(tmp_path / "c.yaml", cfg), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "openmpi-bin libopenmpi-dev" in proc.stderr and "\n" not in proc.stderr.strip()


# ------------------------------------------------------------------ real 2-rank runs

@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    frameworks = ["torch", "jittor", "jax"] if HAS_MPI else ["torch", "jax"]
    cfg = data_parallel_config(root / "results", frameworks)
    proc = harness("bench", write_config(root / "dp.yaml", cfg), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = run_dirs(root / "results")
    return run_dir, frameworks


def _weights(run_dir, cell):
    with np.load(os.path.join(run_dir, "cells", f"{cell}.r1", "final_weights.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow  # dp_run: six real cells, ~40-60 s
def test_two_ranks_train_the_single_process_model(dp_run):
    run_dir, frameworks = dp_run
    # JAX's two ranks run ONE step over the global batch (XLA all-reduces inside it): the
    # same losses as the single process, step for step
    import json
    losses = {c: [json.loads(line)["loss"] for line in open(os.path.join(
        run_dir, "cells", f"{c}.r1", "events.jsonl")) if '"type": "step"' in line]
        for c in ("jax-train", "jax-train-ws2")}
    np.testing.assert_allclose(losses["jax-train-ws2"], losses["jax-train"], rtol=1e-5)
    assert_two_ranks_trained_the_one_process_model(run_dir, frameworks)


def assert_two_ranks_trained_the_one_process_model(cells_root, frameworks):
    """Each framework's 2-rank cell ends at its single-process cell's weights (the same
    global batch; Jittor's and torch's reductions differ in order: within 2% of how far
    training moved them)."""
    for fw in frameworks:
        one, two = _weights(cells_root, f"{fw}-train"), _weights(cells_root, f"{fw}-train-ws2")
        assert one.keys() == two.keys()
        init = _weights_init(cells_root, fw)
        moved = max(float(np.abs(one[k] - init[k]).max()) for k in one)
        worst = max(float(np.abs(one[k] - two[k]).max()) for k in one)
        assert moved > 1e-4, fw             # training changed the weights...
        assert worst < 0.02 * moved, (fw, worst, moved)   # ...and both runs alike


def _weights_init(run_dir, fw):
    import json

    from bench.run.config import build_specs
    from models.common.weights import init_weights

    with open(os.path.join(run_dir, "manifest.json")) as f:
        cfg = json.load(f)["config"]
    unet, _, _ = build_specs(cfg)
    return init_weights(unet, seed=cfg["seed"])


@pytest.mark.slow  # dp_run
def test_data_parallel_records_and_report(dp_run, tmp_path):
    from bench.report import distributed as report_dp
    from bench.report.load import load_run

    run_dir, frameworks = dp_run
    for fw in frameworks:
        cdir = os.path.join(run_dir, "cells", f"{fw}-train-ws2.r1")
        assert os.path.isdir(os.path.join(cdir, "rank1"))
    run = load_run(run_dir)
    frame = report_dp.scaling_frame(run)
    assert set(zip(frame["framework"], frame["world_size"])) == \
        {(fw, n) for fw in frameworks for n in (1, 2)}
    two = frame[frame["world_size"] == 2]
    assert (two["allreduce_s"] > 0).all() and (two["grad_mib"] > 0).all()
    assert (two["rank_peak_bytes"] > 0).all() and (two["efficiency"] > 0).all()
    assert (two["threads_per_rank"] == 1).all()
    s = report_dp.section(run, tmp_path, "torch")
    assert [b.kind for b in s.blocks][:1] == ["table"]
    assert (tmp_path / "scaling.png").stat().st_size > 0
    # the matched training table keeps to the single-process cells
    from bench.report import tables
    assert set(tables.training_metrics(run)["cell"]) == {f"{fw}-train" for fw in frameworks}
    run.cells = run.cells[~run.cells["cell"].str.endswith("ws2")]
    assert report_dp.section(run, tmp_path, "torch").blocks[0].kind == "note"


def _leftovers(marker):
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd:
            out.append((p.info["pid"], cmd))
    return out


@pytest.mark.parametrize("framework, mode", [
    ("torch", "raise"), pytest.param("torch", "hang", marks=pytest.mark.slow),
    pytest.param("jittor", "raise", marks=needs_mpi),
    pytest.param("jittor", "hang", marks=[needs_mpi, pytest.mark.slow]),
    ("jax", "raise"),
])
def test_a_failing_rank_fails_its_cell_and_leaves_nothing_running(tmp_path, monkeypatch,
                                                                   framework, mode):
    # JAX's surviving rank waits this long for its dead peer (models/jx/backend.py)
    monkeypatch.setenv("DIFFBENCH_JAX_DIST_TIMEOUT_S", "4")
    # The sample cell after the failed one only has to run ("the next cell ran"): one 1-step
    # chain, no warm-up.
    cfg = _config(tmp_path, frameworks=[framework], workloads=["train", "sample"],
                  train={"epochs": 1, "steps_per_epoch": 4, "batch_size": 4,
                         "warmup_steps": 1, "val_batches": 0, "world_size": [2]},
                  sample={"runs": [{"sampler": "ddim", "steps": [1], "eta": 0.0}],
                          # JAX compiles its sampling step in a warm-up chain (config.py)
                          "repeats": 1, "warmup": 1 if framework == "jax" else 0},
                  debug={"fail_rank": 1, "fail_mode": mode, "fail_at_step": 2})
    # A hang checks that the cell times out and nothing is left running, not when: a short
    # limit. It is every cell's limit, with ample room for the sample cell (1-4 s); the hang
    # comes ~4 s into the train cell (~9 s on 2 loaded cores). No assertion rests on which of
    # the two comes first: the outcome is the same.
    cfg["runner"]["timeout_s"] = 15 if mode == "hang" else 300
    proc = harness("bench", write_config(tmp_path / "f.yaml", cfg), timeout=900)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run_dir,) = run_dirs(tmp_path / "results")
    import json
    with open(os.path.join(run_dir, "cells", f"{framework}-train-ws2.r1", "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == ("timeout" if mode == "hang" else "failed")
    if mode == "raise":
        assert "rank 1" in summary["error"] and "debug.fail_rank" in summary["error"]
    with open(os.path.join(run_dir, "cells", f"{framework}-sample.r1", "summary.json")) as f:
        assert json.load(f)["status"] == "ok"     # the next cell ran
    time.sleep(1.0)
    assert not _leftovers(str(tmp_path)), _leftovers(str(tmp_path))


@pytest.mark.slow
def test_two_loopback_nodes_join_through_torchrun_rendezvous(tmp_path):
    """distributed.nnodes = 2: two harness runs on 127.0.0.1, one per "node", one rank each,
    meet at the static rendezvous (MASTER_ADDR:MASTER_PORT) and train one 2-rank cell."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    port = dist_run.free_port()
    cfg = _config(tmp_path, frameworks=["torch"], workloads=["train"],
                  train={"epochs": 1, "steps_per_epoch": 3, "batch_size": 4,
                         "warmup_steps": 1, "val_batches": 0, "world_size": [2]},
                  distributed={"nnodes": 2, "master_port": port})
    path = write_config(tmp_path / "n.yaml", cfg)
    nodes = [subprocess.Popen([sys.executable, os.path.join(REPO, "harness.py"), "bench", path,
                               "--set", f"distributed.node_rank={k}", "--results-dir",
                               str(tmp_path / f"node{k}")], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for k in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs
    summaries = []
    for k in (0, 1):
        (run_dir,) = run_dirs(tmp_path / f"node{k}")
        with open(os.path.join(run_dir, "cells", "torch-train-ws2.r1", "summary.json")) as f:
            summaries.append(json.load(f))
    assert [s["status"] for s in summaries] == ["ok", "ok"]
    assert summaries[0]["rank"] == 0 and summaries[1]["rank"] == 1
    assert "node 1 of 2" in summaries[1]["node"]
    assert summaries[0]["metrics"]["steps_measured"] == summaries[1]["metrics"]["steps_measured"]
