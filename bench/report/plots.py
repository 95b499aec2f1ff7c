"""Report plots: matplotlib's object API (no pyplot global state, no display needed).

Every function returns a `fmt.Figure` (the PNG was written) or a `fmt.Note` saying in words why
there is no plot; none ever saves an empty axes. One colour per framework everywhere.
"""
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator

from bench.report import fmt
from bench.report.load import RunData, of_type
from bench.report.facts import fid_metrics
from bench.report.tables import (cell_records, cells_of, col, has_gpu, sampling_metrics,
                                 training_metrics)

# Fixed colours for the known frameworks (PyTorch's orange, a Jittor blue); any other framework
# gets the next free colour of a colour-blind-safe cycle, in name order, so it is stable too.
FRAMEWORK_COLORS = {"torch": "#e8682c", "jittor": "#1f6fb4", "jax": "#2ca02c"}
_EXTRA_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]
# Components of the step-time breakdown (not frameworks, so neutral colours).
COMPONENT_COLORS = {"compile (iteration 0)": "#b0b0b0", "warm-up": "#d9c27a",
                    "data wait": "#7fb7d9", "compute": "#4a7a4a"}
DPI = 110


def framework_colors(frameworks) -> dict:
    colors, extra = {}, iter(_EXTRA_COLORS * 10)
    for fw in sorted(set(map(str, frameworks))):
        colors[fw] = FRAMEWORK_COLORS.get(fw) or next(extra)
    return colors


def framework_marker(framework) -> str:
    """Distinct marker shapes, so curves that coincide (parity mode) stay visible."""
    return {"torch": "o", "jittor": "x", "jax": "^"}.get(str(framework), "s")


def label(text) -> str:
    """Matplotlib parses '$..$' as mathtext (a bad one raises) and hides labels starting with
    '_': neutralise both for user-provided names."""
    s = str(text).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def save_figure(fig: MplFigure, out_dir: Path, name: str, caption: str) -> fmt.Figure:
    fig.savefig(out_dir / name, dpi=DPI, bbox_inches="tight")
    return fmt.Figure(name, caption)


class _PlainLogFormatter(LogFormatterSciNotation):
    """Log-axis tick labels as plain numbers (3, 10, 30; 0.5; 30,000), not 3×10⁰: the ticks
    matplotlib would label, written the way the tables write numbers."""

    def __call__(self, x, pos=None):
        return f"{x:,.12g}" if super().__call__(x, pos) else ""


def log_scale(ax, axes="x"):
    """A log scale on `axes` ("x", "y" or "xy") with plain-number tick labels."""
    for name in axes:
        getattr(ax, f"set_{name}scale")("log")
        axis = getattr(ax, f"{name}axis")
        axis.set_major_formatter(_PlainLogFormatter())
        # minor ticks labelled up to two decades (matplotlib: one), so that a sweep's 3-75
        # GFLOP axis reads 3, 4, 6, 10, 20, 30 and not only 10
        axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False,
                                                    minor_thresholds=(2, 0.5)))


def _new(ncols=1, width=6.0, height=3.6):
    fig = MplFigure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, list(axes)


def longest_curve(xs_by_curve) -> int:
    """The most distinct x values of any one curve: a plot against x needs a curve with two
    (a single x value per curve is a column of dots the table already lists)."""
    return max((len({float(x) for x in xs if fmt.is_num(x)}) for xs in xs_by_curve), default=0)


def values_text(values) -> str:
    """'10, 50' for the note of a plot not drawn."""
    return ", ".join(fmt_key(float(v)) for v in sorted({float(v) for v in values
                                                         if fmt.is_num(v)}))


def _draw_order(cell) -> tuple:
    """torch first, so thinner markers of other frameworks are drawn on top of it and stay
    visible where curves coincide (parity mode)."""
    return (cell["framework"] != "torch", str(cell["framework"]), str(cell["cell"]))


def _linewidth(framework) -> float:
    """torch (drawn first) wide and light, the rest thin on top: curves that coincide exactly
    (parity mode) show as a thin line inside a wide one instead of hiding each other."""
    return 3.2 if str(framework) == "torch" else 1.4


def _styles(cells) -> dict:
    """Line style per cell: solid for a framework's first cell, then dashed, dotted..."""
    seen, out = {}, {}
    for c in sorted(cells, key=_draw_order):
        k = seen[c["framework"]] = seen.get(c["framework"], -1) + 1
        out[c["cell"]] = LINESTYLES[k % len(LINESTYLES)]
    return out


def _train_cells(run: RunData):
    return sorted((c for _, c in cells_of(run, "train").iterrows()), key=_draw_order)


def _steps_by_epoch(run: RunData):
    """{cell: steps DataFrame with `epoch` and `i` (position within the epoch)} for train cells."""
    out = {}
    for c in _train_cells(run):
        steps = cell_records(run, c["cell"], "step")
        if steps.empty:
            continue
        steps = steps.copy()
        if "epoch" not in steps:
            steps["epoch"] = 0
        steps["epoch"] = pd.to_numeric(steps["epoch"], errors="coerce").fillna(0)
        sort_key = "step" if "step" in steps else "t_wall"
        steps = steps.sort_values(["epoch", sort_key], kind="stable")
        steps["i"] = steps.groupby("epoch").cumcount()
        out[c["cell"]] = (c, steps)
    return out


def _first_last_epoch_plot(run, out_dir, name, column, ylabel, caption, drop_compile):
    data = _steps_by_epoch(run)
    colors = framework_colors(run.cells["framework"])
    series = {}
    for cid, (c, steps) in data.items():
        if drop_compile and "phase" in steps:
            steps = steps[steps["phase"] != "compile"]
        y = col(steps, column)
        steps = steps[y.notna()]
        if len(steps):
            series[cid] = (c, steps)
    if not series:
        return fmt.Note(f"No plot of {ylabel.lower()} per step: no training cell recorded `{column}`.")
    first = min(s["epoch"].min() for _, s in series.values())
    last = max(s["epoch"].max() for _, s in series.values())
    if longest_curve(s[s["epoch"] == e]["i"] for _, s in series.values()
                     for e in (first, last)) < 2:
        return fmt.Note(f"No plot of {ylabel.lower()} per step: each plotted epoch (the first "
                        "and the last) has a single step (the table has the numbers).")
    panels = [("first epoch", first)] + ([("last epoch", last)] if last != first else [])
    fig, axes = _new(len(panels))
    styles = _styles(c for c, _ in series.values())
    for ax, (title, epoch) in zip(axes, panels):
        for cid, (c, steps) in sorted(series.items(), key=lambda kv: _draw_order(kv[1][0])):
            s = steps[steps["epoch"] == epoch]
            if s.empty:
                continue
            y = col(s, column)
            ax.plot(s["i"], y, color=colors[c["framework"]], linestyle=styles[cid],
                    marker=framework_marker(c["framework"]) if len(s) <= 60 else None,
                    markersize=5, linewidth=_linewidth(c["framework"]),
                    alpha=0.6 if c["framework"] == "torch" else 1.0, label=label(cid))
        ax.set_title(f"{title} (epoch {int(epoch)})" + ("" if len(panels) > 1 else ", the only one"))
        ax.set_xlabel("step within epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
    return save_figure(fig, out_dir, name, caption)


def _epochs_by_cell(run) -> dict:
    """{train cell: the epochs its `epoch` records name}."""
    out = {}
    for c in _train_cells(run):
        ep = cell_records(run, c["cell"], "epoch")
        out[c["cell"]] = list(col(ep, "epoch").dropna()) if "epoch" in ep else []
    return out


def _single_epoch_reason(epochs: dict) -> str:
    if not any(epochs.values()):
        return "no training cell finished an epoch"
    return "each training cell recorded a single epoch, nothing to draw a line through"


def loss_per_step(run, out_dir):
    return _first_last_epoch_plot(run, out_dir, "loss_per_step.png", "loss", "Training loss",
                                  "Training loss per step, first and last epoch.", False)


def time_per_step(run, out_dir):
    return _first_last_epoch_plot(
        run, out_dir, "time_per_step.png", "wall_s", "Step time (s)",
        "Wall time per step (data wait + compute), first and last epoch. Iteration 0 "
        "(compile) is left out so it does not flatten the axis; it is in the table.", True)


def loss_per_epoch(run, out_dir):
    epochs = _epochs_by_cell(run)
    if longest_curve(epochs.values()) < 2:
        return fmt.Note("No loss-per-epoch plot: " + _single_epoch_reason(epochs)
                        + "; the table has the final training and validation loss.")
    colors = framework_colors(run.cells["framework"])
    fig, (ax,) = _new()
    drawn = 0
    for c in _train_cells(run):
        ep = cell_records(run, c["cell"], "epoch")
        if ep.empty or "epoch" not in ep:
            continue
        ep = ep.sort_values("epoch")
        for column, style, what in (("mean_loss", "-", "train"), ("val_loss", "--", "validation")):
            y = col(ep, column)
            if y.notna().any():
                ax.plot(ep["epoch"][y.notna()], y.dropna(), linestyle=style,
                        marker=framework_marker(c["framework"]), markersize=7,
                        linewidth=_linewidth(c["framework"]),
                        alpha=0.6 if c["framework"] == "torch" else 1.0,
                        color=colors[c["framework"]], label=label(f"{c['cell']} {what}"))
                drawn += 1
    if not drawn:
        return fmt.Note("No loss-per-epoch plot: no training cell finished an epoch.")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "loss_per_epoch.png", "Mean training loss (solid) and validation "
                 "loss (dashed) per epoch.")


def time_per_epoch(run, out_dir):
    epochs = _epochs_by_cell(run)
    if longest_curve(epochs.values()) < 2:
        return fmt.Note("No time-per-epoch plot: " + _single_epoch_reason(epochs)
                        + " (the table has the step and epoch times).")
    colors = framework_colors(run.cells["framework"])
    fig, (ax,) = _new()
    drawn = 0
    for c in _train_cells(run):
        ep = cell_records(run, c["cell"], "epoch")
        y = col(ep, "time_s")
        if "epoch" not in ep or not y.notna().any():
            continue
        ax.plot(ep["epoch"][y.notna()], y.dropna(), marker=framework_marker(c["framework"]),
                markersize=7, color=colors[c["framework"]],
                label=label(c["cell"]))
        drawn += 1
    if not drawn:
        return fmt.Note("No time-per-epoch plot: no training cell recorded an epoch time.")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("epoch time (s)")
    times = [v for line in ax.lines for v in line.get_ydata() if v > 0]
    log = bool(times) and max(times) / min(times) > 30
    if log:   # a long compile epoch would flatten the steady ones to zero
        log_scale(ax, "y")
    else:
        ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "time_per_epoch.png", "Wall time per epoch (the first epoch "
                 "includes the compile iteration and warm-up steps)"
                 + ("; log scale, as the first epoch is far longer." if log else "."))


def _monitor_by_cell(run):
    mon = of_type(run.records, "monitor")
    for cid, g in (mon.groupby("cell", sort=True) if not mon.empty else []):
        t = col(g, "t_wall")
        if t.notna().any():
            yield cid, g.assign(t_rel=t - t.min()).sort_values("t_rel")


def _monitor_panels(run, out_dir, name, rows, caption):
    """A grid of time series from monitor.jsonl: one row per quantity, one column per workload
    (train, sample, ...), one line per cell coloured by its framework. `rows` is a list of
    (columns to try in order, y label, divisor). Returns None when nothing was sampled."""
    colors = framework_colors(run.cells["framework"])
    by_cell = list(_monitor_by_cell(run))

    def series(g, columns):   # a single sample is no line: such a cell is left out
        for c in columns:
            y = col(g, c)
            if y.notna().sum() >= 2:
                return y
        return None

    workloads = sorted({str(g["workload"].iloc[0]) for _, g in by_cell
                        if any(series(g, cols) is not None for cols, _, _ in rows)})[:4]
    if not workloads:
        return None
    fig = MplFigure(figsize=(max(5.0 * len(workloads), 7.0), 3.3 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(workloads), squeeze=False)
    for r, (columns, ylabel, divisor) in enumerate(rows):
        for w, workload in enumerate(workloads):
            ax = axes[r][w]
            ax.grid(True, alpha=0.3)
            per_fw = {}
            for cid, g in by_cell:
                y = series(g, columns)
                if str(g["workload"].iloc[0]) != workload or y is None:
                    continue
                fw = str(g["framework"].iloc[0])
                k = per_fw[fw] = per_fw.get(fw, -1) + 1
                ax.plot(g["t_rel"][y.notna()], y.dropna() / divisor, color=colors[fw],
                        linestyle=LINESTYLES[k % 4], linewidth=1.2, label=label(cid))
            ax.set_title(f"{workload} cells" if r == 0 else "", fontsize="medium")
            ax.set_xlabel("seconds since the cell started")
            ax.set_ylabel(ylabel)
            if ax.lines:
                ax.set_ylim(bottom=0)
                ax.legend(fontsize="small")
            else:
                ax.grid(False)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(0.5, 0.5, f"no {ylabel.split(' (')[0]} samples\nfor the {workload} cells",
                        ha="center", va="center", transform=ax.transAxes, color="#666")
    return save_figure(fig, out_dir, name, caption)


def utilisation(run, out_dir):
    gpu = has_gpu(run)
    column, what = ("gpu_util_percent", "GPU") if gpu else ("cpu_percent", "CPU")
    caption = ("GPU utilisation (NVML duty cycle) over time; one panel per workload, one line "
               "per cell." if gpu else
               "CPU utilisation of the worker process over time (100% = one core); one panel "
               "per workload, one line per cell. No GPU in this run, so no GPU utilisation.")
    fig = _monitor_panels(run, out_dir, "utilisation.png",
                          [((column,), f"{what} utilisation (%)", 1.0)], caption)
    return fig or fmt.Note(f"No utilisation plot: the monitor recorded no `{column}` samples "
                           "(or a single one per cell: no line to draw).")


def memory_over_time(run, out_dir):
    gpu = has_gpu(run)
    rows = [(("rss_bytes",), "host RSS (MiB)", fmt.MIB)]
    if gpu:
        rows.append((("proc_gpu_mem_bytes", "gpu_mem_used_bytes"), "GPU memory (MiB)", fmt.MIB))
    caption = "Memory over time: host RSS of the worker process" + (
        " and its GPU memory (NVML)." if gpu else ". No GPU in this run, so no device memory.")
    fig = _monitor_panels(run, out_dir, "memory_over_time.png", rows, caption)
    return fig or fmt.Note("No memory-over-time plot: the monitor recorded no memory samples "
                           "(or a single one per cell: no line to draw).")


def sampling_vs_steps(run, out_dir):
    m = sampling_metrics(run)
    if m.empty or "steps" not in m:
        return fmt.Note("No sampling plot: the run has no measured sampling records.")
    m = m[pd.to_numeric(m["steps"], errors="coerce").notna()]
    if m.empty:
        return fmt.Note("No sampling plot: sampling records carry no step counts.")
    curves = m.groupby([m[k].astype(str) for k in ("framework", "batch_size") if k in m]
                       + [m.apply(_sampler_name, axis=1)])["steps"]
    if longest_curve(list(g) for _, g in curves) < 2:
        return fmt.Note(f"No plot of sampling time vs steps: each sampler ran at a single step "
                        f"count ({values_text(m['steps'])}); the table above has its times.")
    colors = framework_colors(run.cells["framework"])
    batches = sorted(m["batch_size"].unique(), key=str)[-3:] if "batch_size" in m else [None]
    fig, axes = _new(len(batches), width=5.5)
    samplers = sorted({_sampler_name(r) for _, r in m.iterrows()})
    for ax, batch in zip(axes, batches):
        sub = m if batch is None else m[m["batch_size"] == batch]
        for (fw, sname), g in sub.groupby([sub["framework"], sub.apply(_sampler_name, axis=1)]):
            g = g.assign(steps_n=pd.to_numeric(g["steps"])).sort_values("steps_n")
            k = samplers.index(sname)
            ax.plot(g["steps_n"], g["time_per_batch_median_s"], color=colors[str(fw)],
                    linestyle=LINESTYLES[k % 4], marker=MARKERS[k % len(MARKERS)],
                    label=label(f"{fw} {sname}"))
        steps = pd.to_numeric(sub["steps"])
        if steps.max() / max(steps.min(), 1) > 10:
            log_scale(ax, "xy")
        ax.set_title("all batches" if batch is None else f"batch {fmt_key(batch)}")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel("time per batch (s)")
        ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "sampling_vs_steps.png",
                 "Median time per batch vs number of sampling steps; colour = framework, "
                 "line style = sampler.")


def fmt_key(v):
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _sampler_name(r) -> str:
    name = str(r.get("sampler", "sampler"))
    eta = r.get("eta")
    if fmt.is_num(eta) and str(r.get("sampler", "")).lower() == "ddim":
        name += f" η={float(eta):g}"
    return name


def step_breakdown(run, out_dir):
    m = training_metrics(run)
    if m.empty:
        return fmt.Note("No step-time breakdown: the run has no training cell.")
    m = m[(m["steps_measured"] > 0) | m["compile_s"].notna()]
    if m.empty:
        return fmt.Note("No step-time breakdown: no training cell recorded a step.")
    colors = framework_colors(run.cells["framework"])
    fig, axes = _new(2, width=5.0)
    x = np.arange(len(m))
    names = [label(c) for c in m["cell"]]
    # Left: the typical measured step. Right: where the whole training time went.
    per_step = {"data wait": m["data_wait_s_median"], "compute": m["compute_s_median"]}
    totals = {"compile (iteration 0)": m["compile_s"],
              "warm-up": m["warmup_s"],
              "data wait": m["data_wait_s_samples"].map(np.sum),
              "compute": m["compute_s_samples"].map(np.sum)}
    for ax, parts, title, ylabel in ((axes[0], per_step, "median measured step", "seconds per step"),
                                     (axes[1], totals, "whole training run", "seconds, total")):
        bottom = np.zeros(len(m))
        for part, values in parts.items():
            v = pd.to_numeric(values, errors="coerce").fillna(0).to_numpy(dtype=float)
            ax.bar(x, v, bottom=bottom, color=COMPONENT_COLORS[part], label=part, width=0.6)
            bottom += v
        ax.set_xticks(x, names, rotation=20 if len(m) > 3 else 0)
        for tick, fw in zip(ax.get_xticklabels(), m["framework"]):
            tick.set_color(colors[str(fw)])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "step_breakdown.png",
                 "Step time split into data wait and compute (left: medians of measured steps; "
                 "right: totals including the compile iteration and warm-up).")


def fid_vs_steps(run, out_dir):
    m = fid_metrics(run)
    if m.empty or "fid" not in m or "steps" not in m:
        return fmt.Note("No FID plot: the run has no quality (FID) records.")
    m = m[pd.to_numeric(m["fid"], errors="coerce").notna() & pd.to_numeric(m["steps"], errors="coerce").notna()]
    if m.empty:
        return fmt.Note("No FID plot: the FID records hold no numbers.")
    curves = m.groupby([m["framework"].astype(str), m.apply(_sampler_name, axis=1)])["steps"]
    if longest_curve(list(g) for _, g in curves) < 2:
        return fmt.Note(f"No plot of FID vs steps: FID was computed at a single step count "
                        f"per sampler ({values_text(m['steps'])}); the table above has it.")
    colors = framework_colors(run.cells["framework"].tolist() + m["framework"].tolist())
    fig, (ax,) = _new()
    samplers = sorted({_sampler_name(r) for _, r in m.iterrows()})
    for (fw, sname), g in m.groupby([m["framework"], m.apply(_sampler_name, axis=1)]):
        g = g.assign(steps_n=pd.to_numeric(g["steps"])).sort_values("steps_n")
        k = samplers.index(sname)
        ax.plot(g["steps_n"], pd.to_numeric(g["fid"]), color=colors[str(fw)], marker=MARKERS[k % 6],
                linestyle=LINESTYLES[k % 4], label=label(f"{fw} {sname}"))
    steps = pd.to_numeric(m["steps"])
    if steps.max() / max(steps.min(), 1) > 10:
        log_scale(ax, "x")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("FID (lower is better)")
    ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "fid_vs_steps.png", "FID vs number of sampling steps.")


ALL_PLOTS = {
    "loss_per_step": loss_per_step, "loss_per_epoch": loss_per_epoch,
    "time_per_step": time_per_step, "time_per_epoch": time_per_epoch,
    "step_breakdown": step_breakdown, "utilisation": utilisation,
    "memory_over_time": memory_over_time, "sampling_vs_steps": sampling_vs_steps,
    "fid_vs_steps": fid_vs_steps,
}


MAX_REPLICATE_PANELS = 6


def replicate_medians(run, out_dir, workload):
    """One point per process: its median step time (train) or chain time (sample), by
    replicate round, one series per framework and one panel per train variant or sampler
    setting. What the interval is made of, and the drift a single process would hide."""
    if workload == "train":
        m = training_metrics(run)
        what, groups, ylabel = "step time", "wall_s_groups", "median step time (s)"
    else:
        m = sampling_metrics(run)
        what, groups, ylabel = "chain time", "time_groups", "median time per batch (s)"
    rows = [r for _, r in m.iterrows()]
    if not rows or max(len(r[groups]) for r in rows) < 2:
        return fmt.Note(f"No per-process {what} plot: each cell ran as a single process "
                        "(runner.replicates: 1).")
    titles = list(dict.fromkeys(_panel_title(r) for r in rows))[:MAX_REPLICATE_PANELS]
    colors = framework_colors(run.cells["framework"])
    fig, axes = _new(len(titles), width=4.2 if len(titles) > 2 else 5.5)
    for ax, title in zip(axes, titles):
        for r in rows:
            if _panel_title(r) != title:
                continue
            meds = [float(np.median(g)) if len(g) else np.nan for g in r[groups]]
            if not np.isfinite(meds).any():   # every process failed: no series, no legend
                continue
            x = np.arange(1, len(meds) + 1)
            ax.plot(x, meds, color=colors[str(r["framework"])], marker=framework_marker(
                r["framework"]), linestyle="-", linewidth=1, label=label(r["framework"]))
        ax.set_title(label(title or "train"), fontsize="medium")
        ax.set_xlabel("replicate (round of the run)")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    return save_figure(fig, out_dir, f"replicates_{workload}.png",
                 f"Per-process median {what}, one point per process in the order the rounds "
                 f"ran. The spread of these points (not of the steps inside one process) is "
                 f"what the ratio intervals are built from; a trend across rounds is drift of "
                 f"the machine, which the interleaved order spreads over every framework.")


def _panel_title(r) -> str:
    """A sampling row's setting, or a training row's variant (loader) if it has one."""
    if isinstance(r.get("sampler"), str):
        return f"{_sampler_name(r)} {fmt_key(r.get('steps'))} steps b{fmt_key(r.get('batch_size'))}"
    variant = r.get("variant")
    return variant if isinstance(variant, str) else ""
