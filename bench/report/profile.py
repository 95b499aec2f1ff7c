"""The report's "Where the time goes" section, from the profile cells' `profile` records
(bench/run/workloads.py run_profile; categories in models/common/opcats.py).

Per framework and phase (a training step, one sampling step) the numbers are the mean over
the profile cell's processes of each process's per-step figures; an op's time is its own
(self) time, so categories add up to the op total, and the synced step time minus that total
is the framework overhead no op row holds. Where the profile cell also sampled the same
steps with perf (bench/measure/native.py), that overhead is split into the classes of code
outside ops the sample found (executor, memory allocation, Python, ...:
models/common/nativecats.py) and what is left; "left" is negative where the two instruments
overlap (torch's region self time holds the Python of its optimizer and EMA regions).
"""
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from bench.report import fmt
from bench.report.load import RunData, of_type
from bench.report.plots import framework_colors, label, save_figure
from bench.report.tables import _key
from models.common.nativecats import CLASSES as NATIVE_CLASSES, OUTSIDE_CLASSES
from models.common.opcats import CATEGORIES, OVERHEAD, OVERHEAD_LABEL

PHASES = {"train": "training step", "sample": "sampling step"}
NATIVE = {f"native_{c}": f"overhead: {NATIVE_CLASSES[c][1]}" for c in OUTSIDE_CLASSES}
# the overhead's rows: the native classes (when sampled), then what no instrument attributed
LABELS = {**CATEGORIES, **NATIVE, OVERHEAD: OVERHEAD_LABEL}
# Neutral colours per category (the frameworks own orange and blue elsewhere).
CATEGORY_COLORS = {"conv_fwd": "#4a7a4a", "conv_bwd": "#8fbf8f", "matmul": "#9467bd",
                   "norm": "#d9c27a", "elementwise": "#7fb7d9", "resample": "#17becf",
                   "loss": "#e377c2", "optimizer": "#8c564b", "data": "#bcbd22",
                   "other": "#7f7f7f", OVERHEAD: "#d0d0d0",
                   "native_executor": "#a0a0a0", "native_alloc": "#b4b4b4",
                   "native_python": "#c8c8c8", "native_profiler": "#dcdcdc",
                   "native_os": "#e8e8e8"}
TOP_OPS = 10


def profile_summary(run: RunData) -> dict:
    """{(framework, phase): {step_s, unprofiled_step_s, overhead, coverage, op_total_s,
    dispatch_s, gflops, processes, categories: {cat: s}, ops: DataFrame, detail, native}}.
    `native` is None unless every process of the cell sampled its steps with perf; then the
    categories hold the outside-ops classes and OVERHEAD is what is left (may be < 0)."""
    recs = of_type(run.records, "profile")
    out = {}
    if recs.empty:
        return out
    for (fw, phase), g in recs.groupby(["framework", "phase"], sort=True):
        cats = {c: float(np.mean([r.get(c, 0.0) for r in g["categories"]])) for c in CATEGORIES}
        step = float(g["step_s"].mean())
        op_total = sum(cats.values())
        samples = [n for n in (g["native"] if "native" in g else []) if isinstance(n, dict)]
        natives = [n for n in samples if n.get("available")]
        native = None
        if natives and len(natives) == len(g):
            for c in OUTSIDE_CLASSES:
                cats[f"native_{c}"] = float(np.mean([n["classes"][c] for n in natives]))
            native = {
                "coverage": float(g["coverage_native"].mean()),
                "left_s": step - sum(cats.values()),
                "main_s": float(np.mean([n["main_s"] for n in natives])),
                "op_code_s": float(np.mean([n["classes"]["op_code"] for n in natives])),
                "unclassified_s": float(np.mean([n["classes"]["unclassified"]
                                                 for n in natives])),
                "others_work_s": float(np.mean([n["others_work_s"] for n in natives])),
                "others_spin_s": float(np.mean([n["others_spin_s"] for n in natives])),
                "top": _top_native(natives), "hz": natives[0]["hz"]}
            cats[OVERHEAD] = native["left_s"]
        else:
            cats[OVERHEAD] = max(0.0, step - op_total)
        reasons = sorted({n.get("reason", "") for n in samples if not n.get("available")})
        ops = pd.DataFrame([o for lst in g["ops"] for o in lst])
        if not ops.empty:
            ops = (ops.groupby(["name", "category"], as_index=False)[["seconds", "count"]].sum()
                   .assign(seconds=lambda d: d["seconds"] / len(g),
                           count=lambda d: d["count"] / len(g))
                   .sort_values("seconds", ascending=False))
        first = g.iloc[0]
        detail = {k: first.get(k) for k in ("sampler", "steps", "batch_size", "eta")
                  if k in g and pd.notna(first.get(k))}
        out[(fw, phase)] = {
            "step_s": step, "unprofiled_step_s": float(g["unprofiled_step_s"].mean()),
            "overhead": float(g["overhead"].mean()), "coverage": float(g["coverage"].mean()),
            "op_total_s": float(g["op_total_s"].mean()),
            "dispatch_s": float(g["dispatch_s"].mean()) if "dispatch_s" in g and
            g["dispatch_s"].notna().any() else None,
            "gflops": float(g["gflops"].mean()) if "gflops" in g else None,
            "processes": len(g), "categories": cats, "ops": ops, "detail": detail,
            "native": native, "native_missing": reasons}
    return out


def _top_native(natives, n=8):
    """The largest outside-ops symbols, mean seconds per step over the processes."""
    acc = {}
    for nat in natives:
        for r in nat.get("top_outside", []):
            key = (r["class"], r["dso"], r["symbol"])
            acc[key] = acc.get(key, 0.0) + r["seconds"] / len(natives)
    return [{"class": c, "dso": d, "symbol": sym, "seconds": v}
            for (c, d, sym), v in sorted(acc.items(), key=lambda kv: -kv[1])[:n]]


def gap_sentence(summary: dict, phase: str, baseline: str) -> str:
    """One sentence per other framework: how much slower/faster than the baseline a step
    is, and the categories that account for most of the difference."""
    base = summary.get((baseline, phase))
    if base is None:
        return ""
    out = []
    for (fw, ph), s in sorted(summary.items()):
        if ph != phase or fw == baseline:
            continue
        gap = s["step_s"] - base["step_s"]
        mine, theirs = _comparable(s, base), _comparable(base, s)
        diffs = {c: mine[c] - theirs[c] for c in mine}
        # the categories that move the step the way the gap goes, largest first, until
        # they account for 80% of what all of those add up to (offsets are named apart)
        same_way = sorted((c for c in diffs if diffs[c] * gap > 0), key=lambda c: -abs(diffs[c]))
        total = abs(sum(diffs[c] for c in same_way))
        named, acc = [], 0.0
        for c in same_way:
            named.append(c)
            acc += diffs[c]
            if abs(acc) >= 0.8 * total:
                break
        word = "slower" if gap > 0 else "faster"
        parts = ", ".join(f"{LABELS[c]} ({diffs[c] * 1e3:+.2f} ms)" for c in named[:4])
        offset = [c for c in diffs if diffs[c] * gap < 0 and abs(diffs[c]) > 0.1 * abs(gap)]
        text = (f"Under the profiler, {fw}'s {PHASES[phase]} is {s['step_s'] * 1e3:.2f} ms, "
                f"{s['step_s'] / base['step_s']:.2f}× {baseline}'s ({abs(gap) * 1e3:.2f} ms "
                f"{word}; unprofiled, in the same processes: "
                f"{s['unprofiled_step_s'] / base['unprofiled_step_s']:.2f}×, the profilers' "
                f"overheads differ); most of the difference is "
                f"{parts or 'spread over many categories'}")
        if offset:
            text += ("; partly offset by " + ", ".join(
                f"{LABELS[c]} ({diffs[c] * 1e3:+.2f} ms)" for c in offset))
        out.append(text + ".")
    return " ".join(out)


def _comparable(s: dict, other: dict) -> dict:
    """s's categories, its native rows folded back into the overhead when `other` has none
    (a difference is only meaningful between rows both frameworks measured)."""
    cats = dict(s["categories"])
    if s["native"] is not None and other["native"] is None:
        cats[OVERHEAD] = sum(cats.pop(k) for k in NATIVE) + cats[OVERHEAD]
    return cats


def _rows(summary: dict, fws: list, phase: str) -> list:
    return [c for c in LABELS if any(c in summary[(fw, phase)]["categories"] for fw in fws)]


def _label(c: str, native: bool) -> str:
    if c == OVERHEAD and native:
        return "overhead: left (neither profiler nor perf attributed it; < 0: they overlap)"
    return LABELS[c]


def category_table(summary: dict, phase: str, baseline: str) -> fmt.Table | None:
    fws = sorted({fw for fw, ph in summary if ph == phase}, key=lambda f: (f != baseline, f))
    if not fws:
        return None
    others = [f for f in fws if f != baseline and (baseline, phase) in summary]
    columns = ["category"] + [h for fw in fws for h in (f"{fw} (ms/step)", f"{fw} share")] + \
        [f"{fw} ÷ {baseline}" for fw in others]
    rows = []
    native = any(summary[(fw, phase)]["native"] is not None for fw in fws)
    for c in _rows(summary, fws, phase) + ["__step__"]:
        line = [_label(c, native) if c != "__step__" else "synced step time (profiled)"]
        vals = {}
        for fw in fws:
            s = summary[(fw, phase)]
            v = s["step_s"] if c == "__step__" else s["categories"].get(c)
            vals[fw] = v
            line += ([fmt.num(v * 1e3), f"{v / s['step_s'] * 100:.1f}%"] if v is not None
                     else [fmt.DASH, fmt.DASH])
        for fw in others:
            b, v = vals[baseline], vals[fw]
            line.append(f"{v / b:.2f}×" if b is not None and v is not None and b > 1e-7
                        else fmt.DASH)
        rows.append(line)
    return fmt.Table(columns, rows, caption=(
        f"Time per {PHASES[phase]} by category (op self time; the categories sum to the op "
        f"total, and the overhead row is the synced step time no op accounts for). Mean over "
        f"the profile processes; the profiled step itself, so the rows add up to the last one."
        + (" The overhead rows named 'overhead: ...' are the main thread's time in code "
           "outside ops, from a perf sample of the same steps (classes: "
           "models/common/nativecats.py)." if native else "")))


def coverage_table(summary: dict) -> fmt.Table:
    rows = []
    for (fw, phase), s in sorted(summary.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        nat = s["native"]
        rows.append([fw, PHASES[phase], str(s["processes"]), fmt.num(s["step_s"] * 1e3),
                     fmt.num(s["unprofiled_step_s"] * 1e3), f"{s['overhead'] * 100:+.0f}%",
                     fmt.num(s["op_total_s"] * 1e3), f"{s['coverage'] * 100:.0f}%",
                     f"{nat['coverage'] * 100:.0f}%" if nat else fmt.DASH,
                     fmt.num(s["dispatch_s"] * 1e3) if s["dispatch_s"] is not None else fmt.DASH,
                     fmt.num(s["gflops"])])
    return fmt.Table(
        ["framework", "phase", "processes", "profiled step (ms)", "unprofiled step (ms)",
         "profiler overhead", "op total (ms)", "coverage (ops)", "coverage (ops + perf)",
         "dispatch (ms)", "GFLOP/s (unprofiled)"], rows,
        caption=("Coverage (ops) = categorised op time ÷ the synced step time under the "
                 "profiler. Coverage (ops + perf) adds the main thread's time in code outside "
                 "ops that a perf sample of the same steps found (executor, allocation, "
                 "Python, OS: the overhead rows above); near 100% means the two instruments "
                 "account for the step, above it that they overlap. "
                 "Profiler overhead = profiled ÷ unprofiled step time − 1, the same steps of "
                 "the same process timed both ways. Dispatch = time until the training call "
                 "returned, before the sync: lazy Jittor builds its graph then (Python time "
                 "no op row holds), eager CPU torch has already run its ops."))


def top_ops_table(summary: dict, fw: str, phase: str) -> fmt.Table | None:
    s = summary[(fw, phase)]
    ops = s["ops"]
    if ops.empty:
        return None
    rows = [[str(o["name"]), LABELS.get(o["category"], o["category"]),
             fmt.num(o["seconds"] * 1e3), fmt.num(o["count"]),
             f"{o['seconds'] / s['step_s'] * 100:.1f}%"]
            for _, o in ops.head(TOP_OPS).iterrows()]
    return fmt.Table(["op", "category", "ms/step", "calls/step", "share of step"], rows,
                     caption=f"{fw}: the {min(TOP_OPS, len(ops))} largest of {len(ops)} ops "
                             f"in a {PHASES[phase]} (the cell folder keeps the raw profile).",
                     numeric=True)


def draw_stack(ax, summary: dict, phase: str, baseline: str, colors: dict) -> None:
    """One phase's horizontal stacked bars on `ax`: a bar per framework (baseline first),
    op categories then the overhead's classes, in ms per step (the sweep report draws one
    such axis per point)."""
    fws = sorted({fw for fw, ph in summary if ph == phase}, key=lambda f: (f != baseline, f))
    y = np.arange(len(fws))
    left = np.zeros(len(fws))
    for c in LABELS:
        v = np.array([max(0.0, summary[(fw, phase)]["categories"].get(c, 0.0)) * 1e3
                      for fw in fws])
        if not v.any():
            continue
        ax.barh(y, v, left=left, color=CATEGORY_COLORS[c], label=LABELS[c], height=0.6)
        left += v
    ax.set_yticks(y, [label(f) for f in fws])
    for tick, fw in zip(ax.get_yticklabels(), fws):
        tick.set_color(colors[fw])
    ax.invert_yaxis()
    ax.set_xlabel("ms per step")
    ax.grid(True, axis="x", alpha=0.3)


def shared_legend(fig, axes, ncols=4) -> None:
    """One legend below the figure for the categories of all its axes."""
    handles, names = [], []
    for ax in axes:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="outside lower center", ncols=ncols, fontsize="small")


def stacked_bars(summary: dict, out_dir: Path, baseline: str) -> fmt.Figure | fmt.Note:
    phases = [p for p in PHASES if any(ph == p for _, ph in summary)]
    if not phases:
        return fmt.Note("No profile to plot.")
    fig = MplFigure(figsize=(6.0 * len(phases), 3.2), layout="constrained")
    axes = fig.subplots(1, len(phases), squeeze=False)[0]
    colors = framework_colors([fw for fw, _ in summary])
    for ax, phase in zip(axes, phases):
        draw_stack(ax, summary, phase, baseline, colors)
        ax.set_title(f"one {PHASES[phase]} (profiled)")
    shared_legend(fig, axes)
    return save_figure(fig, out_dir, "where_time_goes.png",
                 "Where a step's time goes, per framework: op self time by category, then the "
                 "framework overhead (greys): the code outside ops a perf sample found, where "
                 "there is one, and what is left; adding up to the profiled synced step.")


def native_table(summary: dict) -> fmt.Table | None:
    """The perf sample itself: where the main thread was, per step, and the other threads."""
    rows = []
    for (fw, phase), s in sorted(summary.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        nat = s["native"]
        if nat is None:
            continue
        outside = sum(s["categories"][k] for k in NATIVE)
        rows.append([fw, PHASES[phase], fmt.num(s["step_s"] * 1e3), fmt.num(nat["main_s"] * 1e3),
                     fmt.num(nat["op_code_s"] * 1e3), fmt.num(s["op_total_s"] * 1e3),
                     fmt.num(outside * 1e3), fmt.num(nat["unclassified_s"] * 1e3),
                     fmt.num(nat["others_work_s"] * 1e3), fmt.num(nat["others_spin_s"] * 1e3)])
    if not rows:
        return None
    return fmt.Table(
        ["framework", "phase", "synced step (ms)", "main thread on CPU (ms)",
         "in op code (ms)", "profiler's op total (ms)", "outside ops (ms)",
         "unclassified (ms)", "other threads computing (ms)",
         "other threads spin-waiting (ms)"], rows, numeric=True,
        caption=("The perf sample of the profiled steps (cpu-clock, per step). The main "
                 "thread runs the whole step; its time in op code should match the profiler's "
                 "op total (two instruments, one quantity), the rest is the overhead's split. "
                 "Other threads are the OpenMP workers: spin-waiting is time they burn between "
                 "parallel regions, e.g. while the main thread runs the executor."))


def native_symbols_table(summary: dict, fw: str, phase: str) -> fmt.Table | None:
    nat = summary[(fw, phase)]["native"]
    if not nat or not nat["top"]:
        return None
    rows = [[r["symbol"][:90], NATIVE_CLASSES[r["class"]][1], r["dso"][:40],
             fmt.num(r["seconds"] * 1e3)] for r in nat["top"]]
    return fmt.Table(["symbol", "class", "shared object", "ms/step"], rows, numeric=True,
                     caption=f"{fw}: the largest functions outside ops in a {PHASES[phase]} "
                             f"(perf at {nat['hz']} Hz; the cell folder keeps {phase}-perf.data "
                             f"for `perf report -i`).")


def section(run: RunData, out_dir: Path, baseline: str) -> fmt.Section:
    s = fmt.Section("Where the time goes", "profile")
    summary = profile_summary(run)
    if not summary:
        s.blocks.append(fmt.Note(
            "No profile in this run: add `profile` to `workloads` for per-operator profiles "
            "of a training step and a sampling step in each framework (their own cells: a "
            "profiler perturbs timing, so the timed cells stay unprofiled)."))
        return s
    sentences = " ".join(t for t in (gap_sentence(summary, p, baseline) for p in PHASES) if t)
    s.intro = sentences or "Only one framework was profiled: no gap to explain."
    s.blocks.append(stacked_bars(summary, out_dir, baseline))
    for phase in PHASES:
        t = category_table(summary, phase, baseline)
        if t is not None:
            detail = next((v["detail"] for (f, p), v in summary.items() if p == phase), {})
            if detail:
                t.caption += " Settings: " + ", ".join(f"{k} {_key(v)}"
                                                        for k, v in detail.items()) + "."
            s.blocks.append(t)
    s.blocks.append(coverage_table(summary))
    t = native_table(summary)
    if t is not None:
        s.blocks.append(t)
    missing = sorted({f"{fw}: {r}" for (fw, _), v in summary.items() for r in v["native_missing"]})
    if missing:
        s.blocks.append(fmt.Note("No perf sample of the overhead for " + "; ".join(missing)
                                 + " (profile.native, docs/REPORT.md)."))
    for (fw, phase) in sorted(summary, key=lambda k: (k[1], k[0] != baseline, k[0])):
        for t in (top_ops_table(summary, fw, phase), native_symbols_table(summary, fw, phase)):
            if t is not None:
                s.blocks.append(t)
    return s
