"""What `harness.py ab` writes: ab.json, ab.txt (the plain table), ab.md (a pull-request
comment) and ab.html (tables and the per-pair ratio plot, drawn with the report's rendering).
"""
import json
import math
from pathlib import Path

from matplotlib.figure import Figure as MplFigure

from bench.gate.ab_pairs import BOTH, BUSY_CPUS, CALLS
from bench.gate.ab_verdicts import FAILED_IN_BASE, FAILED_IN_BOTH, FAILED_IN_CANDIDATE, Result
from bench.records.results import write_json_atomic
from bench.report import fmt
from bench.report.plots import DPI, framework_colors, label
from bench.report.render import md_escape, write_html
from bench.stats.replicates import (DETECTION_POWER, IMPROVEMENT, INCONCLUSIVE, REGRESSION,
                                    UNCHANGED)

PLOT_NAME = "pair_ratios.png"
COLUMNS = ["benchmark", "base", "candidate", "change", "interval", "p", "pairs", "pair CV",
           "1st vs 2nd", "detectable", "verdict"]


def _s(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v * 1e3:.2f} ms" if abs(v) < 1 else f"{v:.3f} s"


def _pct(v, signed=True):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v * 100:+.1f}%" if signed else f"{v * 100:.1f}%"


def _p(p):
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "-"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _interval(r):
    if r.low is None or not math.isfinite(r.low):
        return "-"
    return f"[{_pct(r.low)}, {_pct(r.high)}]"


def _detectable(v):
    return "-" if v is None or not math.isfinite(v) else f">= {v * 100:.0f}%"


def _measured(ratios):
    return [v for v in ratios if v is not None]


def table_rows(result):
    return [[r.name, _s(r.base_median_s), _s(r.candidate_median_s), _pct(r.change),
             _interval(r), _p(r.p_value), str(len(_measured(r.pair_ratios))),
             _pct(r.pair_cv, False), _pct(r.position_effect),
             _detectable(r.detectable), r.verdict] for r in result.rows]


def headline(result):
    if result.interrupted:
        return "interrupted (partial)"
    n_reg, n_fail = len(result.regressions), len(result.candidate_failures)
    if n_reg or n_fail:
        parts = [f"{n_reg} regression(s)"] if n_reg else []
        parts += [f"{n_fail} failed"] if n_fail else []
        return ", ".join(parts)
    return "no regression"


def summary_line(result):
    s = result.settings
    counts = [f"{result.count(v)} {v}" for v in (REGRESSION, IMPROVEMENT, UNCHANGED,
                                                 INCONCLUSIVE, FAILED_IN_CANDIDATE,
                                                 FAILED_IN_BASE, FAILED_IN_BOTH)
              if result.count(v)]
    if s.get("interleave") == CALLS:
        how = ("per pair (one process running both revisions) the geometric mean over its "
               "blocks of the candidate's and the base's median call; change = the geometric "
               "mean over the pairs (A B B A in every block: running first or second cancels "
               "inside the process), interval and p a paired t-test on the pairs' logs")
    else:
        how = ("per pair the ratio of the candidate's and the base's process medians; change = "
               "their geometric mean over the pairs (each order's mean log ratio averaged: a "
               "crossover analysis, so running first or second in a pair cancels; '1st vs 2nd' "
               "is that effect), interval and p a t-test on the pairs' logs")
    return (", ".join(counts or ["no benchmark measured"])
            + f". Threshold {s['threshold'] * 100:g}%, alpha {s['alpha']:g}: {how}; "
            f"'detectable' = the smallest change these pairs detect with "
            f"{DETECTION_POWER:.0%} power.")


def _rev_line(rev):
    if rev["working_tree"]:
        state = (f"dirty: {len(rev['changed'])} changed file(s)" if rev["dirty"]
                 else "clean")
        return f"working tree on {rev['sha'][:10]} ({state}) - {rev['subject']}"
    name = "" if rev["name"] == rev["sha"] else f"{rev['name']} = "
    return f"{name}{rev['sha'][:10]} - {rev['subject']}"


def facts(result):
    """(label, value) lines: what was compared, where, how."""
    s, m = result.settings, result.machine
    ran = [p for p in result.processes if p.status != "not run"]
    pairs_done = len({p.pair for p in ran if p.position == 1 or p.side == BOTH})
    foreign = [p.foreign_cpu_cores for p in ran if p.foreign_cpu_cores is not None]
    calls = s.get("interleave") == CALLS
    suites = (["micro-suite (" + ", ".join(s["frameworks"]) + ")"] if s["frameworks"] else [])
    suites += [f"config {s['config']}"] if s["config"] else []
    per = (f"{s['rounds']} rounds a revision in each of {s['blocks']} block(s) of a process, "
           f"after {s['warmup']} warm-up" if calls else
           f"{s['rounds']} rounds a micro process after {s['warmup']} warm-up")
    return [
        ("base", _rev_line(result.base)),
        ("candidate", _rev_line(result.candidate)),
        ("machine", f"{m.get('cpu_model')} ({m.get('machine_id')}), "
                    f"{m.get('cpu_count_usable')} usable CPUs"),
        ("measured", " + ".join(suites) + ", " + per
                     + (f", extra micro args {' '.join(s['micro_args'])}" if s["micro_args"]
                        else "")),
        ("pairs run", f"{pairs_done} of {s['pairs']} ({len(ran)} processes"
                      + (", both revisions in each micro process)" if calls else ")")),
        ("order", s["order"]),
        ("contention", (f"other processes used at most {max(foreign):.2f} CPUs during one of "
                        f"ours; {len(result.busy_processes())} process(es) above "
                        f"{BUSY_CPUS} CPUs") if foreign else "not measured"),
        ("wall time", f"{result.wall_s / 60:.1f} min, started {result.started_at}"),
    ]


def warnings(result):
    out = []
    busy = result.busy_processes()
    if busy:
        out.append(f"{len(busy)} process(es) shared the CPUs with other work (> {BUSY_CPUS} "
                   f"CPUs; worst {max(p.foreign_cpu_cores for p in busy):.2f}): "
                   + ", ".join(p.unit for p in busy[:6]) + ("..." if len(busy) > 6 else "")
                   + ". Their pairs may be off; re-run on a quiet machine if a verdict "
                     "hangs on them.")
    failed = [p for p in result.processes if p.status in ("failed", "timeout")]
    for p in failed[:8]:
        out.append(f"{p.unit} {p.status}: {p.error} (log: {p.log})")
    if result.interrupted:
        out.append("interrupted before the schedule finished: the verdicts cover the pairs "
                   "that completed")
    return out


def process_rows(result):
    return [[str(k + 1), str(p.pair + 1), f"{p.first} first" if p.side == BOTH
             else "AB"[p.position], p.side, p.suite,
             p.framework or "-", p.status,
             "-" if p.wall_s is None else f"{p.wall_s:.1f} s",
             "-" if p.foreign_cpu_cores is None else f"{p.foreign_cpu_cores:.2f}"]
            for k, p in enumerate(result.processes)]


PROCESS_COLUMNS = ["#", "pair", "position", "revision", "suite", "framework", "status", "wall",
                   "others' CPUs"]


def _aligned(columns, rows, left=(0,)):
    widths = [max(len(columns[i]), *(len(r[i]) for r in rows)) if rows else len(columns[i])
              for i in range(len(columns))]
    fmt_ = "  ".join(f"{{:{'<' if i in left else '>'}{w}}}" for i, w in enumerate(widths))
    return [fmt_.format(*columns).rstrip(), "  ".join("-" * w for w in widths)] + \
        [fmt_.format(*r).rstrip() for r in rows]


def format_text(result):
    lines = [f"diffbench A/B: {headline(result)}"]
    lines += [f"{k + ':':<11} {v}" for k, v in facts(result)]
    lines += [f"WARNING: {w}" for w in warnings(result)]
    lines += _aligned(COLUMNS, table_rows(result), left=(0, len(COLUMNS) - 1))
    lines += [f"  {r.name}: {r.reason}" for r in result.rows if r.reason]
    lines.append(summary_line(result))
    return "\n".join(lines) + "\n"


def _md_row(cells):
    return "| " + " | ".join(md_escape(c) for c in cells) + " |"


def format_markdown(result):
    lines = [f"### diffbench A/B: {headline(result)}", ""]
    lines += [f"- **{k}**: {md_escape(v)}" for k, v in facts(result)]
    lines.append("")
    lines += [f"> **Warning:** {md_escape(w)}" for w in warnings(result)]
    if warnings(result):
        lines.append("")
    lines.append(_md_row(COLUMNS))
    lines.append("|---|" + "---:|" * (len(COLUMNS) - 2) + "---|")
    for r, cells in zip(result.rows, table_rows(result)):
        cells = list(cells)
        cells[0] = f"`{cells[0]}`"
        if r.verdict in (REGRESSION, FAILED_IN_CANDIDATE, FAILED_IN_BOTH):
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join([cells[0]] + [md_escape(c) for c in cells[1:]]) + " |")
    lines += ["", md_escape(summary_line(result)), ""]
    notes = [f"- `{r.name}`: {md_escape(r.reason)}" for r in result.rows if r.reason]
    lines += notes + ([""] if notes else [])
    lines += ["<details><summary>Processes, in the order they ran</summary>", "",
              _md_row(PROCESS_COLUMNS), "|" + "---:|" * 3 + "---|" * 4 + "---:|" * 2]
    lines += [_md_row(r) for r in process_rows(result)]
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def pair_ratio_plot(result, out_dir):
    """Each benchmark's per-pair ratios (dots), the estimate with its interval (bar) and the
    threshold band: what the verdicts rest on, pair by pair."""
    rows = [r for r in result.rows if _measured(r.pair_ratios)]
    if not rows:
        return fmt.Note("No benchmark was measured on both sides: no pair ratios to plot.")
    thr = result.settings["threshold"] * 100
    colors = framework_colors([r.framework or "config" for r in rows])
    fig = MplFigure(figsize=(8.0, 0.9 + 0.42 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ax.axvspan(-thr, thr, color="#e8f3e8", zorder=0, label=f"±{thr:g}% threshold")
    ax.axvline(0, color="#777", lw=0.8, zorder=1)
    for y, r in enumerate(rows):
        pct = [(v - 1) * 100 for v in _measured(r.pair_ratios)]
        jitter = [((k % 5) - 2) * 0.06 for k in range(len(pct))]
        ax.scatter(pct, [y + j for j in jitter], s=16, alpha=0.7, zorder=2,
                   color=colors[r.framework or "config"])
        if r.low is not None and math.isfinite(r.low):
            ax.errorbar([r.change * 100], [y], xerr=[[(r.change - r.low) * 100],
                                                     [(r.high - r.change) * 100]],
                        fmt="D", color="black", ms=5, capsize=3, zorder=3)
        elif r.change is not None and math.isfinite(r.change):
            ax.plot([r.change * 100], [y], "D", color="black", ms=5, zorder=3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label(f"{r.name}  ({r.verdict})") for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("candidate vs base, per pair (%)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(Path(out_dir) / PLOT_NAME, dpi=DPI, bbox_inches="tight")
    return fmt.Figure(PLOT_NAME, "Dots: one pair each (candidate ÷ base, - 1: the pair's "
                      "two process medians, or with calls its blocks' medians). Diamond and bar: the estimate and its "
                      f"{(1 - result.settings['alpha']) * 100:g}% interval over pairs. Green: "
                      "the band of changes too small to count.")


def sections(result, out_dir):
    v = fmt.Section("Verdicts", "verdicts", intro=summary_line(result))
    v.blocks.append(fmt.Table(COLUMNS, table_rows(result)))
    v.blocks += [fmt.Note(f"{r.name}: {r.reason}") for r in result.rows if r.reason]
    v.blocks += [fmt.Note("Warning: " + w) for w in warnings(result)]
    v.blocks.append(pair_ratio_plot(result, out_dir))
    what = fmt.Section("Revisions and machine", "revisions")
    what.blocks.append(fmt.Table(["", ""], [list(f) for f in facts(result)], numeric=False))
    procs = fmt.Section("Processes", "processes",
                        intro="In the order they ran; 'others' CPUs' is how many CPUs other "
                              "processes kept busy meanwhile (0 = a quiet machine).")
    procs.blocks.append(fmt.Table(PROCESS_COLUMNS, process_rows(result)))
    return [v, what, procs]


def write_all(result: Result):
    """Write ab.json, ab.txt, ab.md and ab.html into the A/B folder; returns their paths."""
    out = Path(result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(str(out / "ab.json"), result.to_dict())
    paths = {"json": out / "ab.json", "text": out / "ab.txt", "markdown": out / "ab.md",
             "html": out / "ab.html"}
    paths["text"].write_text(format_text(result), encoding="utf-8")
    paths["markdown"].write_text(format_markdown(result), encoding="utf-8")
    title = f"diffbench A/B: {headline(result)}"
    write_html(sections(result, out), paths["html"], title,
               meta=f"{_rev_line(result.base)} → {_rev_line(result.candidate)}")
    return paths


def load_result(path):
    """ab.json as a plain dict (for benchmarks/measure_ab.py and tests)."""
    with open(Path(path) / "ab.json" if Path(path).is_dir() else path) as f:
        return json.load(f)
