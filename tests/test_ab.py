"""`harness.py ab`: two git revisions, interleaved, on a real git repository: in one process a
pair (--interleave calls, the default) and as pairs of processes (--interleave processes).

The test makes its own repository from this project's files, with commits:
    c0  a README only (a revision without the micro-suite)
    c1  the project as it is (the base)
    c2  the same with a committed, obvious slowdown: INJECTED_EXTRA_CONVS in the torch and the
        JAX UNet runs 400 more convolutions per forward (the tiny model gets ~6-10x slower);
        the Jittor UNet is unchanged
and runs the real CLI on it: tiny model, 1-5 pairs. Asserted: the verdicts on a
change no machine noise can fake or hide, the outputs, the order, and that no worktree, temp
folder or benchmark process is left behind on any exit path (success, failure, a crashing
candidate, Ctrl-C, SIGTERM, bad input). No borderline timing outcome is asserted: with 3
pairs the t interval has 2 degrees of freedom (critical t 4.3), which a 3-6x change (150
convolutions, as before) cleared by a hair when one pair came out 2x off under load
(ratios 2.8, 6.7, 2.8: t 4.5); at ~6-10x the same spread gives t ~6-8.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from bench.stats.replicates import judge_pairs
from tests.conftest import REPO, TINY_MODEL

EXTRA_CONVS = 400   # the committed slowdown of c2 (~6-10x on the tiny model)
MICRO = ("--rounds", "5", "--")
PROCESSES = ("--interleave", "processes")


def git(repo, *args):
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def commit_all(repo, message):
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=t@example.invalid", "commit", "-q",
        "-m", message)
    return git(repo, "rev-parse", "HEAD")


def project_files():
    """This checkout's files as git sees them (tracked, and new ones not ignored)."""
    out = subprocess.run(["git", "-C", REPO, "ls-files", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, text=True, check=True)
    skip = ("reports/", "docs/", "baselines/")
    return [f for f in out.stdout.splitlines()
            if not f.startswith(skip) and os.path.isfile(os.path.join(REPO, f))]


def copy_project(dest):
    for f in project_files():
        os.makedirs(os.path.dirname(os.path.join(dest, f)) or dest, exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), os.path.join(dest, f))


def set_extra_convs(repo, n, model="pt"):
    path = os.path.join(repo, "models", model, "unet.py")
    text = open(path).read()
    assert "\nINJECTED_EXTRA_CONVS = 0\n" in text
    open(path, "w").write(text.replace("\nINJECTED_EXTRA_CONVS = 0\n",
                                       f"\nINJECTED_EXTRA_CONVS = {n}\n"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("abrepo") / "project"
    root.mkdir()
    git(root, "init", "-q")
    (root / "README.md").write_text("before the micro-suite\n")
    shas = {"c0": commit_all(root, "c0: readme only")}
    copy_project(root)
    shas["c1"] = commit_all(root, "c1: the project")
    set_extra_convs(root, EXTRA_CONVS)
    set_extra_convs(root, EXTRA_CONVS, model="jx")
    shas["c2"] = commit_all(root, "c2: a ~10x slower forward (torch and JAX)")
    micro_cfg = root.parent / "tiny-micro.yaml"
    micro_cfg.write_text(yaml.safe_dump({
        "name": "tiny-micro", "threads": 1, "model": TINY_MODEL,
        "diffusion": {"timesteps": 50}, "train": {"batch_size": 4},
        "sample": {"runs": [{"sampler": "ddim", "steps": [5], "eta": 0.0}]}}))
    return {"root": str(root), "shas": shas, "micro_config": str(micro_cfg)}


def ab(repo, *args, out=None, timeout=600):
    argv = [sys.executable, os.path.join(repo["root"], "harness.py"), "ab", *args]
    if out:
        argv += ["--out", str(out)]
    micro = ([] if "--warmup" in args else ["--warmup", "3"]) + \
        (list(MICRO[2:]) if "--rounds" in args else list(MICRO)) + \
        ["--micro-config", repo["micro_config"]]
    return subprocess.run(argv + ([] if "--" in args else micro), capture_output=True,
                          text=True, timeout=timeout, cwd=repo["root"])


def temp_checkouts():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "diffbench-ab-*")))


def assert_nothing_left(repo, before):
    assert git(repo["root"], "worktree", "list", "--porcelain").count("worktree ") == 1
    assert temp_checkouts() <= before


def load(out):
    with open(os.path.join(out, "ab.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_committed_slowdown_is_flagged_and_everything_is_reported(repo, tmp_path):
    before = temp_checkouts()
    out = tmp_path / "ab"
    # 5 pairs (2 + 3 of each order: a crossover t with 3 df, critical 3.18): the smallest
    # change here (the train step, ~6.5x) is flagged while the pooled SD of a pair's log
    # ratio stays under ~1.3 (one loaded run had 0.79: a 4.2x and a 20x pair of one order),
    # as with the 6 pairs at 150 convolutions before (train step ~4.4x: ~1.3); 4 pairs (2
    # df, critical 4.3) would allow only ~0.87.
    proc = ab(repo, "HEAD~1", "HEAD", *PROCESSES, "--pairs", "5",
              "--frameworks", "torch", "--markdown", str(tmp_path / "pr.md"), out=out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_nothing_left(repo, before)
    res = load(out)
    assert res["base"]["sha"] == repo["shas"]["c1"] and res["base"]["name"] == "HEAD~1"
    assert res["candidate"]["sha"] == repo["shas"]["c2"] and not res["candidate"]["dirty"]
    rows = {r["cell"]: r for r in res["rows"]}
    assert set(rows) == {"test_unet_forward[torch]", "test_train_step[torch]",
                         "test_sample_step[torch-ddpm]", "test_sample_step[torch-ddim]"}
    for name, row in rows.items():
        assert row["verdict"] == "regression", proc.stdout
        assert row["change"] > 1.0 and len(row["pair_ratios"]) == 5 and row["low"] > 0
    # pairs in the Thue-Morse order: AB BA BA AB BA, each process timed, its contention
    # measured
    sides = [p["side"][0] for p in res["processes"]]
    assert "".join(sides) == "bccbcbbccb"
    assert all(p["status"] == "ok" and p["wall_s"] > 0 and p["foreign_cpu_cores"] is not None
               for p in res["processes"])
    assert res["exit_code"] == 1 and res["counts"]["regression"] >= 1
    # the pull-request markdown names both revisions, the machine and the processes
    md = (tmp_path / "pr.md").read_text()
    assert md == (out / "ab.md").read_text()
    assert md.startswith("### diffbench A/B: ")
    for text in (repo["shas"]["c1"][:10], repo["shas"]["c2"][:10], "**regression**",
                 "| `test_unet_forward[torch]` |", "pairs run", "5 of 5", "contention",
                 "machine", "<details>"):
        assert text in md, text
    assert "diffbench A/B:" in proc.stdout and "test_unet_forward[torch]" in proc.stdout
    html = (out / "ab.html").read_text()
    assert "data:image/png;base64," in html and "Processes" in html
    assert os.path.isfile(out / "pair_ratios.png")
    assert len(glob.glob(str(out / "raw" / "*.json"))) == 10


@pytest.mark.slow
def test_interleaved_calls_flag_a_committed_slowdown_with_one_process_a_pair(repo, tmp_path):
    """The default mode: per pair and framework ONE process imports both revisions' models
    and alternates their calls. c2 slows only the torch UNet: torch's rows must be
    regressions (~6-10x), Jittor's (the same code on both sides) must be measured and near
    1. Which verdict Jittor's rows get is chance (alpha allows a false alarm once in 20
    benchmarks; one came up in a CI-like run), so only its derivation from the pair ratios
    is asserted. 8 rounds (the calls default) a block: a median of 5 calls let one burst of
    load move a Jittor pair ratio to 0.59, near the 0.5 bound."""
    before = temp_checkouts()
    out = tmp_path / "ab"
    proc = ab(repo, "HEAD~1", "HEAD", "--pairs", "3", "--frameworks", "torch", "jittor",
              "--rounds", "8", out=out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_nothing_left(repo, before)
    res = load(out)
    assert res["settings"]["interleave"] == "calls"
    rows = {r["cell"]: r for r in res["rows"]}
    assert len(rows) == 8
    for name, row in rows.items():
        assert len(row["pair_ratios"]) == 3 and None not in row["pair_ratios"], name
        if "[torch" in name:   # ~6-10x, 8 rounds: t >10 against a critical 4.3
            assert row["verdict"] == "regression" and row["change"] > 1.0, proc.stdout
        else:   # identical code on both sides: no 2x either way on any pair
            assert all(0.5 < v < 2.0 for v in row["pair_ratios"]), (name, row)
            judged = judge_pairs(row["pair_ratios"], res["settings"]["threshold"],
                                 res["settings"]["alpha"])  # a plain paired t in calls mode
            assert row["verdict"] == judged.verdict, (name, row)
    # one process per pair and framework, the revision opening it in the Thue-Morse order
    procs = res["processes"]
    assert [(p["side"], p["framework"], p["first"]) for p in procs] == [
        ("both", fw, first) for first in ("base", "candidate", "candidate")
        for fw in ("torch", "jittor")]
    assert all(p["status"] == "ok" and p["foreign_cpu_cores"] is not None for p in procs)
    raw = json.loads((out / "raw" / "pair00-micro-torch-both.json").read_text())
    assert raw["sides"]["base"]["tree"] != raw["sides"]["candidate"]["tree"]
    assert all(len(raw["times_s"]["test_train_step[torch]"][s]) == 1 for s in ("base",
                                                                                "candidate"))
    assert "both revisions in each micro process" in proc.stdout
    assert "one process running both revisions" in (out / "ab.md").read_text()


@pytest.mark.slow
def test_interleaved_calls_flag_a_committed_jax_slowdown(repo, tmp_path):
    """JAX in the gate: both revisions' jitted functions compiled in the warm-up calls of one
    process, then alternated; c2's 400 extra convolutions (a lax.fori_loop) in the JAX UNet
    make every JAX benchmark a regression."""
    before = temp_checkouts()
    out = tmp_path / "ab"
    proc = ab(repo, "HEAD~1", "HEAD", "--pairs", "3", "--frameworks", "jax", "--rounds", "8",
              out=out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_nothing_left(repo, before)
    rows = {r["cell"]: r for r in load(out)["rows"]}
    assert set(rows) == {"test_unet_forward[jax]", "test_train_step[jax]",
                         "test_sample_step[jax-ddpm]", "test_sample_step[jax-ddim]"}
    for name, row in rows.items():
        assert row["verdict"] == "regression" and row["change"] > 1.0, (name, proc.stdout)


def test_working_tree_is_the_default_candidate_and_report_only_exits_0(repo, tmp_path):
    """Uncommitted changes are measured and recorded as dirty; base = HEAD~1 (c1), so the
    working tree carries c2's slowdown: a regression, but --report-only exits 0."""
    before = temp_checkouts()
    unet = os.path.join(repo["root"], "models", "pt", "unet.py")
    original = open(unet).read()
    try:
        with open(unet, "a") as f:
            f.write("# an uncommitted change\n")
        out = tmp_path / "ab"
        proc = ab(repo, "HEAD~1", "--pairs", "3", "--frameworks", "torch", "--report-only",
                  out=out)
    finally:
        open(unet, "w").write(original)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_nothing_left(repo, before)
    res = load(out)
    # whatever 3 pairs made of the slowdown, --report-only turned a failing verdict into 0
    assert ("report-only: exiting 0" in proc.stdout) == (res["exit_code"] == 1)
    cand = res["candidate"]
    assert cand["working_tree"] and cand["dirty"] and cand["changed"] == ["models/pt/unet.py"]
    assert cand["sha"] == repo["shas"]["c2"]
    assert len(res["rows"]) == 4 and all(len(r["pair_ratios"]) == 3 for r in res["rows"])
    assert "dirty: 1 changed file(s)" in (out / "ab.md").read_text()


@pytest.mark.parametrize("case", ["not a checkout", "unknown revision", "no micro-suite",
                                  "no model registry", "micro option unknown to calls",
                                  "pairs 0", "threshold ambiguous", "unknown framework",
                                  "out not empty"])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(repo, tmp_path, case):
    before = temp_checkouts()
    out = tmp_path / "ab"
    args = {"unknown revision": ["no-such-branch"],
            "no-micro-suite": [],
            "no micro-suite": [repo["shas"]["c0"], *PROCESSES],
            "no model registry": [repo["shas"]["c0"]],
            "micro option unknown to calls": ["HEAD~1", "--", "--micro-inject-slowdown",
                                              "0.1"],
            "pairs 0": ["HEAD~1", "--pairs", "0"],
            "threshold ambiguous": ["HEAD~1", "--threshold", "10"],
            "unknown framework": ["HEAD~1", "--frameworks", "tensorflow"],
            "out not empty": ["HEAD~1"]}.get(case, ["HEAD~1"])
    where = repo
    if case == "not a checkout":
        plain = tmp_path / "plain"
        plain.mkdir()
        copy_project(plain)
        where = dict(repo, root=str(plain))
    if case == "out not empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    proc = ab(where, *args, out=out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    expect = {"not a checkout": "not a git checkout", "unknown revision": "no-such-branch",
              "no micro-suite": "has no benchmarks/run_micro.py",
              "no model registry": "has no models/registry.py",
              "micro option unknown to calls": "--micro-inject-slowdown", "pairs 0": "--pairs",
              "threshold ambiguous": "--threshold", "unknown framework": "tensorflow",
              "out not empty": "not empty"}[case]
    assert expect in lines[0]
    assert_nothing_left(repo, before)
    if case == "out not empty":
        assert sorted(os.listdir(out)) == ["keep.txt"]
    else:
        assert not out.exists()


@pytest.mark.parametrize("mode", ["calls", "processes"])
def test_a_crashing_candidate_fails_the_gate_and_the_run_completes(repo, tmp_path, mode):
    """A candidate whose torch UNet cannot even be imported: the candidate fails (its
    processes, or its half of the shared process), the base still runs, the rows say 'failed
    in candidate', exit 1, nothing left."""
    before = temp_checkouts()
    git(repo["root"], "checkout", "-q", "-b", f"broken-{mode}", repo["shas"]["c1"])
    try:
        unet = os.path.join(repo["root"], "models", "pt", "unet.py")
        with open(unet, "a") as f:
            f.write("\nraise RuntimeError('broken on purpose')\n")
        broken = commit_all(repo["root"], "broken")
    finally:
        git(repo["root"], "checkout", "-q", repo["shas"]["c2"])
    out = tmp_path / "ab"
    proc = ab(repo, repo["shas"]["c1"], broken, "--pairs", "1", "--frameworks", "torch",
              "--interleave", mode, out=out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_nothing_left(repo, before)
    res = load(out)
    status = {p["side"]: p["status"] for p in res["processes"]}
    if mode == "processes":
        assert status == {"base": "ok", "candidate": "failed"}
    else:
        assert status == {"both": "failed"}
        error = res["processes"][0]["error"]
        assert error.startswith("candidate: ") and "broken on purpose" in error, error
    assert res["rows"] and all(r["verdict"] == "failed in candidate" for r in res["rows"])
    assert "failed in candidate" in proc.stdout


def _benchmark_processes(path):
    """Processes whose command line runs code from `path` (a worktree)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmd:
            out.append((pid, cmd))
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_worktrees_and_stops_the_benchmark(repo, tmp_path, sig):
    before = temp_checkouts()
    out = tmp_path / "ab"
    argv = [sys.executable, os.path.join(repo["root"], "harness.py"), "ab", "HEAD~1", "HEAD",
            "--out", str(out), "--pairs", "3", "--frameworks", "torch", *MICRO,
            "--micro-config", repo["micro_config"]]
    p = subprocess.Popen(argv, cwd=repo["root"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    # wait until a benchmark process is running inside a temporary worktree
    deadline = time.time() + 300
    worktree = None
    while time.time() < deadline and worktree is None and p.poll() is None:
        new = temp_checkouts() - before
        for d in new:
            # a benchmark process, not a `git worktree add/remove` of that folder (its
            # command line names the folder too; a signal then would miss the run)
            if any("run_micro.py" in cmd or "bench.gate.interleaved" in cmd
                   for _, cmd in _benchmark_processes(d)):
                worktree = d
        time.sleep(0.2)
    assert worktree, "no benchmark process started in a worktree"
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stdout + stderr
    assert "interrupted" in stderr
    assert_nothing_left(repo, before)
    time.sleep(0.5)
    assert not _benchmark_processes(worktree)
    assert load(out)["interrupted"] is True
