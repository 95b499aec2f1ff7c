"""The regression gate: compare a candidate's timings with a baseline's, per cell and metric.

    harness.py compare BASELINE CANDIDATE [--threshold 10%] [--alpha 0.01] [--normalize]
                       [--markdown FILE] [--report-only] [--strict]
    python -m bench.gate.compare ...   (the same)

BASELINE and CANDIDATE are both either run folders (results/<run-id>/, read through
bench.records.results.load_run) or pytest-benchmark JSON files (benchmarks/run_micro.py, or
`pytest benchmarks --benchmark-json`). What is compared, per cell:

    run folder   train cells: step_wall_s and step_compute_s of every measured step;
                 sample cells: chain_time_s[<sampler>,<steps> steps,b<batch>...] of every
                 measured chain; grouped by replicate (one process each)
    micro JSON   cell = the benchmark's name (e.g. test_train_step[torch]),
                 metric time_s = every round's time, grouped by the process that ran it
                 (extra_info.process_samples; a plain pytest-benchmark file is one process)

The unit of comparison is the process (bench/stats/replicates.py): each process is summarised by its
median, and change and p come from a t-test on the log process medians. The verdict
(bench.stats.replicates.judge) is
    regression        change > +threshold and p < alpha
    improvement       change < -threshold and p < alpha
    unchanged         |change| <= threshold (whatever p says: too small to matter)
    not significant   |change| > threshold but p >= alpha (re-runs could explain it)
    too few processes fewer than bench.stats.replicates.MIN_REPLICATES processes on a side
and rows a side lacks are reported as "missing in baseline/candidate" (or "failed in
candidate" and the like for cells that did not finish ok), never skipped. Each row states
its process counts and the smallest change those counts could detect.

Exit status: 1 if any row is a regression (or, with --strict, the candidate lacks or failed
something the baseline has); 0 otherwise or with --report-only; 2 for bad input.

Across machines: each side carries its hardware (CPU model, usable CPUs, threads, GPU names)
and a calibration score (bench/measure/calibrate.py); differing hardware prints a warning, and
--normalize divides every time by its own side's score.
"""
import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np

from bench.gate.sides import (BadInput, Side, busy_warnings, hardware_warnings, load_side,
                              normalizer, setup_warnings)
from bench.stats.replicates import (DETECTION_POWER, IMPROVEMENT, MIN_REPLICATES,
                                    NOT_SIGNIFICANT, REGRESSION, TOO_FEW, UNCHANGED, judge,
                                    replicate_medians)

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_THRESHOLD = 0.10
DEFAULT_ALPHA = 0.01


# -------------------------------------------------------------------------------- compare

@dataclass
class Row:
    cell: str
    metric: str
    verdict: str
    n_baseline: int = 0   # processes
    n_candidate: int = 0
    median_baseline: float = None   # median of the side's process medians
    median_candidate: float = None
    change: float = None  # ratio of geometric means of process medians - 1
    p_value: float = None
    detectable: float = None  # smallest change these process counts could detect


class Verdicts:
    """Counting a judged result's rows (shared by compare's Comparison and ab's Result)."""

    rows: list

    def count(self, verdict):
        return sum(1 for r in self.rows if r.verdict == verdict)

    @property
    def regressions(self):
        return [r for r in self.rows if r.verdict == REGRESSION]


@dataclass
class Comparison(Verdicts):
    baseline: Side
    candidate: Side
    rows: list
    warnings: list
    threshold: float
    alpha: float
    normalized: bool

    @property
    def candidate_gaps(self):
        """Rows where the candidate lacks or failed what the baseline has (see --strict)."""
        return [r for r in self.rows if r.verdict.endswith("in candidate")]

    def exit_code(self, strict=False):
        if self.regressions or (strict and self.candidate_gaps):
            return EXIT_REGRESSION
        return EXIT_OK


def compare(baseline, candidate, threshold=DEFAULT_THRESHOLD, alpha=DEFAULT_ALPHA,
            normalize=False):
    """Compare two result sets (paths or Sides). Returns a Comparison; raises BadInput."""
    if not 0 < alpha < 1:
        raise BadInput(f"--alpha {alpha}: must be in (0, 1), e.g. 0.01")
    if not 0 <= threshold < 10:
        raise BadInput(f"--threshold {threshold}: must be a fraction >= 0, e.g. 0.1 (10%)")
    base = baseline if isinstance(baseline, Side) else load_side(baseline)
    cand = candidate if isinstance(candidate, Side) else load_side(candidate)
    if base.kind != cand.kind:
        raise BadInput(f"cannot compare a {base.kind} ({base.path}) with a {cand.kind} "
                       f"({cand.path}): give two run folders or two micro JSON files")
    warnings = (hardware_warnings(base, cand) + setup_warnings(base, cand)
                + busy_warnings(base, cand))
    scale_b = scale_c = 1.0
    if normalize:
        scale_b, scale_c = normalizer(base, cand), normalizer(cand, base)
        if base.hardware.get("gpu_names") or cand.hardware.get("gpu_names"):
            warnings.append("--normalize: the calibration measures the CPU only; GPU timings "
                            "divided by it are approximate")

    keys = list(base.samples)
    keys += [k for k in cand.samples if k not in base.samples]
    cells = list(dict.fromkeys([c for c, _ in keys] + list(base.cell_status)
                               + list(cand.cell_status)))
    rows = []
    for cell in cells:
        sb, sc = base.cell_status.get(cell), cand.cell_status.get(cell)
        metrics = [m for c, m in keys if c == cell]
        bad = [(name, s) for name, s in (("baseline", sb), ("candidate", sc))
               if s is not None and s != "ok"]
        absent = [name for name, s in (("baseline", sb), ("candidate", sc)) if s is None]
        if bad or absent:
            # A cell that did not finish on a side: one row per metric the other side has
            # (or one row for the cell), naming what happened.
            verdict = "; ".join([f"{s} in {name}" for name, s in bad]
                                + [f"missing in {name}" for name in absent])
            for metric in metrics or ["*"]:
                rows.append(_partial_row(cell, metric, verdict, base, cand, scale_b, scale_c))
            continue
        for metric in metrics:
            vb, vc = base.samples.get((cell, metric)), cand.samples.get((cell, metric))
            if not vb or not vc:
                verdict = "missing in candidate" if vb else "missing in baseline"
                rows.append(_partial_row(cell, metric, verdict, base, cand, scale_b, scale_c))
                continue
            j = judge([[v / scale_b for v in g] for g in vb],
                      [[v / scale_c for v in g] for g in vc], threshold, alpha)
            rows.append(Row(cell, metric, j.verdict, j.n_baseline, j.n_candidate,
                            j.median_baseline, j.median_candidate, j.change, j.p_value,
                            j.detectable))
    return Comparison(base, cand, rows, warnings, threshold, alpha, normalize)


def _partial_row(cell, metric, verdict, base, cand, scale_b, scale_c):
    vb, vc = base.samples.get((cell, metric)) or [], cand.samples.get((cell, metric)) or []
    return Row(cell, metric, verdict, len(vb), len(vc),
               float(np.median(replicate_medians(vb))) / scale_b if vb else None,
               float(np.median(replicate_medians(vc))) / scale_c if vc else None)


# --------------------------------------------------------------------------------- output

def _fmt_value(v, normalized):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if normalized:
        return f"{v:.3f}x"
    return f"{v * 1e3:.2f} ms" if abs(v) < 1 else f"{v:.3f} s"


def _fmt_change(v):
    return "-" if v is None or math.isnan(v) else f"{v * 100:+.1f}%"


def _fmt_p(p):
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


COLUMNS = ["cell", "metric", "baseline", "candidate", "change", "p", "processes (b/c)",
           "detectable", "verdict"]
VERDICT_COLUMN = COLUMNS.index("verdict")


def _fmt_detectable(v):
    return "-" if v is None or math.isnan(v) else f">= {v * 100:.0f}%"


def _table_rows(cmp):
    out = []
    for r in cmp.rows:
        out.append([r.cell, r.metric, _fmt_value(r.median_baseline, cmp.normalized),
                    _fmt_value(r.median_candidate, cmp.normalized), _fmt_change(r.change),
                    _fmt_p(r.p_value), f"{r.n_baseline}/{r.n_candidate}",
                    _fmt_detectable(r.detectable), r.verdict])
    return out


def summary_line(cmp, strict=False):
    gaps = len(cmp.candidate_gaps)
    other_missing = sum(1 for r in cmp.rows if "in baseline" in r.verdict)
    parts = [f"{cmp.count(REGRESSION)} regression(s)", f"{cmp.count(IMPROVEMENT)} "
             f"improvement(s)", f"{cmp.count(UNCHANGED)} unchanged",
             f"{cmp.count(NOT_SIGNIFICANT)} not significant"]
    if cmp.count(TOO_FEW):
        parts.append(f"{cmp.count(TOO_FEW)} with too few processes to judge (< "
                     f"{MIN_REPLICATES} a side)")
    if gaps:
        parts.append(f"{gaps} missing/failed in candidate" + (" (fails with --strict)"
                                                               if not strict else ""))
    if other_missing:
        parts.append(f"{other_missing} missing/failed in baseline")
    units = "medians in units of each side's calibration score" if cmp.normalized else \
        "medians in seconds"
    return (", ".join(parts) + f". Threshold {cmp.threshold * 100:g}%, alpha {cmp.alpha:g}, "
            f"t-test on log per-process medians (the process is the unit; 'detectable' "
            f"= the smallest change these process counts detect with {DETECTION_POWER:.0%} "
            f"power); {units}.")


def format_table(cmp, strict=False):
    """The plain-text table for a terminal or a CI log."""
    rows = _table_rows(cmp)
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in rows)) if rows else len(COLUMNS[i])
              for i in range(len(COLUMNS))]
    lines = [f"baseline:  {cmp.baseline.path}", f"candidate: {cmp.candidate.path}"]
    lines += [f"WARNING: {w}" for w in cmp.warnings]
    fmt = "  ".join(f"{{:{'<' if i < 2 or i == VERDICT_COLUMN else '>'}{w}}}"
                    for i, w in enumerate(widths))
    lines.append(fmt.format(*COLUMNS).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt.format(*r).rstrip() for r in rows]
    lines.append(summary_line(cmp, strict))
    return "\n".join(lines)


def format_markdown(cmp, strict=False):
    """The same table as GitHub-flavoured markdown, for a CI comment."""
    status = "regression detected" if cmp.regressions else "no regression"
    lines = [f"### diffbench regression check: {status}", "",
             f"Baseline `{cmp.baseline.path}` vs candidate `{cmp.candidate.path}`.", ""]
    lines += [f"> **Warning:** {w}" for w in cmp.warnings]
    if cmp.warnings:
        lines.append("")
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (VERDICT_COLUMN - 2) + ["---"])
                 + "|")
    for r, cells in zip(cmp.rows, _table_rows(cmp)):
        cells = [c.replace("|", "\\|") for c in cells]
        cells[0], cells[1] = f"`{cells[0]}`", f"`{cells[1]}`"
        if r.verdict == REGRESSION:
            cells[VERDICT_COLUMN] = f"**{cells[VERDICT_COLUMN]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", summary_line(cmp, strict)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ CLI

def parse_threshold(text):
    """'10%' -> 0.10, '0.1' -> 0.10. A bare number > 1 is ambiguous and rejected."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise BadInput(f"--threshold {text}: not a number; give a percentage (10%) or a "
                       "fraction (0.1)") from None
    if not s.endswith("%") and value > 1:
        raise BadInput(f"--threshold {text}: ambiguous; write {s}% for a percentage or a "
                       "fraction such as 0.1")
    if value < 0:
        raise BadInput(f"--threshold {text}: must be >= 0")
    return value


def add_arguments(p):
    """Register compare's arguments on an argparse parser (harness.py's subparser)."""
    p.add_argument("baseline", help="run folder or pytest-benchmark JSON (the reference)")
    p.add_argument("candidate", help="run folder or pytest-benchmark JSON (the new result)")
    p.add_argument("--threshold", default=f"{DEFAULT_THRESHOLD * 100:g}%",
                   help="smallest relative change of the median that counts, as 10%% or 0.1 "
                        "(default 10%%)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="significance level of the t-test over processes (default 0.01)")
    p.add_argument("--normalize", action="store_true",
                   help="divide each side's times by its calibration score (across machines)")
    p.add_argument("--markdown", metavar="FILE",
                   help="also write the table as markdown to FILE ('-' = stdout)")
    p.add_argument("--report-only", action="store_true",
                   help="print the verdicts but exit 0 (noisy shared CI machines)")
    p.add_argument("--strict", action="store_true",
                   help="also exit 1 when the candidate lacks or failed a cell/metric the "
                        "baseline has")
    return p


def run_cli(args):
    """Run a parsed compare command; returns the exit status."""
    try:
        cmp = compare(args.baseline, args.candidate, parse_threshold(args.threshold),
                      args.alpha, args.normalize)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(cmp, args.strict))
    if args.markdown and not write_markdown(format_markdown(cmp, args.strict), args.markdown):
        return EXIT_BAD_INPUT
    return final_exit_code(cmp.exit_code(args.strict), args.report_only)


def write_markdown(text, dest):
    """--markdown FILE ('-' = stdout); False (after a one-line error) when it cannot write."""
    if dest == "-":
        sys.stdout.write("\n" + text)
        return True
    try:
        with open(dest, "w") as f:
            f.write(text)
    except OSError as e:
        print(f"error: --markdown {dest}: cannot write ({e.strerror})", file=sys.stderr)
        return False
    return True


def final_exit_code(code, report_only):
    """--report-only turns a failing verdict into exit 0, saying so."""
    if report_only and code != EXIT_OK:
        print("report-only: exiting 0 despite the verdicts above")
        return EXIT_OK
    return code


def main(argv=None):
    ap = argparse.ArgumentParser(prog="harness.py compare",
                                 description="Compare timings with a baseline (exit 1 on a "
                                             "regression).")
    add_arguments(ap)
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return EXIT_BAD_INPUT if e.code not in (0, None) else EXIT_OK
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
