"""End to end through harness.py: real runs of both frameworks, failures, timeouts, SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil

from bench import results as R
from tests.conftest import REPO, harness, run_dirs, tiny_config, write_config


def test_both_frameworks_run_produces_every_file(both_frameworks_run):
    proc, run_dir = both_frameworks_run["proc"], both_frameworks_run["run_dir"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = ["torch-train", "jittor-train", "torch-sample", "jittor-sample"]
    for cell in cells:
        for name in ("spec.json", "events.jsonl", "monitor.jsonl", "summary.json", "stderr.log"):
            assert os.path.isfile(os.path.join(run_dir, "cells", cell, name)), (cell, name)
    assert "torch-train" in proc.stdout and "results:" in proc.stdout

    data = R.load_run(run_dir)
    m = data.manifest
    assert [c["cell"] for c in m["cells"]] == cells
    assert len(m["config_hash"]) == 64 and m["seed"] == 0 and m["threads"] == 2
    assert m["host"]["cpu_model"] and m["host"]["python"]
    assert m["gpu"]["gpu"] in ("absent", "present")
    assert m["frameworks"]["torch"]["version"].startswith("2.")
    assert m["frameworks"]["jittor"]["version"].startswith("1.3")
    assert set(data.summaries.status) == {"ok"} and not data.skipped_lines

    cfg = both_frameworks_run["config"]["train"]
    for fw in ("torch", "jittor"):
        steps = data.steps[data.steps.framework == fw]
        assert len(steps) == cfg["epochs"] * cfg["steps_per_epoch"]
        assert list(steps.phase[:1 + cfg["warmup_steps"]]) == ["compile"] + ["warmup"] * cfg[
            "warmup_steps"]
        assert set(steps.phase[1 + cfg["warmup_steps"]:]) == {"measure"}
        # data-wait and compute partition the step (the clocks are read back to back)
        assert np.allclose(steps.data_wait_s + steps.compute_s, steps.wall_s, rtol=1e-3,
                           atol=1e-4)
        epochs = data.epochs[data.epochs.framework == fw]
        assert len(epochs) == cfg["epochs"] and epochs.val_loss.notna().all()
        s = data.summary(f"{fw}-train")
        assert s["steps_measured"] == len(steps) - 1 - cfg["warmup_steps"]
        assert s["peak_rss_bytes"] > 50e6 and s["monitor_samples"] > 0
        mon = data.monitor[data.monitor.cell == f"{fw}-train"]
        assert len(mon) >= 2 and mon.cpu_percent.max() > 0 and mon.rss_bytes.max() > 50e6
        samples = data.samples[(data.samples.framework == fw) & (data.samples.phase == "measure")]
        assert len(samples) == 2 * 1 * 2  # two sampler settings x one batch size x 2 repeats
        assert samples.finite.all() and (samples.per_step_s > 0).all()
        assert len(data.memory[data.memory.framework == fw]) == 2  # one per cell

    # The shared loader feeds identical batches, timesteps and noise to both frameworks, from
    # identical weights: the first losses agree to float32 precision.
    first = data.steps[data.steps.step == 0].set_index("framework").loss
    assert abs(first["torch"] - first["jittor"]) < 1e-4 * abs(first["torch"])


def test_failing_cell_is_recorded_and_the_others_still_run(tmp_path):
    cfg = tiny_config(tmp_path / "results", debug={"raise_in": ["torch-train"]})
    proc = harness("bench", write_config(tmp_path / "c.yaml", cfg))
    assert proc.returncode == 1, proc.stderr
    run_dir = run_dirs(tmp_path / "results")[0]
    failed = R.read_summary(run_dir, "torch-train")
    assert failed["status"] == "failed" and "debug.raise_in" in failed["error"]
    assert "RuntimeError" in failed["stderr_tail"]  # the worker's traceback tail
    assert R.read_summary(run_dir, "torch-sample")["status"] == "ok"
    errors = R.load_run(run_dir).errors
    assert list(errors.cell) == ["torch-train"] and "Traceback" in errors.traceback.iloc[0]


def test_timeout_kills_the_worker_and_fails_the_cell(tmp_path):
    cfg = tiny_config(tmp_path / "results", workloads=["train"], runner={"timeout_s": 1.0})
    t0 = time.time()
    proc = harness("bench", write_config(tmp_path / "c.yaml", cfg))
    assert proc.returncode == 1
    run_dir = run_dirs(tmp_path / "results")[0]
    s = R.read_summary(run_dir, "torch-train")
    assert s["status"] == "timeout" and "runner.timeout_s" in s["error"]
    assert time.time() - t0 < 60


def _wait_for(predicate, timeout_s=120, what=""):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _records(run_dir, cell, type_):
    recs, _ = R.read_records(os.path.join(run_dir, "cells", cell, "events.jsonl"))
    return [r for r in recs if r["type"] == type_]


def test_sigkill_mid_cell_then_resume_finishes_only_what_is_missing(tmp_path):
    # A delay per step/sampling step makes the cells slow enough to be killed mid-way.
    cfg = tiny_config(tmp_path / "results", debug={"inject_delay_s": 0.25})
    path = write_config(tmp_path / "c.yaml", cfg)
    bench = subprocess.Popen([sys.executable, os.path.join(REPO, "harness.py"), "bench", path,
                              "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        run_dir = _wait_for(lambda: (run_dirs(tmp_path / "results") or [None])[0], 60, "run dir")
        _wait_for(lambda: _records(run_dir, "torch-sample", "sample"), 120, "a sample record")
        worker_pid = _records(run_dir, "torch-sample", "start")[0]["pid"]
        os.kill(bench.pid, signal.SIGKILL)  # no cleanup handlers run
        bench.wait(timeout=10)
    finally:
        if bench.poll() is None:
            bench.kill()

    def worker_gone():  # the worker dies with its parent (PR_SET_PDEATHSIG)
        try:
            return psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    _wait_for(worker_gone, 15, "the orphaned worker to die")

    # The worst case of a kill mid-write: a torn last line.
    with open(os.path.join(run_dir, "cells", "torch-sample", "events.jsonl"), "ab") as f:
        f.write(b'{"type": "sample", "t_wall": 1.0, "sampl')
    killed = R.load_run(run_dir)
    status = killed.summaries.set_index("cell").status
    assert status["torch-train"] == "ok" and status["torch-sample"] == "missing"
    assert len(killed.samples) >= 1 and sum(killed.skipped_lines.values()) == 1
    train_summary = R.read_summary(run_dir, "torch-train")

    proc = harness("bench", "--resume", run_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = R.load_run(run_dir)
    assert set(done.summaries.status) == {"ok"} and not done.skipped_lines
    assert R.read_summary(run_dir, "torch-train") == train_summary  # not re-run
    s = cfg["sample"]
    assert len(done.samples) == len(s["runs"]) * (s["warmup"] + s["repeats"])  # no leftovers
    assert len(done.starts) == 2


def test_resume_refuses_overrides_and_unknown_dirs(tmp_path):
    proc = harness("bench", "--resume", tmp_path, timeout=60)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr


def test_env_command_prints_the_manifest_environment():
    proc = harness("env", "--frameworks", "torch", timeout=120)
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)
    assert env["host"]["cpu_count_usable"] >= 1 and env["gpu"]["gpu"] in ("absent", "present")
    assert env["frameworks"]["torch"]["framework"] == "torch"
    assert "jittor" not in env["frameworks"]
