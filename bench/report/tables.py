"""The report's timing tables: numeric pandas frames first (tested), display tables second.
Training and sampling here, with the helpers every table uses; the tables that describe the
run (environment, cells, failures, memory, FID) are in bench/report/facts.py.

Conventions: times in seconds, memory in bytes (shown in MiB), energy in joules. A ratio is
`framework / baseline` of the same quantity, so > 1 means more time / memory / energy than the
baseline and, for images/s, faster than it.
"""

import numpy as np
import pandas as pd

from bench.measure.monitor import energy_over
from bench.stats.replicates import between_cv, ratio_of_replicates, replicate_medians, spread
from bench.report import fmt
from bench.report.load import RunData, of_type
from bench.run.config import build_specs
from models.common.flops import train_step_flops

# Every GPU figure reads as measured (a number), NO_GPU (the run had no GPU) or NOT_MEASURED
# (a GPU was there but NVML gave no such value, or the phase was too short to mean anything).
NO_GPU = "not measured (no GPU)"
NOT_MEASURED = "not measured"
RATIO_METHOD = ("Ratio column: the ratio of the geometric means of the per-process medians, "
                "[95% CI] from a t-test on their logs (the process is the unit: the interval "
                "is about re-running the benchmark); n = processes of each side, CV = "
                "between-process spread of each side. With fewer than 3 processes a side no "
                "interval is given.")


FLOPS_NOTE = ("GFLOP/s: the analytical FLOPs of the step (models/common/flops.py: "
              "convolutions, linear layers and attention's matmuls, as torch's FlopCounterMode "
              "counts them) ÷ the median step time; % of peak: of the n×n float32 matmul each "
              "cell timed at start in its own framework (runner.peak_matmul_n).")


# ---------------------------------------------------------------- helpers

def cells_of(run: RunData, workload: str) -> pd.DataFrame:
    """The matched cells of a workload: the comparison every table and plot is about. The
    variants' cells (docs/VARIANTS.md) have their own section: variant_cells()."""
    c = run.cells
    return c[(c["workload"] == workload) & ~_is_variant(c) & ~_is_dp(c)]


def variant_cells(run: RunData, workload: str) -> pd.DataFrame:
    c = run.cells
    return c[(c["workload"] == workload) & _is_variant(c)]


def dp_cells(run: RunData) -> pd.DataFrame:
    """Data-parallel train cells (world size > 1; their own section, docs/DISTRIBUTED.md)."""
    c = run.cells
    return c[(c["workload"] == "train") & _is_dp(c)]


def _is_dp(cells: pd.DataFrame) -> pd.Series:
    if "world_size" not in cells:
        return pd.Series(False, index=cells.index)
    return pd.to_numeric(cells["world_size"], errors="coerce").fillna(1) > 1


def _is_variant(cells: pd.DataFrame) -> pd.Series:
    if "setting" not in cells:
        return pd.Series(False, index=cells.index)
    return cells["setting"].map(lambda s: isinstance(s, str) and s != "")


def cell_records(run: RunData, cell: str, record_type: str) -> pd.DataFrame:
    recs = run.records
    if recs.empty:
        return recs
    return of_type(recs[recs["cell"] == cell], record_type)


def units_of(run: RunData, cell: str) -> list:
    """The process folders (units) of a cell, in replicate order."""
    if run.units is None or run.units.empty:
        return [cell]
    u = run.units[run.units["cell"] == cell].sort_values("replicate")
    return list(u["unit"])


def unit_records(run: RunData, unit: str, record_type: str) -> pd.DataFrame:
    recs = run.records
    if recs.empty:
        return recs
    key = "unit" if "unit" in recs else "cell"
    return of_type(recs[recs[key] == unit], record_type)


def col(df: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, or an empty float series when the records never had it."""
    if name not in df:
        return pd.Series(dtype=float)
    return pd.to_numeric(df[name], errors="coerce")


def has_gpu(run: RunData) -> bool:
    mon = of_type(run.records, "monitor")
    return any(col(mon, c).notna().any()
               for c in ("gpu_util_percent", "gpu_mem_used_bytes", "power_w"))


def cell_labels(cells: pd.DataFrame) -> dict:
    """Column label per cell: the framework name, plus the variant when one framework has
    several cells of this workload."""
    labels = {}
    counts = cells["framework"].value_counts()
    for _, c in cells.iterrows():
        lab = c["framework"]
        if counts[c["framework"]] > 1 and c["variant"] not in (None, "") and c["variant"] == c["variant"]:
            lab = f"{lab} ({c['variant']})"
        elif counts[c["framework"]] > 1:
            lab = f"{lab} ({c['cell']})"
        labels[c["cell"]] = lab
    return labels


def energy_per_window_j(monitor: pd.DataFrame, windows) -> list:
    """GPU joules inside each (start, end) t_wall window: NVML's energy counter differenced at
    the window's edges, else integrated power (bench.measure.monitor.energy_over). NaN where
    the monitor has neither."""
    samples = _energy_samples(monitor)
    out = []
    for start, end in windows:
        ok = np.isfinite(start) and np.isfinite(end) and end > start
        e = energy_over(samples, [(start, end)]) if ok else None
        out.append(float("nan") if e is None else e)
    return out


def _energy_samples(monitor: pd.DataFrame) -> list:
    keys = [k for k in ("t_wall", "energy_j_counter", "power_w") if k in monitor]
    if "t_wall" not in keys:
        return []
    frame = monitor[keys].apply(pd.to_numeric, errors="coerce").sort_values("t_wall")
    return [{k: (None if v != v else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def measured_energy_per_image_j(monitor: pd.DataFrame, measured: pd.DataFrame) -> float:
    """GPU joules per image over the measured steps only (each step's [t_wall - wall_s,
    t_wall]; compile, warm-up and validation left out), NaN without energy data."""
    t1, wall, images = col(measured, "t_wall"), col(measured, "wall_s"), col(measured, "images")
    ok = t1.notna() & wall.notna() & images.notna()
    if not ok.any() or images[ok].sum() <= 0:
        return float("nan")
    e = energy_over(_energy_samples(monitor), list(zip((t1 - wall)[ok], t1[ok])))
    return float("nan") if e is None else float(e / images[ok].sum())


# ---------------------------------------------------------------- training

def _unit_training(run: RunData, unit: str) -> dict:
    """Everything the training table needs from ONE process (replicate): per-step arrays for
    step-level quantities, one number for process-level ones (compile, memory, energy)."""
    steps = unit_records(run, unit, "step")
    phase = steps["phase"] if "phase" in steps else pd.Series("measure", index=steps.index)
    meas = steps[phase == "measure"]
    wall, compute, wait = col(meas, "wall_s"), col(meas, "compute_s"), col(meas, "data_wait_s")
    ips = (col(meas, "images") / wall).replace([np.inf, -np.inf], np.nan)

    epochs = unit_records(run, unit, "epoch")
    if "epoch" in epochs:
        epochs = epochs.sort_values("epoch")
    # Epoch 0 holds the compile iteration and warm-up: steady-state epoch figures use the
    # later epochs when there are any (epoch 0 is still in the time-per-epoch plot).
    steady = slice(1, None) if len(epochs) > 1 else slice(None)
    epoch_time = col(epochs, "time_s")
    mem = unit_records(run, unit, "memory")
    mon = unit_records(run, unit, "monitor")

    # Energy: an epoch's training ran from t_start for time_s (the record is written after
    # validation, so t_wall - time_s would shift the window; it is only the fallback).
    starts = col(epochs, "t_start")
    if not starts.notna().all():
        starts = col(epochs, "t_wall") - epoch_time
    windows = list(zip(starts.to_numpy(), (starts + epoch_time).to_numpy()))
    energy = np.array(energy_per_window_j(mon, windows)) if len(windows) else np.array([])

    device_mem = col(mon, "proc_gpu_mem_bytes")
    if not device_mem.notna().any():
        device_mem = col(mon, "gpu_mem_used_bytes")
    rss = pd.concat([col(mem, "peak_rss_bytes"), col(mon, "rss_bytes")])
    info, peak = unit_records(run, unit, "train_info"), unit_records(run, unit, "peak")
    flops = _last(col(info, "flops_per_step"))
    if flops != flops:  # a run without train_info (older `harness.py train`): from its config
        flops = _config_train_flops(run)
    gflops = flops / float(np.median(wall.dropna())) / 1e9 if wall.notna().any() else np.nan
    final_loss = _last(col(epochs, "mean_loss"))
    if final_loss != final_loss:   # no epoch record: the last step's loss
        final_loss = _last(col(steps, "loss"))
    return {
        "wall_s": wall.dropna().to_numpy(), "compute_s": compute.dropna().to_numpy(),
        "data_wait_s": wait.dropna().to_numpy(), "images_per_s": ips.dropna().to_numpy(),
        "epoch_time_s": epoch_time.iloc[steady].dropna().to_numpy(),
        "compile_s": col(steps[phase == "compile"], "wall_s").sum(min_count=1),
        "warmup_s": col(steps[phase == "warmup"], "wall_s").sum(min_count=1),
        "epochs": int(len(epochs)),
        "allocator_peak_bytes": col(mem, "allocator_peak_bytes").max(),
        "device_peak_bytes": device_mem.max(), "host_peak_rss_bytes": rss.max(),
        "energy_per_epoch_j": spread(energy[steady]).median,
        "energy_per_image_j": measured_energy_per_image_j(mon, meas),
        "final_train_loss": final_loss,
        "final_val_loss": _last(col(epochs, "val_loss")),
        "gflops": gflops, "peak_fraction": gflops / _last(col(peak, "peak_gflops")),
    }


# Per-step quantities: per process an array of steps, summarised by its median.
_STEP_QUANTITIES = ("wall_s", "compute_s", "data_wait_s", "images_per_s", "epoch_time_s")
# Per-process quantities: one number per process -> (column in the metrics frame).
_PROCESS_QUANTITIES = {"compile_s": "compile_s", "warmup_s": "warmup_s",
                       "allocator_peak_bytes": "allocator_peak_bytes",
                       "device_peak_bytes": "device_peak_bytes",
                       "host_peak_rss_bytes": "host_peak_rss_bytes",
                       "energy_per_epoch_j": "energy_per_epoch_median_j",
                       "energy_per_image_j": "energy_per_image_median_j",
                       "final_train_loss": "final_train_loss", "final_val_loss": "final_val_loss",
                       "gflops": "gflops", "peak_fraction": "peak_fraction"}
_STEP_COLUMNS = {"epoch_time_s": "epoch_time_median_s", "images_per_s": "images_per_s_median"}


def training_metrics(run: RunData, cells: pd.DataFrame = None) -> pd.DataFrame:
    """One row per train cell with every number of the training table (numeric), plus, per
    quantity, the per-process values the replicate statistics need (object columns
    `<quantity>_groups`: one array per process) and the pooled steps (`<quantity>_samples`).

    A cell's number is the median over its processes of each process's median (for step
    quantities) or value (compile, memory, energy, losses); IQR and p95 are those of the
    steps within a process, again the median over processes."""
    rows = []
    for _, cell in (cells_of(run, "train") if cells is None else cells).iterrows():
        units = [_unit_training(run, u) for u in units_of(run, cell["cell"])]
        row = {"cell": cell["cell"], "framework": cell["framework"], "variant": cell["variant"],
               "status": cell["status"], "replicates": len(units),
               "replicates_ok": int(cell.get("replicates_ok", len(units))),
               "steps_measured": int(sum(u["wall_s"].size for u in units)),
               "epochs": max((u["epochs"] for u in units), default=0)}
        for q in _STEP_QUANTITIES:
            groups = [u[q] for u in units]
            row[f"{q}_groups"] = groups
            row[f"{q}_samples"] = np.concatenate(groups) if groups else np.array([])
            med = replicate_medians(groups)
            row[_STEP_COLUMNS.get(q, f"{q}_median")] = float(np.median(med)) if med.size \
                else float("nan")
            row[f"{q}_cv"] = between_cv(med)
            within = [spread(g) for g in groups if len(g)]
            row[f"{q}_iqr"] = float(np.median([w.iqr for w in within])) if within else np.nan
            row[f"{q}_p95"] = float(np.median([w.p95 for w in within])) if within else np.nan
            row[f"{q}_p95_groups"] = [[w.p95] for w in within]
        for q, column in _PROCESS_QUANTITIES.items():
            values = np.array([u[q] for u in units], dtype=float)
            row[f"{column}_groups"] = [[v] for v in values if np.isfinite(v)]
            row[column] = spread(values).median
        rows.append(row)
    return pd.DataFrame(rows)


def _config_train_flops(run: RunData) -> float:
    """FLOPs of a training step of the run's configured model and batch, or NaN."""
    try:
        cfg = run.manifest["config"]
        return float(train_step_flops(build_specs(cfg)[0], cfg["train"]["batch_size"]))
    except (KeyError, TypeError, ValueError):
        return float("nan")


def _last(series: pd.Series) -> float:
    s = series.dropna()
    return float(s.iloc[-1]) if len(s) else float("nan")


# (row label, metric column, how to show it, per-process groups column for the ratio or None
#  when a ratio means nothing)
TRAINING_ROWS = [
    ("processes (replicates)", "replicates", "int", None),
    ("measured steps, all processes", "steps_measured", "int", None),
    ("step time, median (s)", "wall_s_median", "num", "wall_s_groups"),
    ("step time, between-process CV", "wall_s_cv", "pct", None),
    ("step time, IQR in a process (s)", "wall_s_iqr", "num", None),
    ("step time, p95 in a process (s)", "wall_s_p95", "num", "wall_s_p95_groups"),
    ("compute, median (s)", "compute_s_median", "num", "compute_s_groups"),
    ("compute, IQR in a process (s)", "compute_s_iqr", "num", None),
    ("compute, p95 in a process (s)", "compute_s_p95", "num", "compute_s_p95_groups"),
    ("data wait, median (s)", "data_wait_s_median", "num", "data_wait_s_groups"),
    ("data wait, IQR in a process (s)", "data_wait_s_iqr", "num", None),
    ("data wait, p95 in a process (s)", "data_wait_s_p95", "num", "data_wait_s_p95_groups"),
    ("epoch time, median (s)", "epoch_time_median_s", "num", "epoch_time_s_groups"),
    ("images/s, median", "images_per_s_median", "num", "images_per_s_groups"),
    ("achieved GFLOP/s (conv, matmul)", "gflops", "num", "gflops_groups"),
    ("% of measured matmul peak", "peak_fraction", "pct", None),
    ("first iteration / compile (s)", "compile_s", "num", "compile_s_groups"),
    ("warm-up steps, total (s)", "warmup_s", "num", "warmup_s_groups"),
    ("peak allocator memory (MiB)", "allocator_peak_bytes", "mib", "allocator_peak_bytes_groups"),
    ("peak device memory (MiB)", "device_peak_bytes", "gpu_mib", "device_peak_bytes_groups"),
    ("peak host RSS (MiB)", "host_peak_rss_bytes", "mib", "host_peak_rss_bytes_groups"),
    ("energy per epoch, median (J)", "energy_per_epoch_median_j", "gpu_num",
     "energy_per_epoch_median_j_groups"),
    ("energy per image, measured steps (mJ)", "energy_per_image_median_j", "gpu_mj",
     "energy_per_image_median_j_groups"),
    ("final train loss", "final_train_loss", "num", None),
    ("final validation loss", "final_val_loss", "num", None),
]


def _show(value, how: str, gpu: bool) -> str:
    if how.startswith("gpu_") and not gpu:
        return NO_GPU
    if how.startswith("gpu_") and not fmt.is_num(value):
        return NOT_MEASURED
    if how == "int":
        return str(int(value)) if fmt.is_num(value) else fmt.DASH
    if how in ("mib", "gpu_mib"):
        return fmt.mib(value)
    if how == "gpu_mj":
        return fmt.num(value * 1000 if fmt.is_num(value) else None)
    if how == "pct":
        return f"{value * 100:.1f}%" if fmt.is_num(value) else fmt.DASH
    return fmt.num(value)


def _processes(row) -> str:
    """A cell's process count; '3 of 4 ok' when some failed (the figures are the ok ones')."""
    n, ok = int(row["replicates"]), int(row["replicates_ok"])
    return str(n) if ok == n else f"{ok} of {n} ok"


def pick_baseline(metrics_rows: pd.DataFrame, baseline: str, variant):
    """The baseline framework's row for this variant (or its only row)."""
    base = metrics_rows[metrics_rows["framework"] == baseline]
    same = base[base["variant"].astype(str) == str(variant)]
    if len(same):
        return same.iloc[0]
    return base.iloc[0] if len(base) == 1 else None


def training_ratios(metrics: pd.DataFrame, baseline: str) -> dict:
    """{(cell, metric column): bench.stats.replicates.Ratio over processes} for every non-baseline cell."""
    out = {}
    for _, row in metrics.iterrows():
        if row["framework"] == baseline:
            continue
        base = pick_baseline(metrics, baseline, row["variant"])
        if base is None:
            continue
        for _label, metric, _how, groups in TRAINING_ROWS:
            if groups:
                out[(row["cell"], metric)] = ratio_of_replicates(row[groups], base[groups])
    return out


def training_table(run: RunData, baseline: str) -> fmt.Table | None:
    """Rows = metrics, one column per train cell, then one ratio column per non-baseline cell."""
    metrics = training_metrics(run)
    if metrics.empty:
        return None
    gpu = has_gpu(run)
    labels = cell_labels(cells_of(run, "train"))
    ratios = training_ratios(metrics, baseline)
    order = sorted(metrics.index, key=lambda i: (metrics.at[i, "framework"] != baseline,
                                                  metrics.at[i, "framework"], str(metrics.at[i, "cell"])))
    metrics = metrics.loc[order]
    columns = ["metric"]
    for _, r in metrics.iterrows():
        failed = r["replicates"] - r["replicates_ok"]
        columns.append(labels[r["cell"]] + (f" [{failed} of {r['replicates']} failed]"
                                            if failed else ""))
    # a ratio column only where both sides have a process that finished ok
    ratio_cells = [r["cell"] for _, r in metrics.iterrows()
                   if any(k[0] == r["cell"] and fmt.is_num(v.value) for k, v in ratios.items())]
    columns += [f"{labels[c]} ÷ {baseline} (95% CI)" for c in ratio_cells]
    rows = []
    for label, metric, how, _groups in TRAINING_ROWS:
        line = [label] + [_processes(r) if metric == "replicates" else
                          _show(r[metric], how, gpu) if r["replicates_ok"] else fmt.DASH
                          for _, r in metrics.iterrows()]
        for c in ratio_cells:
            r = ratios.get((c, metric))
            line.append(NO_GPU if how.startswith("gpu_") and not gpu else fmt.ratio(r))
        rows.append(line)
    caption = (f"Each cell ran as independent processes (replicates); a number is the median "
               f"over processes of each process's median over its measured steps (iteration 0 "
               f"= compile and warm-up steps are reported apart, never in the medians); epoch "
               f"time and energy per epoch: the epochs after the first when there are any; energy per "
               f"image: the measured steps only (NVML's energy counter differenced over each "
               f"step, else integrated power). Ratio = "
               f"framework ÷ {baseline}: > 1 means more time/memory/energy than {baseline} "
               f"(for images/s, GFLOP/s: faster). {RATIO_METHOD} {FLOPS_NOTE}")
    if (metrics["replicates_ok"] < metrics["replicates"]).any():
        caption += (" A column marked [k of n failed]: its figures come from the processes "
                    "that finished ok, none where every one failed (section Failed cells).")
    if not ratio_cells:
        is_base = metrics["framework"] == baseline
        caption += (f" No ratio column: the baseline framework {baseline!r} has no training cell "
                    f"in this run." if not is_base.any() else
                    f" No ratio column: the run has no other framework to compare with "
                    f"{baseline}." if is_base.all() else
                    " No ratio column: one side of every pair has no process that finished ok.")
    return fmt.Table(columns, rows, caption)


# ---------------------------------------------------------------- sampling

SAMPLE_KEYS = ["sampler", "steps", "eta", "skip", "variance", "batch_size"]


def sampling_metrics(run: RunData, cells: pd.DataFrame = None) -> pd.DataFrame:
    """One row per (cell, sampler config): the median over processes of each process's median
    time per batch, within-process IQR, images/s, chains and processes, and the per-process
    chain times (`time_groups`) the replicate statistics need. Default cells: the matched
    sample cells (and any cell with sample records but no row in run.cells)."""
    recs = of_type(run.records, "sample")
    if recs.empty:
        return pd.DataFrame()
    skip = variant_cells(run, "sample")["cell"] if cells is None else \
        run.cells[~run.cells["cell"].isin(cells["cell"])]["cell"]
    recs = recs[~recs["cell"].isin(set(skip))]
    if recs.empty:
        return pd.DataFrame()
    if "phase" in recs:
        recs = recs[recs["phase"].fillna("measure") == "measure"]
    keys = [k for k in SAMPLE_KEYS if k in recs]
    recs = recs.copy()
    for k in keys:   # NaN keys would vanish from groupby
        recs[k] = recs[k].astype(object).where(recs[k].notna(), fmt.DASH)
    if "replicate" not in recs:
        recs["replicate"] = 1
    rows = []
    for (cell, *key), g in recs.groupby(["cell"] + keys, sort=True, dropna=False):
        per_process = [gg for _, gg in g.groupby("replicate", sort=True)]
        groups = [col(gg, "time_s").dropna().to_numpy() for gg in per_process]
        med = replicate_medians(groups)

        def over_processes(column):
            return spread([spread(col(gg, column)).median for gg in per_process]).median

        row = {"cell": cell, "framework": g["framework"].iloc[0], **dict(zip(keys, key)),
               "repeats": int(sum(len(x) for x in groups)), "replicates": int(med.size),
               "time_per_batch_median_s": float(np.median(med)) if med.size else np.nan,
               "time_per_batch_iqr_s": spread([spread(x).iqr for x in groups]).median,
               "time_cv": between_cv(med),
               "per_step_median_s": over_processes("per_step_s"),
               "images_per_s_median": over_processes("images_per_s"),
               "time_groups": groups}
        row["gflops"] = spread(col(g, "flops_per_step")).median / row["per_step_median_s"] / 1e9
        peaks = [_last(col(unit_records(run, u, "peak"), "peak_gflops"))
                 for u in g["unit"].unique()] if "unit" in g else []
        row["peak_fraction"] = row["gflops"] / spread(peaks).median if peaks else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def same_settings(m: pd.DataFrame, row, keys, framework: str) -> pd.DataFrame:
    """The rows of `framework` in sampling_metrics `m` with `row`'s sampler settings."""
    mine = m["framework"] == framework
    return m[mine & (m[keys] == row[keys]).all(axis=1)] if keys else m[mine]


def sampling_table(run: RunData, baseline: str) -> fmt.Table | None:
    m = sampling_metrics(run)
    if m.empty:
        return None
    keys = [k for k in SAMPLE_KEYS if k in m and not (m[k] == fmt.DASH).all()]
    m = m.assign(_base=m["framework"] != baseline).sort_values(keys + ["_base", "framework"])
    columns = [{"batch_size": "batch", "eta": "η"}.get(k, k) for k in keys] + [
        "framework", "processes", "chains", "time per batch, median (s)", "IQR in a process (s)",
        "between-process CV", "time per step (s)", "images/s", "GFLOP/s", "% of peak",
        f"time ÷ {baseline} (95% CI)"]
    rows = []
    for _, r in m.iterrows():
        base = same_settings(m, r, keys, baseline)
        if r["framework"] == baseline:
            rat = "baseline"
        elif len(base):
            rat = fmt.ratio(ratio_of_replicates(r["time_groups"], base.iloc[0]["time_groups"]))
        else:
            rat = f"no {baseline} cell"
        rows.append([_key(r[k]) for k in keys] + [
            r["framework"], str(r["replicates"]), str(r["repeats"]),
            fmt.num(r["time_per_batch_median_s"]), fmt.num(r["time_per_batch_iqr_s"]),
            _show(r["time_cv"], "pct", False), fmt.num(r["per_step_median_s"]),
            fmt.num(r["images_per_s_median"]), fmt.num(r["gflops"]),
            _show(r["peak_fraction"], "pct", False), rat])
    caption = (f"Measured chains only (warm-up excluded); a number is the median over processes "
               f"of each process's median. Ratio = time per batch ÷ {baseline}'s for the same "
               f"sampler, steps and batch: > 1 is slower. {RATIO_METHOD} {FLOPS_NOTE}")
    return fmt.Table(columns, rows, caption)


def _key(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
