"""Read a results directory (docs/ARCHITECTURE.md "Results layout") into pandas.

A thin, tolerant reader: a worker killed mid-write leaves a torn last line, a cell that never
finished has no summary.json, a run may lack its manifest. None of that is an error here; the
report says what is missing. `load_run` is the one entry point so it can later be swapped for
`bench.records.results.load_run` without touching tables/plots.
"""
from dataclasses import dataclass, field, replace
import json
from pathlib import Path

import pandas as pd

from bench.records.results import read_records


class ReportInputError(ValueError):
    """The run directory cannot be reported on at all (missing, or not a results dir)."""


@dataclass
class RunData:
    run_dir: Path
    run_id: str
    manifest: dict            # {} when manifest.json is missing or unreadable
    cells: pd.DataFrame       # one row per cell (what is measured): CELL_COLUMNS
    records: pd.DataFrame     # every record of every process (events + monitor), tidy, with
                              # the columns cell, replicate and unit
    problems: list = field(default_factory=list)   # human-readable notes on damaged files
    units: pd.DataFrame = None  # one row per process (replicate of a cell): UNIT_COLUMNS


# A unit is one process: replicate k of a cell, in the folder cells/<unit>.
# setting: the `variants` entry a cell runs (docs/VARIANTS.md); None for the matched cells
# world_size: ranks of a data-parallel train cell (docs/DISTRIBUTED.md); 1 otherwise
UNIT_COLUMNS = ["cell", "replicate", "unit", "framework", "workload", "variant", "setting",
                "world_size", "status", "error", "dir", "t_start", "slot", "slot_info"]
# A cell's status is "ok" when every replicate is; otherwise the first other status.
CELL_COLUMNS = ["cell", "framework", "workload", "variant", "setting", "world_size", "status",
                "error", "dir", "replicates", "replicates_ok"]


def read_jsonl(path: Path, problems: list) -> list:
    """JSON lines -> list of dicts (bench.records.results.read_records). One unparseable line is what
    an interrupted append leaves (a torn last line) and is dropped silently; more are noted."""
    records, skipped = read_records(str(path))
    if skipped > 1:
        problems.append(f"{path}: {skipped} lines not valid JSON, skipped")
    return records


def _read_json(path: Path, problems: list):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: unreadable ({exc})")
        return None


def _split_cell_id(cell_id: str):
    # Cell id: <framework>-<workload>[-<variant>]; only a fallback when records say nothing.
    parts = cell_id.split("-", 2)
    return (parts + [None, None])[:3]


def _spec_cell(spec: dict) -> dict:
    """The cell the runner asked a process to run (spec.json), {} when unreadable."""
    return spec.get("cell") if isinstance(spec.get("cell"), dict) else {}


def _spec_options(spec: dict) -> dict:
    options = _spec_cell(spec).get("options")
    return options if isinstance(options, dict) else {}


def _unit_identity(cdir: Path, summary: dict, spec: dict, start: dict):
    """(cell id, replicate) of a process folder: from its summary, else the spec the runner
    wrote before starting it, else its start record, else the folder name (<cell>.r<k>)."""
    spec_cell = _spec_cell(spec)
    name, _, rep = cdir.name.rpartition(".r")
    if not (name and rep.isdigit()):
        name, rep = cdir.name, "1"
    cell = summary.get("cell") or spec_cell.get("cell") or name
    replicate = summary.get("replicate") or spec_cell.get("replicate") or \
        start.get("replicate") or int(rep)
    return str(cell), int(replicate)


def _cells_of_units(units: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cell, g in units.groupby("cell", sort=False):
        g = g.sort_values("replicate")
        bad = g[g["status"] != "ok"]
        first = (bad if len(bad) else g).iloc[0]
        rows.append({"cell": cell, "framework": first["framework"],
                     "workload": first["workload"], "variant": first["variant"],
                     "setting": first["setting"], "world_size": first["world_size"],
                     "status": first["status"], "error": first["error"],
                     "dir": g.iloc[0]["dir"], "replicates": len(g),
                     "replicates_ok": int((g["status"] == "ok").sum())})
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def load_run(run_dir) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportInputError(f"{run_dir}: no such results directory "
                               "(expected results/<run-id>/ with manifest.json and cells/)")
    problems: list = []
    manifest = _read_json(run_dir / "manifest.json", problems)
    cells_dir = run_dir / "cells"
    if manifest is None and not cells_dir.is_dir():
        raise ReportInputError(f"{run_dir}: not a results directory "
                               "(neither manifest.json nor cells/ found)")
    if not isinstance(manifest, dict):
        if (run_dir / "manifest.json").exists():
            problems.append(f"{run_dir / 'manifest.json'}: not a JSON object")
        manifest = {}

    cell_rows, frames = [], []
    cell_dirs = sorted(p for p in cells_dir.iterdir() if p.is_dir()) if cells_dir.is_dir() else []
    for cdir in cell_dirs:
        cell_id = cdir.name
        events = read_jsonl(cdir / "events.jsonl", problems) if (cdir / "events.jsonl").exists() else []
        monitor = read_jsonl(cdir / "monitor.jsonl", problems) if (cdir / "monitor.jsonl").exists() else []
        summary = _read_json(cdir / "summary.json", problems)
        summary = summary if isinstance(summary, dict) else {}
        spec = _read_json(cdir / "spec.json", problems)
        spec = spec if isinstance(spec, dict) else {}
        start = next((r for r in events if r.get("type") == "start"), {})
        cell_id, replicate = _unit_identity(cdir, summary, spec, start)
        fw, wl, var = _split_cell_id(cell_id)
        framework = summary.get("framework") or start.get("framework") or fw
        workload = summary.get("workload") or start.get("workload") or wl
        variant = summary.get("variant", var)
        options = _spec_options(spec)
        setting = summary.get("setting") or start.get("setting") or options.get("setting")
        world = summary.get("world_size") or start.get("world_size") or \
            options.get("world_size") or 1
        if summary:
            status, error = summary.get("status", "unknown"), summary.get("error")
        else:
            status, error = "unfinished", "no summary.json: the cell did not finish"
        if not error:
            err = next((r for r in reversed(events) if r.get("type") == "error"), None)
            if err:
                error = err.get("message") or err.get("traceback")
        t_start = summary.get("started") or (events[0].get("t_wall") if events else None)
        cell_rows.append({"cell": cell_id, "replicate": replicate, "unit": cdir.name,
                          "framework": str(framework), "workload": str(workload),
                          "variant": variant, "setting": setting or None,
                          "world_size": int(world),
                          "status": str(status), "error": error,
                          "dir": str(cdir), "t_start": t_start,
                          # runner.slots > 1: where it ran (bench/run/slots.py)
                          "slot": (summary.get("slot") or {}).get("slot"),
                          "slot_info": summary.get("slot")})
        recs = [dict(r, source="events") for r in events] + \
               [dict(r, source="monitor", type=r.get("type", "monitor")) for r in monitor]
        if recs:
            df = pd.DataFrame.from_records(recs)
            df["cell"], df["framework"], df["workload"] = cell_id, str(framework), str(workload)
            df["replicate"], df["unit"] = replicate, cdir.name
            frames.append(df)

    units = pd.DataFrame(cell_rows, columns=UNIT_COLUMNS)
    records = pd.concat(frames, ignore_index=True, sort=False) if frames else \
        pd.DataFrame(columns=["type", "t_wall", "cell", "replicate", "unit", "framework",
                              "workload", "source"])
    run_id = str(manifest.get("run_id") or run_dir.resolve().name)
    return RunData(run_dir, run_id, manifest, _cells_of_units(units), records, problems, units)


def first_replicate(run: RunData) -> RunData:
    """The run as if each cell had run once: its lowest finished replicate (or its lowest).
    For curves over steps and time, where overlaying replicates would only hide them."""
    if run.units is None or run.units.empty:
        return run
    keep = []
    for _, g in run.units.groupby("cell", sort=False):
        ok = g[g["status"] == "ok"]
        keep.append((ok if len(ok) else g).sort_values("replicate").iloc[0]["unit"])
    units = run.units[run.units["unit"].isin(keep)]
    records = run.records[run.records["unit"].isin(keep)] if "unit" in run.records else \
        run.records
    return RunData(run.run_dir, run.run_id, run.manifest, _cells_of_units(units), records,
                   run.problems, units)


def measured(run: RunData) -> RunData:
    """The run as its numbers may use it: the records of the processes that finished ok only.
    A failed process measured nothing a reader may compare: one that died before its measured
    phase holds the memory of an import or a compile, one that died inside it a phase cut
    short. Its cell and process rows stay, so the tables still name it and count it; its
    error is read from the whole run (section Failed cells)."""
    if run.units is None or run.units.empty or "unit" not in run.records:
        return run
    ok = run.units.loc[run.units["status"] == "ok", "unit"]
    return replace(run, records=run.records[run.records["unit"].isin(set(ok))])


def of_type(records: pd.DataFrame, record_type: str) -> pd.DataFrame:
    """Records of one type, with only the columns that type actually filled."""
    if records.empty or "type" not in records:
        return records.iloc[0:0]
    return records[records["type"] == record_type].dropna(axis=1, how="all")
