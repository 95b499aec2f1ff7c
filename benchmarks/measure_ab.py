#!/usr/bin/env python3
"""Operating characteristics of the A/B gate (`harness.py ab`) on this machine, measured.

    python benchmarks/measure_ab.py --out-dir results/measure-ab [--null-runs 20]
           [--runs 10] [--slowdowns 0.05 0.10 0.20] [--runs-per-slowdown 10 10 10]
           [--interleave calls|processes] [--pairs N] [--blocks N] [--threshold 5%]
           [--alpha 0.05] [--frameworks torch jittor] [--rounds N] [--warmup N]
           [--summary-only]

1. A throwaway clone of this repository's HEAD (`git clone --shared`, in --out-dir) gets one
   commit per slowdown: INJECTED_EXTRA_CONVS in models/pt/unet.py and models/jt/unet.py set
   so that the UNet forward does that much more real work (the count is calibrated first, per
   framework, by timing the forward with and without extra convolutions, interleaved in one
   process). A change in the candidate's code, not a knob of the measuring process.
2. It runs the real gate from that clone: --null-runs times HEAD against HEAD (false alarms)
   and --runs times HEAD against each slowdown commit (detection), the kinds interleaved over
   time (null, 5%, 10%, 20%, null, ...) so the machine's drift falls on all of them.
3. It summarises: false alarms (gate runs with any regression or improvement verdict, and per
   benchmark), detections per benchmark, the slowdown each commit really caused (the geometric
   mean of the gate's estimates over its runs: precise, since it pools every pair), wall time
   per gate run. summary.json and summary.md in --out-dir, the markdown also printed.

Each gate run's folder is kept; a re-run with the same --out-dir skips finished gate runs,
so the measurement can be resumed. Run it on a quiet machine, never beside other work.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

UNET_FILES = {"torch": "models/pt/unet.py", "jittor": "models/jt/unet.py"}
CONSTANT = "\nINJECTED_EXTRA_CONVS = 0\n"
CALIBRATION_UNITS = 8      # extra convs timed against none
CALIBRATION_ROUNDS = 30

# Timed in a child (one framework per process), in the clone: the quick config's UNet forward
# with 0 and with CALIBRATION_UNITS extra convolutions, alternating, after warm-up.
CALIBRATE_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, ".")
from bench.run import config as C
from bench.measure.env import usable_cpus
from models.common.weights import init_weights
from models.registry import load_backend
fw, units, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = C.load_config("configs/quick.yaml", check_paths=False)
unet_spec, diff_spec, optim_spec = C.build_specs(cfg)
Backend = load_backend(fw)
b = Backend(unet_spec, diff_spec, optim_spec, device="cpu", threads=cfg["threads"] or usable_cpus(),
            seed=0)
b.load_weights(init_weights(unet_spec, seed=0))
unet_module = sys.modules["models.pt.unet" if fw == "torch" else "models.jt.unet"]
rng = np.random.default_rng(0)
bs = cfg["train"]["batch_size"]
x = b.to_device(rng.uniform(-1, 1, (bs, unet_spec.in_channels, unet_spec.image_size,
                                    unet_spec.image_size)).astype(np.float32))
t = rng.integers(0, diff_spec.timesteps, bs).astype(np.int64)
times = {0: [], units: []}
for k in range(rounds + 3):
    for n in ((0, units) if k % 2 == 0 else (units, 0)):
        unet_module.INJECTED_EXTRA_CONVS = n
        t0 = time.perf_counter(); out = b.eps(x, t, ema=False); b.sync()
        if k >= 3:
            times[n].append(time.perf_counter() - t0)
print(json.dumps({"base_s": float(np.median(times[0])), "extra_s": float(np.median(times[units]))}))
"""


def sh(cmd, cwd, **kw):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def make_clone(out_dir):
    clone = os.path.join(out_dir, "clone")
    if not os.path.isdir(clone):
        sh(["git", "clone", "--quiet", "--shared", REPO, clone], cwd=out_dir)
    return clone


def calibrate(clone, frameworks):
    """Per framework: the forward's extra time per extra convolution, as a fraction."""
    cost = {}
    for fw in frameworks:
        out = sh([sys.executable, "-c", CALIBRATE_CHILD, fw, str(CALIBRATION_UNITS),
                  str(CALIBRATION_ROUNDS)], cwd=clone, timeout=900)
        r = json.loads(out.strip().splitlines()[-1])
        cost[fw] = max(1e-4, (r["extra_s"] / r["base_s"] - 1) / CALIBRATION_UNITS)
        print(f"[measure-ab] {fw}: forward {r['base_s'] * 1e3:.1f} ms, +{CALIBRATION_UNITS} "
              f"convs {r['extra_s'] * 1e3:.1f} ms: {cost[fw] * 100:.2f}% a conv", flush=True)
    return cost


def slowdown_branch(clone, slowdown, cost):
    """A commit in the clone whose UNets do `slowdown` more work; returns (branch, counts)."""
    branch = f"slow-{round(slowdown * 100)}"
    counts = {fw: max(1, round(slowdown / c)) for fw, c in cost.items()}
    have = subprocess.run(["git", "rev-parse", "--verify", "--quiet", branch], cwd=clone,
                          capture_output=True, text=True)
    if have.returncode == 0:
        return branch, counts
    sh(["git", "checkout", "--quiet", "-B", branch, "origin/HEAD"], cwd=clone)
    for fw, n in counts.items():
        path = os.path.join(clone, UNET_FILES[fw])
        text = open(path).read()
        if CONSTANT not in text:
            raise SystemExit(f"{path}: no {CONSTANT.strip()!r} to change")
        open(path, "w").write(text.replace(CONSTANT, f"\nINJECTED_EXTRA_CONVS = {n}\n"))
    sh(["git", "-c", "user.name=measure-ab", "-c", "user.email=measure-ab@localhost",
        "commit", "--quiet", "-am", f"inject a {slowdown:.0%} slower UNet forward {counts}"],
       cwd=clone)
    sh(["git", "checkout", "--quiet", "--detach", "origin/HEAD"], cwd=clone)
    return branch, counts


def gate_run(clone, out, base, cand, args):
    if os.path.isfile(os.path.join(out, "ab.json")):
        with open(os.path.join(out, "ab.json")) as f:
            done = json.load(f)
        if not done.get("interrupted"):
            return done
        import shutil
        shutil.rmtree(out)
    cmd = [sys.executable, os.path.join(clone, "harness.py"), "ab", base, cand, "--out", out,
           "--interleave", args.interleave, "--pairs", str(args.pairs), "--blocks",
           str(args.blocks), "--threshold", args.threshold, "--alpha", str(args.alpha),
           "--rounds", str(args.rounds), "--warmup", str(args.warmup), "--report-only",
           "--quiet", "--frameworks", *args.frameworks]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=clone, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gate run {out} failed (exit {proc.returncode}):\n{proc.stderr}")
    with open(os.path.join(out, "ab.json")) as f:
        res = json.load(f)
    print(f"[measure-ab] {os.path.basename(out)}: {json.dumps(res['counts'])} in "
          f"{time.time() - t0:.0f} s", flush=True)
    return res


ALARMS = ("regression", "improvement")


def summarise(runs, args, counts_by_kind, cost):
    """runs: {kind: [ab.json dicts]} -> summary dict."""
    out = {"settings": {k: getattr(args, k) for k in ("interleave", "pairs", "blocks",
                                                        "threshold", "alpha", "rounds",
                                                        "warmup", "frameworks")},
           "conv_cost": cost, "kinds": {}}
    for kind, results in runs.items():
        if not results:
            continue
        per_bench = {}
        for res in results:
            for r in res["rows"]:
                b = per_bench.setdefault(r["cell"], {"verdicts": [], "changes": [],
                                                     "widths": []})
                b["verdicts"].append(r["verdict"])
                if r["change"] is not None and math.isfinite(r["change"]):
                    b["changes"].append(r["change"])
                if r["low"] is not None and math.isfinite(r["low"]):
                    b["widths"].append(r["high"] - r["low"])
        walls = sorted(res["wall_s"] for res in results)
        bench = {}
        for name, b in per_bench.items():
            logs = [math.log1p(c) for c in b["changes"]]
            bench[name] = {
                "runs": len(b["verdicts"]),
                "regression": b["verdicts"].count("regression"),
                "improvement": b["verdicts"].count("improvement"),
                "unchanged": b["verdicts"].count("unchanged"),
                "inconclusive": b["verdicts"].count("inconclusive"),
                "true_change": math.expm1(sum(logs) / len(logs)) if logs else None,
                "median_interval_width": (sorted(b["widths"])[len(b["widths"]) // 2]
                                          if b["widths"] else None)}
        out["kinds"][kind] = {
            "runs": len(results), "extra_convs": counts_by_kind.get(kind),
            "runs_with_alarm": sum(any(r["verdict"] in ALARMS for r in res["rows"])
                                   for res in results),
            "runs_with_regression": sum(any(r["verdict"] == "regression" for r in res["rows"])
                                        for res in results),
            "wall_s_median": walls[len(walls) // 2], "wall_s_max": walls[-1],
            "benchmarks": bench}
    return out


def pair_noise(null_results, pairs, crossover=True):
    """Per benchmark: the SD of a pair's log ratio on unchanged code, pooled over the null
    gate runs: residuals from each order's mean (crossover: the position effect removed) or,
    for calls-mode runs (order balanced inside each process), from each run's mean."""
    import numpy as np

    from bench.gate.ab_pairs import SIDES
    from bench.run.matrix import balanced_order

    first = np.array([o[0] == "candidate" for o in balanced_order(SIDES, pairs)
                      ] if crossover else [True] * pairs)
    ss, df = {}, {}
    for res in null_results:
        for r in res["rows"]:
            logs = np.log(np.array([np.nan if v is None else v for v in r["pair_ratios"]],
                                   dtype=float))
            if logs.size != first.size:
                continue
            for flag in (True, False):
                x = logs[(first == flag) & np.isfinite(logs)]
                if x.size >= 2:
                    ss[r["cell"]] = ss.get(r["cell"], 0.0) + float(((x - x.mean()) ** 2).sum())
                    df[r["cell"]] = df.get(r["cell"], 0) + x.size - 1
    return {k: math.sqrt(ss[k] / df[k]) for k in ss if df[k]}


def predicted_detection(sd, pairs, change, threshold, alpha, crossover=True):
    """P(the gate calls a true `change` a regression) at `pairs` pairs, per-pair log SD `sd`:
    the estimate must exceed the threshold and its t statistic the critical value (normal
    approximation of the estimate; the t quantile keeps the small-sample price). The crossover
    t has pairs - 2 degrees of freedom, the plain paired t (calls mode) pairs - 1."""
    from scipy import stats

    se = sd / math.sqrt(pairs)       # crossover: sqrt(1/4 (1/n1 + 1/n2)) = 1/sqrt(n)
    df = pairs - 2 if crossover else pairs - 1
    need = max(math.log1p(threshold), stats.t.ppf(1 - alpha / 2, df) * se)
    return float(1 - stats.norm.cdf((need - math.log1p(change)) / se))


def pairs_needed(sd, change, threshold, alpha, power=0.95, most=200, crossover=True):
    for n in range(4 if crossover else 3, most + 1, 2 if crossover else 1):
        if predicted_detection(sd, n, change, threshold, alpha, crossover) >= power:
            return n
    return None


def markdown(summary):
    s = summary["settings"]
    how = (f"interleaved in one process a pair ({s.get('blocks')} block(s) x {s['rounds']} "
           f"rounds a revision after {s.get('warmup')} warm-up)"
           if s.get("interleave") == "calls" else f"{s['rounds']} rounds a process")
    lines = [f"A/B gate, {s['pairs']} pairs, {how}, threshold {s['threshold']}, "
             f"alpha {s['alpha']}, frameworks {' '.join(s['frameworks'])}.", ""]
    null = summary["kinds"].get("null")
    if null:
        lines += [f"**False alarms**: {null['runs_with_alarm']} of {null['runs']} gate runs of "
                  "the same revision had any benchmark called a regression or an improvement; "
                  f"wall time per gate run median {null['wall_s_median'] / 60:.1f} min, max "
                  f"{null['wall_s_max'] / 60:.1f} min.", ""]
    names = list(next(iter(summary["kinds"].values()))["benchmarks"])
    kinds = [k for k in summary["kinds"] if k != "null"]
    head = ["benchmark"] + (["null: alarms"] if null else []) + \
        [f"{k}: true change, caught" for k in kinds]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in names:
        cells = [f"`{name}`"]
        if null:
            b = null["benchmarks"].get(name, {})
            cells.append(f"{b.get('regression', 0) + b.get('improvement', 0)}/{b.get('runs', 0)}")
        for k in kinds:
            b = summary["kinds"][k]["benchmarks"].get(name)
            if not b:
                cells.append("-")
                continue
            tc = "-" if b["true_change"] is None else f"{b['true_change'] * 100:+.1f}%"
            cells.append(f"{tc}, {b['regression']}/{b['runs']}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    pred = summary.get("prediction")
    if pred:
        spp = summary["seconds_per_pair"]
        lines += ["Predicted from the null runs' pair noise: one pair of both frameworks "
                  f"takes {spp:.0f} s.", "",
                  "| benchmark | pair SD (log) | P(catch 10%) at these pairs | pairs for 95% at "
                  "10% | pairs for 95% at 20% |", "|---|---:|---:|---:|---:|"]
        for name, p in pred.items():
            n10, n20 = p["pairs_for_95pct_at_10pct"], p["pairs_for_95pct_at_20pct"]
            lines.append(f"| `{name}` | {p['pair_log_sd']:.3f} | "
                         f"{p['p_detect_10pct_at_default']:.0%} | "
                         f"{n10 if n10 else '> 200'} ({(n10 or 0) * spp / 60:.0f} min) | "
                         f"{n20 if n20 else '> 200'} ({(n20 or 0) * spp / 60:.0f} min) |")
        lines.append("")
    for k in kinds:
        kd = summary["kinds"][k]
        lines.append(f"- {k}: extra convolutions {kd['extra_convs']}; {kd['runs_with_regression']}"
                     f" of {kd['runs']} gate runs flagged a regression; wall median "
                     f"{kd['wall_s_median'] / 60:.1f} min")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="benchmarks/measure_ab.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--null-runs", type=int, default=20)
    ap.add_argument("--runs", type=int, default=10, help="gate runs per slowdown")
    ap.add_argument("--slowdowns", type=float, nargs="*", default=[0.05, 0.10, 0.20])
    ap.add_argument("--runs-per-slowdown", type=int, nargs="*", default=None,
                    help="gate runs for each of --slowdowns, in order (default: --runs each)")
    ap.add_argument("--interleave", choices=("calls", "processes"), default="calls")
    ap.add_argument("--pairs", type=int, default=None, help="default: the gate's default")
    ap.add_argument("--blocks", type=int, default=None, help="default: the gate's default")
    ap.add_argument("--warmup", type=int, default=None, help="default: the gate's default")
    ap.add_argument("--threshold", default="5%")
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--frameworks", nargs="+", default=["torch", "jittor"])
    ap.add_argument("--summary-only", action="store_true",
                    help="summarise the gate runs already in --out-dir; run nothing")
    args = ap.parse_args(argv)
    from bench.gate import ab

    args.pairs = args.pairs or ab.DEFAULT_PAIRS[args.interleave]
    args.alpha = args.alpha or ab.DEFAULT_ALPHA
    args.rounds = args.rounds or ab.DEFAULT_ROUNDS[args.interleave]
    args.warmup = args.warmup if args.warmup is not None else ab.DEFAULT_WARMUP[args.interleave]
    args.blocks = args.blocks or ab.interleaved.DEFAULT_BLOCKS
    crossover = args.interleave == "processes"
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    clone = make_clone(out_dir)
    state_path = os.path.join(out_dir, "calibration.json")
    if os.path.isfile(state_path):
        with open(state_path) as f:
            cost = json.load(f)
    else:
        cost = calibrate(clone, args.frameworks)
        with open(state_path, "w") as f:
            json.dump(cost, f)
    branches, counts_by_kind = {}, {}
    for s in args.slowdowns:
        branch, counts = slowdown_branch(clone, s, cost)
        branches[f"{s:.0%}"] = branch
        counts_by_kind[f"{s:.0%}"] = counts
    kinds = (["null"] if args.null_runs else []) + list(branches)
    per = args.runs_per_slowdown or [args.runs] * len(args.slowdowns)
    if len(per) != len(args.slowdowns):
        ap.error("--runs-per-slowdown: give one count per --slowdowns value")
    todo = {"null": args.null_runs, **dict(zip(branches, per))}
    runs = {k: [] for k in kinds}
    for i in range(max(todo.values(), default=0)):
        for kind in kinds:
            if i >= todo[kind]:
                continue
            out = os.path.join(out_dir, f"run{i:02d}-{kind.rstrip('%')}")
            if args.summary_only:
                done = os.path.join(out, "ab.json")
                if os.path.isfile(done):
                    with open(done) as f:
                        res = json.load(f)
                    if not res.get("interrupted"):
                        runs[kind].append(res)
                continue
            runs[kind].append(gate_run(clone, out, "HEAD",
                                       "HEAD" if kind == "null" else branches[kind], args))
    summary = summarise(runs, args, counts_by_kind, cost)
    if runs.get("null"):
        thr = float(args.threshold.rstrip("%")) / 100 if args.threshold.endswith("%") \
            else float(args.threshold)
        noise = pair_noise(runs["null"], args.pairs, crossover)
        null = summary["kinds"]["null"]
        per_pair_s = null["wall_s_median"] / args.pairs
        summary["prediction"] = {
            name: {"pair_log_sd": sd,
                   "p_detect_10pct_at_default": predicted_detection(
                       sd, args.pairs, 0.10, thr, args.alpha, crossover),
                   "pairs_for_95pct_at_10pct": pairs_needed(sd, 0.10, thr, args.alpha,
                                                            crossover=crossover),
                   "pairs_for_95pct_at_20pct": pairs_needed(sd, 0.20, thr, args.alpha,
                                                            crossover=crossover)}
            for name, sd in noise.items()}
        summary["seconds_per_pair"] = per_pair_s
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    text = markdown(summary)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
