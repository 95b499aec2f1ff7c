"""The two sides of a comparison: result sets reduced to per-process timings.

A Side is a run folder (results/<run-id>/, its replicates) or a micro-suite JSON (its
processes), loaded into {(cell, metric): [[seconds of process 1], [process 2], ...]} with
what must match for a like-for-like compare (hardware, settings, calibration, contention).
bench/gate/compare.py judges two of them.
"""
import json
import math
import os
from dataclasses import dataclass, field

from bench.records.results import load_run


class BadInput(ValueError):
    """A path or option the gate cannot use; str() is the one-line message (exit 2)."""


@dataclass
class Side:
    """One result set, reduced to what the gate compares."""

    path: str
    kind: str  # "run" | "micro"
    samples: dict  # (cell, metric) -> [[seconds of process 1], [seconds of process 2], ...]
    cell_status: dict  # cell -> "ok" | "failed" | "timeout" | "missing"
    hardware: dict = field(default_factory=dict)  # cpu_model, cpu_count_usable, threads, gpu_names
    calibration: dict = None  # bench.measure.calibrate.calibration() output, when recorded
    setup: dict = field(default_factory=dict)  # what must match for a like-for-like compare
    foreign_cpu_cores: float = None  # most CPUs other processes used during a measurement


def load_side(path):
    """A Side from a run folder or a pytest-benchmark JSON; BadInput for anything else."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "manifest.json")):
            raise BadInput(f"{path}: a folder without manifest.json; expected a run folder "
                           "(results/<run-id>/) or a pytest-benchmark JSON file")
        return load_run_side(path)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadInput(f"{path}: not valid JSON ({e}); expected a pytest-benchmark JSON "
                           "or a run folder") from None
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise BadInput(f"{path}: JSON without a 'benchmarks' list; expected a "
                           "pytest-benchmark JSON (--benchmark-json) or a run folder")
        return micro_side(path, data)
    raise BadInput(f"{path}: no such file or folder; expected a run folder or a "
                   "pytest-benchmark JSON")


def _keep_first_failure(status, cell, st):
    """A cell is ok only while every process (or pooled run) of it is; else its first
    other status stays."""
    if status.get(cell, "ok") == "ok":
        status[cell] = st


def pool_sides(sides, path=None):
    """One Side from several runs of the same thing: their processes gathered per (cell,
    metric), a cell ok only where it is ok in every run. Interleaving baseline and candidate
    runs (A B B A) and pooling each side spreads both over the same stretch of time."""
    sides = list(sides)
    if not sides or len({s.kind for s in sides}) != 1:
        raise BadInput("pool: give one or more sides of the same kind")
    samples, status = {}, {}
    for s in sides:
        for key, vals in s.samples.items():
            samples.setdefault(key, []).extend(vals)
        for cell, st in s.cell_status.items():
            _keep_first_failure(status, cell, st)
    first = sides[0]
    foreign = [s.foreign_cpu_cores for s in sides if s.foreign_cpu_cores is not None]
    return Side(path=path or "+".join(s.path for s in sides), kind=first.kind, samples=samples,
                cell_status=status, hardware=dict(first.hardware),
                calibration=first.calibration, setup=dict(first.setup),
                foreign_cpu_cores=max(foreign) if foreign else None)


def sample_metric_name(row):
    """chain_time_s[ddim,10 steps,b8,eta=0.0] - one metric per sampler setting and batch."""
    parts = [str(row["sampler"]), f"{int(row['steps'])} steps", f"b{int(row['batch_size'])}"]
    for key in ("eta", "skip", "variance"):
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if key == "skip" and v == "uniform":
            continue
        parts.append(f"{key}={v}" if key == "eta" else str(v))
    return "chain_time_s[" + ",".join(parts) + "]"


TRAIN_METRICS = {"step_wall_s": "wall_s", "step_compute_s": "compute_s"}


def load_run_side(path):
    try:
        run = load_run(path)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise BadInput(f"{path}: unreadable run folder ({type(e).__name__}: {e})") from None
    samples = {}  # (cell, metric) -> {unit: [seconds]}, in run order
    steps = run.steps
    if len(steps):
        measured = steps[steps["phase"] == "measure"]
        for (cell, unit), group in measured.groupby(["cell", "unit"], sort=False):
            for metric, column in TRAIN_METRICS.items():
                if column in group:
                    vals = group[column].dropna().astype(float).tolist()
                    if vals:
                        samples.setdefault((cell, metric), {})[unit] = vals
    chains = run.samples
    if len(chains):
        measured = chains[chains["phase"] == "measure"]
        for _, row in measured.iterrows():
            per_unit = samples.setdefault((row["cell"], sample_metric_name(row)), {})
            per_unit.setdefault(row["unit"], []).append(float(row["time_s"]))
    samples = {key: list(per_unit.values()) for key, per_unit in samples.items()}
    m = run.manifest
    host, gpu = m.get("host") or {}, m.get("gpu") or {}
    hardware = {"cpu_model": host.get("cpu_model"),
                "cpu_count_usable": host.get("cpu_count_usable"),
                "threads": m.get("threads"),
                "gpu_names": [d.get("name") for d in gpu.get("devices") or []]}
    # a cell is ok when every one of its processes is
    status = {}
    for cell, st in zip(run.summaries["cell"], run.summaries["status"]):
        _keep_first_failure(status, cell, st)
    # CPUs other processes used during each cell: bench.measure.calibrate.ForeignCpu's figure when
    # recorded, else the harness monitor's (others_cpu_percent_mean, in % of one CPU).
    foreign = [_foreign_cores(mt) for mt in run.summaries["metrics"] if isinstance(mt, dict)]
    foreign = [f for f in foreign if f is not None]
    return Side(path=path, kind="run", samples=samples, cell_status=status, hardware=hardware,
                calibration=m.get("calibration"),
                setup={"config_hash": m.get("config_hash")},
                foreign_cpu_cores=max(foreign) if foreign else None)


def micro_side(path, data):
    samples = {}
    for i, b in enumerate(data["benchmarks"]):
        name = b.get("name") if isinstance(b, dict) else None
        stats = b.get("stats") if isinstance(b, dict) else None
        if not name or not isinstance(stats, dict):
            raise BadInput(f"{path}: benchmarks[{i}] has no name/stats; not a pytest-benchmark "
                           "JSON")
        vals = stats.get("data")
        if not vals:
            raise BadInput(f"{path}: benchmark {name!r} has no raw samples (stats.data); write "
                           "it with --benchmark-json, or --benchmark-save-data when saving")
        # one value per round, already divided by the round's iterations, grouped by the
        # process that ran it (benchmarks/run_micro.py keeps the groups)
        groups = (b.get("extra_info") or {}).get("process_samples") or [vals]
        samples[(name, "time_s")] = [[float(v) for v in g] for g in groups]
    info = data.get("machine_info") or {}
    ours = info.get("diffbench") or {}
    hw = dict(ours.get("hardware") or {})
    if not hw:  # a plain pytest-benchmark file: use what pytest-benchmark itself records
        cpu = info.get("cpu") or {}
        hw = {"cpu_model": cpu.get("brand_raw"), "cpu_count_usable": cpu.get("count"),
              "gpu_names": []}
    micro = dict(ours.get("micro") or {})
    hw["threads"] = micro.get("threads")
    status = {cell: "ok" for cell, _ in samples}
    setup = {k: v for k, v in micro.items() if k not in ("rounds", "warmup_rounds")}
    foreign = ours.get("foreign_cpu_cores") or []
    return Side(path=path, kind="micro", samples=samples, cell_status=status, hardware=hw,
                calibration=ours.get("calibration"), setup=setup,
                foreign_cpu_cores=max(foreign) if foreign else None)


# ------------------------------------------------------------------------ what can differ

def hardware_warnings(base, cand):
    """One line per hardware fact that differs between the sides."""
    out = []
    labels = {"cpu_model": "CPU model", "cpu_count_usable": "usable CPUs",
              "threads": "threads", "gpu_names": "GPU"}
    for key, label in labels.items():
        vb, vc = base.hardware.get(key), cand.hardware.get(key)
        if vb is None or vc is None:
            continue
        if vb != vc:
            out.append(f"hardware differs: {label} {vb!r} (baseline) vs {vc!r} (candidate); "
                       "timings are not directly comparable (consider --normalize)")
    return out


# Other processes using more than this many CPUs beyond those the benchmark left free make
# its timings suspect (2-thread OpenMP code sharing 2 cores can run 10-100x slower).
BUSY_SLACK_CPUS = 0.25


def _foreign_cores(metrics):
    if metrics.get("foreign_cpu_cores") is not None:
        return metrics["foreign_cpu_cores"]
    pct = metrics.get("others_cpu_percent_mean")
    return None if pct is None else pct / 100.0


def busy_warnings(*sides):
    out = []
    for name, side in zip(("baseline", "candidate"), sides):
        cores, hw = side.foreign_cpu_cores, side.hardware
        if cores is None:
            continue
        free = max(0, (hw.get("cpu_count_usable") or 0) - (hw.get("threads") or 0))
        if cores > free + BUSY_SLACK_CPUS:
            out.append(f"{name}: other processes kept {cores:.2f} CPUs busy during its "
                       f"measurement ({hw.get('cpu_count_usable')} CPUs, {hw.get('threads')} "
                       "threads used by the benchmark); its timings may be contended")
    return out


def setup_warnings(base, cand):
    out = []
    keys = sorted(set(base.setup) | set(cand.setup))
    differing = [k for k in keys if base.setup.get(k) != cand.setup.get(k)]
    if differing:
        what = ", ".join(f"{k}: {base.setup.get(k)!r} vs {cand.setup.get(k)!r}"
                         for k in differing)
        if len(what) > 300:
            what = what[:300] + "..."
        out.append(f"the two sides were not run with the same settings ({what}); a "
                   "difference may be the setting, not a regression")
    return out


def normalizer(side, other):
    """A side's calibration score, the divisor of --normalize."""
    cal = side.calibration
    if not cal or not cal.get("score_s"):
        raise BadInput(f"{side.path}: no calibration score recorded (manifest 'calibration' / "
                       "machine_info.diffbench.calibration); --normalize needs one on both sides")
    oc = other.calibration or {}
    if oc.get("version") is not None and cal.get("version") != oc.get("version"):
        raise BadInput(f"{side.path}: calibration version {cal.get('version')} differs from "
                       f"{other.path}'s {oc.get('version')}; scores are not comparable")
    return float(cal["score_s"])
