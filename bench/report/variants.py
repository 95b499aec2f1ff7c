"""The report's "Variants" section (docs/VARIANTS.md): each framework at its best beside the
matched fp32 eager comparison. Per framework a table of its variants (speed-up over its own
matched cell with the replicate interval, first-call/compile time, peak memory, the quality
guard's verdict) and the best-of-each line: the frameworks' fastest variants that pass.

Numbers first (variants_frame, tested), display second (section)."""
import numpy as np
import pandas as pd

from bench.report import fmt
from bench.report.load import RunData
from bench.report.tables import (cells_of, sampling_metrics, training_metrics, unit_records,
                                 units_of, variant_cells)
from bench.stats.replicates import ratio_of_replicates
from bench.run.schema import SCHEMA

MATCHED = "matched"  # the display name of each framework's fp32 eager cell
GUARD_DEFAULTS = {k: f.default for k, f in SCHEMA["variant_guard"].items()}


def _guard_settings(run: RunData) -> dict:
    cfg = run.manifest.get("config") or {}
    return {**GUARD_DEFAULTS, **(cfg.get("variant_guard") or {})}


def _variant_settings(run: RunData) -> dict:
    cfg = run.manifest.get("config") or {}
    return {v["name"]: v for v in cfg.get("variants") or []}


def _matched_train_cell(run, framework):
    """The framework's matched train cell on the shared loader (variants train on it)."""
    c = cells_of(run, "train")
    c = c[(c["framework"] == framework) & c["variant"].isin(["", "shared", None])]
    return c.iloc[0]["cell"] if len(c) else None


def _matched_sample_cell(run, framework):
    c = cells_of(run, "sample")
    c = c[c["framework"] == framework]
    return c.iloc[0]["cell"] if len(c) else None


def _guard(run, cell):
    """The first finished process's guard record of a cell (the guard is deterministic: every
    process computes the same one), or None."""
    if cell is None:
        return None
    for unit in units_of(run, cell):
        g = unit_records(run, unit, "guard")
        if not g.empty:
            return g.iloc[-1].to_dict()
    return None


def guard_verdict(variant: dict, matched: dict, tol: dict) -> dict:
    """Compare a variant's guard record with its framework's matched one.
    -> {loss_rel_max, mean_diff, std_diff, passed (True/False/None), why}."""
    out = {"loss_rel_max": np.nan, "mean_diff": np.nan, "std_diff": np.nan, "passed": None,
           "why": ""}
    if variant is None or matched is None:
        out["why"] = "no guard record" + ("" if variant else " of the variant") + \
            ("" if matched else " of the matched cell")
        return out
    lv = np.asarray(variant.get("losses") or [], dtype=float)
    lm = np.asarray(matched.get("losses") or [], dtype=float)
    n = min(lv.size, lm.size)
    if n == 0:
        out["why"] = "no guard losses"
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(lv[:n] - lm[:n]) / np.abs(lm[:n])
    out["loss_rel_max"] = float(np.max(rel)) if np.isfinite(rel).all() else np.inf
    out["mean_diff"] = abs(float(variant["sample_mean"]) - float(matched["sample_mean"]))
    out["std_diff"] = abs(float(variant["sample_std"]) - float(matched["sample_std"]))
    problems = []
    if not (np.isfinite(out["loss_rel_max"]) and bool(variant.get("finite", True))):
        problems.append("non-finite loss or samples")
    elif out["loss_rel_max"] > tol["loss_rtol"]:
        problems.append(f"loss off by {out['loss_rel_max']:.1%} > {tol['loss_rtol']:.1%}")
    for k in ("mean_diff", "std_diff"):
        if not np.isfinite(out[k]):
            if "non-finite loss or samples" not in problems:
                problems.append("non-finite samples")
        elif out[k] > tol["sample_atol"]:
            problems.append(f"sample {k.split('_')[0]} off by {out[k]:.3f} > "
                            f"{tol['sample_atol']}")
    out["passed"] = not problems
    out["why"] = "; ".join(problems)
    return out


def _speedup(matched_groups, variant_groups):
    """matched time / variant time over processes (> 1: the variant is faster)."""
    if not matched_groups or not variant_groups:
        return None
    return ratio_of_replicates(matched_groups, variant_groups)


def variants_frame(run: RunData) -> pd.DataFrame:
    """One row per (framework, variant) including each framework's matched row: train step,
    sampling step (the first sampler setting), speed-ups with intervals, first-call time,
    peak memory, guard verdict. Empty when the run has no variant cells."""
    v_train, v_sample = variant_cells(run, "train"), variant_cells(run, "sample")
    if v_train.empty and v_sample.empty:
        return pd.DataFrame()
    tol, settings = _guard_settings(run), _variant_settings(run)
    guard_on = "train" if not v_train.empty or not cells_of(run, "train").empty else "sample"
    rows = []
    frameworks = sorted(set(v_train["framework"]) | set(v_sample["framework"]))
    for fw in frameworks:
        m_train, m_sample = _matched_train_cell(run, fw), _matched_sample_cell(run, fw)
        cells = {MATCHED: (m_train, m_sample)}
        for name in dict.fromkeys(list(v_train[v_train["framework"] == fw]["setting"]) +
                                  list(v_sample[v_sample["framework"] == fw]["setting"])):
            tc = v_train[(v_train["framework"] == fw) & (v_train["setting"] == name)]
            sc = v_sample[(v_sample["framework"] == fw) & (v_sample["setting"] == name)]
            cells[name] = (tc.iloc[0]["cell"] if len(tc) else None,
                           sc.iloc[0]["cell"] if len(sc) else None)
        train = _train_rows(run, [c for c, _ in cells.values() if c])
        sample = _sample_rows(run, [c for _, c in cells.values() if c])
        m_guard = _guard(run, m_train if guard_on == "train" else m_sample)
        for name, (tcell, scell) in cells.items():
            t, s = train.get(tcell, {}), sample.get(scell, {})
            mt, ms = train.get(m_train, {}), sample.get(m_sample, {})
            g = _guard(run, tcell if guard_on == "train" else scell)
            verdict = guard_verdict(g, m_guard, tol) if name != MATCHED else \
                {"passed": True, "why": "the reference", "loss_rel_max": 0.0,
                 "mean_diff": 0.0, "std_diff": 0.0}
            status = [run.cells.loc[run.cells["cell"] == c, "status"].iloc[0]
                      for c in (tcell, scell) if c]
            rows.append({
                "framework": fw, "variant": name,
                "settings": _describe(settings.get(name)) if name != MATCHED else
                "fp32 eager (the matched comparison)",
                "train_cell": tcell, "sample_cell": scell,
                "status": "ok" if all(x == "ok" for x in status) else
                ", ".join(sorted(set(x for x in status if x != "ok"))),
                "train_step_s": t.get("median", np.nan),
                "train_speedup": _speedup(mt.get("groups"), t.get("groups")),
                "sample_step_s": s.get("median", np.nan), "sample_setting": s.get("label"),
                "sample_speedup": _speedup(ms.get("groups"), s.get("groups")),
                "first_call_s": t.get("compile_s", s.get("first_chain_s", np.nan)),
                **dict(zip(("process_s", "process_max_s"), _process_seconds(run, tcell or scell))),
                "peak_bytes": t.get("peak_bytes", s.get("peak_bytes", np.nan)),
                "train_groups": t.get("groups"), "sample_groups": s.get("groups"),
                **{f"guard_{k}": v for k, v in verdict.items()}})
    return pd.DataFrame(rows)


def _describe(entry) -> str:
    if not entry:
        return fmt.DASH
    from models.common.variants import VariantSpec

    return VariantSpec.from_dict(entry).describe()


def _process_seconds(run, cell) -> tuple:
    """(median, max) over a cell's processes of the time from its first record to its last (the
    framework's start-up and every compilation included: torch.compile also compiles the
    eval graph at the first validation and the sampling graph at the first chain)."""
    out = []
    for unit in units_of(run, cell):
        recs = run.records[(run.records["unit"] == unit) & (run.records["source"] == "events")]
        t = pd.to_numeric(recs["t_wall"], errors="coerce").dropna()
        if len(t) > 1:
            out.append(float(t.max() - t.min()))
    return (float(np.median(out)), float(np.max(out))) if out else (np.nan, np.nan)


def _train_rows(run, cells) -> dict:
    if not cells:
        return {}
    m = training_metrics(run, run.cells[run.cells["cell"].isin(cells)])
    out = {}
    for _, r in m.iterrows():
        gpu = np.isfinite(r.get("device_peak_bytes", np.nan))
        peak = r["allocator_peak_bytes"] if gpu else r["host_peak_rss_bytes"]
        out[r["cell"]] = {"median": r["wall_s_median"], "groups": r["wall_s_groups"],
                          "compile_s": r["compile_s"], "peak_bytes": peak}
    return out


def _sample_rows(run, cells) -> dict:
    """Per sample cell: per-step time of its first sampler setting (per process the chain
    times ÷ steps), and the first (warm-up) chain's time."""
    if not cells:
        return {}
    m = sampling_metrics(run, run.cells[run.cells["cell"].isin(cells)])
    out = {}
    for cell, g in (m.groupby("cell", sort=False) if not m.empty else []):
        r = g.iloc[0]
        steps = float(r["steps"])
        first = []
        for unit in units_of(run, cell):
            rec = unit_records(run, unit, "sample")
            if "phase" in rec and (rec["phase"] == "warmup").any():
                first.append(float(rec[rec["phase"] == "warmup"].iloc[0]["time_s"]))
        out[cell] = {"median": r["per_step_median_s"],
                     "groups": [np.asarray(x) / steps for x in r["time_groups"]],
                     "label": f"{r['sampler']} {int(steps)} steps, batch {int(r['batch_size'])}",
                     "first_chain_s": float(np.median(first)) if first else np.nan}
    return out


def best_of_each(frame: pd.DataFrame, column: str) -> dict:
    """framework -> the row of its fastest variant (matched included) that passed the guard
    and finished, by `column` (train_step_s | sample_step_s)."""
    out = {}
    for fw, g in frame.groupby("framework", sort=True):
        ok = g[(g["guard_passed"] == True) & (g["status"] == "ok") &  # noqa: E712
               g[column].notna()]
        if len(ok):
            out[fw] = ok.loc[ok[column].idxmin()]
    return out


def _best_line(frame, column, groups, what, baseline) -> str:
    best = best_of_each(frame, column)
    if not best:
        return f"{what}: no variant passed the guard and finished."
    parts = [f"{fw} **{r['variant']}** {fmt.num(r[column] * 1e3)} ms" for fw, r in best.items()]
    line = f"Fastest passing {what} per framework: " + ", ".join(parts)
    others = [fw for fw in best if fw != baseline]
    if baseline in best and others:
        b = best[baseline]
        for fw in others:
            r = ratio_of_replicates(best[fw][groups], b[groups])
            line += (f"; {fw} ÷ {baseline} at their best: {fmt.ratio(r)} (time; > 1 = "
                     f"{fw} slower)")
    return line + "."


def section(run: RunData, out_dir, baseline: str) -> fmt.Section:
    s = fmt.Section("Variants: each framework at its best", "variants")
    frame = variants_frame(run)
    if frame.empty:
        s.blocks.append(fmt.Note("No variants in this run (the config's `variants` key; "
                                 "docs/VARIANTS.md)."))
        return s
    tol = _guard_settings(run)
    s.intro = ("Each framework's variants (precision, compilation, memory format, attention "
               "kernel, framework flags) against its own matched fp32 eager cell: speed-up = "
               "matched time ÷ variant time (> 1 = faster), over processes with a 95% interval. "
               "First call = iteration 0 of training (compile / autotune / graph build), never "
               "inside the medians; process s = a train process from its first record to its "
               "last, median (slowest) (every later compilation included: torch.compile compiles the eval graph "
               "at the first validation too). Compile caches are used as found (Jittor's "
               "kernel cache, inductor's FX-graph cache): a cold first compile costs more. Guard: from the same seeded random weights and batches, "
               f"the variant's first {tol['train_steps']} training losses stay within "
               f"{tol['loss_rtol']:.0%} of the matched cell's and its {tol['sample_steps']}-step "
               f"DDIM samples' mean and std within {tol['sample_atol']}.")
    for fw, g in frame.groupby("framework", sort=True):
        label = next((x for x in g["sample_setting"] if isinstance(x, str)), "")
        rows = []
        for _, r in g.iterrows():
            guard = "reference" if r["variant"] == MATCHED else \
                ("pass" if r["guard_passed"] else f"**FAIL**: {r['guard_why']}"
                 if r["guard_passed"] is False else f"? ({r['guard_why']})")
            rows.append([r["variant"], r["settings"], fmt.num(r["train_step_s"] * 1e3),
                         "baseline" if r["variant"] == MATCHED else fmt.ratio(r["train_speedup"]),
                         fmt.num(r["sample_step_s"] * 1e3),
                         "baseline" if r["variant"] == MATCHED else fmt.ratio(r["sample_speedup"]),
                         fmt.num(r["first_call_s"]),
                         f"{fmt.num(r['process_s'])} ({fmt.num(r['process_max_s'])})",
                         fmt.mib(r["peak_bytes"]),
                         fmt.num(r["guard_loss_rel_max"] * 100), guard, r["status"]])
        s.blocks.append(fmt.Table(
            ["variant", "settings", "train step ms", "train speed-up", "sample step ms",
             "sample speed-up", "first call s", "process s (max)", "peak memory MiB", "guard loss Δ %", "guard",
             "status"], rows,
            caption=f"{fw}: variants vs its matched fp32 eager cell (sampling: {label})."))
    s.blocks.append(fmt.Note(_best_line(frame, "train_step_s", "train_groups", "training step",
                                        baseline)))
    s.blocks.append(fmt.Note(_best_line(frame, "sample_step_s", "sample_groups",
                                        "sampling step", baseline)))
    devices = set(_devices(run))
    cfg = run.manifest.get("config") or {}
    if cfg.get("variants"):
        from bench.run.variants import not_run

        skipped = not_run(cfg, "cuda" if "cuda" in devices else "cpu")
        for name, why in skipped.items():
            s.blocks.append(fmt.Note(f"Variant {name} did not run on " + "; ".join(
                f"{fw}: {reason}" for fw, reason in why.items()) + "."))
    if "cuda" not in devices:
        s.blocks.append(fmt.Note(
            "Ran on CPU only: the CUDA paths of these variants (autocast and GradScaler on "
            "CUDA, torch.compile's Triton kernels, Jittor's CUDA fp16/bf16 kernels) are "
            "written but **unverified** by this run."))
    return s


def _devices(run: RunData) -> list:
    start = run.records[run.records["type"] == "start"] if "type" in run.records else []
    return [d for d in (start["device"] if "device" in start else []) if isinstance(d, str)]
