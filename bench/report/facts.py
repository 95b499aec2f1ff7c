"""The report's tables that describe a run rather than time it: FID/KID, peak memory per
cell, the environment, the cells and their processes, and what failed.

Same conventions as bench/report/tables.py (the timing tables), whose helpers these share.
"""
from collections import Counter
import json
from pathlib import Path

import pandas as pd

from bench.records.errors import DECISIVE_LOG_CHARS, failure_line, log_tail, strip_ansi
from bench.report import fmt
from bench.report.load import RunData, of_type
from bench.report.tables import (NO_GPU, NOT_MEASURED, _key, cell_records, col, has_gpu,
                                 unit_records, units_of)

MAX_ERROR_CHARS = 4000   # of a failed process's log shown under Failed cells


# ---------------------------------------------------------------- quality (FID)

def fid_metrics(run: RunData) -> pd.DataFrame:
    recs = of_type(run.records, "fid")
    if recs.empty:
        return recs
    # bench.fid.compute_metrics names them kid_mean / is_mean; accept either spelling.
    for short in ("kid", "is"):
        if short not in recs and f"{short}_mean" in recs:
            recs = recs.assign(**{short: recs[f"{short}_mean"]})
    keep = [c for c in ("cell", "framework", "sampler", "steps", "eta", "fid", "kid", "is",
                        "num_images") if c in recs]
    return recs[keep].sort_values([c for c in ("framework", "sampler", "steps") if c in keep])


def fid_table(run: RunData) -> fmt.Table | None:
    m = fid_metrics(run)
    if m.empty:
        return None
    cols = [c for c in ("framework", "sampler", "steps", "eta", "fid", "kid", "is", "num_images")
            if c in m]
    names = {"eta": "η", "fid": "FID ↓", "kid": "KID ↓", "is": "IS ↑", "num_images": "images"}
    rows = []
    for _, r in m.iterrows():
        rows.append([fmt.num(r[c]) if c in ("fid", "kid", "is") else _key(r[c]) for c in cols])
    return fmt.Table([names.get(c, c) for c in cols], rows,
                     "FID/KID against the reference set (lower is better); IS higher is better.")


def generation_speed_table(run: RunData, baseline: str) -> fmt.Table | None:
    """How fast the quality cells generated their samples (a training run scored by
    `harness.py fid` has no sampling benchmark, but it timed this): one process per
    framework, so plain ratios without an interval."""
    recs = of_type(run.records, "fid")
    if recs.empty or "sample_time_s" not in recs:
        return None
    rows = []
    for _, r in recs.sort_values(["sampler", "steps", "framework"]).iterrows():
        base = recs[(recs["framework"] == baseline) & (recs["sampler"] == r["sampler"])
                    & (recs["steps"] == r["steps"])]
        ratio = "baseline" if r["framework"] == baseline else (
            f"{r['sample_time_s'] / base.iloc[0]['sample_time_s']:.2f}×" if len(base)
            else fmt.DASH)
        rows.append([r["framework"], r["sampler"], _key(r["steps"]), _key(r["num_images"]),
                     fmt.num(r["sample_time_s"]), fmt.num(r["images_per_s"]),
                     fmt.num(r["sample_time_s"] / r["steps"]), ratio])
    return fmt.Table(["framework", "sampler", "steps", "images", "time (s)", "images/s",
                      "time per step, all images (s)", f"time ÷ {baseline}"], rows,
                     caption="Generation of the quality cells' samples (quality.batch_size per "
                             "batch), timed in one process per framework: no interval, and "
                             "not a replicated benchmark (add the sample workload for that).")


# ---------------------------------------------------------------- memory (every cell)

def memory_table(run: RunData) -> fmt.Table | None:
    if run.cells.empty:
        return None
    gpu = has_gpu(run)
    rows = []
    for _, c in run.cells.iterrows():
        mem = cell_records(run, c["cell"], "memory")
        mon = cell_records(run, c["cell"], "monitor")
        if mem.empty and mon.empty:
            continue
        dev = col(mon, "proc_gpu_mem_bytes")
        if not dev.notna().any():
            dev = col(mon, "gpu_mem_used_bytes")
        rss = pd.concat([col(mem, "peak_rss_bytes"), col(mon, "rss_bytes")])
        rows.append([c["cell"], c["framework"], c["workload"],
                     fmt.mib(col(mem, "allocator_peak_bytes").max()),
                     (fmt.mib(dev.max()) if dev.notna().any() else NOT_MEASURED) if gpu
                     else NO_GPU, fmt.mib(rss.max())])
    if not rows:
        return None
    return fmt.Table(["cell", "framework", "workload", "peak allocator (MiB)",
                      "peak device (MiB)", "peak host RSS (MiB)"], rows,
                     "Allocator: the framework's own counter (— where it has none). Device: NVML "
                     "process memory. Host RSS: peak resident set of the worker process.")


# ---------------------------------------------------------------- environment, cells, failures

def environment_summary(run: RunData) -> fmt.Table | None:
    """What a reader needs to place the numbers: device, CPU, threads, git, time. The
    frameworks' own settings have a table of their own (framework_settings_table)."""
    m = run.manifest
    if not m:
        return None
    host, gpu, git = m.get("host") or {}, m.get("gpu") or {}, m.get("git") or {}
    devices = [d.get("name") for d in gpu.get("devices") or [] if d.get("name")]
    device = ", ".join(devices) if devices else f"CPU only ({gpu.get('reason') or 'no GPU'})"
    if devices and gpu.get("driver"):
        device += f" (driver {gpu['driver']}, CUDA {gpu.get('cuda_driver', '?')})"
    cpu = f"{host.get('cpu_model') or fmt.DASH}, {host.get('cpu_count_usable', '?')} usable " \
          f"of {host.get('cpu_count_logical', '?')} CPUs"
    sha = git.get("sha")
    rows = [["device", device], ["CPU", cpu],
            ["math mode", math_mode_line(m)],
            ["threads", str(m.get("threads", fmt.DASH))],
            ["git", (f"{sha[:12]}{' (dirty: uncommitted changes)' if git.get('dirty') else ''}"
                     if sha else fmt.DASH)],
            ["started", str(m.get("created_iso") or fmt.DASH)],
            ["python", f"{host.get('python', fmt.DASH)} ({host.get('platform', fmt.DASH)})"]]
    return fmt.Table(["", ""], rows, numeric=False)


def math_mode_line(m) -> str:
    """'fp32 (no TF32; torch: ..., jittor: ...)', or the mode marked CUDA only on a CPU run."""
    mode = m.get("math_mode") or (m.get("config") or {}).get("math_mode")
    if not mode:
        return fmt.DASH
    fws = {fw: v for fw, v in (m.get("frameworks") or {}).items() if isinstance(v, dict)}
    if not any(v.get("device") == "cuda" for v in fws.values()):
        return f"{mode} (CUDA only; not applicable: no framework ran on CUDA)"
    bits = []
    for fw, v in fws.items():
        keys = [k for k in ("allow_tf32_matmul", "allow_tf32_cudnn", "float32_matmul_precision",
                            "cudnn_benchmark", "use_tensorcore", "cudnn") if k in v]
        bits.append(f"{fw}: " + ", ".join(f"{k} {v[k]}" for k in keys))
    override = next((v.get("nvidia_tf32_override") for v in fws.values()), None)
    what = "no TF32" if mode == "fp32" else "TF32 tensor cores allowed"
    return (f"{mode} ({what}; NVIDIA_TF32_OVERRIDE={override}; " + "; ".join(bits) + ")")


# ---------------------------------------------------------------- framework settings

# Rows that lead the settings table; the rest follow in the order the frameworks report them.
FIRST_SETTINGS = ("device", "version")


def _present(x) -> bool:
    return x is not None and not (isinstance(x, float) and x != x)


def _same_key(value) -> str:
    """A comparable form of a setting's value (values may be lists or dicts)."""
    return json.dumps(value, sort_keys=True, default=str)


def setting_text(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def process_settings(run: RunData) -> dict:
    """{unit: {setting: value}} for every process that wrote a `start` record: its versions
    (the framework's name left out), device and the math mode it applied (as
    math_mode_applied): the fields the runner copies into manifest.json `frameworks` from a
    framework's first process. Units in the order they ran."""
    starts = of_type(run.records, "start")
    if starts.empty or "unit" not in starts:
        return {}
    order = run.units.assign(_t=pd.to_numeric(run.units["t_start"], errors="coerce")) \
        .sort_values(["_t", "unit"], na_position="last")["unit"] \
        if run.units is not None and len(run.units) else sorted(set(starts["unit"]))
    out = {}
    for unit in order:
        rows = starts[starts["unit"] == unit]
        if rows.empty:
            continue
        s = rows.iloc[0]
        settings = {}
        if _present(s.get("device")):
            settings["device"] = s.get("device")
        versions = s.get("versions")
        if isinstance(versions, dict):
            settings.update((k, v) for k, v in versions.items() if k != "framework")
        if _present(s.get("math_mode")):
            settings["math_mode_applied"] = s.get("math_mode")
        out[unit] = settings
    return out


def framework_settings(run: RunData, processes: dict = None) -> dict:
    """{framework: {setting: value}}: per setting, the value most of the framework's processes
    reported in their `start` record (a tie goes to manifest.json's value, i.e. its first
    process's, then to the earlier process); a framework no process reported for keeps
    manifest.json's entry. Frameworks in manifest order, then those only the cells name."""
    processes = process_settings(run) if processes is None else processes
    manifest = {fw: {k: v for k, v in entry.items() if k != "framework"}
                for fw, entry in (run.manifest.get("frameworks") or {}).items()
                if isinstance(entry, dict)}
    fw_of = dict(zip(run.units["unit"], run.units["framework"])) \
        if run.units is not None and len(run.units) else {}
    frameworks = list(dict.fromkeys(list(manifest) + [fw_of[u] for u in processes if u in fw_of]))
    out = {}
    for fw in frameworks:
        reported = [s for u, s in processes.items() if fw_of.get(u) == fw]
        known = manifest.get(fw, {})
        keys = list(dict.fromkeys([k for s in reported for k in s] + list(known)))
        common = {}
        for k in keys:
            values = [s[k] for s in reported if k in s]
            if not values:
                common[k] = known[k]
                continue
            counts = Counter(_same_key(v) for v in values)
            top = max(counts.values())
            tied = [v for v in values if counts[_same_key(v)] == top]
            common[k] = next((v for v in tied if k in known
                              and _same_key(v) == _same_key(known[k])), tied[0])
        if common:
            out[fw] = common
    return out


def framework_settings_table(run: RunData, baseline: str = None,
                             settings: dict = None) -> fmt.Table | None:
    """One row per setting, one column per framework (the baseline first, then by name);
    '—' where a framework has no such setting."""
    settings = framework_settings(run) if settings is None else settings
    if not settings:
        return None
    fws = sorted(settings, key=lambda fw: (fw != baseline, fw))
    keys = list(dict.fromkeys([k for k in FIRST_SETTINGS if any(k in settings[fw] for fw in fws)]
                              + [k for fw in fws for k in settings[fw]]))
    rows = [[k] + [setting_text(settings[fw][k]) if k in settings[fw] else fmt.DASH
                   for fw in fws] for k in keys]
    return fmt.Table(["setting"] + fws, rows, numeric=False, caption=(
        "Each framework's settings as its worker processes reported them when they started "
        "(their `start` record: versions, device, math-mode flags; manifest.json `frameworks` "
        "keeps the first process's). Where processes differ, the value most of them reported; "
        "— : the framework has no such setting."))


def _units_or_cell(run: RunData, cell: str, units: list) -> list:
    """The cell's name when `units` are all of its processes, else the units themselves."""
    return [cell] if sorted(units) == sorted(units_of(run, cell)) else units


def settings_differences(run: RunData, settings: dict = None,
                         processes: dict = None) -> tuple:
    """(table or None, notes): the processes whose `start` settings differ from their
    framework's (framework_settings), one row per differing setting, named by cell when every
    process of the cell differs alike; and a note naming the cells that reported none."""
    processes = process_settings(run) if processes is None else processes
    settings = framework_settings(run, processes) if settings is None else settings
    rows, silent = [], []
    for _, c in run.cells.iterrows():
        units = units_of(run, c["cell"])
        common = settings.get(c["framework"], {})
        diffs = {}
        for u in units:
            if u not in processes:
                continue
            d = tuple((k, _same_key(v)) for k, v in processes[u].items()
                      if k not in common or _same_key(v) != _same_key(common[k]))
            diffs.setdefault(d, []).append(u)
        missing = [u for u in units if u not in processes]
        if missing:
            silent += _units_or_cell(run, c["cell"], missing)
        for d, us in diffs.items():
            who = ", ".join(_units_or_cell(run, c["cell"], us))
            for k, _ in d:
                value = processes[us[0]][k]
                rows.append([who, c["framework"], k, setting_text(value),
                             setting_text(common[k]) if k in common else fmt.DASH])
    notes = []
    if silent:
        whose = "its" if len(silent) == 1 else "their"
        notes.append(fmt.Note(f"No settings reported by {', '.join(silent)}: none of {whose} "
                              "processes wrote a `start` record (a process that failed before "
                              "it, or never started)."))
    if not rows:
        return None, notes
    return fmt.Table(["cell", "framework", "setting", "value", "framework's value"],
                     rows, numeric=False, caption=(
                         "Processes that reported a setting other than their framework's "
                         "column above (their `start` record); every other process of the "
                         "run matches its framework's column.")), notes


def cells_table(run: RunData) -> fmt.Table | None:
    if run.cells.empty:
        return None
    rows = [[c["cell"], c["framework"], c["workload"], _variant(c["variant"]),
             f"{c['replicates_ok']}/{c['replicates']}", c["status"]]
            for _, c in run.cells.iterrows()]
    return fmt.Table(["cell", "framework", "workload", "variant", "processes ok", "status"],
                     rows, numeric=False)


def _variant(v) -> str:
    return fmt.DASH if v is None or v != v or v == "" else _key(v)


def failed_cells(run: RunData) -> pd.DataFrame:
    """The processes (units) that did not finish ok, each with its own error."""
    if run.units is None or run.units.empty:
        return run.units if run.units is not None else run.cells
    return run.units[run.units["status"] != "ok"]


def error_line(run: RunData, unit, limit=200) -> str:
    """The one line of a failed process's error a reader needs first
    (bench.records.errors.failure_line): a failed compile's `error:` line from its traceback or
    log, else the first line of its error; escape codes stripped."""
    error = unit["error"] if isinstance(unit["error"], str) else ""
    errors = unit_records(run, unit["unit"], "error")
    traceback = str(errors.iloc[-1].get("traceback") or "") if len(errors) else ""
    log = log_tail(Path(unit["dir"]) / "stderr.log", DECISIVE_LOG_CHARS)
    return failure_line(error, f"{traceback}\n{log}", limit) or fmt.DASH


def error_text(run: RunData, unit) -> str:
    """The error record's traceback (else the summary's error), then the tail of stderr.log:
    what a user needs to act on; escape codes stripped. Empty when that would only repeat
    the process's error line."""
    errors = unit_records(run, unit["unit"], "error")
    text = ""
    if not errors.empty:
        e = errors.iloc[-1]
        text = "\n".join(str(e[k]) for k in ("message", "traceback")
                         if k in e and isinstance(e[k], str) and e[k])
    if not text and isinstance(unit["error"], str):
        text = unit["error"]
    text = strip_ansi(text)
    tail = log_tail(Path(unit["dir"]) / "stderr.log", MAX_ERROR_CHARS)
    if tail and tail not in text:
        text = (text + "\n\n" if text else "") + "stderr.log (last lines):\n" + tail
    if len(text) > 2 * MAX_ERROR_CHARS:
        text = "…" + text[-2 * MAX_ERROR_CHARS:]
    return "" if text.strip() == error_line(run, unit) else text


def failure_words(run: RunData, units: pd.DataFrame, first_error=True) -> str:
    """'2 of 4 processes failed (first error: …)' of these processes (the first to fail in the
    order they ran); '' when every one finished ok."""
    bad = units[units["status"] != "ok"]
    if bad.empty:
        return ""
    n = len(units)
    words = f"{len(bad)} of {n} process{'' if n == 1 else 'es'} failed"
    if first_error:
        first = bad.assign(_t=pd.to_numeric(bad["t_start"], errors="coerce")) \
            .sort_values(["_t", "unit"], na_position="last").iloc[0]
        words += f" (first error: {error_line(run, first)})"
    return words


def failure_notes(run: RunData, cells: pd.DataFrame) -> list:
    """A note per cell with a process that did not finish ok: the figures above come from its
    other processes, or it has none (bench.report.load.measured)."""
    notes = []
    for _, c in cells.iterrows():
        units = run.units[run.units["cell"] == c["cell"]]
        words = failure_words(run, units, first_error=False)
        if not words:
            continue
        ok = int((units["status"] == "ok").sum())
        notes.append(fmt.Note(
            f"{c['cell']}: no measurement — {words} (section Failed cells)." if not ok else
            f"{c['cell']}: {words}; its figures are from the {ok} that finished ok (section "
            "Failed cells)."))
    return notes
