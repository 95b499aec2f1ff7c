"""The report's "Data-parallel training" section (docs/DISTRIBUTED.md): per framework, each
world size's step time, global images/s, speed-up and scaling efficiency over its
single-process cell (intervals over processes), the share of a step a gradient all-reduce
takes (measured in the cell), and memory per rank; a scaling plot.

Numbers first (scaling_frame, tested), display second (section)."""
import numpy as np
import pandas as pd

from bench.report import fmt, plots
from bench.report.load import RunData
from bench.report.tables import (cells_of, dp_cells, training_metrics, unit_records,
                                 units_of)
from bench.stats.replicates import ratio_of_replicates


def _world_size(run, cell) -> int:
    for unit in units_of(run, cell):
        d = unit_records(run, unit, "distributed")
        if not d.empty:
            return int(d.iloc[-1]["world_size"])
    return 1


def _per_process(run, cell, record, column, reduce=np.nanmax) -> float:
    """Median over a cell's processes of `reduce` over one record type's column."""
    vals = []
    for unit in units_of(run, cell):
        r = unit_records(run, unit, record)
        if column in r:
            v = pd.to_numeric(r[column], errors="coerce").dropna()
            if len(v):
                vals.append(float(reduce(v)))
    return float(np.median(vals)) if vals else np.nan


def scaling_frame(run: RunData) -> pd.DataFrame:
    """One row per (framework, world size), the single-process row included; empty without
    data-parallel cells."""
    dp = dp_cells(run)
    if dp.empty:
        return pd.DataFrame()
    rows = []
    for fw in sorted(set(dp["framework"])):
        single = cells_of(run, "train")
        single = single[(single["framework"] == fw) & single["variant"].isin(["", "shared", None])]
        cells = list(single["cell"][:1]) + list(dp[dp["framework"] == fw]["cell"])
        m = training_metrics(run, run.cells[run.cells["cell"].isin(cells)]).set_index("cell")
        base = m.loc[cells[0]] if cells and cells[0] in m.index and len(single) else None
        for cell in cells:
            if cell not in m.index:
                continue
            r, n = m.loc[cell], _world_size(run, cell)
            speed = ratio_of_replicates(base["wall_s_groups"], r["wall_s_groups"]) \
                if base is not None else None
            step = r["wall_s_median"]
            allreduce = _per_process(run, cell, "distributed", "allreduce_s", np.nanmedian)
            batch = _per_process(run, cell, "train_info", "batch_size")
            rows.append({
                "framework": fw, "cell": cell, "world_size": n, "status": r["status"],
                "threads_per_rank": _per_process(run, cell, "start", "threads"),
                "step_s": step, "images_per_s": batch / step if step else np.nan,
                "speedup": speed if n > 1 else None,
                "efficiency": (speed.value / n) if (speed is not None and n > 1) else
                (1.0 if n == 1 else np.nan),
                "efficiency_low": speed.low / n if (speed is not None and n > 1) else np.nan,
                "efficiency_high": speed.high / n if (speed is not None and n > 1) else np.nan,
                "allreduce_s": allreduce, "allreduce_share": allreduce / step if step else np.nan,
                "grad_mib": _per_process(run, cell, "distributed", "grad_bytes") / 2 ** 20,
                "rank_peak_bytes": _per_process(run, cell, "ranks", "peak_rss_bytes")
                if n > 1 else r["host_peak_rss_bytes"],
                "groups": r["wall_s_groups"]})
    return pd.DataFrame(rows)


def scaling_plot(frame: pd.DataFrame, out_dir):
    ok = frame[frame["images_per_s"].notna()]
    if ok.empty:
        return fmt.Note("No scaling plot: no data-parallel cell finished a measured step.")
    if plots.longest_curve(g["world_size"] for _, g in ok.groupby("framework")) < 2:
        return fmt.Note("No scaling plot: each framework finished measured steps at a single "
                        f"world size ({plots.values_text(ok['world_size'])}); the table has its "
                        "numbers.")
    colors = plots.framework_colors(ok["framework"])
    fig, (left, right) = plots._new(2, width=4.6)
    for fw, g in ok.groupby("framework"):
        g = g.sort_values("world_size")
        left.plot(g["world_size"], g["images_per_s"], marker=plots.framework_marker(fw),
                  color=colors[fw], label=plots.label(fw))
        right.plot(g["world_size"], g["efficiency"], marker=plots.framework_marker(fw),
                   color=colors[fw], label=plots.label(fw))
        lo, hi = g["efficiency_low"].to_numpy(float), g["efficiency_high"].to_numpy(float)
        right.fill_between(g["world_size"], np.where(np.isfinite(lo), lo, g["efficiency"]),
                           np.where(np.isfinite(hi), hi, g["efficiency"]),
                           color=colors[fw], alpha=0.15)
    ns = sorted(set(ok["world_size"]))
    left.plot(ns, [ok[ok["world_size"] == 1]["images_per_s"].max() * n for n in ns], ":",
              color="grey", label="linear (from the fastest 1-process cell)")
    right.axhline(1.0, color="grey", linestyle=":")
    for ax, title, ylabel in ((left, "throughput", "images/s (global batch ÷ step)"),
                              (right, "scaling efficiency", "throughput(N) ÷ (N × throughput(1))")):
        ax.set_xticks(ns)
        ax.set_xlabel("ranks (world size)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize="small")
    return plots.save_figure(fig, out_dir, "scaling.png",
                             "Data-parallel scaling: throughput and efficiency vs world size "
                             "(band: 95% interval over processes).")


def section(run: RunData, out_dir, baseline: str) -> fmt.Section:
    s = fmt.Section("Data-parallel training", "distributed")
    frame = scaling_frame(run)
    if frame.empty:
        s.blocks.append(fmt.Note("No data-parallel cells in this run (`train.world_size`; "
                                 "docs/DISTRIBUTED.md)."))
        return s
    s.intro = ("The same global batch split over N ranks (torch: DistributedDataParallel "
               "under torchrun; Jittor: MPI under mpirun; JAX: jax.distributed, one all-reduce "
               "of the flattened gradient a step), each rank on its slice; one process "
               "per rank. Speed-up = the 1-process step time ÷ the N-rank step time over "
               "processes, [95% interval]; efficiency = speed-up ÷ N. All-reduce = the median "
               "time of one all-reduce of the whole gradient (the framework's own collective, "
               "timed in the cell after training), and its share of the step: an upper bound "
               "on what communication costs a step (backward overlaps it in DDP).")
    rows = []
    for _, r in frame.iterrows():
        n = int(r["world_size"])
        rows.append([r["framework"], str(n), fmt.num(r["threads_per_rank"]),
                     fmt.num(r["step_s"] * 1e3), fmt.num(r["images_per_s"]),
                     "baseline" if n == 1 else fmt.ratio(r["speedup"]),
                     fmt.num(r["efficiency"]) + (
                         f" [{r['efficiency_low']:.2f}, {r['efficiency_high']:.2f}]"
                         if np.isfinite(r["efficiency_low"]) else ""),
                     fmt.num(r["allreduce_s"] * 1e3) if n > 1 else fmt.DASH,
                     f"{r['allreduce_share']:.0%}" if n > 1 and np.isfinite(r["allreduce_share"])
                     else fmt.DASH,
                     fmt.mib(r["rank_peak_bytes"]), r["status"]])
    s.blocks.append(fmt.Table(
        ["framework", "ranks", "threads/rank", "step ms", "images/s", "speed-up",
         "efficiency", "all-reduce ms", "all-reduce share", "peak RSS/rank MiB", "status"],
        rows, caption="Data-parallel training vs the same framework's single process."))
    s.blocks.append(scaling_plot(frame, out_dir))
    return s
