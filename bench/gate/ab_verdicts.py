"""The verdicts of an A/B run (`harness.py ab`, bench/gate/ab.py): per benchmark, the
judgement over its pairs (bench.stats.replicates.judge_pairs) or why there is none, and the
`Result` that holds them with everything else the run found (written to ab.json and rendered
by bench/gate/ab_report.py).
"""
from dataclasses import asdict, dataclass, field

import numpy as np

from bench.gate.ab_pairs import BUSY_CPUS, SIDES
from bench.gate.compare import Verdicts
from bench.run.matrix import balanced_order
from bench.stats.replicates import (IMPROVEMENT, INCONCLUSIVE, REGRESSION, UNCHANGED,
                                    judge_pairs, pair_ratios)

EXIT_OK, EXIT_REGRESSION = 0, 1
FAILED_IN_CANDIDATE = "failed in candidate"
FAILED_IN_BASE = "failed in base"
FAILED_IN_BOTH = "failed in both"     # nothing measured: the gate cannot pass it


@dataclass
class Row:
    """One benchmark's verdict: the judgement over pairs, or why there is none."""

    suite: str
    framework: str
    cell: str
    metric: str
    verdict: str
    pair_ratios: list = field(default_factory=list)  # per pair; None: a process failed
    change: float = None
    low: float = None
    high: float = None
    p_value: float = None
    detectable: float = None
    pair_cv: float = None
    position_effect: float = None   # first process of a pair vs second, ratio - 1
    base_median_s: float = None     # median over pairs of each side's process median
    candidate_median_s: float = None
    reason: str = ""

    @property
    def name(self):
        return self.cell if self.metric == "time_s" else f"{self.cell} {self.metric}"


def judge_all(data, failed, threshold, alpha, pairs):
    # which revision ran first in each pair: the crossover analysis removes that effect
    # (calls mode: A B B A inside every block already balances it: a plain paired t)
    candidate_first = [order[0] == "candidate" for order in balanced_order(SIDES, pairs)]
    rows = []
    for (suite, fw, cell, metric), by_side in data.items():
        if "ratios" in by_side:
            j = judge_pairs(by_side["ratios"], threshold, alpha)
            ratios = np.asarray(by_side["ratios"], dtype=float)
        else:
            ratios = pair_ratios(by_side["base"], by_side["candidate"])
            j = judge_pairs(ratios, threshold, alpha, candidate_first)
        verdict, reason = j.verdict, j.reason
        if (suite, fw) in failed["candidate"] and (suite, fw) not in failed["base"]:
            verdict = FAILED_IN_CANDIDATE
            reason = "a candidate process failed where the base's did not (see raw/ logs)"
        elif (suite, fw) in failed["base"] and verdict == INCONCLUSIVE:
            reason = (reason + "; " if reason else "") + "base processes failed"
        meds = {s: [float(np.median(v)) for v in by_side[s] if v] for s in SIDES}
        rows.append(Row(suite, fw, cell, metric, verdict,
                        [float(r) if np.isfinite(r) else None for r in ratios],
                        j.change, j.low, j.high, j.p_value, j.detectable, j.pair_cv,
                        j.position_effect,
                        float(np.median(meds["base"])) if meds["base"] else None,
                        float(np.median(meds["candidate"])) if meds["candidate"] else None,
                        reason))
    # groups that produced nothing on either side still get a row: never silent
    seen = {(r.suite, r.framework) for r in rows}
    for group in sorted((failed["base"] | failed["candidate"]) - seen):
        both = group in failed["base"] and group in failed["candidate"]
        verdict = FAILED_IN_BOTH if both else (
            FAILED_IN_CANDIDATE if group in failed["candidate"] else FAILED_IN_BASE)
        rows.append(Row(*group, "*", "*", verdict, reason="no process of this suite "
                        "produced a result" + (" on either side" if both else "")))
    return rows


@dataclass
class Result(Verdicts):
    """Everything an A/B run found: written to ab.json, rendered by bench/gate/ab_report.py."""

    base: dict
    candidate: dict
    settings: dict
    machine: dict
    processes: list
    rows: list
    started_at: str
    wall_s: float
    out_dir: str
    interrupted: bool = False

    @property
    def candidate_failures(self):
        """Rows the candidate broke, and rows nothing could be measured for (a gate that
        measured nothing must not pass)."""
        return [r for r in self.rows if r.verdict in (FAILED_IN_CANDIDATE, FAILED_IN_BOTH)]

    def busy_processes(self):
        return [p for p in self.processes
                if p.foreign_cpu_cores is not None and p.foreign_cpu_cores > BUSY_CPUS]

    def exit_code(self):
        return EXIT_REGRESSION if self.regressions or self.candidate_failures else EXIT_OK

    def to_dict(self):
        d = asdict(self)
        d["exit_code"] = self.exit_code()
        d["counts"] = {v: self.count(v) for v in (REGRESSION, IMPROVEMENT, UNCHANGED,
                                                 INCONCLUSIVE, FAILED_IN_CANDIDATE,
                                                 FAILED_IN_BASE, FAILED_IN_BOTH)}
        return d
