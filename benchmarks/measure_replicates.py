#!/usr/bin/env python3
"""Do the report's intervals hold when the benchmark is run again? Measure it.

    python benchmarks/measure_replicates.py --out-dir results/replicates [--runs 10]
        [--config configs/quick.yaml] [--set runner.replicates=3 ...] [--report-only]

Runs `harness.py bench CONFIG` --runs times, one after the other (each run is what
`make bench` runs: runner.replicates processes per cell, frameworks interleaved), then for
every framework-vs-baseline ratio the report prints (training step time per loader, time per
batch per sampler setting) asks of each run i:

    does run i's 95% interval contain the median of the OTHER runs' ratios?

That is the promise an interval makes to a reader ("run it again and you will land in
here"). It prints, per ratio: how often that held, the median interval width, the spread of
the runs' point values; the same for the old interval (a bootstrap over the steps of ONE
process per framework: the first replicate), for contrast; and the wall time of a run.
Writes replicates.md and replicates.json into --out-dir (the runs go to --out-dir/runs).

Takes runs x (one `make bench`): ~30 minutes for 10 quick runs on 2 cores. Run it on a quiet
machine, never beside another benchmark. --report-only rebuilds the tables from the runs
already in --out-dir/runs.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def run_bench(config, overrides, results_dir):
    """One `harness.py bench` into results_dir; (run dir, wall seconds)."""
    run_file = os.path.join(results_dir, ".last-run")
    cmd = [sys.executable, os.path.join(REPO, "harness.py"), "bench", config, "--quiet",
           "--results-dir", results_dir, "--run-dir-file", run_file]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode == 2 or not os.path.isfile(run_file):
        raise SystemExit(f"harness.py bench failed (exit {proc.returncode}):\n{proc.stderr}")
    with open(run_file) as f:
        run_dir = f.read().strip()
    with open(os.path.join(run_dir, "wall_s.json"), "w") as f:
        json.dump({"wall_s": wall, "exit": proc.returncode}, f)
    return run_dir, wall


def ratios_of_run(run_dir, baseline="torch"):
    """{ratio name: (Ratio over processes, Ratio over the steps of replicate 1 alone)}."""
    from bench.report.load import first_replicate, load_run
    from bench.report.tables import pick_baseline, sampling_metrics, training_metrics
    from bench.stats.replicates import ratio_of_medians, ratio_of_replicates

    run = load_run(run_dir)
    one = first_replicate(run)
    out = {}
    for full, first in ((training_metrics(run), training_metrics(one)),):
        for (_, row), (_, row1) in zip(full.iterrows(), first.iterrows()):
            base = pick_baseline(full, baseline, row["variant"])
            base1 = pick_baseline(first, baseline, row1["variant"])
            if row["framework"] == baseline or base is None:
                continue
            name = f"train step, {row['variant'] or 'train'}: {row['framework']}/{baseline}"
            out[name] = (ratio_of_replicates(row["wall_s_groups"], base["wall_s_groups"]),
                         ratio_of_medians(row1["wall_s_samples"], base1["wall_s_samples"]))
    full, first = sampling_metrics(run), sampling_metrics(one)
    keys = ["sampler", "steps", "eta", "batch_size"]
    for (_, row), (_, row1) in zip(full.iterrows(), first.iterrows()):
        if row["framework"] == baseline:
            continue
        same = (full["framework"] == baseline) & (full[keys] == row[keys]).all(axis=1)
        same1 = (first["framework"] == baseline) & (first[keys] == row1[keys]).all(axis=1)
        if not same.any():
            continue
        name = (f"{row['sampler']}-{int(float(row['steps']))} b{int(float(row['batch_size']))}: "
                f"{row['framework']}/{baseline}")
        out[name] = (ratio_of_replicates(row["time_groups"], full[same].iloc[0]["time_groups"]),
                     ratio_of_medians(row1["time_groups"][0],
                                      first[same1].iloc[0]["time_groups"][0]))
    return out


def coverage(per_run):
    """per_run: [{name: (ratio, naive ratio)}] -> rows of the calibration table."""
    rows = []
    names = list(dict.fromkeys(n for r in per_run for n in r))
    for name in names:
        runs = [r[name] for r in per_run if name in r]
        values = np.array([rep.value for rep, _ in runs])
        row = {"ratio": name, "runs": len(runs), "min": float(values.min()),
               "median": float(np.median(values)), "max": float(values.max())}
        for label, idx in (("processes", 0), ("steps_of_one_process", 1)):
            hits, widths, with_ci = 0, [], 0
            for i, pair in enumerate(runs):
                r = pair[idx]
                if not (np.isfinite(r.low) and np.isfinite(r.high)):
                    continue
                with_ci += 1
                target = float(np.median(np.delete(values, i)))
                hits += r.low <= target <= r.high
                widths.append(r.high / r.low - 1)
            row[f"{label}_covered"] = hits
            row[f"{label}_with_interval"] = with_ci
            row[f"{label}_width_median"] = float(np.median(widths)) if widths else float("nan")
        row["between_cv_median"] = float(np.median([rep.cv for rep, _ in runs]))
        rows.append(row)
    return rows


def markdown(rows, walls, config, replicates):
    pct = lambda v: "-" if v != v else f"{v * 100:.0f}%"  # noqa: E731 - NaN-safe percent
    n_runs = max((r["runs"] for r in rows), default=0)
    out = [f"`{config}`, {n_runs} runs, {replicates} processes per cell per run. "
           "Covered: run i's 95% interval contains the median of the other runs' ratios.",
           "",
           "| ratio | runs' values (min / median / max) | covered, over processes | width "
           "(high/low - 1) | between-process CV | covered, steps of 1 process (old) | "
           "width (old) |",
           "|---|---|---:|---:|---:|---:|---:|"]
    tot = {"p": [0, 0], "s": [0, 0]}
    for r in rows:
        out.append(
            f"| {r['ratio']} | {r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f} | "
            f"{r['processes_covered']}/{r['processes_with_interval']} | "
            f"{pct(r['processes_width_median'])} | {pct(r['between_cv_median'])} | "
            f"{r['steps_of_one_process_covered']}/{r['steps_of_one_process_with_interval']} | "
            f"{pct(r['steps_of_one_process_width_median'])} |")
        tot["p"][0] += r["processes_covered"]
        tot["p"][1] += r["processes_with_interval"]
        tot["s"][0] += r["steps_of_one_process_covered"]
        tot["s"][1] += r["steps_of_one_process_with_interval"]
    frac = lambda h, n: f"{h}/{n} = {h / n:.0%}" if n else "-"  # noqa: E731
    out += ["", f"All ratios: intervals over processes covered {frac(*tot['p'])}; the old "
            f"intervals over the steps of one process covered {frac(*tot['s'])}."]
    if walls:
        w = np.array(walls)
        out.append(f"Wall time of one `harness.py bench` run (the matrix, without the report): "
                   f"median {np.median(w):.0f} s, min {w.min():.0f} s, max {w.max():.0f} s.")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="benchmarks/measure_replicates.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--config", default=os.path.join("configs", "quick.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="as harness.py bench --set")
    ap.add_argument("--baseline", default="torch")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.runs < 2:
        ap.error("--runs must be >= 2: coverage compares each run with the others")
    runs_dir = os.path.join(args.out_dir, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    if not args.report_only:
        for i in range(args.runs):
            run_dir, wall = run_bench(args.config, args.overrides, runs_dir)
            print(f"[replicates] run {i + 1}/{args.runs}: {run_dir} in {wall:.0f} s", flush=True)
    run_dirs = sorted(os.path.join(runs_dir, d) for d in os.listdir(runs_dir)
                      if os.path.isfile(os.path.join(runs_dir, d, "manifest.json")))
    walls, per_run, replicates = [], [], set()
    for d in run_dirs:
        with open(os.path.join(d, "manifest.json")) as f:
            replicates.add(json.load(f).get("replicates"))
        if os.path.isfile(os.path.join(d, "wall_s.json")):
            with open(os.path.join(d, "wall_s.json")) as f:
                walls.append(json.load(f)["wall_s"])
        per_run.append(ratios_of_run(d, args.baseline))
    rows = coverage(per_run)
    text = markdown(rows, walls, args.config, "/".join(map(str, sorted(replicates, key=str))))
    with open(os.path.join(args.out_dir, "replicates.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out_dir, "replicates.json"), "w") as f:
        json.dump({"rows": rows, "wall_s": walls, "runs": run_dirs}, f, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
