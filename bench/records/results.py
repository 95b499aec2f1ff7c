"""The results directory: writing records safely and loading a run into tidy DataFrames.

Layout (docs/ARCHITECTURE.md):

    results/<YYYYmmdd-HHMMSS>-<name>/
      manifest.json
      cells/<cell-id>.r<k>/{spec.json, events.jsonl, monitor.jsonl, summary.json, stderr.log}

A sweep (bench/run/sweep.py) keeps one such folder per point, beside the sweep's manifest:

    results/<run>/manifest.json                    the sweep: config, points, every process
    results/<run>/points/<point>/manifest.json     that point's config and processes
    results/<run>/points/<point>/cells/<cell-id>.r<k>/...

One folder per process ("unit"): replicate k (1-based) of a cell. `harness.py train` runs have
one folder per framework, cells/<fw>-train/, which loads as replicate 1.

Records are JSON lines appended with one write() each and never rewritten, so a process
killed at any instant leaves at most one torn last line, which the loader skips. Summaries and
the manifest are replaced atomically (temp file + rename): present means complete.
"""
import json
import os
import time
from dataclasses import dataclass, field

MANIFEST = "manifest.json"
CELLS_DIR = "cells"
EVENTS = "events.jsonl"
MONITOR = "monitor.jsonl"
SUMMARY = "summary.json"
STDERR = "stderr.log"
SPEC = "spec.json"
POINTS_DIR = "points"

CELL_COLUMNS = ["cell", "replicate", "unit", "framework", "workload", "variant"]


class RecordWriter:
    """Append-only JSON-lines writer: one os.write per record on an O_APPEND descriptor, so a
    record is on disk (in the page cache) as soon as write() returns and a kill can tear only
    the line being written."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, type_, **fields):
        rec = {"type": type_, "t_wall": time.time()}
        rec.update(fields)
        os.write(self.fd, (json.dumps(rec) + "\n").encode())
        return rec

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_json_atomic(path, obj):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_records(path):
    """(records, skipped): every parseable JSON line; torn/garbled lines are counted, not fatal
    (a SIGKILL mid-write leaves a partial last line)."""
    records, skipped = [], 0
    if not os.path.exists(path):
        return records, skipped
    with open(path, "rb") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                skipped += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                skipped += 1
    return records, skipped


def cell_dir(run_dir, unit_id):
    """The folder of one process: cells/<unit id> (a Cell's unit_id, or <fw>-train)."""
    return os.path.join(run_dir, CELLS_DIR, unit_id)


def point_dir(run_dir, point):
    """The folder of one sweep point: points/<point>, laid out like a whole run."""
    return os.path.join(run_dir, POINTS_DIR, point)


def cells_root(run_dir, point):
    """Where the cells of `point` keep their folders: its point folder in a sweep, else the
    run folder ("" is no point)."""
    return point_dir(run_dir, point) if point else run_dir


def ok_summary(run_dir, unit_id):
    """The process's summary when it finished ok (a resume keeps it), else None."""
    summary = read_summary(run_dir, unit_id)
    return summary if summary is not None and summary.get("status") == "ok" else None


def read_summary(run_dir, unit_id):
    path = os.path.join(cell_dir(run_dir, unit_id), SUMMARY)
    try:
        return read_json(path)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# -------------------------------------------------------------------------------------- load

@dataclass
class RunData:
    """One run as tidy tables. Every frame starts with the columns cell, framework, workload,
    variant; record fields follow as columns (see docs/ARCHITECTURE.md's record table).

    Rows carry `replicate` (1-based) and `unit` (the process's folder name): a cell of a run
    with runner.replicates = N has N units.

    summaries: one row per unit in the manifest; status is "ok" | "failed" | "timeout" |
               "missing" (no summary: not run yet, or killed); scalar metrics flattened as
               columns, the full dict in `metrics`.
    steps, epochs, samples, memory, starts, errors: the matching event records.
    monitor:   monitor.jsonl samples, plus t_rel_s (seconds since the cell's first sample).
    """

    run_dir: str
    manifest: dict
    summaries: "object"
    steps: "object"
    epochs: "object"
    samples: "object"
    memory: "object"
    monitor: "object"
    starts: "object"
    errors: "object"
    skipped_lines: dict = field(default_factory=dict)  # file -> torn/garbled lines skipped

    @property
    def run_id(self):
        return self.manifest.get("run_id") or os.path.basename(os.path.normpath(self.run_dir))

    def summary(self, cell_id):
        """The summary row of a unit, or of a cell's first replicate."""
        s = self.summaries
        row = s[(s["unit"] == cell_id) | (s["cell"] == cell_id)]
        return None if row.empty else row.iloc[0].to_dict()

    def cells(self):
        return list(self.summaries["cell"])


def _frame(rows, extra_columns=()):
    import pandas as pd  # only when loading: a worker writes records without paying for it

    df = pd.DataFrame(rows)
    for c in list(CELL_COLUMNS) + list(extra_columns):
        if c not in df.columns:
            df[c] = None
    front = CELL_COLUMNS + [c for c in df.columns if c not in CELL_COLUMNS]
    return df[front]


def load_run(run_dir):
    """Load a run directory (complete, failed or killed mid-cell) into a RunData."""
    path = os.path.join(run_dir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: not a diffbench run (no {MANIFEST})")
    manifest = read_json(path)
    cells = manifest.get("cells") or []
    if not cells and os.path.isdir(os.path.join(run_dir, CELLS_DIR)):
        cells = [{"cell": c, "framework": None, "workload": None, "variant": ""}
                 for c in sorted(os.listdir(os.path.join(run_dir, CELLS_DIR)))]
    cells = [dict(c, unit=c.get("unit") or c["cell"], replicate=c.get("replicate") or 1)
             for c in cells]
    by_type = {k: [] for k in ("step", "epoch", "sample", "memory", "start", "error")}
    monitor_rows, summary_rows, skipped = [], [], {}
    for cell in cells:
        uid = cell["unit"]
        ident = {k: cell.get(k) for k in CELL_COLUMNS}
        d = cell_dir(run_dir, uid)
        events, n_bad = read_records(os.path.join(d, EVENTS))
        if n_bad:
            skipped[os.path.join(uid, EVENTS)] = n_bad
        for rec in events:
            if rec.get("type") in by_type:
                by_type[rec["type"]].append({**ident, **{k: v for k, v in rec.items()
                                                         if k != "type"}})
        mon, n_bad = read_records(os.path.join(d, MONITOR))
        if n_bad:
            skipped[os.path.join(uid, MONITOR)] = n_bad
        t_first = mon[0]["t_wall"] if mon else None
        for rec in mon:
            row = {**ident, **{k: v for k, v in rec.items() if k != "type"}}
            row["t_rel_s"] = rec["t_wall"] - t_first
            monitor_rows.append(row)
        summ = read_summary(run_dir, uid)
        row = dict(ident)
        if summ is None:
            row.update(status="missing", error=None, started=None, finished=None, metrics={})
        else:
            row.update(status=summ.get("status"), error=summ.get("error"),
                       started=summ.get("started"), finished=summ.get("finished"),
                       metrics=summ.get("metrics") or {})
            for k, v in row["metrics"].items():
                if v is None or isinstance(v, (int, float, str, bool)):
                    row[k] = v
        summary_rows.append(row)

    summaries = _frame(summary_rows, ("status", "error", "started", "finished", "metrics"))
    return RunData(
        run_dir=run_dir, manifest=manifest, summaries=summaries,
        steps=_frame(by_type["step"], ("phase", "epoch", "step", "wall_s", "data_wait_s",
                                       "compute_s", "loss")),
        epochs=_frame(by_type["epoch"], ("epoch", "time_s", "mean_loss", "val_loss",
                                         "images_per_s")),
        samples=_frame(by_type["sample"], ("sampler", "steps", "batch_size", "phase", "time_s",
                                           "per_step_s", "images_per_s")),
        memory=_frame(by_type["memory"], ("allocator_peak_bytes", "peak_rss_bytes")),
        monitor=_frame(monitor_rows, ("t_wall", "t_rel_s", "cpu_percent", "rss_bytes")),
        starts=_frame(by_type["start"], ("device", "versions")),
        errors=_frame(by_type["error"], ("message", "traceback")),
        skipped_lines=skipped)
