"""bench/stats/replicates.py on synthetic timings with a known truth and fixed seeds.

Each simulated process has its own speed (a lognormal process effect: what differs between
re-runs of the same code) and its steps scatter around it (a smaller within-process spread).
That is the shape measured on this machine (docs/STATISTICS.md): between-process variation
several times larger than the spread of steps inside one process. Every number below comes
from fixed seeds, so these tests are deterministic; they check rates over hundreds of
simulated benchmarks, not one lucky draw.
"""
import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from bench.stats import replicates as S

BETWEEN_SIGMA = 0.10   # process-to-process (log scale): ~10% CV, as seen between runs here
WITHIN_SIGMA = 0.03    # step-to-step inside a process
STEPS = 40


def processes(rng, n, median_s=0.05, scale=1.0, steps=STEPS):
    """n processes' measured step times: [[steps of process 1], ...]."""
    effects = rng.lognormal(0.0, BETWEEN_SIGMA, n)
    return [list(median_s * scale * e * rng.lognormal(0.0, WITHIN_SIGMA, steps))
            for e in effects]


def test_replicate_medians_and_between_cv():
    groups = [[1.0, 2.0, 3.0], [2.0, 4.0, 100.0], [float("nan"), 5.0], []]
    assert list(S.replicate_medians(groups)) == [2.0, 4.0, 5.0]   # empty process dropped
    assert list(S.replicate_medians([1.0, 3.0, 2.0])) == [2.0]    # a flat list = 1 process
    assert S.between_cv([2.0, 2.0, 2.0]) == 0.0
    assert np.isnan(S.between_cv([2.0]))


def test_ratio_interval_covers_the_truth_at_the_stated_rate():
    """Over 400 simulated benchmarks of 3 processes a side, true ratio 1.5: the 95% interval
    over processes contains 1.5 about 95% of the time. The old interval (bootstrap over the
    steps of one process per side) almost never does: it measured one process, not a re-run."""
    rng = np.random.default_rng(2026)
    hit_processes = hit_steps = 0
    widths = []
    trials = 400
    for _ in range(trials):
        base = processes(rng, 3)
        cand = processes(rng, 3, scale=1.5)
        r = S.ratio_of_replicates(cand, base)
        assert r.n == r.n_baseline == 3 and r.has_interval
        hit_processes += r.low <= 1.5 <= r.high
        widths.append(r.high / r.low)
        naive = S.ratio_of_medians(cand[0], base[0], n_resamples=200)
        hit_steps += naive.low <= 1.5 <= naive.high
    assert hit_processes / trials >= 0.92
    assert hit_steps / trials <= 0.40
    # ...and the honest interval is not uselessly wide: about +-20% at 10% between-process CV.
    assert 1.2 < np.median(widths) < 1.8


def test_too_few_processes_give_words_not_an_interval():
    rng = np.random.default_rng(1)
    for n in (1, 2):
        r = S.ratio_of_replicates(processes(rng, n, scale=2.0), processes(rng, 3))
        assert 1.5 < r.value < 2.7
        assert np.isnan(r.low) and np.isnan(r.high) and not r.has_interval
        assert f"{n} vs 3 processes" in r.reason and f">= {S.MIN_REPLICATES}" in r.reason
    j = S.judge(processes(rng, 2), processes(rng, 2, scale=3.0), 0.1, 0.01)
    assert j.verdict == S.TOO_FEW and j.change > 1.0 and np.isnan(j.detectable)


def test_unchanged_code_is_not_flagged_at_the_rate_a_naive_test_flags_it():
    """Same code, 300 simulated A/B comparisons of 4 processes a side: the verdict over
    processes raises (almost) no alarm at a 5% threshold; a Mann-Whitney test over the pooled
    steps, which treats 160 correlated steps as 160 independent samples, cries wolf often."""
    rng = np.random.default_rng(7)
    alarms = naive_alarms = 0
    trials = 300
    for _ in range(trials):
        a, b = processes(rng, 4), processes(rng, 4)
        j = S.judge(a, b, threshold=0.05, alpha=0.01)
        alarms += j.verdict in (S.REGRESSION, S.IMPROVEMENT)
        pa, pb = np.concatenate(a), np.concatenate(b)
        change = np.median(pb) / np.median(pa) - 1
        naive_alarms += abs(change) > 0.05 and mannwhitneyu(pa, pb).pvalue < 0.01
    assert alarms <= 3               # <= 1%: alpha is 0.01 and the threshold cuts further
    assert naive_alarms >= 30        # >= 10%: the flake the old gate test showed
    assert naive_alarms >= 10 * max(alarms, 1)


def test_a_large_true_change_is_found_with_the_right_sign():
    rng = np.random.default_rng(11)
    slow = [S.judge(processes(rng, 4), processes(rng, 4, scale=1.6), 0.1, 0.01)
            for _ in range(100)]
    fast = [S.judge(processes(rng, 4), processes(rng, 4, scale=0.6), 0.1, 0.01)
            for _ in range(100)]
    assert sum(j.verdict == S.REGRESSION for j in slow) >= 90
    assert sum(j.verdict == S.IMPROVEMENT for j in fast) >= 90
    assert not any(j.verdict == S.IMPROVEMENT for j in slow)
    j = slow[0]
    assert j.n_baseline == j.n_candidate == 4
    assert j.median_candidate > j.median_baseline and j.low < j.change < j.high


def test_small_change_is_unchanged_and_noisy_large_change_is_not_significant():
    # 3% slower, tight processes: real, but under a 10% threshold -> unchanged
    tight = [[0.05 * 1.00 * (1 + 0.001 * i) for i in range(20)] for _ in range(3)]
    slower = [[0.05 * 1.03 * (1 + 0.001 * i) for i in range(20)] for _ in range(3)]
    assert S.judge(tight, slower, 0.10, 0.01).verdict == S.UNCHANGED
    # 30% slower but with ~35% process-to-process spread and 3 processes: not significant
    noisy_a = [[0.05 * e] * 10 for e in (0.7, 1.0, 1.4)]
    noisy_b = [[0.065 * e] * 10 for e in (1.4, 0.7, 1.0)]
    j = S.judge(noisy_a, noisy_b, 0.10, 0.01)
    assert abs(j.change) > 0.10 and j.verdict == S.NOT_SIGNIFICANT


def test_detectable_change_shrinks_with_more_processes():
    rng = np.random.default_rng(3)
    few = S.smallest_detectable_change(processes(rng, 3), processes(rng, 3), 0.01)
    many = S.smallest_detectable_change(processes(rng, 12), processes(rng, 12), 0.01)
    assert many < few
    # 12 processes at ~10% CV detect a change of roughly 15-25%, 3 processes only > 40%
    assert 0.08 < many < 0.35 and few > 0.3


def test_identical_processes_give_an_exact_answer():
    r = S.ratio_of_replicates([[2.0, 2.0]] * 3, [[1.0, 1.0]] * 3)
    assert (r.value, r.low, r.high, r.p_value) == (2.0, 2.0, 2.0, 0.0)


@pytest.mark.parametrize("rounds,expected", [
    (1, ["AB"]), (2, ["AB", "BA"]), (4, ["AB", "BA", "BA", "AB"]),
    (8, ["AB", "BA", "BA", "AB", "BA", "AB", "AB", "BA"])])
def test_balanced_order_is_thue_morse(rounds, expected):
    from bench.run.matrix import balanced_order

    assert ["".join(o) for o in balanced_order("AB", rounds)] == expected


def test_balanced_order_cancels_linear_drift():
    """Over 4 rounds (8 slots) each framework's mean slot position is the same: a machine
    that slows down linearly over the run adds the same to both."""
    from bench.run.matrix import balanced_order

    slots = [fw for order in balanced_order(["torch", "jittor"], 4) for fw in order]
    pos = {fw: np.mean([i for i, f in enumerate(slots) if f == fw]) for fw in ("torch", "jittor")}
    assert pos["torch"] == pos["jittor"]
    assert balanced_order(["a", "b", "c"], 2) == [["a", "b", "c"], ["c", "b", "a"]]


# ------------------------------------------------------------------- paired A/B (ab gate)

def drifting_pairs(rng, n, scale=1.0, drift_sigma=0.15, process_sigma=0.03):
    """n A/B pairs on a machine whose speed drifts a lot between pairs (the minute's
    neighbours: 15%) but little between the two neighbouring processes of one pair (3% each,
    their own process effect), steps scattering WITHIN_SIGMA inside a process."""
    def one(median_s):
        effect = rng.lognormal(0.0, process_sigma)
        return list(median_s * effect * rng.lognormal(0.0, WITHIN_SIGMA, STEPS))

    base, cand = [], []
    for _ in range(n):
        minute = 0.05 * rng.lognormal(0.0, drift_sigma)
        base.append(one(minute))
        cand.append(one(minute * scale))
    return base, cand


def test_pairing_cancels_drift_that_swamps_an_unpaired_comparison():
    """A 10% slowdown on a machine drifting 15% between pairs: over 8 pairs the paired
    judgement finds it nearly always; the unpaired one (the same processes, pairs ignored)
    mostly cannot tell."""
    rng = np.random.default_rng(21)
    paired = unpaired = 0
    for _ in range(200):
        base, cand = drifting_pairs(rng, 8, scale=1.10)
        j = S.judge_pairs(S.pair_ratios(base, cand), threshold=0.05, alpha=0.05)
        paired += j.verdict == S.REGRESSION
        unpaired += S.judge(base, cand, 0.05, 0.05).verdict == S.REGRESSION
    assert paired >= 190
    assert unpaired <= 100


def test_paired_false_alarms_and_coverage_on_unchanged_code():
    rng = np.random.default_rng(22)
    alarms = covered = 0
    trials = 400
    for _ in range(trials):
        base, cand = drifting_pairs(rng, 8)
        j = S.judge_pairs(S.pair_ratios(base, cand), threshold=0.05, alpha=0.05,
                          candidate_first=[k % 2 == 1 for k in range(8)])
        alarms += j.verdict in (S.REGRESSION, S.IMPROVEMENT)
        covered += j.low <= 0.0 <= j.high
        assert j.n_pairs == 8 and j.low < j.change < j.high and j.detectable > 0
    assert alarms <= 4                      # <= 1%: the threshold cuts far below alpha
    assert 0.92 <= covered / trials <= 0.98  # a 95% interval holds about 95% of the time


def test_crossover_analysis_keeps_a_position_effect_out_of_the_interval():
    """The first process of a pair runs 20% slower whichever revision it is: the plain paired
    interval widens with it, the crossover one does not, and both stay centred on the truth."""
    rng = np.random.default_rng(23)
    first = [k % 2 == 1 for k in range(8)]  # AB BA AB BA ...: the candidate first in half
    plain_w, cross_w, cross_hit = [], [], 0
    for _ in range(200):
        ratios = []
        for cand_first in first:
            r = 1.10 * rng.lognormal(0, 0.03)
            ratios.append(r * (1.2 if cand_first else 1 / 1.2))
        plain = S.judge_pairs(ratios, 0.05, 0.05)
        cross = S.judge_pairs(ratios, 0.05, 0.05, candidate_first=first)
        plain_w.append(plain.high - plain.low)
        cross_w.append(cross.high - cross.low)
        cross_hit += cross.low <= 0.10 <= cross.high
        assert cross.position_effect == pytest.approx(0.2, abs=0.05)
    assert np.median(cross_w) < np.median(plain_w) / 3
    assert cross_hit >= 180


def test_paired_verdict_words():
    # too few pairs: words, no interval
    j = S.judge_pairs([1.5, 1.6], 0.05, 0.05)
    assert j.verdict == S.INCONCLUSIVE and "2 pair(s)" in j.reason and np.isnan(j.low)
    # a big change the pairs disagree on: inconclusive, with the reason
    j = S.judge_pairs([0.8, 1.6, 1.1, 1.9], 0.05, 0.05)
    assert j.change > 0.05 and j.p_value >= 0.05 and j.verdict == S.INCONCLUSIVE
    assert "run more pairs" in j.reason
    # small and tight: unchanged; small but loose: inconclusive, not "unchanged"
    assert S.judge_pairs([1.01, 1.02, 1.00, 1.015], 0.05, 0.05).verdict == S.UNCHANGED
    loose = S.judge_pairs([0.9, 1.1, 1.05, 0.97], 0.05, 0.05)
    assert abs(loose.change) < 0.05 and loose.verdict == S.INCONCLUSIVE
    # large and tight: regression / improvement
    assert S.judge_pairs([1.30, 1.28, 1.33], 0.05, 0.05).verdict == S.REGRESSION
    assert S.judge_pairs([0.70, 0.72, 0.69], 0.05, 0.05).verdict == S.IMPROVEMENT
    # identical ratios: an exact answer
    j = S.judge_pairs([1.2, 1.2, 1.2], 0.05, 0.05)
    assert j.verdict == S.REGRESSION and j.low == j.high == pytest.approx(0.2)
    # a pair with a failed process is NaN (kept aligned with the pairs) and left out
    r = S.pair_ratios([[1.0], [], [2.0]], [[2.0], [1.0], None])
    assert r[0] == 2.0 and np.isnan(r[1]) and np.isnan(r[2])
    assert S.judge_pairs(list(r) + [2.0, 2.0], 0.05, 0.05).n_pairs == 3


def test_block_ratio_is_the_geometric_mean_of_the_blocks_median_ratios():
    # blocks: medians 10 vs 20 (x2) and 10 vs 5 (x0.5): geometric mean 1; a block where a
    # side measured nothing drops out; nothing on one side at all: NaN
    assert S.block_ratio([[9, 10, 11], [10]], [[20, 19, 21], [5]]) == pytest.approx(1.0)
    assert S.block_ratio([[10], [10]], [[30], []]) == pytest.approx(3.0)
    assert np.isnan(S.block_ratio([[10], [12]], []))


def test_geometric_mean_interval_is_the_t_interval_on_logs():
    from scipy import stats as scipy_stats

    values = [0.9, 1.05, 1.1, 0.98]
    mean, low, high = S.geometric_mean_interval(values)
    logs = np.log(values)
    lo, hi = scipy_stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(),
                                    scale=scipy_stats.sem(logs))
    assert mean == pytest.approx(np.exp(logs.mean()))
    assert (low, high) == pytest.approx((np.exp(lo), np.exp(hi)))
    one = S.geometric_mean_interval([1.2])
    flat = S.geometric_mean_interval([1.1, 1.1])
    assert one[0] == pytest.approx(1.2) and np.isnan(one[1]) and np.isnan(one[2])
    assert flat[0] == pytest.approx(1.1) and np.isnan(flat[1])
