"""The A/B regression gate: two git revisions measured in one job, interleaved, per pair.

    harness.py ab BASE [CANDIDATE] [--pairs N] [--threshold 5%] [--alpha 0.05]
                  [--frameworks torch jittor] [--config CFG] [--no-micro] [--out DIR]
                  [--report-only] [-- extra micro-suite arguments, e.g. --micro-rounds 10]
    make regress BASE=<rev>          (CANDIDATE = the working tree)

Why: a baseline stored in another session is measured on another minute of a shared VM;
unchanged code drifts 14-31% between sessions here, more than the slowdowns worth catching.
Tools people trust for this (asv continuous, pyperf compare_to) measure both sides in the same
job, alternating. So does this:

1. BASE and CANDIDATE (default: the working tree, uncommitted changes included) are checked
   out into temporary git worktrees (bench/gate/revisions.py), run with this checkout's
   interpreter: one .venv and one Jittor cache, no second setup.
2. N pairs of short processes, A B / B A in the Thue-Morse order (AB BA BA AB ...,
   bench.run.matrix.balanced_order): per pair and framework, each revision's micro-suite
   (its own benchmarks/run_micro.py, one process) back to back; with --config, also one
   `harness.py bench CONFIG` run per revision and pair (runner.replicates=1).
3. Per benchmark, per pair: candidate process median / base process median. The pairs are
   the units: a t interval over their log ratios and a verdict against the threshold
   (bench.stats.replicates.judge_pairs): regression, improvement, unchanged, inconclusive.
4. Output in the run folder (default results/ab-<time>-<base>-<candidate>/): ab.json (all of
   it), ab.md (a pull-request comment), ab.txt (the plain table, also printed), ab.html (with
   the per-pair ratio plot, drawn with the report's rendering), raw/ (every process's output
   and log).

Exit status: 1 on a regression or when the candidate's suite failed where the base's did not
(0 with --report-only); 2 on bad input (one line; nothing is left behind); 130 when
interrupted. Worktrees are removed on every exit path.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from bench import REPO_ROOT
from bench.gate import interleaved
from bench.gate.compare import Verdicts, final_exit_code, parse_threshold, write_markdown
from bench.gate.revisions import (WORKING_TREE, Checkouts, repo_root, require_path,
                                  resolve)
from bench.gate.sides import BadInput, load_side
from bench.measure.calibrate import ForeignCpu, hardware, machine_id
from bench.run.matrix import ORDER_SCHEME, balanced_order
from bench.run.runner import exit_reason
from bench.run.schema import known_frameworks
from bench.stats.replicates import (IMPROVEMENT, INCONCLUSIVE, REGRESSION, UNCHANGED,
                                    block_ratio, judge_pairs, pair_ratios)

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
MICRO_SUITE = "benchmarks/run_micro.py"
MODELS_REGISTRY = "models/registry.py"   # what the interleaved worker imports of a revision
HARNESS = "harness.py"
# --interleave calls (default): a pair is ONE process per framework running both revisions'
# models, calls alternated (bench/gate/interleaved.py); processes: a pair is two processes,
# one per revision, each running its own micro-suite.
CALLS, PROCESSES = "calls", "processes"
INTERLEAVE = (CALLS, PROCESSES)
# Defaults chosen from benchmarks/measure_ab.py on this 2-core VM (docs/REGRESSION.md).
DEFAULT_PAIRS = {CALLS: 4, PROCESSES: 10}
DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.05
# Measured micro rounds per process (processes: the suite's own default) or per revision and
# block (calls). Warm-up, processes: a process's first ~1-2 s run slower here (its first
# benchmark measured 17-18 ms a call for 10 rounds, then 13.5 ms), far beyond Jittor's
# compile; calls: both revisions share that start, per block a few calls settle a new instance.
DEFAULT_ROUNDS = {CALLS: interleaved.DEFAULT_ROUNDS, PROCESSES: 15}
DEFAULT_WARMUP = {CALLS: interleaved.DEFAULT_WARMUP, PROCESSES: 10}
DEFAULT_TIMEOUT_S = 600.0    # per process
SIDES = ("base", "candidate")
FAILED_IN_CANDIDATE = "failed in candidate"
FAILED_IN_BASE = "failed in base"
FAILED_IN_BOTH = "failed in both"     # nothing measured: the gate cannot pass it
BOTH = "both"
# Other processes using more CPUs than this during one of ours: its timing is suspect.
BUSY_CPUS = 0.25


class Interrupted(Exception):
    """SIGINT / SIGTERM during a run: the worktrees still get removed."""


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


@dataclass
class Row:
    """One benchmark's verdict: the judgement over pairs, or why there is none."""

    suite: str
    framework: str
    cell: str
    metric: str
    verdict: str
    pair_ratios: list = field(default_factory=list)  # per pair; None: a process failed
    change: float = None
    low: float = None
    high: float = None
    p_value: float = None
    detectable: float = None
    pair_cv: float = None
    position_effect: float = None   # first process of a pair vs second, ratio - 1
    base_median_s: float = None     # median over pairs of each side's process median
    candidate_median_s: float = None
    reason: str = ""

    @property
    def name(self):
        return self.cell if self.metric == "time_s" else f"{self.cell} {self.metric}"


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


def judge_all(data, failed, threshold, alpha, pairs):
    # which revision ran first in each pair: the crossover analysis removes that effect
    # (calls mode: A B B A inside every block already balances it: a plain paired t)
    candidate_first = [order[0] == "candidate" for order in balanced_order(SIDES, pairs)]
    rows = []
    for (suite, fw, cell, metric), by_side in data.items():
        if "ratios" in by_side:
            j = judge_pairs(by_side["ratios"], threshold, alpha)
            ratios = np.asarray(by_side["ratios"], dtype=float)
        else:
            ratios = pair_ratios(by_side["base"], by_side["candidate"])
            j = judge_pairs(ratios, threshold, alpha, candidate_first)
        verdict, reason = j.verdict, j.reason
        if (suite, fw) in failed["candidate"] and (suite, fw) not in failed["base"]:
            verdict = FAILED_IN_CANDIDATE
            reason = "a candidate process failed where the base's did not (see raw/ logs)"
        elif (suite, fw) in failed["base"] and verdict == INCONCLUSIVE:
            reason = (reason + "; " if reason else "") + "base processes failed"
        meds = {s: [float(np.median(v)) for v in by_side[s] if v] for s in SIDES}
        rows.append(Row(suite, fw, cell, metric, verdict,
                        [float(r) if np.isfinite(r) else None for r in ratios],
                        j.change, j.low, j.high, j.p_value, j.detectable, j.pair_cv,
                        j.position_effect,
                        float(np.median(meds["base"])) if meds["base"] else None,
                        float(np.median(meds["candidate"])) if meds["candidate"] else None,
                        reason))
    # groups that produced nothing on either side still get a row: never silent
    seen = {(r.suite, r.framework) for r in rows}
    for group in sorted((failed["base"] | failed["candidate"]) - seen):
        both = group in failed["base"] and group in failed["candidate"]
        verdict = FAILED_IN_BOTH if both else (
            FAILED_IN_CANDIDATE if group in failed["candidate"] else FAILED_IN_BASE)
        rows.append(Row(*group, "*", "*", verdict, reason="no process of this suite "
                        "produced a result" + (" on either side" if both else "")))
    return rows


@dataclass
class Result(Verdicts):
    """Everything an A/B run found: written to ab.json, rendered by bench/gate/ab_report.py."""

    base: dict
    candidate: dict
    settings: dict
    machine: dict
    processes: list
    rows: list
    started_at: str
    wall_s: float
    out_dir: str
    interrupted: bool = False

    @property
    def candidate_failures(self):
        """Rows the candidate broke, and rows nothing could be measured for (a gate that
        measured nothing must not pass)."""
        return [r for r in self.rows if r.verdict in (FAILED_IN_CANDIDATE, FAILED_IN_BOTH)]

    def busy_processes(self):
        return [p for p in self.processes
                if p.foreign_cpu_cores is not None and p.foreign_cpu_cores > BUSY_CPUS]

    def exit_code(self):
        return EXIT_REGRESSION if self.regressions or self.candidate_failures else EXIT_OK

    def to_dict(self):
        d = asdict(self)
        d["exit_code"] = self.exit_code()
        d["counts"] = {v: self.count(v) for v in (REGRESSION, IMPROVEMENT, UNCHANGED,
                                                 INCONCLUSIVE, FAILED_IN_CANDIDATE,
                                                 FAILED_IN_BASE, FAILED_IN_BOTH)}
        return d


# ------------------------------------------------------------------------------------ CLI

def add_arguments(p):
    p.add_argument("base", help="the reference revision (branch, tag, sha, HEAD~1, ...)")
    p.add_argument("candidate", nargs="?", default=WORKING_TREE,
                   help="the revision under test (default: the working tree, uncommitted "
                        "changes included)")
    p.add_argument("--interleave", choices=INTERLEAVE, default=CALLS,
                   help="calls (default): one process per pair and framework runs both "
                        "revisions' models, calls alternated A B B A in blocks of fresh "
                        "instances; processes: each revision in its own processes, its own "
                        "micro-suite (also sees process-wide settings: threads, flags)")
    p.add_argument("--pairs", type=int, default=None,
                   help=f"A/B pairs per framework (default {DEFAULT_PAIRS[CALLS]} with calls, "
                        f"{DEFAULT_PAIRS[PROCESSES]} with processes; the verdict needs >= 3)")
    p.add_argument("--blocks", type=int, default=interleaved.DEFAULT_BLOCKS,
                   help="calls: blocks of fresh instances per process (default "
                        f"{interleaved.DEFAULT_BLOCKS})")
    p.add_argument("--threshold", default=f"{DEFAULT_THRESHOLD * 100:g}%",
                   help="smallest change that counts, as 5%% or 0.05 (default "
                        f"{DEFAULT_THRESHOLD * 100:g}%%)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"significance level of the t-test over pairs (default {DEFAULT_ALPHA})")
    p.add_argument("--frameworks", nargs="+", default=None,
                   help="frameworks of the micro-suite (default: all registered)")
    p.add_argument("--rounds", type=int, default=None,
                   help="measured micro rounds per process, or per revision and block with "
                        f"calls (default {DEFAULT_ROUNDS[PROCESSES]}, calls "
                        f"{DEFAULT_ROUNDS[CALLS]})")
    p.add_argument("--warmup", type=int, default=None,
                   help="unmeasured micro rounds per benchmark first (default "
                        f"{DEFAULT_WARMUP[PROCESSES]}, calls {DEFAULT_WARMUP[CALLS]} a block)")
    p.add_argument("--config", metavar="CFG",
                   help="also run this harness config once per revision and pair")
    p.add_argument("--no-micro", action="store_true", help="only the --config runs")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"per process (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--out", metavar="DIR",
                   help="the A/B folder (default results/ab-<time>-<base>-<candidate>)")
    p.add_argument("--markdown", metavar="FILE",
                   help="also copy the pull-request markdown to FILE ('-' = stdout)")
    p.add_argument("--report-only", action="store_true",
                   help="print the verdicts but exit 0 (a noisy shared CI machine)")
    p.add_argument("--quiet", action="store_true", help="no per-process progress lines")
    # harness.py hands over what follows `--` as args.micro_args: every micro-suite process
    # gets it (e.g. -- --micro-set train.batch_size=16)
    return p


def _validate(args, repo):
    threshold = parse_threshold(args.threshold)
    mode = args.interleave
    args.pairs = DEFAULT_PAIRS[mode] if args.pairs is None else args.pairs
    args.rounds = DEFAULT_ROUNDS[mode] if args.rounds is None else args.rounds
    args.warmup = DEFAULT_WARMUP[mode] if args.warmup is None else args.warmup
    if args.blocks < 1:
        raise BadInput(f"--blocks {args.blocks}: must be >= 1")
    if not 0 < args.alpha < 1:
        raise BadInput(f"--alpha {args.alpha}: must be in (0, 1), e.g. 0.05")
    if args.pairs < 1:
        raise BadInput(f"--pairs {args.pairs}: must be >= 1 (>= 3 for a verdict)")
    if args.rounds < 1:
        raise BadInput(f"--rounds {args.rounds}: must be >= 1")
    if args.warmup < 0:
        raise BadInput(f"--warmup {args.warmup}: must be >= 0")
    if args.timeout_s <= 0:
        raise BadInput(f"--timeout-s {args.timeout_s}: must be > 0")
    known = list(known_frameworks())
    args.frameworks = args.frameworks or known
    unknown = [f for f in args.frameworks if f not in known]
    if unknown:
        raise BadInput(f"--frameworks: unknown {unknown}; valid: {known}")
    if args.no_micro and not args.config:
        raise BadInput("--no-micro: nothing left to run; give --config CFG")
    if args.config:
        if not os.path.isfile(args.config):
            raise BadInput(f"--config {args.config}: no such file")
        args.config = os.path.abspath(args.config)
    args.micro_args = list(getattr(args, "micro_args", None) or [])
    if args.micro_args and args.no_micro:
        raise BadInput("arguments after -- go to the micro-suite, but --no-micro is set")
    if mode == CALLS and not args.no_micro:
        _, unknown = interleaved.micro_parser().parse_known_args(args.micro_args)
        if unknown:
            raise BadInput(f"after --: {' '.join(unknown)} is not an option of the interleaved "
                           "micro-suite (--micro-config, --micro-set, --micro-batch); "
                           "--interleave processes passes anything to run_micro.py")
    base, cand = resolve(repo, args.base), resolve(repo, args.candidate)
    for rev in (base, cand):
        if args.no_micro:
            pass
        elif mode == CALLS:
            require_path(repo, rev, MODELS_REGISTRY, "it predates the model registry the "
                         "interleaved worker imports; choose a later revision")
        else:
            require_path(repo, rev, MICRO_SUITE, "it predates the micro-suite; choose a "
                         "later revision")
        if args.config:
            require_path(repo, rev, HARNESS, "it cannot run a harness config")
    return threshold, base, cand


def _default_out(base, cand):
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    c = "worktree" if cand.is_working_tree else cand.sha[:7]
    return os.path.join(REPO_ROOT, "results", f"ab-{stamp}-{base.sha[:7]}-{c}")


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_ab(args):
    """Parse-validated args -> (Result, exit code). Raises BadInput before anything is made."""
    repo = repo_root(REPO_ROOT)
    threshold, base, cand = _validate(args, repo)
    out_dir = os.path.abspath(args.out or _default_out(base, cand))
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise BadInput(f"--out {out_dir}: exists and is not empty; give a new folder")
    micro = not args.no_micro
    processes = schedule(args.pairs, args.frameworks, micro, bool(args.config),
                         args.interleave)
    order = "pairs; " + ORDER_SCHEME.replace("every workload's frameworks",
                                             "the two revisions of each framework")
    if args.interleave == CALLS:
        order = (f"pairs, one process per framework holding both revisions; in it "
                 f"{args.blocks} block(s) of fresh instances, each opened by base and "
                 "candidate in the Thue-Morse order, every benchmark's calls A B B A ...; "
                 "the revision opening a process's first block alternates the same way")
    settings = {"pairs": args.pairs, "threshold": threshold, "alpha": args.alpha,
                "frameworks": args.frameworks if micro else [], "interleave": args.interleave,
                "blocks": args.blocks if args.interleave == CALLS else None,
                "rounds": args.rounds, "warmup": args.warmup, "micro_args": args.micro_args,
                "config": args.config, "timeout_s": args.timeout_s, "order": order}
    hw = hardware()
    machine = dict(hw, machine_id=machine_id(hw))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    created = not os.path.exists(out_dir)
    os.makedirs(os.path.join(out_dir, "raw"), exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    # Ctrl-C raises KeyboardInterrupt even where SIGINT came in ignored (a job started with
    # `&` from a script inherits SIG_IGN, and Python then installs no handler of its own)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = False
    try:
        with Checkouts(repo) as co:
            trees = {"base": co.tree(base), "candidate": co.tree(cand)}
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
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    except BadInput:
        if created:  # bad input found late (a worktree git refused): leave nothing behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    data, failed = collect(processes, out_dir, args.pairs)
    rows = judge_all(data, failed, threshold, args.alpha, args.pairs)
    result = Result(base.to_dict(), cand.to_dict(), settings, machine, processes, rows,
                    started, time.perf_counter() - t0, out_dir, interrupted)
    return result


def run_cli(args):
    from bench.gate import ab_report  # it imports this module: a top-level import would cycle

    try:
        result = run_ab(args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    paths = ab_report.write_all(result)
    print(paths["text"].read_text(), end="")
    if args.markdown and not write_markdown(paths["markdown"].read_text(), args.markdown):
        return EXIT_BAD_INPUT
    print(f"ab: {result.out_dir} (ab.md for a pull request, ab.html with the plot)")
    if result.interrupted:
        print("ab: interrupted; the worktrees were removed, the verdicts cover the processes "
              "that finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    return final_exit_code(result.exit_code(), args.report_only)
