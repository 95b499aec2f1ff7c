#!/usr/bin/env python3
"""Choose the gate's threshold from data: how much do repeated micro runs differ on this
machine, and which injected slowdowns does the gate catch?

    python benchmarks/measure_gate.py --out-dir /tmp/gate [--repeats torch=3 jittor=2]
                                      [--slowdowns 0.05 0.1 0.2] [--slowdown-frameworks torch]
                                      [--processes 3]
                                      [-- extra micro args]

1. Runs benchmarks/run_micro.py REPEATS times per framework, unchanged (each run is what
   `make regress` would produce), and reports per benchmark: the spread inside a run
   (IQR/median, coefficient of variation of the pooled rounds), the spread of the run medians
   (their CV and the largest pairwise change), and how many run pairs the gate would flag at
   the given threshold/alpha (false alarms: all should be "unchanged").
2. Runs it once more per slowdown with --micro-inject-slowdown S (every call sleeps S x its own
   time) and compares with every unchanged run: the fraction flagged as a regression.
Writes the raw JSONs and gate-report.md into --out-dir; prints the markdown. Takes minutes:
run it on a quiet machine, never beside other benchmarks.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_micro(out, framework, extra, processes):
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "run_micro.py"), "--out", out,
           "--frameworks", framework, "--processes", str(processes), "--", *extra]
    print(f"[gate] {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"run_micro failed for {framework} (exit {proc.returncode})")
    return out


def spread_rows(paths, threshold, alpha):
    import numpy as np

    from bench.gate.sides import load_side
    from bench.stats.replicates import IMPROVEMENT, REGRESSION, judge

    sides = [load_side(p) for p in paths]
    rows = []
    for key in sides[0].samples:
        groups = [s.samples[key] for s in sides if key in s.samples]  # per run: its processes
        runs = [np.concatenate([np.asarray(g, dtype=float) for g in run]) for run in groups]
        medians = np.array([np.median(r) for r in runs])
        within_iqr = [float(np.subtract(*np.percentile(r, [75, 25])) / np.median(r))
                      for r in runs]
        within_cv = [float(np.std(r, ddof=1) / np.mean(r)) for r in runs]
        pair_changes, alarms = [], 0
        for a, b in itertools.combinations(range(len(runs)), 2):
            j = judge(groups[a], groups[b], threshold, alpha)
            pair_changes.append(abs(j.change))
            alarms += j.verdict in (REGRESSION, IMPROVEMENT)
        rows.append({"benchmark": key[0], "runs": len(runs),
                     "median_ms": float(np.median(medians)) * 1e3,
                     "within_iqr_over_median": float(np.median(within_iqr)),
                     "within_cv": float(np.median(within_cv)),
                     "between_cv": float(np.std(medians, ddof=1) / np.mean(medians))
                     if len(runs) > 1 else float("nan"),
                     "max_pair_change": max(pair_changes) if pair_changes else float("nan"),
                     "false_alarms": f"{alarms}/{len(pair_changes)}"})
    return rows


def detection_rows(base_paths, slow_paths, threshold, alpha):
    from bench.gate.sides import load_side
    from bench.stats.replicates import REGRESSION, judge

    rows = []
    for slowdown, path in slow_paths.items():
        slow = load_side(path)
        for key in slow.samples:
            flagged, changes = 0, []
            for bp in base_paths:
                base = load_side(bp)
                if key not in base.samples:
                    continue
                j = judge(base.samples[key], slow.samples[key], threshold, alpha)
                flagged += j.verdict == REGRESSION
                changes.append(j.change)
            rows.append({"slowdown": slowdown, "benchmark": key[0],
                         "measured_change": sum(changes) / len(changes),
                         "flagged": f"{flagged}/{len(changes)}"})
    return rows


def markdown(spread, detect, threshold, alpha):
    pct = lambda v: "-" if v != v else f"{v * 100:.1f}%"  # noqa: E731 - NaN-safe percent
    out = [f"Spread of repeated runs (gate at threshold {threshold * 100:g}%, alpha {alpha:g})",
           "", "| benchmark | runs | median | IQR/median in a run | CV in a run | CV of run "
           "medians | largest change between runs | false alarms (pairs) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in spread:
        out.append(f"| `{r['benchmark']}` | {r['runs']} | {r['median_ms']:.1f} ms | "
                   f"{pct(r['within_iqr_over_median'])} | {pct(r['within_cv'])} | "
                   f"{pct(r['between_cv'])} | {pct(r['max_pair_change'])} | "
                   f"{r['false_alarms']} |")
    if detect:
        out += ["", "Injected slowdowns (every call sleeps S x its own time), compared with "
                "each unchanged run", "", "| injected | benchmark | measured change (mean) | "
                "flagged as regression |", "|---:|---|---:|---:|"]
        for r in detect:
            out.append(f"| {r['slowdown'] * 100:g}% | `{r['benchmark']}` | "
                       f"{pct(r['measured_change'])} | {r['flagged']} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    sys.path.insert(0, REPO)
    from benchmarks.run_micro import split_passthrough

    argv, extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="benchmarks/measure_gate.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--repeats", nargs="+", default=["torch=3", "jittor=2"],
                    metavar="FW=N")
    ap.add_argument("--slowdowns", nargs="*", type=float, default=[0.05, 0.10, 0.20])
    ap.add_argument("--slowdown-frameworks", nargs="*", default=["torch"])
    ap.add_argument("--processes", type=int, default=3, help="run_micro.py --processes")
    ap.add_argument("--threshold", type=float, default=0.10)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--report-only", action="store_true",
                    help="do not run anything: rebuild the report from --out-dir's JSONs")
    args = ap.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    repeats = {}
    for item in args.repeats:
        fw, _, n = item.partition("=")
        repeats[fw] = int(n or 1)

    spread, detect = [], []
    for fw, n in repeats.items():
        base = [os.path.join(args.out_dir, f"{fw}-run{i}.json") for i in range(n)]
        slow = {s: os.path.join(args.out_dir, f"{fw}-slow{s:g}.json") for s in args.slowdowns}
        if fw not in args.slowdown_frameworks:
            slow = {}
        if not args.report_only:
            for p in base:
                run_micro(p, fw, extra, args.processes)
            for s, p in slow.items():
                run_micro(p, fw, [*extra, "--micro-inject-slowdown", str(s)], args.processes)
        spread += spread_rows(base, args.threshold, args.alpha)
        detect += detection_rows(base, {s: p for s, p in slow.items() if os.path.isfile(p)},
                                 args.threshold, args.alpha)
    text = markdown(spread, detect, args.threshold, args.alpha)
    with open(os.path.join(args.out_dir, "gate-report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out_dir, "gate-report.json"), "w") as f:
        json.dump({"spread": spread, "detection": detect}, f, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
