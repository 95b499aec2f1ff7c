"""The pairs of an A/B run (`harness.py ab`, bench/gate/ab.py): the schedule of processes,
running each one, and reading what they measured back as per-pair samples.

A pair is either two processes back to back, one per revision, each running its own
micro-suite or `harness.py bench` (--interleave processes, and every --config run), or one
process running both revisions' models with their calls alternated (--interleave calls:
bench/gate/interleaved.py). The pairs' order is the Thue-Morse sequence
(bench.run.matrix.balanced_order). The verdicts over the pairs: bench/gate/ab_verdicts.py.
"""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from bench import REPO_ROOT
from bench.gate.sides import BadInput, load_side
from bench.measure.calibrate import ForeignCpu
from bench.run.matrix import balanced_order
from bench.run.runner import exit_reason
from bench.stats.replicates import block_ratio

MICRO_SUITE = "benchmarks/run_micro.py"
MODELS_REGISTRY = "models/registry.py"   # what the interleaved worker imports of a revision
HARNESS = "harness.py"
# --interleave calls (default): a pair is ONE process per framework running both revisions'
# models, calls alternated (bench/gate/interleaved.py); processes: a pair is two processes,
# one per revision, each running its own micro-suite.
CALLS, PROCESSES = "calls", "processes"
INTERLEAVE = (CALLS, PROCESSES)
SIDES = ("base", "candidate")
BOTH = "both"
# Other processes using more CPUs than this during one of ours: its timing is suspect.
BUSY_CPUS = 0.25


@dataclass
class Process:
    """One process of the schedule: a revision running one suite (for one framework)."""

    pair: int
    position: int             # 0 = first of its pair, 1 = second (calls: 0, the only one)
    side: str                 # base | candidate | both (calls: both revisions in one process)
    suite: str                # micro | config
    framework: str = ""       # micro: one framework per process; config: all of the config's
    status: str = "not run"   # ok | failed | timeout | not run
    wall_s: float = None
    foreign_cpu_cores: float = None
    output: str = ""          # micro JSON or run folder, relative to the A/B folder
    log: str = ""
    error: str = ""
    first: str = ""           # calls: the revision that opens the process's first block

    @property
    def unit(self):
        return f"pair{self.pair:02d}-{self.suite}{'-' + self.framework if self.framework else ''}" \
               f"-{self.side}"


def schedule(pairs, frameworks, micro, config, interleave=PROCESSES):
    """Every process, in the order they run: per pair, for each framework the two revisions
    back to back, or (calls) one process holding both (then the config runs, always as two
    processes), the pair's order from the Thue-Morse sequence."""
    out = []
    for i, order in enumerate(balanced_order(SIDES, pairs)):
        for fw in frameworks if micro else []:
            if interleave == CALLS:
                out.append(Process(i, 0, BOTH, "micro", fw, first=order[0]))
            else:
                out += [Process(i, k, side, "micro", fw) for k, side in enumerate(order)]
        if config:
            out += [Process(i, k, side, "config") for k, side in enumerate(order)]
    return out


def command(proc, trees, out_path, args):
    """The argv that runs `proc`: from the revision's checkout, or (calls) this checkout's
    interleaved worker over both."""
    if proc.side == BOTH:
        return [sys.executable, "-m", "bench.gate.interleaved", "--framework", proc.framework,
                "--base", trees["base"], "--candidate", trees["candidate"],
                "--first", proc.first, "--blocks", str(args.blocks), "--rounds",
                str(args.rounds), "--warmup", str(args.warmup), "--out", out_path,
                *args.micro_args]
    tree = trees[proc.side]
    if proc.suite == "micro":
        return [sys.executable, os.path.join(tree, MICRO_SUITE), "--frameworks", proc.framework,
                "--processes", "1", "--out", out_path, "--timeout-s", f"{args.timeout_s:g}",
                "--", "--micro-rounds", str(args.rounds), "--micro-warmup", str(args.warmup),
                *args.micro_args]
    return [sys.executable, os.path.join(tree, HARNESS), "bench", args.config,
            "--set", "runner.replicates=1", "--results-dir", out_path, "--quiet",
            "--run-dir-file", out_path + ".path"]


def _kill_group(p):
    """The process and everything it started (it leads its own session)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.wait()


def run_process(proc, argv, cwd, log_path, timeout_s):
    """Run one process to completion, recording status, wall time and contention."""
    with open(log_path, "w") as log, ForeignCpu() as meter:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout_s)
            proc.status = "ok" if rc == 0 else "failed"
            if rc:
                proc.error = f"exit {rc}{exit_reason(rc)}"
        except subprocess.TimeoutExpired:
            _kill_group(p)
            proc.status, proc.error = "timeout", f"no result after {timeout_s:g} s"
        except BaseException:
            _kill_group(p)   # Ctrl-C or SIGTERM: leave no benchmark running behind us
            raise
        proc.wall_s = time.perf_counter() - t0
    proc.foreign_cpu_cores = meter.cores
    if proc.status != "ok":
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        if lines:
            proc.error += f": {lines[-1][:300]}"



def run_schedule(processes, trees, out_dir, args):
    """Run every process in order, one at a time, each from its revision's checkout (trees:
    {side: worktree}) or (calls) from this one; its output and log go under out_dir/raw."""
    for k, proc in enumerate(processes):
        ext = ".json" if proc.suite == "micro" else ""
        proc.output = os.path.join("raw", proc.unit + ext)
        proc.log = os.path.join("raw", proc.unit + ".log")
        argv = command(proc, trees, os.path.join(out_dir, proc.output), args)
        cwd = REPO_ROOT if proc.side == BOTH else trees[proc.side]
        run_process(proc, argv, cwd, os.path.join(out_dir, proc.log), args.timeout_s)
        if not args.quiet:
            busy = (f", others {proc.foreign_cpu_cores:.2f} CPUs"
                    if proc.foreign_cpu_cores is not None else "")
            print(f"[ab] {k + 1}/{len(processes)} {proc.unit}: {proc.status} in "
                  f"{proc.wall_s:.1f} s{busy}", flush=True)


def _side_of(proc, ab_dir):
    """The process's output as a gate Side (bench/gate/sides.py), or None if unusable."""
    path = os.path.join(ab_dir, proc.output)
    if proc.suite == "config":
        pointer = path + ".path"
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as f:
            path = f.read().strip()
    try:
        return load_side(path)
    except BadInput as e:
        proc.status, proc.error = "failed", f"unreadable output: {e}"
        return None


def collect(processes, ab_dir, pairs):
    """{(suite, framework, cell, metric): {side: [values of pair 0 or None, ...]}} and the
    failed processes' (suite, framework) groups per side."""
    data, failed = {}, {side: set() for side in SIDES}
    for proc in processes:
        group = (proc.suite, proc.framework)
        if proc.side == BOTH:
            _collect_interleaved(proc, ab_dir, pairs, data, failed)
            continue
        side = _side_of(proc, ab_dir) if proc.status == "ok" else None
        if side is None:
            if proc.status != "not run":
                failed[proc.side].add(group)
            continue
        for (cell, metric), groups in side.samples.items():
            status = side.cell_status.get(cell, "ok")
            if status != "ok":
                failed[proc.side].add(group)
                continue
            values = [v for g in groups for v in g]   # one process: one group
            slot = data.setdefault((*group, cell, metric),
                                   {s: [None] * pairs for s in SIDES})
            slot[proc.side][proc.pair] = values
    return data, failed


def _collect_interleaved(proc, ab_dir, pairs, data, failed):
    """A calls-mode process: one candidate ÷ base ratio per benchmark (block_ratio over its
    blocks), and which revision, if any, failed inside it."""
    group = (proc.suite, proc.framework)
    res = None
    if proc.status == "ok":
        try:
            with open(os.path.join(ab_dir, proc.output)) as f:
                res = json.load(f)
        except (OSError, ValueError) as e:
            proc.status, proc.error = "failed", f"unreadable output: {e}"
    if res is None:
        if proc.status != "not run":   # it died: neither revision's numbers can be trusted
            for side in SIDES:
                failed[side].add(group)
        return
    errors = [f"{side}: {res['sides'][side]['error']}" for side in SIDES
              if res["sides"][side]["error"]]
    for side in SIDES:
        if res["sides"][side]["error"]:
            failed[side].add(group)
    if errors:
        proc.status, proc.error = "failed", "; ".join(errors)
    for cell, blocks in res["times_s"].items():
        slot = data.setdefault((*group, cell, "time_s"),
                               {**{s: [None] * pairs for s in SIDES},
                                "ratios": [float("nan")] * pairs})
        for side in SIDES:
            slot[side][proc.pair] = [v for block in blocks[side] for v in block] or None
        slot["ratios"][proc.pair] = block_ratio(blocks["base"], blocks["candidate"])
