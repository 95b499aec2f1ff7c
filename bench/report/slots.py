"""The slot check (runner.slots > 1; bench/run/slots.py): did a slot run slower than another?

Every process's measured time (its median training step, or its median sampling step per
sampler, steps and batch) is divided by the median of its cell's processes over all slots, so
cells of any size pool: a slot's processes then say how much slower or faster than their
cells they ran. Per slot: the geometric mean of those ratios with a 95% t-interval over its
processes. Slots whose intervals do not overlap get a warning with the numbers: the cells were
balanced over the slots (each framework on each slot equally often where the counts allow),
so a slow slot slows every framework alike, but it widens every interval.
"""
import numpy as np
import pandas as pd

from bench.report import fmt
from bench.report.load import RunData
from bench.stats.replicates import geometric_mean_interval


def _process_times(run: RunData) -> pd.DataFrame:
    """[unit, slot, key, seconds]: per process its median measured step, per timed thing."""
    if run.units is None or "slot" not in run.units or run.units["slot"].isna().all():
        return pd.DataFrame(columns=["unit", "slot", "key", "seconds"])
    r = run.records
    slot_of = dict(zip(run.units["unit"], run.units["slot"]))
    rows = []
    steps = r[(r["type"] == "step") & (r["phase"] == "measure")] if "phase" in r else r[:0]
    for unit, g in steps.groupby("unit"):
        rows.append((unit, slot_of.get(unit), (g["cell"].iloc[0], "train"),
                     float(g["wall_s"].median())))
    keys = ["unit", "sampler", "steps", "batch_size"]
    chains = r[(r["type"] == "sample") & (r["phase"] == "measure")] \
        if all(k in r for k in keys + ["phase", "per_step_s"]) else r[:0]
    for (unit, sampler, n, bs), g in (chains.groupby(keys) if len(chains) else ()):
        rows.append((unit, slot_of.get(unit), (g["cell"].iloc[0], sampler, n, bs),
                     float(g["per_step_s"].median())))
    df = pd.DataFrame(rows, columns=["unit", "slot", "key", "seconds"])
    return df[df["slot"].notna()]


def slot_effects(run: RunData) -> list:
    """Per slot: (slot, processes, geometric-mean ratio to the cells' medians, low, high)."""
    df = _process_times(run)
    if df.empty or df["slot"].nunique() < 2:
        return []
    df = df.assign(ratio=df["seconds"] / df.groupby("key")["seconds"].transform("median"))
    out = []
    for slot, g in df.groupby("slot"):
        out.append((int(slot), int(g["unit"].nunique()),
                    *geometric_mean_interval(g["ratio"].to_numpy())))
    return out


def blocks(run: RunData) -> list:
    """The Overview's slot blocks: how many cells ran at once, where, and the slot check."""
    slots = _slots(run)
    if len(slots) < 2:
        return []
    where = "; ".join(f"slot {s['slot']}: " + (f"GPU {s['gpu']} + " if s.get("gpu") is not None
                                                 else "") + f"CPUs {s['cores']}"
                      for s in slots)
    out = [fmt.Note(f"Cells ran {len(slots)} at a time (runner.slots): {where}. Each process "
                    f"had its slot's cores (and GPU) to itself; side by side they still "
                    f"share memory bandwidth and caches (docs/CLUSTER.md, what concurrency "
                    f"costs).")]
    effects = slot_effects(run)
    if not effects:
        return out
    rows = [[str(s), str(n), f"{m:.3f}×", fmt.DASH if np.isnan(lo) else
             f"[{lo:.3f}, {hi:.3f}]"] for s, n, m, lo, hi in effects]
    out.append(fmt.Table(["slot", "processes", "time ÷ its cell's median", "95% CI"], rows,
                         caption="The slot check: each process's median measured step ÷ the "
                                 "median of its cell's processes over all slots, pooled per "
                                 "slot (geometric mean, t-interval over processes)."))
    apart = [(a, b) for a in effects for b in effects
             if a[0] < b[0] and not (np.isnan(a[3]) or np.isnan(b[3]))
             and (a[4] < b[3] or b[4] < a[3])]
    for a, b in apart:
        out.append(fmt.Note(
            f"Warning: slot {a[0]} and slot {b[0]} differ beyond their intervals: "
            f"{a[2]:.3f}× [{a[3]:.3f}, {a[4]:.3f}] against {b[2]:.3f}× [{b[3]:.3f}, "
            f"{b[4]:.3f}] of their cells' medians. The frameworks were balanced over the "
            f"slots, so the ratios stand, but their intervals are wider for it."))
    return out


def _slots(run: RunData) -> list:
    """The slots the run's processes recorded, one dict each, by index."""
    found = {}
    for _, u in (run.units if run.units is not None else pd.DataFrame()).iterrows():
        info = u.get("slot_info")
        if isinstance(info, dict):
            found.setdefault(info["slot"], info)
    return [found[k] for k in sorted(found)]
