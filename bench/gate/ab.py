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
import os
import shutil
import signal
import sys
import time
from datetime import datetime, timezone

from bench import REPO_ROOT
from bench.gate import ab_report, interleaved
from bench.gate.ab_pairs import (CALLS, HARNESS, INTERLEAVE, MICRO_SUITE, MODELS_REGISTRY,
                                 PROCESSES, SIDES, collect, run_schedule, schedule)
from bench.gate.ab_verdicts import EXIT_OK, EXIT_REGRESSION, Result, judge_all
from bench.gate.compare import final_exit_code, parse_threshold, write_markdown
from bench.gate.revisions import (WORKING_TREE, Checkouts, repo_root, require_path,
                                  resolve)
from bench.gate.sides import BadInput
from bench.measure.calibrate import hardware, machine_id
from bench.run.matrix import ORDER_SCHEME
from bench.run.schema import known_frameworks
from models.registry import installed_frameworks

# The pairs (schedule, processes, collecting their samples): bench/gate/ab_pairs.py; the
# verdicts and the Result: bench/gate/ab_verdicts.py; its outputs: bench/gate/ab_report.py.
# This module: the command line, its checks and the run from worktrees to the Result.
__all__ = ["add_arguments", "run_ab", "run_cli", "EXIT_OK", "EXIT_REGRESSION",
           "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "CALLS", "PROCESSES", "INTERLEAVE", "SIDES",
           "DEFAULT_PAIRS", "DEFAULT_THRESHOLD", "DEFAULT_ALPHA", "DEFAULT_ROUNDS",
           "DEFAULT_WARMUP", "DEFAULT_TIMEOUT_S"]

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130
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


class Interrupted(Exception):
    """SIGINT / SIGTERM during a run: the worktrees still get removed."""


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
                   help="frameworks of the micro-suite (default: every installed one)")
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
    args.frameworks = args.frameworks or list(installed_frameworks())
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
            run_schedule(processes, trees, out_dir, args)
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
