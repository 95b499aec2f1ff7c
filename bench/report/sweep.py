"""The report of a sweep (bench/run/sweep.py): "How the gap changes with size".

Each point's folder is a whole run, and gets the whole report of one (render.py writes it to
points/<point>/); this module reads every point's numbers through the same functions those
reports use (tables.training_metrics, tables.sampling_metrics, profile.profile_summary) and
lays them along the size axis: analytical GFLOPs of one training step of the point's model
and batch (models/common/flops.py), log scale.

The ratio at a point is the one the point's own report gives (framework ÷ baseline of the
per-process medians, 95% interval over processes). The profile's decomposition: a step's
ratio - 1 = sum over categories of (framework's - baseline's ms in that category) ÷ the
baseline's step, so the change of the ratio between two points splits exactly into
per-category changes; the sentence names the categories that carry most of it.
"""
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from bench.records.results import point_dir
from bench.report import fmt, profile, tables
from bench.report.load import ReportInputError, RunData, load_run, measured
from bench.report.plots import (framework_colors, framework_marker, label, log_scale,
                                save_figure)
from bench.run.config import ConfigError, build_specs
from bench.run.sweep import overrides_text
from bench.stats.replicates import ratio_of_replicates
from models.common.flops import sample_step_flops, train_step_flops
from models.common.weights import count_params
from models.parity import read_record

TRAINING = "training step"
PHASE = "train"   # the profiled phase the decomposition is about


@dataclass
class Point:
    name: str
    overrides: str            # what the point changes, in words
    run: RunData | None       # None: its folder is missing or unreadable
    params: float = np.nan
    train_gflop: float = np.nan   # one training step of the point's model and batch
    sample_gflop: float = np.nan  # one sampling step at the first sampling batch
    parity: str = "not checked"
    problem: str = ""


def is_sweep(manifest: dict) -> bool:
    return isinstance(manifest.get("sweep"), list) and bool(manifest["sweep"])


def load_points(run_dir: Path, manifest: dict) -> list:
    """Every point of the sweep, in the config's order, with its model's size."""
    by_name = {p["name"]: p for p in (manifest.get("config") or {}).get("sweep") or []}
    points = []
    for name in manifest["sweep"]:
        pt = Point(name, overrides_text(by_name.get(name, {"name": name})), None)
        try:
            pt.run = load_run(point_dir(str(run_dir), name))
        except ReportInputError as e:
            pt.problem = str(e)
            points.append(pt)
            continue
        cfg = pt.run.manifest.get("config") or {}
        try:
            unet, diffusion, optim = build_specs(cfg)
            pt.params = count_params(unet)
            pt.train_gflop = train_step_flops(unet, cfg["train"]["batch_size"]) / 1e9
            pt.sample_gflop = sample_step_flops(unet, cfg["sample"]["batch_sizes"][0]) / 1e9
            pt.parity = _parity(read_record(unet, diffusion, optim))
        except (ConfigError, KeyError, TypeError, IndexError, ValueError) as e:
            pt.problem = f"its config describes no model: {e}"
        points.append(pt)
    return points


def _parity(rec) -> str:
    if rec is None:
        return "not checked"
    worst = max((v["error"] for t in rec["errors"].values() for v in t.values()
                 if v.get("tolerance")), default=float("nan"))
    return f"{'passed' if rec['passed'] else 'FAILED'} (worst {worst:.0e})"


# ----------------------------------------------------------------------------- numbers

def gap_rows(points: list, baseline: str) -> pd.DataFrame:
    """One row per (point, workload, framework) of the matched cells: step time, its ratio to
    the baseline (a Ratio, None for the baseline itself), GFLOP/s, % of peak, memory."""
    rows = []
    for order, pt in enumerate(points):
        if pt.run is None:
            continue
        base_row = dict(point=pt.name, order=order, x=pt.train_gflop)
        tm = tables.training_metrics(pt.run)
        for _, r in tm.iterrows():
            base = tables.pick_baseline(tm, baseline, r["variant"])
            ratio = None if r["framework"] == baseline or base is None else \
                ratio_of_replicates(r["wall_s_groups"], base["wall_s_groups"])
            rows.append(dict(base_row, workload=TRAINING, framework=r["framework"],
                             status=r["status"], step_s=r["wall_s_median"], ratio=ratio,
                             processes=r["replicates"], processes_ok=r["replicates_ok"],
                             gflops=r["gflops"], peak_fraction=r["peak_fraction"],
                             images_per_s=r["images_per_s_median"],
                             memory_bytes=_memory(r)))
        sm = tables.sampling_metrics(pt.run)
        if sm.empty:
            continue
        keys = [k for k in tables.SAMPLE_KEYS if k in sm and not (sm[k] == fmt.DASH).all()]
        for _, r in sm.iterrows():
            base = tables.same_settings(sm, r, keys, baseline)
            ratio = None if r["framework"] == baseline or not len(base) else \
                ratio_of_replicates(r["time_groups"], base.iloc[0]["time_groups"])
            rows.append(dict(base_row, workload=_sampler_label(r), framework=r["framework"],
                             status="ok", step_s=r["per_step_median_s"], ratio=ratio,
                             gflops=r["gflops"], peak_fraction=r["peak_fraction"],
                             images_per_s=r["images_per_s_median"], memory_bytes=np.nan))
    return pd.DataFrame(rows)


def _memory(r) -> float:
    """The training cell's peak: the device's on a GPU, else the host's RSS."""
    for column in ("device_peak_bytes", "host_peak_rss_bytes", "allocator_peak_bytes"):
        v = r.get(column)
        if fmt.is_num(v):
            return float(v)
    return np.nan


def _sampler_label(r) -> str:
    return (f"sampling step ({r['sampler']} {tables._key(r.get('steps'))} steps, "
            f"batch {tables._key(r['batch_size'])})")


def category_gaps(points: list, baseline: str) -> dict:
    """{point: {framework: {"ratio": profiled ratio, "contrib": {category: (fw - base) ÷
    base step}, "coverage": ops(+perf) coverage, "base_coverage": ...}}} for the profiled
    points (training step)."""
    out = {}
    for pt in points:
        if pt.run is None:
            continue
        summary = profile.profile_summary(pt.run)
        base = summary.get((baseline, PHASE))
        if base is None:
            continue
        out[pt.name] = {}
        for (fw, phase), s in summary.items():
            if phase != PHASE or fw == baseline:
                continue
            mine, theirs = profile._comparable(s, base), profile._comparable(base, s)
            out[pt.name][fw] = {
                "ratio": s["step_s"] / base["step_s"],
                "contrib": {c: (mine.get(c, 0.0) - theirs.get(c, 0.0)) / base["step_s"]
                            for c in set(mine) | set(theirs)},
                "coverage": _coverage(s), "base_coverage": _coverage(base)}
    return out


def _coverage(s) -> float:
    return s["native"]["coverage"] if s["native"] else s["coverage"]


# ----------------------------------------------------------------------------- words

def sentence(points: list, rows: pd.DataFrame, gaps: dict, baseline: str) -> str:
    """How the ratio moves across the sweep, per framework and workload, and which category
    of the profile carries most of its change between the smallest and the largest point."""
    if rows.empty:
        return "No point of this sweep has a measured cell: nothing to compare."
    texts = []
    measured = rows[rows["ratio"].map(lambda r: r is not None and fmt.is_num(r.value))]
    for (fw, workload), g in measured.groupby(["framework", "workload"], sort=False):
        g = g.sort_values(["x", "order"])
        if len(g) < 2:
            continue
        first, last = g.iloc[0], g.iloc[-1]
        values = [r.value for r in g["ratio"]]
        steps = np.diff(values)
        how = ("rising at every point" if (steps > 0).all() else
               "falling at every point" if (steps < 0).all() else
               f"not monotonically: lowest {min(values):.2f}× at {g.iloc[int(np.argmin(values))]['point']}, "
               f"highest {max(values):.2f}× at {g.iloc[int(np.argmax(values))]['point']}")
        texts.append(f"{fw}'s {workload} goes from {_ratio_words(first['ratio'])} {baseline}'s "
                     f"time at {first['point']} ({first['x']:.3g} GFLOP per training step) to "
                     f"{_ratio_words(last['ratio'])} at {last['point']} ({last['x']:.3g} GFLOP), "
                     f"{how}.")
    texts += _category_sentences(points, gaps, baseline)
    return " ".join(texts) or "Fewer than two points with both frameworks measured: no curve."


def _ratio_words(r) -> str:
    return f"{r.value:.2f}× [{r.low:.2f}, {r.high:.2f}]" if r.has_interval else f"{r.value:.2f}×"


def _category_sentences(points: list, gaps: dict, baseline: str) -> list:
    profiled = [pt for pt in sorted(points, key=lambda p: p.train_gflop) if pt.name in gaps]
    if len(profiled) < 2:
        return []
    small, large = profiled[0], profiled[-1]
    out = []
    for fw in gaps[large.name]:
        if fw not in gaps[small.name]:
            continue
        a, b = gaps[small.name][fw], gaps[large.name][fw]
        change = {c: b["contrib"].get(c, 0.0) - a["contrib"].get(c, 0.0)
                  for c in set(a["contrib"]) | set(b["contrib"])}
        total = b["ratio"] - a["ratio"]
        grew = sorted((c for c in change if change[c] > 0.005), key=lambda c: -change[c])
        shrank = sorted((c for c in change if change[c] < -0.005), key=lambda c: change[c])

        def named(cats):
            return ", ".join(f"{profile.LABELS.get(c, c)} ({change[c]:+.2f})" for c in cats[:3])

        parts = [f"grew: {named(grew)}" if grew else "",
                 f"shrank: {named(shrank)}" if shrank else ""]
        out.append(f"Under the profiler {fw}'s training step goes from {a['ratio']:.2f}× "
                   f"{baseline}'s at {small.name} to {b['ratio']:.2f}× at {large.name} "
                   f"({total:+.2f}, in units of {baseline}'s step, the sum of the categories' "
                   f"changes); the categories whose share "
                   + "; ".join(p for p in parts if p) + "." if any(parts) else
                   f"Under the profiler {fw}'s training step goes from {a['ratio']:.2f}× to "
                   f"{b['ratio']:.2f}×, no category moving by more than 0.005.")
    return out


# ----------------------------------------------------------------------------- tables

def point_table(points: list, rows: pd.DataFrame, gaps: dict, baseline: str) -> fmt.Table:
    fws = sorted(set(rows["framework"]), key=lambda f: (f != baseline, f)) if len(rows) else []
    others = [f for f in fws if f != baseline]
    columns = ["point", "params", "GFLOP / training step"]
    columns += [f"{fw} training step, ms (images/s)" for fw in fws]
    columns += [f"{fw} ÷ {baseline}, training (95% CI)" for fw in others]
    columns += [f"{fw} GFLOP/s (% of peak)" for fw in fws]
    columns += [f"{fw} peak memory (MiB)" for fw in fws]
    columns += [f"{fw} ÷ {baseline}, sampling step" for fw in others]
    columns += ["largest category gap (profiled)", "parity", "cells"]
    machines = {pt.name: machine(pt) for pt in points if pt.run is not None}
    several = len(set(machines.values())) > 1   # e.g. Slurm jobs on different nodes
    if several:
        columns.insert(1, "machine")
    out = []
    for pt in points:
        if pt.run is None:
            out.append([pt.name] + [fmt.DASH] * (len(columns) - 2) + [pt.problem or "missing"])
            continue
        mine = rows[rows["point"] == pt.name] if len(rows) else rows
        train = {r["framework"]: r for _, r in mine.iterrows() if r["workload"] == TRAINING}
        samp = mine[mine["workload"] != TRAINING] if len(mine) else mine
        line = [pt.name] + ([machines[pt.name]] if several else []) + \
            [_params(pt.params), fmt.num(pt.train_gflop)]
        line += [_step_cell(train[fw]) if fw in train else fmt.DASH for fw in fws]
        line += [fmt.ratio(train[fw]["ratio"]) if fw in train else fmt.DASH for fw in others]
        line += [(f"{fmt.num(train[fw]['gflops'])} ({_pct(train[fw]['peak_fraction'])})"
                  if fw in train else fmt.DASH) for fw in fws]
        line += [fmt.mib(train[fw]["memory_bytes"]) if fw in train else fmt.DASH for fw in fws]
        for fw in others:
            vals = [r.value for r in samp[samp["framework"] == fw]["ratio"]
                    if r is not None and fmt.is_num(r.value)] if len(samp) else []
            line.append(fmt.DASH if not vals else f"{min(vals):.2f}×" if len(vals) == 1
                        else f"{min(vals):.2f}-{max(vals):.2f}×")
        line.append(_largest_gap(gaps.get(pt.name, {})))
        line.append(pt.parity)
        n_ok = int((pt.run.cells["status"] == "ok").sum()) if len(pt.run.cells) else 0
        line.append(f"{n_ok}/{len(pt.run.cells)} ok")
        out.append(line)
    return fmt.Table(columns, out, numeric=True, caption=(
        f"One row per point. Training step: the median over processes of each process's "
        f"median step; ratio = framework ÷ {baseline} with its 95% interval over processes "
        f"(as in each point's own report). GFLOP/s: analytical FLOPs ÷ median step; % of peak: "
        f"of the n×n matmul each cell timed in its own framework. Peak memory: the training "
        f"cell's device memory on a GPU, else its host RSS. Sampling step: the range over the "
        f"point's sampler settings. Largest category gap: the profile category with the "
        f"largest difference from {baseline} in a training step (ms, and in units of "
        f"{baseline}'s step). Parity: the short check of the point's model (forward, loss, "
        f"gradients, one Adam step) by `harness.py parity --config` (`make bench` runs it "
        f"first), 'not checked' where no record of it exists." + (
            " The points ran on different machines (the machine column: each point's "
            "manifest, written by the node that ran it): every ratio is within its own "
            "machine, and a change between points of different machines is the machines' "
            "as much as the size's." if several else "")))


def machine(pt) -> str:
    """The hardware that measured a point: its GPU's name, else its CPU model."""
    m = pt.run.manifest or {}
    devices = (m.get("gpu") or {}).get("devices") or []
    gpus = sorted({d.get("name") for d in devices if d.get("name")})
    return ", ".join(gpus) or (m.get("host") or {}).get("cpu_model") or "unknown"


def _step_cell(r) -> str:
    """'51 (157)': ms per training step (images/s), or why there is none."""
    if not r["processes_ok"]:
        return f"no measurement ({int(r['processes'])} of {int(r['processes'])} processes failed)"
    return f"{fmt.num(r['step_s'] * 1e3)} ({fmt.num(r['images_per_s'])})"


def _params(n) -> str:
    return f"{n / 1e6:.2f}M" if fmt.is_num(n) else fmt.DASH


def _pct(x) -> str:
    return f"{x * 100:.1f}%" if fmt.is_num(x) else fmt.DASH


def _largest_gap(by_fw: dict) -> str:
    parts = []
    for fw, g in by_fw.items():
        if not g["contrib"]:
            continue
        c = max(g["contrib"], key=lambda k: abs(g["contrib"][k]))
        parts.append(f"{fw}: {profile.LABELS.get(c, c)} {g['contrib'][c]:+.2f}")
    return "; ".join(parts) or fmt.DASH


def coverage_table(points: list, gaps: dict, baseline: str) -> fmt.Table | None:
    rows = [[pt.name, fw, f"{g['base_coverage'] * 100:.0f}%", f"{g['coverage'] * 100:.0f}%",
             f"{g['ratio']:.2f}×"]
            for pt in points if pt.name in gaps for fw, g in gaps[pt.name].items()]
    if not rows:
        return None
    return fmt.Table(["point", "framework", f"{baseline} coverage", "framework coverage",
                      "profiled ratio"], rows, caption=(
        "Coverage of a profiled training step: categorised op time plus the perf sample's "
        "outside-ops classes (where perf ran) ÷ the synced step; near 100% means the "
        "categories account for the step. Each point's own report has the full profile."))


def points_table(points: list, out_names: dict) -> fmt.Table:
    rows = [[pt.name, pt.overrides, out_names.get(pt.name, fmt.DASH)] for pt in points]
    return fmt.Table(["point", "what it changes", "its own report"], rows, numeric=False,
                     caption="Every point is a whole run of its own (results/<run>/points/"
                             "<point>/) with the whole report of one, beside this one.")


# ----------------------------------------------------------------------------- plots

def ratio_plot(rows: pd.DataFrame, out_dir: Path, baseline: str) -> fmt.Figure | fmt.Note:
    measured = rows[rows["ratio"].map(lambda r: r is not None and fmt.is_num(r.value))] \
        if len(rows) else rows
    if measured.empty or measured["point"].nunique() < 2:
        return fmt.Note("Fewer than two points with a ratio: no curve to draw.")
    fig = MplFigure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for (fw, workload), g in measured.groupby(["framework", "workload"], sort=False):
        g = g.sort_values("x")
        vals = np.array([r.value for r in g["ratio"]])
        lo = np.array([r.value - r.low if r.has_interval else 0.0 for r in g["ratio"]])
        hi = np.array([r.high - r.value if r.has_interval else 0.0 for r in g["ratio"]])
        ax.errorbar(g["x"], vals, yerr=[lo, hi], marker=framework_marker(fw), capsize=3,
                    linestyle="-" if workload == TRAINING else "--",
                    label=label(f"{fw}: {workload}"))
    ax.axhline(1.0, color="black", linewidth=0.8)
    log_scale(ax, "x")
    ax.set_xlabel("GFLOP per training step (the point's model and batch), log")
    ax.set_ylabel(f"time ÷ {baseline}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "sweep_ratio.png", (
        f"Framework ÷ {baseline} time per step against the size of a training step: one line "
        f"per workload (training solid, each sampler dashed), error bars the 95% interval over "
        f"processes (none where a side had fewer than 3). Above 1: slower than {baseline}."))


def gflops_plot(rows: pd.DataFrame, out_dir: Path) -> fmt.Figure | fmt.Note:
    have = rows[rows["gflops"].map(fmt.is_num)] if len(rows) else rows
    if have.empty or have["point"].nunique() < 2:
        return fmt.Note("Fewer than two points with GFLOP/s: no curve to draw.")
    colors = framework_colors(have["framework"])
    fig = MplFigure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for (fw, workload), g in have.groupby(["framework", "workload"], sort=False):
        g = g.sort_values("x")
        ax.plot(g["x"], g["gflops"], marker=framework_marker(fw), color=colors[fw],
                linestyle="-" if workload == TRAINING else "--", alpha=1 if workload == TRAINING
                else 0.6, label=label(f"{fw}: {workload}"))
    log_scale(ax, "xy")
    ax.set_xlabel("GFLOP per training step, log")
    ax.set_ylabel("achieved GFLOP/s, log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "sweep_gflops.png", (
        "Achieved GFLOP/s (analytical FLOPs ÷ median step) of each framework against the size "
        "of a training step; each point's table gives it as % of the framework's measured "
        "matmul peak. A framework whose curve flattens early is bound by something other than "
        "its kernels' arithmetic."))


def profile_plot(points: list, out_dir: Path, baseline: str) -> fmt.Figure | None:
    profiled = []
    for pt in points:
        if pt.run is None:
            continue
        summary = profile.profile_summary(pt.run)
        if any(ph == PHASE for _, ph in summary):
            profiled.append((pt, summary))
    if not profiled:
        return None
    ncols = min(3, len(profiled))
    nrows = -(-len(profiled) // ncols)
    fig = MplFigure(figsize=(4.6 * ncols, 1.9 * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = framework_colors([fw for _, s in profiled for fw, _ in s])
    for ax, (pt, summary) in zip(axes, profiled):
        profile.draw_stack(ax, summary, PHASE, baseline, colors)
        ax.set_title(f"{label(pt.name)} ({pt.train_gflop:.3g} GFLOP)", fontsize="medium")
    for ax in axes[len(profiled):]:
        ax.set_visible(False)
    profile.shared_legend(fig, axes[:len(profiled)])
    return save_figure(fig, out_dir, "sweep_profile.png", (
        "Where a training step's time goes at each profiled point (ms per step, each panel "
        "its own scale): op self time by category, then the framework overhead (greys), the "
        "perf sample's classes of code outside ops where there is one. Read across the panels "
        "which part of the gap grows."))


# ----------------------------------------------------------------------------- section

def section(points: list, out_dir: Path, baseline: str, out_names: dict) -> list:
    """The sweep's own sections: the curve first, then the points. Their figures come from the
    processes that finished ok (load.measured); the points' failures have their section."""
    points = [replace(pt, run=measured(pt.run)) if pt.run is not None else pt for pt in points]
    rows = gap_rows(points, baseline)
    gaps = category_gaps(points, baseline)
    s = fmt.Section("How the gap changes with size", "sweep")
    s.intro = sentence(points, rows, gaps, baseline)
    s.blocks.append(ratio_plot(rows, out_dir, baseline))
    s.blocks.append(gflops_plot(rows, out_dir))
    s.blocks.append(point_table(points, rows, gaps, baseline))
    fig = profile_plot(points, out_dir, baseline)
    if fig is not None:
        s.blocks.append(fig)
        t = coverage_table(points, gaps, baseline)
        if t is not None:
            s.blocks.append(t)
    else:
        s.blocks.append(fmt.Note("No point was profiled: add `profile` to `workloads` to see "
                                 "which category of a step grows along the sweep."))
    p = fmt.Section("Points", "points")
    p.intro = f"{len(points)} point(s), each run as its own cells beside the frameworks."
    p.blocks.append(points_table(points, out_names))
    return [s, p]
