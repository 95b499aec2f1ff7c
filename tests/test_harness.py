"""End to end through harness.py: real runs of both frameworks, failures, timeouts, SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from bench.records import results as R
from tests.conftest import REPO, harness, run_dirs, tiny_config, write_config


@pytest.mark.slow  # both_frameworks_run (shared, once per session)
def test_both_frameworks_run_produces_every_file(both_frameworks_run):
    proc, run_dir = both_frameworks_run["proc"], both_frameworks_run["run_dir"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Two rounds; in each, a workload's frameworks back to back, their order reversed in the
    # second round (AB BA): the balanced order, recorded in the manifest as it ran.
    units = ["torch-train.r1", "jittor-train.r1", "torch-sample.r1", "jittor-sample.r1",
             "jittor-train.r2", "torch-train.r2", "jittor-sample.r2", "torch-sample.r2"]
    for unit in units:
        for name in ("spec.json", "events.jsonl", "monitor.jsonl", "summary.json", "stderr.log"):
            assert os.path.isfile(os.path.join(run_dir, "cells", unit, name)), (unit, name)
    assert "torch-train.r1" in proc.stdout and "results:" in proc.stdout

    data = R.load_run(run_dir)
    m = data.manifest
    assert [c["unit"] for c in m["cells"]] == units
    assert [c["replicate"] for c in m["cells"]] == [1] * 4 + [2] * 4
    assert m["replicates"] == 2 and "Thue-Morse" in m["order"]
    # every process really ran: its own pid, its replicate number in its records
    starts = data.starts
    assert starts.pid.nunique() == 8
    assert sorted(zip(starts.cell, starts.replicate)) == sorted(
        (u.split(".r")[0], int(u.split(".r")[1])) for u in units)
    # processes ran in the recorded order
    started = data.summaries.set_index("unit").started
    assert list(started.sort_values().index) == units
    assert len(m["config_hash"]) == 64 and m["seed"] == 0 and m["threads"] == 2
    assert m["host"]["cpu_model"] and m["host"]["python"]
    assert m["gpu"]["gpu"] in ("absent", "present")
    assert m["frameworks"]["torch"]["version"].startswith("2.")
    assert m["frameworks"]["jittor"]["version"].startswith("1.3")
    assert set(data.summaries.status) == {"ok"} and not data.skipped_lines

    cfg = both_frameworks_run["config"]["train"]
    for fw in ("torch", "jittor"):
        steps = data.steps[(data.steps.framework == fw) & (data.steps.replicate == 1)]
        assert len(steps) == cfg["epochs"] * cfg["steps_per_epoch"]
        assert list(steps.phase[:1 + cfg["warmup_steps"]]) == ["compile"] + ["warmup"] * cfg[
            "warmup_steps"]
        assert set(steps.phase[1 + cfg["warmup_steps"]:]) == {"measure"}
        # data-wait and compute partition the step (the clocks are read back to back)
        assert np.allclose(steps.data_wait_s + steps.compute_s, steps.wall_s, rtol=1e-3,
                           atol=1e-4)
        epochs = data.epochs[(data.epochs.framework == fw) & (data.epochs.replicate == 1)]
        assert len(epochs) == cfg["epochs"] and epochs.val_loss.notna().all()
        s = data.summary(f"{fw}-train.r1")
        assert s["steps_measured"] == len(steps) - 1 - cfg["warmup_steps"]
        assert s["peak_rss_bytes"] > 50e6 and s["monitor_samples"] > 0
        mon = data.monitor[data.monitor.unit == f"{fw}-train.r1"]
        assert len(mon) >= 2 and mon.cpu_percent.max() > 0 and mon.rss_bytes.max() > 50e6
        samples = data.samples[(data.samples.framework == fw) & (data.samples.phase == "measure")]
        assert len(samples) == 2 * (2 * 1 * 2)  # 2 processes x (2 samplers x 1 batch x 2 repeats)
        assert samples.finite.all() and (samples.per_step_s > 0).all()
        assert len(data.memory[data.memory.framework == fw]) == 4  # one per process

    # The shared loader feeds identical batches, timesteps and noise to both frameworks, from
    # identical weights: the first losses agree to float32 precision.
    first = data.steps[data.steps.step == 0]
    for rep in (1, 2):  # ... and every replicate repeats the same computation
        loss = first[first.replicate == rep].set_index("framework").loss
        assert abs(loss["torch"] - loss["jittor"]) < 1e-4 * abs(loss["torch"])


def test_failing_cell_is_recorded_and_the_others_still_run(tmp_path):
    cfg = tiny_config(tmp_path / "results", debug={"raise_in": ["torch-train"]})
    proc = harness("bench", write_config(tmp_path / "c.yaml", cfg))
    assert proc.returncode == 1, proc.stderr
    run_dir = run_dirs(tmp_path / "results")[0]
    failed = R.read_summary(run_dir, "torch-train.r1")
    assert failed["status"] == "failed" and "debug.raise_in" in failed["error"]
    assert "RuntimeError" in failed["stderr_tail"]  # the worker's traceback tail
    assert R.read_summary(run_dir, "torch-sample.r1")["status"] == "ok"
    errors = R.load_run(run_dir).errors
    assert list(errors.cell) == ["torch-train"] and "Traceback" in errors.traceback.iloc[0]


def test_timeout_kills_the_worker_and_fails_the_cell(tmp_path):
    cfg = tiny_config(tmp_path / "results", workloads=["train"], runner={"timeout_s": 1.0})
    t0 = time.time()
    proc = harness("bench", write_config(tmp_path / "c.yaml", cfg))
    assert proc.returncode == 1
    run_dir = run_dirs(tmp_path / "results")[0]
    s = R.read_summary(run_dir, "torch-train.r1")
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


@pytest.mark.slow
def test_sigkill_mid_cell_then_resume_finishes_only_what_is_missing(tmp_path):
    # A delay per step/sampling step makes the cells slow enough to be killed mid-way.
    cfg = tiny_config(tmp_path / "results", debug={"inject_delay_s": 0.25})
    path = write_config(tmp_path / "c.yaml", cfg)
    bench = subprocess.Popen([sys.executable, os.path.join(REPO, "harness.py"), "bench", path,
                              "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        run_dir = _wait_for(lambda: (run_dirs(tmp_path / "results") or [None])[0], 60, "run dir")
        _wait_for(lambda: _records(run_dir, "torch-sample.r1", "sample"), 120, "a sample record")
        worker_pid = _records(run_dir, "torch-sample.r1", "start")[0]["pid"]
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
    with open(os.path.join(run_dir, "cells", "torch-sample.r1", "events.jsonl"), "ab") as f:
        f.write(b'{"type": "sample", "t_wall": 1.0, "sampl')
    killed = R.load_run(run_dir)
    status = killed.summaries.set_index("unit").status
    assert status["torch-train.r1"] == "ok" and status["torch-sample.r1"] == "missing"
    assert len(killed.samples) >= 1 and sum(killed.skipped_lines.values()) == 1
    train_summary = R.read_summary(run_dir, "torch-train.r1")

    proc = harness("bench", "--resume", run_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = R.load_run(run_dir)
    assert set(done.summaries.status) == {"ok"} and not done.skipped_lines
    assert R.read_summary(run_dir, "torch-train.r1") == train_summary  # not re-run
    s = cfg["sample"]
    assert len(done.samples) == len(s["runs"]) * (s["warmup"] + s["repeats"])  # no leftovers
    assert len(done.starts) == 2


def test_a_segfaulting_jittor_worker_fails_its_cell_with_the_reason_and_the_run_goes_on(tmp_path):
    # Jittor's own SIGSEGV handler attaches gdb, then exit(1)s from the crashed thread, which
    # hung a process whose op-compile thread crashed. models/jt/runtime.py replaces it:
    # Python's stacks, then death by the signal.
    cfg = tiny_config(tmp_path / "results", frameworks=["jittor"],
                      debug={"inject_delay_s": 0.25})
    bench = subprocess.Popen([sys.executable, os.path.join(REPO, "harness.py"), "bench",
                              write_config(tmp_path / "c.yaml", cfg), "--quiet"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_dir = _wait_for(lambda: (run_dirs(tmp_path / "results") or [None])[0], 60, "run dir")
        # the start record follows Jittor's import; the whole workload (>= 6 steps of the
        # injected 0.25 s) is still ahead, so the signal cannot miss a running worker
        first = _wait_for(lambda: next((c for c in ("jittor-train.r1", "jittor-sample.r1")
                                        if _records(run_dir, c, "start")), None), 300,
                          "a started cell")
        os.kill(_records(run_dir, first, "start")[0]["pid"], signal.SIGSEGV)
        assert bench.wait(timeout=600) == 1
    finally:
        if bench.poll() is None:
            bench.kill()
    crashed = R.read_summary(run_dir, first)
    assert crashed["status"] == "failed" and crashed["returncode"] == -signal.SIGSEGV
    assert "SIGSEGV" in crashed["error"], crashed["error"]
    with open(os.path.join(run_dir, "cells", first, R.STDERR), errors="replace") as f:
        log = f.read()
    assert "Fatal Python error: Segmentation fault" in log and "Current thread" in log
    assert "Caught segfault" not in log  # Jittor's handler did not run
    other = ({"jittor-train.r1", "jittor-sample.r1"} - {first}).pop()
    assert R.read_summary(run_dir, other)["status"] == "ok"


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
