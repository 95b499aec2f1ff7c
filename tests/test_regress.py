"""The regression gate (bench/gate/compare.py) and the micro-suite (benchmarks/).

Two kinds of tests:
- the decision logic on real-shaped data: lognormal step times (what per-step timings look
  like), with and without a shift, many seeds, so the false-alarm rate and the power are
  checked, not one lucky draw;
- the whole path on real short runs: the micro-suite (torch, tiny model) and the harness
  (torch, tiny config) run twice unchanged -> no regression; once more with a known injected
  slowdown -> flagged, on exactly the cell and metric that was slowed.
Nothing asserts a wall-clock time: the slowdowns are injected, the verdicts are asserted.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.gate import compare as R  # noqa: E402
from bench.gate import sides  # noqa: E402

TINY_MODEL = {"image_size": 8, "in_channels": 1, "base_channels": 8, "ch_mult": [1, 2],
              "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0, "norm_groups": 4}


# ------------------------------------------------------------------- decision logic (fast)
# The statistics themselves (intervals, verdicts, false-alarm rate, power) are tested in
# tests/test_stats.py on simulated processes; here: how the gate feeds and reports them.

def lognormal_steps(seed, n=30, median_s=0.05, sigma=0.08, scale=1.0):
    """Per-step times as they look in practice: right-skewed, a few percent spread."""
    rng = np.random.default_rng(seed)
    return list(median_s * scale * rng.lognormal(0.0, sigma, n))


def procs(seed, n=4, scale=1.0, between=0.05):
    """n processes' steps, each process with its own speed (what differs between re-runs)."""
    rng = np.random.default_rng(seed)
    return [lognormal_steps(seed * 100 + i, scale=scale * rng.lognormal(0.0, between))
            for i in range(n)]


def side(samples, status=None, kind="micro", hardware=None, calibration=None, path="x"):
    status = status or {c: "ok" for c, _ in samples}
    return sides.Side(path=path, kind=kind, samples=samples, cell_status=status,
                  hardware=hardware or {}, calibration=calibration)


def test_compare_reports_missing_and_failed_cells_explicitly():
    a = procs(10)
    base = side({("c1", "t"): a, ("c2", "t"): a, ("c3", "t"): a, ("c4", "t"): a},
                kind="run")
    cand = side({("c1", "t"): procs(11), ("c3", "t"): a[:2], ("c5", "t"): a},
                status={"c1": "ok", "c3": "failed", "c5": "ok"}, kind="run")
    cand.samples[("c1", "u")] = a  # a metric only the candidate has
    rows = {(r.cell, r.metric): r.verdict for r in R.compare(base, cand).rows}
    assert rows == {("c1", "t"): R.UNCHANGED, ("c1", "u"): "missing in baseline",
                    ("c2", "t"): "missing in candidate", ("c3", "t"): "failed in candidate",
                    ("c4", "t"): "missing in candidate", ("c5", "t"): "missing in baseline"}
    cmp = R.compare(base, cand)
    assert cmp.exit_code() == 0 and cmp.exit_code(strict=True) == 1
    assert "missing" in R.format_table(cmp) and "failed in candidate" in R.format_markdown(cmp)


def test_normalize_divides_by_each_sides_calibration_and_hardware_is_warned():
    base_t = procs(20)
    cand_t = [[2 * v for v in g] for g in procs(21)]  # a machine twice as slow...
    hw_a = {"cpu_model": "A", "cpu_count_usable": 2, "threads": 2, "gpu_names": []}
    hw_b = {"cpu_model": "B", "cpu_count_usable": 4, "threads": 2, "gpu_names": []}
    base = side({("c", "t"): base_t}, hardware=hw_a, calibration={"score_s": 0.1, "version": 1})
    cand = side({("c", "t"): cand_t}, hardware=hw_b, calibration={"score_s": 0.2, "version": 1})
    raw = R.compare(base, cand)
    assert raw.rows[0].verdict == R.REGRESSION
    assert any("CPU model 'A'" in w for w in raw.warnings)
    assert any("usable CPUs 2 (baseline) vs 4" in w for w in raw.warnings)
    assert not any("threads" in w for w in raw.warnings)
    norm = R.compare(base, cand, normalize=True)  # ...with a calibration twice as slow
    assert norm.rows[0].verdict == R.UNCHANGED
    assert "calibration score" in R.format_table(norm)
    with pytest.raises(sides.BadInput, match="no calibration"):
        R.compare(base, side({("c", "t"): cand_t}), normalize=True)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    notjson = tmp_path / "x.txt"
    notjson.write_text("hello")
    nobench = tmp_path / "y.json"
    nobench.write_text(json.dumps({"a": 1}))
    nodata = tmp_path / "z.json"
    nodata.write_text(json.dumps({"benchmarks": [{"name": "b", "stats": {"median": 1}}]}))
    cases = [[str(tmp_path / "nope"), str(nobench)], [str(tmp_path), str(nobench)],
             [str(notjson), str(notjson)], [str(nobench), str(nobench)],
             [str(nodata), str(nodata)], [str(nobench), str(nobench), "--threshold", "10"],
             [str(nobench), str(nobench), "--threshold", "ten%"]]
    for argv in cases:
        assert R.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (argv, err)
    assert R.parse_threshold("10%") == pytest.approx(0.10)
    assert R.parse_threshold("0.05") == pytest.approx(0.05)


def micro_json(path, samples, calibration=0.05):
    """A merged micro JSON as run_micro.py writes it: pooled rounds in stats.data, the
    rounds of each process in extra_info.process_samples."""
    data = {"machine_info": {"diffbench": {"calibration": {"score_s": calibration,
                                                           "version": 1}}},
            "benchmarks": [{"name": n, "stats": {"data": [x for g in v for x in g]},
                            "extra_info": {"process_samples": v}}
                           for n, v in samples.items()]}
    path.write_text(json.dumps(data))
    return str(path)


def test_cli_exit_codes_markdown_and_report_only(tmp_path, capsys):
    base = micro_json(tmp_path / "b.json", {"fwd": procs(1), "step": procs(2)})
    same = micro_json(tmp_path / "s.json", {"fwd": procs(3), "step": procs(4)})
    slow = micro_json(tmp_path / "r.json", {"fwd": procs(5), "step": procs(6, scale=1.5)})
    assert R.main([base, same]) == 0
    md = tmp_path / "cmp.md"
    assert R.main([base, slow, "--markdown", str(md)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "1 regression(s)" in out
    text = md.read_text()
    assert text.startswith("### diffbench regression check: regression detected")
    assert "| `step` | `time_s` |" in text and "**regression**" in text
    assert "| 4/4 |" in text and "t-test on log per-process medians" in text
    assert R.main([base, slow, "--report-only"]) == 0
    assert R.main([base, slow, "--threshold", "60%"]) == 0


def test_a_plain_pytest_benchmark_file_is_one_process(tmp_path):
    """Without process_samples the rounds of a file are one process: too few to judge, and
    the gate says so instead of treating rounds as independent."""
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"benchmarks": [{"name": "fwd", "stats": {
        "data": lognormal_steps(1, n=50)}}]}))
    side_ = sides.load_side(str(plain))
    assert side_.samples[("fwd", "time_s")] == [lognormal_steps(1, n=50)]
    cmp = R.compare(str(plain), str(plain))
    assert [r.verdict for r in cmp.rows] == [R.TOO_FEW]
    assert "too few processes to judge" in R.format_table(cmp)


# ------------------------------------------------------------- real short runs (~1 min)
# threads: 1 in these configs: a 2-thread OpenMP process on a 2-core machine that others are
# also using can slow down 10-100x in spin-waits, and by different amounts from run to run;
# one thread just gets its fair share. The gate is what is tested here, not the framework.

class Job:
    """A command started now, its output in files (a full pipe would stall it while another
    job is waited for); .result() waits for it -> CompletedProcess."""

    def __init__(self, cmd, timeout=900):
        self.cmd, self.timeout = cmd, timeout
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, text=True, cwd=REPO)

    def result(self):
        try:
            self.proc.wait(timeout=self.timeout)
        finally:
            self.stop()
        self.out.seek(0)
        self.err.seek(0)
        return subprocess.CompletedProcess(self.cmd, self.proc.returncode, self.out.read(),
                                           self.err.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_together(commands, timeout=900):
    """Run commands side by side -> their CompletedProcesses, in order. Every process these
    tests start runs one thread (above), so two or three at once use the machine's two cores
    instead of one, and the verdicts asserted are 10x changes no such overlap can flip; the
    sides being compared overlap alike."""
    jobs = []
    try:
        for cmd in commands:
            jobs.append(Job(cmd, timeout))
        return [job.result() for job in jobs]
    finally:
        for job in jobs:
            job.stop()


def micro_cmd(out, config, *extra, frameworks=("torch",), rounds=8, processes=1):
    return [sys.executable, os.path.join(REPO, "benchmarks", "run_micro.py"), "--out", str(out),
            "--frameworks", *frameworks, "--processes", str(processes), "--", "--micro-config",
            str(config), "--micro-rounds", str(rounds), "--micro-warmup", "3", *extra]


def finish_micro(proc, out):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(out)


def combine_micro(paths, out):
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "run_micro.py"), "--out", str(out),
           "--combine", *map(str, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(out)


# Baseline, an unchanged re-run and a slowed run, each in three short processes, in three
# rounds that run one process of each side side by side (BCS BCS BCS), pooled per side: three
# processes a side is the least the gate judges (bench.stats.replicates.MIN_REPLICATES), and
# the machine's drift (and the other two processes of a round) lands on all three alike.
ORDER = ("base", "same", "slow") * 3
# The slowed benchmark sleeps 9x its own time (10x slower): far outside any run-to-run noise
# (a 2-sided t at 3+3 processes would need a between-process CV above ~60% to miss it), so
# the test asserts a verdict that machine load cannot flip.
SLOWDOWN = "9.0"


@pytest.fixture(scope="module")
def tiny_micro_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("micro") / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny-micro", "threads": 1, "model": TINY_MODEL,
        "diffusion": {"timesteps": 50}, "train": {"batch_size": 4},
        "sample": {"runs": [{"sampler": "ddim", "steps": [5], "eta": 0.0}]}}))
    return path


@pytest.fixture(scope="module")
def torch_micro_runs(tmp_path_factory, tiny_micro_config):
    """The torch micro-suite: baseline, unchanged, train step 10x slower (6 rounds x 3);
    shared by the four tests below that read its JSONs."""
    d = tmp_path_factory.mktemp("micro-runs")
    slow = ("--micro-inject-slowdown", SLOWDOWN, "--micro-inject-only", "test_train_step*",
            "--micro-inject-skip-warmup")
    parts = {k: [] for k in ORDER[:3]}
    for r in range(0, len(ORDER), 3):
        outs = {kind: d / f"{kind}-{r + i}.json" for i, kind in enumerate(ORDER[r:r + 3])}
        procs = run_together([micro_cmd(out, tiny_micro_config,
                                        *(slow if kind == "slow" else ()), rounds=6)
                              for kind, out in outs.items()])
        for (kind, out), proc in zip(outs.items(), procs):
            parts[kind].append(finish_micro(proc, out))
    return {kind: combine_micro(paths, d / f"{kind}.json") for kind, paths in parts.items()}


@pytest.mark.slow  # its module fixture's real runs (shared; whichever test comes first pays)
def test_micro_json_holds_raw_samples_calibration_and_versions(torch_micro_runs):
    with open(torch_micro_runs["base"]) as f:
        data = json.load(f)
    names = sorted(b["name"] for b in data["benchmarks"])
    assert names == ["test_sample_step[torch-ddim]", "test_sample_step[torch-ddpm]",
                     "test_train_step[torch]", "test_unet_forward[torch]"]
    for b in data["benchmarks"]:
        # three pooled processes of 6 rounds; stats recomputed over all 18, and each
        # process's rounds kept as its own group (the unit the gate counts)
        assert len(b["stats"]["data"]) == 18 and all(v > 0 for v in b["stats"]["data"])
        assert b["stats"]["rounds"] == 18
        assert b["stats"]["median"] == pytest.approx(float(np.median(b["stats"]["data"])))
        assert b["extra_info"]["framework"] == "torch" and b["extra_info"]["processes"] == 3
        groups = b["extra_info"]["process_samples"]
        assert [len(g) for g in groups] == [6, 6, 6]
        assert sorted(x for g in groups for x in g) == sorted(b["stats"]["data"])
    info = data["machine_info"]["diffbench"]
    assert info["calibration"]["score_s"] > 0 and info["calibration"]["version"] == 1
    assert info["versions"]["torch"]["framework"] == "torch"
    assert info["micro"]["model"]["base_channels"] == 8 and info["micro"]["batch_size"] == 4
    assert info["hardware"]["cpu_count_usable"] >= 1


@pytest.mark.slow  # its module fixture's real runs (shared; whichever test comes first pays)
def test_micro_same_code_twice_counts_processes(torch_micro_runs):
    """Mechanics only: whether unchanged code is called unchanged depends on the machine's
    noise, which tests/test_stats.py covers on simulated processes with fixed seeds."""
    cmp = R.compare(torch_micro_runs["base"], torch_micro_runs["same"])
    assert len(cmp.rows) == 4
    for r in cmp.rows:
        assert (r.n_baseline, r.n_candidate) == (3, 3)
        assert r.verdict in (R.UNCHANGED, R.NOT_SIGNIFICANT, R.REGRESSION, R.IMPROVEMENT)
        assert r.detectable > 0 and 0 <= r.p_value <= 1
    assert "3/3" in R.format_table(cmp)


@pytest.mark.slow  # its module fixture's real runs (shared; whichever test comes first pays)
def test_micro_injected_slowdown_is_flagged_on_the_right_benchmark(torch_micro_runs):
    cmp = R.compare(torch_micro_runs["base"], torch_micro_runs["slow"])
    rows = {r.cell: r for r in cmp.rows}
    slowed = rows.pop("test_train_step[torch]")
    assert slowed.verdict == R.REGRESSION and slowed.change > 3.0, R.format_table(cmp)
    # the others were not slowed: whatever noise did to them, nothing near a 10x change
    assert all(abs(r.change) < slowed.change / 3 for r in rows.values()), R.format_table(cmp)
    assert any("inject_slowdown" in w for w in cmp.warnings)  # the settings differ: said
    assert R.main([torch_micro_runs["base"], torch_micro_runs["slow"], "--report-only"]) == 0


def harness_config(path, results_dir, delay_s=0.0):
    cfg = {"name": "gate", "seed": 0, "threads": 1, "frameworks": ["torch"],
           "workloads": ["train", "sample"], "model": TINY_MODEL,
           "diffusion": {"timesteps": 50}, "optim": {"warmup_steps": 10},
           "data": {"source": "synthetic", "num_samples": 40, "val_fraction": 0.2},
           # 4 steps - iteration 0 - 1 warm-up = 2 measured steps per process, one measured
           # 2-step chain: the gate compares process medians, and 18 processes a fixture
           # (3 runs x 2 cells x 3 replicates) make every step and every second a process
           # spends before its first step count
           "train": {"epochs": 1, "steps_per_epoch": 4, "batch_size": 4, "warmup_steps": 1,
                     "val_batches": 0},
           "sample": {"runs": [{"sampler": "ddim", "steps": [2], "eta": 0.0}],
                      "batch_sizes": [2], "repeats": 1, "warmup": 1},
           "monitor": {"enabled": False},
           # 3 processes per cell: the least the gate judges; no peak-matmul timing (~1 s a
           # process at the default 2048^3; the gate never reads it)
           "runner": {"results_dir": str(results_dir), "replicates": 3, "peak_matmul_n": 0},
           "debug": {"inject_delay_s": delay_s}}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def harness_cmd(config):
    return [sys.executable, os.path.join(REPO, "harness.py"), "bench", config, "--quiet"]


def finish_harness(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip().splitlines()[-1].split("results: ", 1)[1]


@pytest.fixture(scope="module")
def harness_runs(tmp_path_factory):
    """A tiny torch config run as base, slow, base again (3 processes per cell each); slow
    has debug.inject_delay_s = 500 ms per train step and sampling step, ~20x a tiny-model
    step (~20-40 ms at one thread): a change no machine noise can hide or fake. Shared by
    the three tests below. The three runs run side by side (run_together; slow is mostly
    asleep); slow in a results folder of its own, base and same in one (one config and
    folder: their config_hash is equal), same started once base has made its run folder
    (run folders are named by the second; two made in one second would race for a name)."""
    d = tmp_path_factory.mktemp("gate")
    base = harness_config(d / "plain.yaml", d / "results")
    slow = harness_config(d / "delayed.yaml", d / "results-delayed", delay_s=0.5)
    jobs = []
    try:
        jobs += [Job(harness_cmd(slow), timeout=600), Job(harness_cmd(base), timeout=600)]
        deadline = time.time() + 300
        while (not os.path.isdir(d / "results") or not os.listdir(d / "results")) and \
                jobs[1].proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        jobs.append(Job(harness_cmd(base), timeout=600))
        slow_run, base_run, same_run = [finish_harness(job.result()) for job in jobs]
    finally:
        for job in jobs:
            job.stop()
    return {"base": base_run, "slow": slow_run, "same": same_run}


ROWS = {("torch-train", "step_wall_s"), ("torch-train", "step_compute_s"),
        ("torch-sample", "chain_time_s[ddim,2 steps,b2,eta=0.0]")}


@pytest.mark.slow  # its module fixture's real runs (shared; whichever test comes first pays)
def test_run_dirs_same_config_twice_counts_processes(harness_runs):
    """Mechanics of comparing two run folders: every cell and metric is a row, each side's
    processes are counted (not its steps), the settings match so nothing is warned. Whether
    unchanged code comes out "unchanged" is the machine's noise against the statistics,
    tested on simulated processes in tests/test_stats.py, never asserted on live timings."""
    cmp = R.compare(harness_runs["base"], harness_runs["same"])
    rows = {(r.cell, r.metric): r for r in cmp.rows}
    assert set(rows) == ROWS
    for r in rows.values():
        assert (r.n_baseline, r.n_candidate) == (3, 3) and r.detectable > 0
        assert r.verdict in (R.UNCHANGED, R.NOT_SIGNIFICANT, R.REGRESSION, R.IMPROVEMENT)
    assert not any("config_hash" in w for w in cmp.warnings)
    assert R.main([harness_runs["base"], harness_runs["same"], "--report-only"]) == 0
    # Pooling two runs of a side adds their processes
    both = R.compare(sides.pool_sides([sides.load_side(harness_runs["base"]),
                                   sides.load_side(harness_runs["same"])]), harness_runs["slow"])
    assert {r.n_baseline for r in both.rows} == {6}


@pytest.mark.slow  # its module fixture's real runs (shared; whichever test comes first pays)
def test_run_dirs_injected_delay_is_flagged_on_the_right_cells(harness_runs):
    cmp = R.compare(harness_runs["base"], harness_runs["slow"])
    assert {(r.cell, r.metric) for r in cmp.regressions} == ROWS, R.format_table(cmp)
    assert all(r.change > 2.0 for r in cmp.rows)
    assert any("config_hash" in w for w in cmp.warnings)
    proc = subprocess.run([sys.executable, "-m", "bench.gate.compare", harness_runs["base"],
                           harness_runs["slow"], "--markdown", "-"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "| `torch-train` | `step_wall_s` |" in proc.stdout and "| 3/3 |" in proc.stdout


@pytest.mark.slow  # its module fixture's real runs (shared; whichever test comes first pays)
def test_run_dir_and_micro_json_cannot_be_mixed(harness_runs, torch_micro_runs, capsys):
    assert R.main([harness_runs["base"], torch_micro_runs["base"]]) == 2
    assert "cannot compare a run" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jittor"])
def test_async_micro_suite_times_synced_work(tmp_path, tiny_micro_config, framework):
    """Jittor is lazy (and JAX dispatches asynchronously: its synced timing is what lets
    test_ab.py's gate flag a committed JAX slowdown, which an unsynced clock would miss; not
    run here again, ~90 s): the suite must sync inside the timed call. A proportional slowdown of the train step (sleep = 9x the synced call's own time)
    must be flagged on that benchmark; were the call unsynced it would return in
    microseconds and the sleep with it."""
    # The slowed processes sleep 9x every measured train-step call (not the warm-up ones:
    # the first compiles for ~1 s, 9 s asleep for nothing), mostly asleep all the same. So
    # the baseline's three processes (run in turn) and the three slowed ones run side by
    # side, the slowed ones pooled as the torch sides are. (Jittor's processes share its
    # kernel cache under its own file lock.) What the overlap does to the slowed processes
    # it does to their train step and their other benchmarks alike, so the bound below
    # (others' change < a third of the slowed one's) still holds unless the slowed side ran
    # over 3x *less* contended than the baseline, its three processes overlapping more.
    inject = ("--micro-inject-slowdown", SLOWDOWN, "--micro-inject-only", "test_train_step*",
              "--micro-inject-skip-warmup")
    outs = [tmp_path / "jb.json"] + [tmp_path / f"js-{i}.json" for i in range(3)]
    procs = run_together(
        [micro_cmd(outs[0], tiny_micro_config, frameworks=(framework,), rounds=6, processes=3)]
        + [micro_cmd(out, tiny_micro_config, *inject, frameworks=(framework,), rounds=6)
           for out in outs[1:]])
    base, *parts = [finish_micro(proc, out) for proc, out in zip(procs, outs)]
    slow = combine_micro(parts, tmp_path / "js.json")
    cmp = R.compare(base, slow)
    rows = {r.cell: r for r in cmp.rows}
    slowed = rows.pop(f"test_train_step[{framework}]")
    assert slowed.verdict == R.REGRESSION and slowed.change > 3.0, R.format_table(cmp)
    assert all(abs(r.change) < slowed.change / 3 for r in rows.values()), R.format_table(cmp)
