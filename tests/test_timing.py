"""Honest clocks: the harness's synchronisation is exercised, not assumed.

Every step record carries dispatch_s: the time until train_step *returned*, read before the
sync, next to compute_s read after it, on the same step. Jittor builds a lazy graph even on
the CPU, so its unsynced reading is a small fraction of the real step; eager CPU torch has
already done the work when the call returns. If the harness forgot to sync, Jittor's
compute_s would collapse onto its dispatch_s and the first assertion would fail.
"""
import contextlib

import numpy as np
import pytest

from bench.records import results as R
from bench.measure.timer import timed_train_step


def _measured(run_dir, framework):
    steps = R.load_run(run_dir).steps
    return steps[(steps.framework == framework) & (steps.phase == "measure")]


@pytest.mark.slow  # both_frameworks_run (shared, once per session)
def test_jittor_unsynced_clock_reads_far_less_than_synced(both_frameworks_run):
    assert both_frameworks_run["proc"].returncode == 0
    steps = _measured(both_frameworks_run["run_dir"], "jittor")
    assert len(steps) >= 3
    ratio = steps.dispatch_s / steps.compute_s
    assert np.median(ratio) < 0.5, steps[["dispatch_s", "compute_s"]]


@pytest.mark.slow  # both_frameworks_run
def test_eager_cpu_torch_has_done_the_work_when_the_call_returns(both_frameworks_run):
    steps = _measured(both_frameworks_run["run_dir"], "torch")
    assert np.median(steps.dispatch_s / steps.compute_s) > 0.8


class _CountingBackend:
    """Not a framework mock: a recorder for the order of calls timed_train_step makes."""

    def __init__(self):
        self.calls = []

    def sync(self):
        self.calls.append("sync")

    def region(self, name):
        self.calls.append(f"region:{name}")
        return contextlib.nullcontext()

    def to_device(self, a):
        self.calls.append("to_device")
        return a

    def train_step(self, x0, t, noise):
        self.calls.append("train_step")
        return 0.0


def test_timer_syncs_around_data_and_compute():
    batches = iter([(np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, np.int64),
                     np.zeros((2, 1, 4, 4), np.float32))])
    b = _CountingBackend()
    timed_train_step(b, batches)
    assert b.calls == ["sync", "region:data", "to_device", "to_device", "sync", "train_step",
                       "sync"]
