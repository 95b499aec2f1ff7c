#!/usr/bin/env python3
"""Run the micro-suite per framework, each in processes of its own, and merge the JSONs.

    python benchmarks/run_micro.py --out micro.json [--frameworks torch jittor]
                                   [--processes 3] [-- extra pytest args, e.g. --micro-rounds 10]

Each framework runs `pytest benchmarks --framework FW --benchmark-json=...` in a child process
(never two frameworks in one process), --processes times, frameworks interleaved in a balanced
order (AB BA BA AB: bench.run.matrix.balanced_order); each process's rounds stay one group.
Why several processes: timings shift from one process to the next (memory layout, thread
placement, what else the machine is doing) by more than they vary within one, and a gate
that saw a single process per side would take that shift for a regression. The merged file is still pytest-benchmark's format: the benchmarks of all
frameworks (their names carry the framework) and machine_info.diffbench with every
framework's versions and one calibration score from all the children's repeats.
`--combine A.json B.json ... --out C.json` pools files this script wrote earlier instead of
running anything (e.g. baseline runs taken at different times, or interleaved A/B runs).

Exit 0 when every framework produced all its benchmarks, 1 otherwise (the merged file then
holds what did finish), 2 for bad arguments.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED_BENCHMARKS = 4  # forward, train step, DDPM step, DDIM step
# Processes per framework: the units of the comparison (bench/stats/replicates.py needs >= 3 a side).
DEFAULT_PROCESSES = 3


def run_framework(framework, json_path, extra_args, timeout_s):
    cmd = [sys.executable, "-m", "pytest", os.path.join(REPO, "benchmarks"),
           "--framework", framework, f"--benchmark-json={json_path}", "-q",
           "-p", "no:cacheprovider", *extra_args]
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    from bench.measure.calibrate import ForeignCpu

    t0 = time.perf_counter()
    try:
        with ForeignCpu() as others:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"{framework}: timed out after {timeout_s:g} s"
    wall_s = time.perf_counter() - t0
    data = None
    if os.path.isfile(json_path):
        with open(json_path) as f:
            data = json.load(f)
        data["machine_info"].setdefault("diffbench", {})["foreign_cpu_cores"] = [others.cores]
    n = len(data["benchmarks"]) if data else 0
    if proc.returncode != 0 or n < EXPECTED_BENCHMARKS:
        # Jittor's silent "please rerun" exit leaves no JSON: say so instead of passing.
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        return data, (f"{framework}: pytest exit {proc.returncode}, {n}/{EXPECTED_BENCHMARKS} "
                      f"benchmarks in {wall_s:.0f} s\n{tail}")
    print(f"[micro] {framework}: {n} benchmarks in {wall_s:.0f} s; other processes used "
          f"{others.cores:.2f} CPUs meanwhile", flush=True)
    return data, None


def combine(results):
    """[(framework, pytest-benchmark dict)] -> one pytest-benchmark dict.

    Benchmarks of different frameworks are listed side by side (their names differ); the
    same benchmark from several processes is pooled: its raw samples concatenated and the
    stats recomputed by pytest-benchmark's own Stats, so the file stays in its format. The
    process boundaries are kept in extra_info.process_samples (one list of rounds per
    process): the process is the unit `harness.py compare` counts.
    """
    import numpy as np
    from pytest_benchmark.stats import Stats

    first = results[0][1]
    merged = {k: v for k, v in first.items() if k != "benchmarks"}
    by_name = {}
    for _, data in results:
        for b in data["benchmarks"]:
            by_name.setdefault(b["name"], []).append(b)
    merged["benchmarks"] = []
    for parts in by_name.values():
        b = dict(parts[0])
        if len(parts) > 1:
            stats = Stats()
            for part in parts:
                for v in part["stats"]["data"]:
                    stats.update(v)
            b["stats"] = dict(stats.as_dict(), data=list(stats.data))
        groups = [g for part in parts for g in
                  (part.get("extra_info") or {}).get("process_samples") or [part["stats"]["data"]]]
        b["extra_info"] = dict(b.get("extra_info") or {}, processes=len(groups),
                               process_samples=groups)
        merged["benchmarks"].append(b)

    infos = [data["machine_info"].get("diffbench", {}) for _, data in results]
    ours = dict(infos[0])
    ours.pop("framework", None)
    # inputs are single processes (one framework) or earlier merged files (several)
    ours["frameworks"] = list(dict.fromkeys(
        fw for (name, _), info in zip(results, infos)
        for fw in (info.get("frameworks") or [info.get("framework") or name])))
    ours["processes"] = max(b["extra_info"]["processes"] for b in merged["benchmarks"])
    ours["versions"] = {}
    for info in infos:
        ours["versions"].update(info.get("versions") or {})
    # one entry per process: how many CPUs other processes kept busy while it ran
    ours["foreign_cpu_cores"] = [c for info in infos for c in info.get("foreign_cpu_cores", [])]
    cals = [info["calibration"] for info in infos if info.get("calibration")]
    if cals:
        # every child calibrated itself; one score from all their repeats
        times = [t for c in cals for t in c["times_s"]]
        ours["calibration"] = dict(cals[0], score_s=float(np.median(times)), times_s=times,
                                   repeats=len(times))
    merged["machine_info"] = dict(first["machine_info"], diffbench=ours)
    return merged


def combine_files(paths, out):
    """Pool/merge pytest-benchmark JSON files written by this suite into `out`."""
    results = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        fw = (data.get("machine_info", {}).get("diffbench") or {}).get("framework") or path
        results.append((fw, data))
    write_json(out, combine(results))
    return out


def write_json(path, obj):
    from bench.records.results import write_json_atomic  # the project's one atomic JSON writer

    write_json_atomic(path, obj)


def split_passthrough(argv):
    """(own args, args after `--`): what follows `--` goes to pytest unchanged."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def main(argv=None):
    sys.path.insert(0, REPO)
    from bench.run.matrix import balanced_order
    from models.registry import FRAMEWORKS, installed_frameworks

    argv, extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="benchmarks/run_micro.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="merged pytest-benchmark JSON to write")
    ap.add_argument("--frameworks", nargs="+", default=list(installed_frameworks()))
    ap.add_argument("--processes", type=int, default=DEFAULT_PROCESSES,
                    help="processes per framework, run alternately and pooled: each side of "
                         "a comparison then spans more time and more process start-ups "
                         f"(default {DEFAULT_PROCESSES})")
    ap.add_argument("--timeout-s", type=float, default=900.0, help="per process")
    ap.add_argument("--combine", nargs="+", metavar="JSON",
                    help="pool these micro JSONs into --out; runs nothing")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code not in (0, None) else 0
    unknown = [f for f in args.frameworks if f not in FRAMEWORKS]
    if unknown:
        print(f"error: --frameworks: unknown {unknown}; valid: {list(FRAMEWORKS)}",
              file=sys.stderr)
        return 2
    if args.combine:
        missing = [p for p in args.combine if not os.path.isfile(p)]
        if missing:
            print(f"error: --combine: no such file {missing[0]}", file=sys.stderr)
            return 2
        combine_files(args.combine, args.out)
        print(f"[micro] wrote {args.out}", flush=True)
        return 0
    if args.processes < 1:
        print(f"error: --processes {args.processes}: must be >= 1", file=sys.stderr)
        return 2
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        print(f"error: --out {args.out}: folder {out_dir} does not exist", file=sys.stderr)
        return 2

    results, errors = [], []
    with tempfile.TemporaryDirectory(prefix="micro-") as tmp:
        # AB BA BA AB...: slow drifts of the machine hit every framework alike
        for i, order in enumerate(balanced_order(args.frameworks, args.processes)):
            for fw in order:
                data, err = run_framework(fw, os.path.join(tmp, f"{fw}-{i}.json"), extra,
                                          args.timeout_s)
                if err:
                    errors.append(err)
                if data and data.get("benchmarks"):
                    results.append((fw, data))
    if results:
        write_json(args.out, combine(results))
        print(f"[micro] wrote {args.out}", flush=True)
    for err in errors:
        print(f"[micro] FAILED {err}", file=sys.stderr)
    return 1 if errors or not results else 0


if __name__ == "__main__":
    sys.exit(main())
