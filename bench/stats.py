"""Spread, not single numbers: robust summaries and bootstrap confidence intervals.

Framework-free (numpy + scipy only) so the report and the regression gate share one
definition of "median step time" and "ratio vs baseline".
"""
from dataclasses import dataclass
import warnings

import numpy as np
from scipy import stats as _scipy_stats

CONFIDENCE_LEVEL = 0.95
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


@dataclass(frozen=True)
class Ratio:
    """median(sample) / median(baseline), with a bootstrap CI (NaN when it cannot be had)."""

    value: float
    low: float
    high: float
    n: int
    n_baseline: int


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


def _median_ratio(sample, baseline, axis=-1):
    return np.median(sample, axis=axis) / np.median(baseline, axis=axis)


def ratio_of_medians(sample, baseline, *, confidence_level=CONFIDENCE_LEVEL,
                     n_resamples=N_RESAMPLES, seed=BOOTSTRAP_SEED) -> Ratio:
    """Ratio of medians with a percentile bootstrap CI, resampling BOTH samples independently.

    The two samples are per-step (or per-batch) times of two frameworks; they are not paired
    (step i of torch has nothing to do with step i of jittor), so each is resampled on its own.
    Fewer than 2 values on either side -> the point ratio (if any) and a NaN interval.
    """
    a, b = _clean(sample), _clean(baseline)
    nan = float("nan")
    if a.size == 0 or b.size == 0 or np.median(b) == 0:
        return Ratio(nan, nan, nan, int(a.size), int(b.size))
    value = float(_median_ratio(a, b))
    if a.size < 2 or b.size < 2:
        return Ratio(value, nan, nan, int(a.size), int(b.size))
    with warnings.catch_warnings():
        # A constant sample makes a degenerate bootstrap distribution; scipy warns and still
        # returns the (zero-width) interval, which is the honest answer.
        warnings.simplefilter("ignore")
        res = _scipy_stats.bootstrap(
            # batch: resample 200 at a time so 10^4 steps x 2000 resamples stays small in memory
            (a, b), _median_ratio, n_resamples=n_resamples, batch=200, vectorized=True, paired=False,
            confidence_level=confidence_level, method="percentile",
            rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Ratio(value, low, high, int(a.size), int(b.size))
