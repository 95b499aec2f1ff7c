"""Spread, not single numbers: the one place where diffbench turns timings into claims.

Framework-free (numpy + scipy only); the report and the regression gate both use it, so a
"ratio" or a "regression" means the same thing everywhere.

**The process is the unit of replication.** Steps (or chains, or rounds) inside one process
are correlated: they share a memory layout, a CPU placement, a clock frequency and the
neighbours of that minute. Most of the variance on a shared machine is *between* processes.
An interval over the steps of one process per side is therefore far too narrow: the same
quick benchmark gave Jittor/torch 0.97x to 1.64x over five re-runs, each with a "95%"
interval a few percent wide. So every claim here is two-level:

1. each replicate (one fresh process) is summarised first: the median of its measured steps;
2. the comparison is made between the replicate medians, on a log scale (timings are
   multiplicative: a ratio's interval must be symmetric in log space), with a two-sample t
   (Welch's standard error; Student's degrees of freedom for equal counts, see `_welch`).

Why a t interval on log replicate medians and not a hierarchical bootstrap (replicates, then
steps): with the 3-5 replicates a benchmark can afford, a percentile bootstrap of replicates
has only a handful of distinct resamples and its intervals cover the truth far less often than
stated (tests/test_stats.py measures both on simulated processes). The t interval pays for a
small replicate count with its heavier tail, which is the honest price. Frameworks are run in
a balanced interleaved order (bench/run/matrix.py, `balanced_order`), so slow drift of the
machine lands on both sides alike and only widens the interval, never biases it.

Below MIN_REPLICATES processes per side no interval or verdict is given: `Ratio.reason` and
`Judgement.verdict` say so in words.
"""
from dataclasses import dataclass
import math
import warnings

import numpy as np
from scipy import stats as _scipy_stats

CONFIDENCE_LEVEL = 0.95
# Fewer processes than this per side: no interval, no verdict (2 would give a t interval with
# ~1-2 degrees of freedom: tens of times wider than the effect it is meant to bound).
MIN_REPLICATES = 3
# Power at which compare's "smallest detectable change" is quoted.
DETECTION_POWER = 0.8
N_RESAMPLES = 2000
# Fixed seed: the same run must give the same report, byte for byte.
BOOTSTRAP_SEED = 12345


@dataclass(frozen=True)
class Spread:
    """Median, interquartile range and 95th percentile of one sample."""

    n: int
    median: float
    q25: float
    q75: float
    p95: float

    @property
    def iqr(self) -> float:
        return self.q75 - self.q25


def _clean(values) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


def spread(values) -> Spread:
    """Median / quartiles / p95 of the finite values; all NaN when there are none."""
    a = _clean(values)
    if a.size == 0:
        nan = float("nan")
        return Spread(0, nan, nan, nan, nan)
    q25, median, q75, p95 = np.percentile(a, [25, 50, 75, 95])
    return Spread(int(a.size), float(median), float(q25), float(q75), float(p95))


# ------------------------------------------------------------------------ replicates

def replicate_medians(groups) -> np.ndarray:
    """One summary per replicate: the median of its finite values. `groups` is a list of
    per-process samples (a bare list of numbers counts as one process); empty ones drop out."""
    groups = list(groups)
    if groups and np.isscalar(groups[0]):
        groups = [groups]
    meds = [np.median(a) for a in map(_clean, groups) if a.size]
    return np.asarray(meds, dtype=float)


def between_cv(medians) -> float:
    """Coefficient of variation of replicate medians (std / mean): how much a re-run moves
    the number. NaN with fewer than 2 replicates."""
    m = _clean(medians)
    if m.size < 2 or m.mean() == 0:
        return float("nan")
    return float(np.std(m, ddof=1) / np.mean(m))


def geometric_mean_interval(values, confidence_level=CONFIDENCE_LEVEL):
    """(geometric mean, low, high) of positive values, with a t interval on the log scale
    (e.g. the slot check's times ÷ their cells' medians, a value per process and timed
    thing); low/high are NaN with fewer than 2 values or no spread among them."""
    logs = np.log(np.asarray(values, dtype=float))
    n, mean = logs.size, float(np.mean(logs))
    sd = float(np.std(logs, ddof=1)) if n >= 2 else 0.0
    if sd == 0:
        return float(math.exp(mean)), float("nan"), float("nan")
    half = float(_scipy_stats.t.ppf(0.5 + confidence_level / 2, n - 1)) * sd / math.sqrt(n)
    return float(math.exp(mean)), float(math.exp(mean - half)), float(math.exp(mean + half))


@dataclass(frozen=True)
class Ratio:
    """sample / baseline from replicate medians: the ratio of their geometric means, with a
    t interval on the log scale. low/high are NaN, and `reason` says why, when there are
    too few processes for an interval."""

    value: float
    low: float
    high: float
    n: int                    # replicates (processes) of the sample side
    n_baseline: int           # ... of the baseline side
    cv: float = float("nan")  # between-replicate CV of the sample side
    cv_baseline: float = float("nan")
    p_value: float = float("nan")   # two-sided t-test of "ratio = 1"
    reason: str = ""

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def _welch(log_a, log_b):
    """(difference of means, standard error, degrees of freedom) of two log samples.

    The standard error is Welch's. With equal counts (the balanced design: every cell runs
    runner.replicates processes) it equals the pooled-variance one, and the degrees of
    freedom are Student's n_a + n_b - 2: with equal counts the t test is robust to unequal
    variances, while Welch-Satterthwaite's df collapse towards n - 1 whenever one side happens
    to be tight, which at 3 processes (df 2, t = 4.3) makes a 3x slowdown "not significant".
    Unequal counts (a failed replicate, pooled runs) get Welch-Satterthwaite's df."""
    na, nb = log_a.size, log_b.size
    d = float(log_a.mean() - log_b.mean())
    va, vb = log_a.var(ddof=1) / na, log_b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se == 0 or na == nb:
        return d, se, float(na + nb - 2)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return d, se, float(df)


def _positive_medians(groups) -> np.ndarray:
    """Replicate medians that can be logged (a zero or negative time is no measurement)."""
    m = replicate_medians(groups)
    return m[m > 0]


def too_few_reason(n_a, n_b, unit="process") -> str:
    return (f"{n_a} vs {n_b} {unit}{'es' if unit == 'process' else 's'}: an interval needs "
            f">= {MIN_REPLICATES} per side")


def ratio_of_replicates(sample_groups, baseline_groups, *,
                        confidence_level=CONFIDENCE_LEVEL) -> Ratio:
    """Ratio sample / baseline over independent processes (see the module docstring).

    sample_groups / baseline_groups: one list of measured values per process (a flat list is
    one process). The point value is exp(mean log median_a - mean log median_b)."""
    a, b = _positive_medians(sample_groups), _positive_medians(baseline_groups)
    nan = float("nan")
    if a.size == 0 or b.size == 0:
        return Ratio(nan, nan, nan, int(a.size), int(b.size), reason="no measurement")
    la, lb = np.log(a), np.log(b)
    value = float(math.exp(la.mean() - lb.mean()))
    cv_a, cv_b = between_cv(a), between_cv(b)
    if a.size < MIN_REPLICATES or b.size < MIN_REPLICATES:
        return Ratio(value, nan, nan, int(a.size), int(b.size), cv_a, cv_b,
                     reason=too_few_reason(a.size, b.size))
    d, se, df = _welch(la, lb)
    if se == 0:  # identical medians in every process: a degenerate but exact answer
        return Ratio(value, value, value, int(a.size), int(b.size), cv_a, cv_b,
                     0.0 if d != 0 else 1.0)
    t = float(_scipy_stats.t.ppf(0.5 + confidence_level / 2, df))
    p = float(2 * _scipy_stats.t.sf(abs(d) / se, df))
    return Ratio(value, math.exp(d - t * se), math.exp(d + t * se), int(a.size), int(b.size),
                 cv_a, cv_b, p)


def smallest_detectable_change(sample_groups, baseline_groups, alpha,
                               power=DETECTION_POWER) -> float:
    """The relative change (0.1 = 10%) that the two-sided t-test at `alpha` would detect
    with probability `power`, given these replicate counts and their observed between-process
    spread. NaN when there are too few processes to say."""
    a, b = _positive_medians(sample_groups), _positive_medians(baseline_groups)
    if a.size < MIN_REPLICATES or b.size < MIN_REPLICATES:
        return float("nan")
    _, se, df = _welch(np.log(a), np.log(b))
    t_alpha = _scipy_stats.t.ppf(1 - alpha / 2, df)
    t_power = _scipy_stats.t.ppf(power, df)
    return float(math.expm1((t_alpha + t_power) * se))


# ------------------------------------------------------- within one process (for contrast)

def _median_ratio(sample, baseline, axis=-1):
    return np.median(sample, axis=axis) / np.median(baseline, axis=axis)


def ratio_of_medians(sample, baseline, *, confidence_level=CONFIDENCE_LEVEL,
                     n_resamples=N_RESAMPLES, seed=BOOTSTRAP_SEED) -> Ratio:
    """Ratio of medians of two flat samples, percentile bootstrap over their values.

    Only valid when the values are independent, which steps of one process are NOT: an
    interval from this says how precisely one process was measured, not what a re-run gives.
    Kept to show that difference (benchmarks/measure_replicates.py), never for a claim."""
    a, b = _clean(sample), _clean(baseline)
    nan = float("nan")
    if a.size == 0 or b.size == 0 or np.median(b) == 0:
        return Ratio(nan, nan, nan, int(a.size), int(b.size))
    value = float(_median_ratio(a, b))
    if a.size < 2 or b.size < 2:
        return Ratio(value, nan, nan, int(a.size), int(b.size))
    with warnings.catch_warnings():
        # A constant sample makes a degenerate bootstrap distribution; scipy warns and still
        # returns the (zero-width) interval.
        warnings.simplefilter("ignore")
        res = _scipy_stats.bootstrap(
            (a, b), _median_ratio, n_resamples=n_resamples, batch=200, vectorized=True,
            paired=False, confidence_level=confidence_level, method="percentile",
            rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Ratio(value, low, high, int(a.size), int(b.size))


# ---------------------------------------------------------------------------- verdicts

REGRESSION, IMPROVEMENT = "regression", "improvement"
UNCHANGED, NOT_SIGNIFICANT, TOO_FEW = "unchanged", "not significant", "too few processes"


@dataclass(frozen=True)
class Judgement:
    """A candidate against a baseline, over processes."""

    median_baseline: float     # median of the baseline's replicate medians
    median_candidate: float
    change: float              # ratio of geometric means - 1
    p_value: float             # t-test on log replicate medians; NaN when too few
    verdict: str
    n_baseline: int            # processes
    n_candidate: int
    detectable: float          # smallest change this many processes could detect (NaN: too few)
    low: float = float("nan")  # (1 - alpha) interval of change
    high: float = float("nan")


def judge(baseline_groups, candidate_groups, threshold, alpha) -> Judgement:
    """Verdict on candidate vs baseline, both given as per-process samples:

        regression        change > +threshold and p < alpha
        improvement       change < -threshold and p < alpha
        unchanged         |change| <= threshold (too small to matter, whatever p says)
        not significant   |change| > threshold but p >= alpha (re-runs could explain it)
        too few processes fewer than MIN_REPLICATES per side: nothing can be claimed
    """
    r = ratio_of_replicates(candidate_groups, baseline_groups, confidence_level=1 - alpha)
    mb = float(np.median(replicate_medians(baseline_groups))) if r.n_baseline else float("nan")
    mc = float(np.median(replicate_medians(candidate_groups))) if r.n else float("nan")
    change = r.value - 1.0
    low, high = r.low - 1.0, r.high - 1.0
    detectable = smallest_detectable_change(candidate_groups, baseline_groups, alpha)
    if not r.has_interval:
        verdict = TOO_FEW
    elif not math.isfinite(change) or abs(change) <= threshold:
        verdict = UNCHANGED
    elif r.p_value >= alpha:
        verdict = NOT_SIGNIFICANT
    else:
        verdict = REGRESSION if change > 0 else IMPROVEMENT
    return Judgement(mb, mc, change, r.p_value, verdict, r.n_baseline, r.n, detectable,
                     low, high)


# ------------------------------------------------------------- paired A/B (two revisions)
#
# `harness.py ab` runs the two revisions as alternating processes, one pair at a time, in the
# Thue-Morse order (AB BA BA AB ...). Neighbouring processes share the machine's state of that
# minute, so the ratio of the two processes of one pair cancels the slow drift that makes
# unpaired comparisons on a shared VM so wide (14-31% between sessions here). The pairs are
# the independent units.
#
# It is a 2x2 crossover design, analysed as one: the process that runs first in its pair is
# often slower or faster than the second (measured here: a torch process right after a Jittor
# one ran its first benchmark ~20% slower), so a pair's log ratio is  tau - pi  when the base
# ran first and  tau + pi  when the candidate did (tau: the change, pi: the position effect).
# The estimate averages the two orders' mean log ratios (pi cancels) and the interval uses the
# spread within each order (pi stays out of the variance): a t interval with pairs - 2
# degrees of freedom. Without both orders (fewer than 2 pairs of each) it falls back to the
# plain paired t over all pairs (pairs - 1 df), which the balanced order keeps unbiased.

INCONCLUSIVE = "inconclusive"


def pair_ratios(base_groups, cand_groups) -> np.ndarray:
    """Per pair, candidate process median / base process median; NaN for a pair where either
    process measured nothing (it failed), so the result stays aligned with the pairs."""
    out = []
    for b, c in zip(base_groups, cand_groups):
        b, c = _clean(b if b is not None else []), _clean(c if c is not None else [])
        ok = b.size and c.size and np.median(b) > 0 and np.median(c) > 0
        out.append(float(np.median(c) / np.median(b)) if ok else float("nan"))
    return np.asarray(out, dtype=float)


def block_ratio(base_blocks, cand_blocks) -> float:
    """One process of an interleaved A/B run (both revisions in it, alternated in blocks):
    the geometric mean over blocks of candidate median / base median; blocks where either
    side measured nothing drop out; NaN when none is left."""
    r = pair_ratios(base_blocks, cand_blocks)
    r = r[np.isfinite(r) & (r > 0)]
    return float(np.exp(np.mean(np.log(r)))) if r.size else float("nan")


@dataclass(frozen=True)
class PairedJudgement:
    """A candidate against a base revision, over pairs of adjacent processes."""

    change: float          # exp(estimated mean log ratio) - 1
    low: float             # (1 - alpha) interval of change; NaN with too few pairs
    high: float
    p_value: float         # t-test of "no change"
    verdict: str           # regression | improvement | unchanged | inconclusive
    n_pairs: int
    detectable: float      # smallest change these pairs detect at alpha, 80% power
    pair_cv: float         # std / mean of the pair ratios: how much one pair moves
    position_effect: float = float("nan")  # first-of-pair vs second, as a ratio - 1
    reason: str = ""       # why inconclusive, in words


def _crossover(logs, cand_first):
    """(estimate, standard error, df, position effect) of the mean log ratio."""
    n = logs.size
    if cand_first is not None:
        first = np.asarray(cand_first, dtype=bool)
        a, b = logs[~first], logs[first]       # base ran first | candidate ran first
        if a.size >= 2 and b.size >= 2:
            est = (a.mean() + b.mean()) / 2
            ss = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
            df = n - 2
            se = math.sqrt(ss / df) / 2 * math.sqrt(1 / a.size + 1 / b.size)
            return float(est), float(se), df, float(math.expm1((b.mean() - a.mean()) / 2))
    return float(logs.mean()), float(logs.std(ddof=1) / math.sqrt(n)), n - 1, float("nan")


def judge_pairs(ratios, threshold, alpha, candidate_first=None) -> PairedJudgement:
    """Verdict on the per-pair ratios of a paired A/B run.

    candidate_first[i]: whether pair i ran the candidate first (the crossover analysis
    above); None for the plain paired t. Pairs with a NaN ratio (a failed process) drop out.

        regression    change > +threshold and p < alpha
        improvement   change < -threshold and p < alpha
        unchanged     the whole (1 - alpha) interval lies within +-threshold: any change
                      that counts is ruled out
        inconclusive  neither: the interval straddles the threshold (or there are fewer than
                      MIN_REPLICATES pairs); more pairs would tell
    """
    r = np.asarray(ratios, dtype=float)
    keep = np.isfinite(r) & (r > 0)
    flags = None if candidate_first is None else np.asarray(candidate_first, bool)[keep]
    r = r[keep]
    n = int(r.size)
    nan = float("nan")
    if n == 0:
        return PairedJudgement(nan, nan, nan, nan, INCONCLUSIVE, 0, nan, nan,
                               reason="no pair measured on both sides")
    logs = np.log(r)
    cv = float(np.std(r, ddof=1) / np.mean(r)) if n > 1 else nan
    if n < MIN_REPLICATES:
        return PairedJudgement(float(math.expm1(logs.mean())), nan, nan, nan, INCONCLUSIVE,
                               n, nan, cv,
                               reason=f"{n} pair(s): an interval needs >= {MIN_REPLICATES}")
    est, se, df, position = _crossover(logs, flags)
    change = float(math.expm1(est))
    if se == 0:
        p, low, high, detectable = (0.0 if est != 0 else 1.0), change, change, 0.0
    else:
        t_crit = float(_scipy_stats.t.ppf(1 - alpha / 2, df))
        p = float(2 * _scipy_stats.t.sf(abs(est) / se, df))
        low, high = float(math.expm1(est - t_crit * se)), float(math.expm1(est + t_crit * se))
        detectable = float(math.expm1((t_crit + _scipy_stats.t.ppf(DETECTION_POWER, df)) * se))
    reason = ""
    if abs(change) > threshold and p < alpha:
        verdict = REGRESSION if change > 0 else IMPROVEMENT
    elif -threshold <= low and high <= threshold:
        verdict = UNCHANGED
    else:
        verdict = INCONCLUSIVE
        reason = (f"interval [{low * 100:+.1f}%, {high * 100:+.1f}%] straddles the "
                  f"±{threshold * 100:g}% threshold: these pairs cannot rule a change that "
                  "counts in or out (run more pairs)")
    return PairedJudgement(change, low, high, p, verdict, n, detectable, cv, position, reason)
