"""Numbers for the report: numeric pandas frames first (tested), display tables second.

Conventions: times in seconds, memory in bytes (shown in MiB), energy in joules. A ratio is
`framework / baseline` of the same quantity, so > 1 means more time / memory / energy than the
baseline and, for images/s, faster than it.
"""
import json

import numpy as np
import pandas as pd
from scipy.integrate import trapezoid

from bench.stats import ratio_of_medians, spread
from bench.report import fmt
from bench.report.load import RunData, of_type

NO_GPU = "no GPU"


# ---------------------------------------------------------------- helpers

def cells_of(run: RunData, workload: str) -> pd.DataFrame:
    return run.cells[run.cells["workload"] == workload]


def cell_records(run: RunData, cell: str, record_type: str) -> pd.DataFrame:
    recs = run.records
    if recs.empty:
        return recs
    return of_type(recs[recs["cell"] == cell], record_type)


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
    """Trapezoid integral of power_w over each (start, end) t_wall window, interpolating the
    sampled power at the window edges. NaN when fewer than 2 power samples exist."""
    t, p = col(monitor, "t_wall"), col(monitor, "power_w")
    ok = t.notna() & p.notna()
    t, p = t[ok].to_numpy(), p[ok].to_numpy()
    if t.size < 2:
        return [float("nan")] * len(windows)
    order = np.argsort(t)
    t, p = t[order], p[order]
    out = []
    for start, end in windows:
        if not (np.isfinite(start) and np.isfinite(end)) or end <= start:
            out.append(float("nan"))
            continue
        inside = t[(t > start) & (t < end)]
        grid = np.concatenate([[start], inside, [end]])
        out.append(float(trapezoid(np.interp(grid, t, p), grid)))
    return out


# ---------------------------------------------------------------- training

def training_metrics(run: RunData) -> pd.DataFrame:
    """One row per train cell with every number of the training table (numeric), plus the
    per-step samples the ratio bootstrap needs (object columns `*_samples`)."""
    rows = []
    for _, cell in cells_of(run, "train").iterrows():
        cid = cell["cell"]
        steps = cell_records(run, cid, "step")
        phase = steps["phase"] if "phase" in steps else pd.Series("measure", index=steps.index)
        meas = steps[phase == "measure"]
        wall, compute, wait = col(meas, "wall_s"), col(meas, "compute_s"), col(meas, "data_wait_s")
        images = col(meas, "images")
        ips = (images / wall).replace([np.inf, -np.inf], np.nan)
        compile_s = col(steps[phase == "compile"], "wall_s").sum(min_count=1)
        warmup_s = col(steps[phase == "warmup"], "wall_s").sum(min_count=1)

        epochs = cell_records(run, cid, "epoch")
        if "epoch" in epochs:
            epochs = epochs.sort_values("epoch")
        # Epoch 0 holds the compile iteration and warm-up: steady-state epoch figures use the
        # later epochs when there are any (epoch 0 is still in the time-per-epoch plot).
        steady = slice(1, None) if len(epochs) > 1 else slice(None)
        epoch_time = col(epochs, "time_s")
        mem = cell_records(run, cid, "memory")
        mon = cell_records(run, cid, "monitor")

        # Energy: an epoch's training ran from t_start for time_s (the record is written after
        # validation, so t_wall - time_s would shift the window; it is only the fallback).
        starts = col(epochs, "t_start")
        if not starts.notna().all():
            starts = col(epochs, "t_wall") - epoch_time
        windows = list(zip(starts.to_numpy(), (starts + epoch_time).to_numpy()))
        energy = np.array(energy_per_window_j(mon, windows)) if len(windows) else np.array([])
        epoch_images = _images_per_epoch(steps, epochs)
        with np.errstate(invalid="ignore", divide="ignore"):
            energy_per_image = energy / epoch_images if energy.size else energy

        device_mem = col(mon, "proc_gpu_mem_bytes")
        if not device_mem.notna().any():
            device_mem = col(mon, "gpu_mem_used_bytes")
        rss = pd.concat([col(mem, "peak_rss_bytes"), col(mon, "rss_bytes")])

        row = {"cell": cid, "framework": cell["framework"], "variant": cell["variant"],
               "status": cell["status"], "steps_measured": int(wall.notna().sum()),
               "compile_s": compile_s, "warmup_s": warmup_s,
               "epochs": int(len(epochs)),
               "epoch_time_median_s": spread(epoch_time.iloc[steady]).median,
               "images_per_s_median": spread(ips).median,
               "allocator_peak_bytes": col(mem, "allocator_peak_bytes").max(),
               "device_peak_bytes": device_mem.max(),
               "host_peak_rss_bytes": rss.max(),
               "energy_per_epoch_median_j": spread(energy[steady]).median,
               "energy_per_image_median_j": spread(energy_per_image[steady]).median,
               "final_train_loss": _last(col(epochs, "mean_loss")),
               "final_val_loss": _last(col(epochs, "val_loss")),
               "wall_s_samples": wall.dropna().to_numpy(),
               "compute_s_samples": compute.dropna().to_numpy(),
               "data_wait_s_samples": wait.dropna().to_numpy(),
               "images_per_s_samples": ips.dropna().to_numpy(),
               "epoch_time_s_samples": epoch_time.iloc[steady].dropna().to_numpy()}
        if not row["final_train_loss"] == row["final_train_loss"]:   # no epoch record: last step
            row["final_train_loss"] = _last(col(steps, "loss"))
        for name, values in (("wall_s", wall), ("compute_s", compute), ("data_wait_s", wait)):
            s = spread(values)
            row.update({f"{name}_median": s.median, f"{name}_iqr": s.iqr, f"{name}_p95": s.p95})
        rows.append(row)
    return pd.DataFrame(rows)


def _last(series: pd.Series) -> float:
    s = series.dropna()
    return float(s.iloc[-1]) if len(s) else float("nan")


def _images_per_epoch(steps: pd.DataFrame, epochs: pd.DataFrame) -> np.ndarray:
    """Images seen in each epoch (all phases: energy covers the whole epoch)."""
    if epochs.empty:
        return np.array([])
    if col(epochs, "images").notna().all():
        return col(epochs, "images").to_numpy(dtype=float)
    if "epoch" in steps and "images" in steps:
        per = pd.to_numeric(steps["images"], errors="coerce").groupby(steps["epoch"]).sum()
        return np.array([per.get(e, np.nan) for e in epochs["epoch"]], dtype=float)
    return np.full(len(epochs), np.nan)


# (row label, metric column, how to show it, samples column for a bootstrap CI or None,
#  whether the ratio is meaningful)
TRAINING_ROWS = [
    ("measured steps", "steps_measured", "int", None, False),
    ("step time, median (s)", "wall_s_median", "num", "wall_s_samples", True),
    ("step time, IQR (s)", "wall_s_iqr", "num", None, False),
    ("step time, p95 (s)", "wall_s_p95", "num", None, True),
    ("compute, median (s)", "compute_s_median", "num", "compute_s_samples", True),
    ("compute, IQR (s)", "compute_s_iqr", "num", None, False),
    ("compute, p95 (s)", "compute_s_p95", "num", None, True),
    ("data wait, median (s)", "data_wait_s_median", "num", "data_wait_s_samples", True),
    ("data wait, IQR (s)", "data_wait_s_iqr", "num", None, False),
    ("data wait, p95 (s)", "data_wait_s_p95", "num", None, True),
    ("epoch time, median (s)", "epoch_time_median_s", "num", "epoch_time_s_samples", True),
    ("images/s, median", "images_per_s_median", "num", "images_per_s_samples", True),
    ("first iteration / compile (s)", "compile_s", "num", None, True),
    ("warm-up steps, total (s)", "warmup_s", "num", None, True),
    ("peak allocator memory (MiB)", "allocator_peak_bytes", "mib", None, True),
    ("peak device memory (MiB)", "device_peak_bytes", "gpu_mib", None, True),
    ("peak host RSS (MiB)", "host_peak_rss_bytes", "mib", None, True),
    ("energy per epoch, median (J)", "energy_per_epoch_median_j", "gpu_num", None, True),
    ("energy per image, median (mJ)", "energy_per_image_median_j", "gpu_mj", None, True),
    ("final train loss", "final_train_loss", "num", None, False),
    ("final validation loss", "final_val_loss", "num", None, False),
]


def _show(value, how: str, gpu: bool) -> str:
    if how.startswith("gpu_") and not gpu:
        return NO_GPU
    if how == "int":
        return str(int(value)) if fmt.is_num(value) else fmt.DASH
    if how in ("mib", "gpu_mib"):
        return fmt.mib(value)
    if how == "gpu_mj":
        return fmt.num(value * 1000 if fmt.is_num(value) else None)
    return fmt.num(value)


def pick_baseline(metrics_rows: pd.DataFrame, baseline: str, variant):
    """The baseline framework's row for this variant (or its only row)."""
    base = metrics_rows[metrics_rows["framework"] == baseline]
    same = base[base["variant"].astype(str) == str(variant)]
    if len(same):
        return same.iloc[0]
    return base.iloc[0] if len(base) == 1 else None


def training_ratios(metrics: pd.DataFrame, baseline: str) -> dict:
    """{(cell, metric column): bench.stats.Ratio} for every non-baseline cell."""
    out = {}
    for _, row in metrics.iterrows():
        if row["framework"] == baseline:
            continue
        base = pick_baseline(metrics, baseline, row["variant"])
        if base is None:
            continue
        for _label, metric, _how, samples, meaningful in TRAINING_ROWS:
            if not meaningful:
                continue
            if samples:
                r = ratio_of_medians(row[samples], base[samples])
            else:
                r = _plain_ratio(row[metric], base[metric])
            out[(row["cell"], metric)] = r
    return out


def _plain_ratio(value, base_value):
    from bench.stats import Ratio
    nan = float("nan")
    if fmt.is_num(value) and fmt.is_num(base_value) and float(base_value) != 0:
        return Ratio(float(value) / float(base_value), nan, nan, 1, 1)
    return Ratio(nan, nan, nan, 0, 0)


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
        status = "" if r["status"] == "ok" else f" [{r['status']}]"
        columns.append(labels[r["cell"]] + status)
    ratio_cells = [r["cell"] for _, r in metrics.iterrows()
                   if any(k[0] == r["cell"] for k in ratios)]
    columns += [f"{labels[c]} ÷ {baseline} (95% CI)" for c in ratio_cells]
    rows = []
    for label, metric, how, _samples, _m in TRAINING_ROWS:
        line = [label] + [_show(v, how, gpu) for v in metrics[metric]]
        for c in ratio_cells:
            r = ratios.get((c, metric))
            line.append(NO_GPU if how.startswith("gpu_") and not gpu else fmt.ratio(r))
        rows.append(line)
    caption = (f"Medians over measured steps (iteration 0 = compile and warm-up steps are "
               f"reported apart, never in the medians); epoch time and energy: medians over the "
               f"epochs after the first when there are any. Ratio = framework ÷ {baseline}: "
               f"> 1 means more time/memory/energy than {baseline} (for images/s: faster). "
               f"95% CI: percentile bootstrap of the ratio of medians, both samples resampled.")
    if not ratio_cells:
        caption += f" No ratio column: the run has no other framework to compare with {baseline}" \
            if (metrics["framework"] == baseline).any() else \
            f" No ratio column: the baseline framework {baseline!r} has no training cell in this run."
    return fmt.Table(columns, rows, caption)


# ---------------------------------------------------------------- sampling

SAMPLE_KEYS = ["sampler", "steps", "eta", "skip", "variance", "batch_size"]


def sampling_metrics(run: RunData) -> pd.DataFrame:
    """One row per (cell, sampler config): median time per batch, IQR, images/s, repeats."""
    recs = of_type(run.records, "sample")
    if recs.empty:
        return pd.DataFrame()
    if "phase" in recs:
        recs = recs[recs["phase"].fillna("measure") == "measure"]
    keys = [k for k in SAMPLE_KEYS if k in recs]
    recs = recs.copy()
    for k in keys:   # NaN keys would vanish from groupby
        recs[k] = recs[k].astype(object).where(recs[k].notna(), fmt.DASH)
    rows = []
    for (cell, *key), g in recs.groupby(["cell"] + keys, sort=True, dropna=False):
        t = col(g, "time_s")
        s = spread(t)
        row = {"cell": cell, "framework": g["framework"].iloc[0], **dict(zip(keys, key)),
               "repeats": s.n, "time_per_batch_median_s": s.median, "time_per_batch_iqr_s": s.iqr,
               "per_step_median_s": spread(col(g, "per_step_s")).median,
               "images_per_s_median": spread(col(g, "images_per_s")).median,
               "time_samples": t.dropna().to_numpy()}
        rows.append(row)
    return pd.DataFrame(rows)


def sampling_table(run: RunData, baseline: str) -> fmt.Table | None:
    m = sampling_metrics(run)
    if m.empty:
        return None
    keys = [k for k in SAMPLE_KEYS if k in m and not (m[k] == fmt.DASH).all()]
    m = m.assign(_base=m["framework"] != baseline).sort_values(keys + ["_base", "framework"])
    columns = [{"batch_size": "batch", "eta": "η"}.get(k, k) for k in keys] + [
        "framework", "repeats", "time per batch, median (s)", "IQR (s)", "time per step (s)",
        "images/s", f"time ÷ {baseline} (95% CI)"]
    rows = []
    for _, r in m.iterrows():
        base = m[(m["framework"] == baseline) & (m[keys] == r[keys]).all(axis=1)] if keys else \
            m[m["framework"] == baseline]
        if r["framework"] == baseline:
            rat = "baseline"
        elif len(base):
            rat = fmt.ratio(ratio_of_medians(r["time_samples"], base.iloc[0]["time_samples"]))
        else:
            rat = f"no {baseline} cell"
        rows.append([_key(r[k]) for k in keys] + [
            r["framework"], str(r["repeats"]), fmt.num(r["time_per_batch_median_s"]),
            fmt.num(r["time_per_batch_iqr_s"]), fmt.num(r["per_step_median_s"]),
            fmt.num(r["images_per_s_median"]), rat])
    caption = (f"Measured repeats only (warm-up excluded). Ratio = time per batch ÷ {baseline}'s "
               f"for the same sampler, steps and batch: > 1 is slower. 95% CI: bootstrap over repeats.")
    return fmt.Table(columns, rows, caption)


def _key(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


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
                     fmt.mib(dev.max()) if gpu else NO_GPU, fmt.mib(rss.max())])
    if not rows:
        return None
    return fmt.Table(["cell", "framework", "workload", "peak allocator (MiB)",
                      "peak device (MiB)", "peak host RSS (MiB)"], rows,
                     "Allocator: the framework's own counter (— where it has none). Device: NVML "
                     "process memory. Host RSS: peak resident set of the worker process.")


# ---------------------------------------------------------------- environment, cells, failures

def _flatten(d, prefix="") -> list:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        elif isinstance(v, (list, tuple)):
            out.append((key, ", ".join(json.dumps(x) if isinstance(x, (dict, list)) else str(x)
                                       for x in v)))
        elif k.endswith("_bytes") and fmt.is_num(v):
            out.append((key, f"{int(v):,} ({float(v) / 1024 ** 3:.1f} GiB)"))
        else:
            out.append((key, fmt.DASH if v is None else str(v)))
    return out


# Top-level manifest keys that are not "environment" facts and get their own blocks.
_NOT_ENV = {"config", "cells"}


def environment_table(run: RunData) -> fmt.Table | None:
    if not run.manifest:
        return None
    pairs = _flatten({k: v for k, v in run.manifest.items() if k not in _NOT_ENV})
    return fmt.Table(["key", "value"], [list(p) for p in pairs], numeric=False)


def frameworks_table(run: RunData) -> fmt.Table | None:
    """Per cell: device and versions as the worker reported them in its `start` record."""
    rows = []
    for _, c in run.cells.iterrows():
        start = cell_records(run, c["cell"], "start")
        if start.empty:
            continue
        s = start.iloc[0]
        versions = s.get("versions")
        versions = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "framework") \
            if isinstance(versions, dict) else (fmt.DASH if versions is None else str(versions))
        rows.append([c["cell"], c["framework"], str(s.get("device", fmt.DASH)), versions])
    if not rows:
        return None
    return fmt.Table(["cell", "framework", "device", "versions"], rows, numeric=False)


def cells_table(run: RunData) -> fmt.Table | None:
    if run.cells.empty:
        return None
    rows = [[c["cell"], c["framework"], c["workload"], _variant(c["variant"]), c["status"]]
            for _, c in run.cells.iterrows()]
    return fmt.Table(["cell", "framework", "workload", "variant", "status"], rows, numeric=False)


def _variant(v) -> str:
    return fmt.DASH if v is None or v != v or v == "" else _key(v)


def failed_cells(run: RunData) -> pd.DataFrame:
    if run.cells.empty:
        return run.cells
    return run.cells[run.cells["status"] != "ok"]


def first_line(text, limit=200) -> str:
    if text is None or text != text:
        return fmt.DASH
    line = str(text).strip().splitlines()[0] if str(text).strip() else fmt.DASH
    return line if len(line) <= limit else line[:limit - 1] + "…"
