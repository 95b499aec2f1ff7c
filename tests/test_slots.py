"""runner.slots (bench/run/slots.py): cells side by side on one machine, each on its own
cores (or GPU), balanced over the slots, and the report's slot check."""
import collections
import json
import os

import numpy as np
import pandas as pd
import pytest

from bench.report import slots as report_slots
from bench.run import slots
from bench.run.matrix import Cell
from tests.conftest import bench_and_report, tiny_config, write_config, harness


def test_cpu_slots_are_disjoint_core_sets():
    got = slots.plan(2, "cpu", threads=2, cpus=[0, 1, 2, 3, 4])
    assert [s.cores for s in got] == [(0, 1), (2, 3)] and all(s.gpu is None for s in got)
    auto = slots.plan("auto", "cpu", threads=1, cpus=[0, 1, 2])
    assert [s.cores for s in auto] == [(0,), (1,), (2,)]
    # threads null: the cores are split among the slots
    assert [s.cores for s in slots.plan(2, "cpu", None, cpus=[0, 1, 2, 3])] == [(0, 1), (2, 3)]
    assert slots.plan(1, "cpu", None, cpus=[0, 1]) == [slots.Slot(0, (0, 1))]
    assert slots.plan("auto", "cpu", None, cpus=[0, 1]) == [slots.Slot(0, (0, 1))]


def test_gpu_slots_take_one_gpu_each_and_its_nearest_cores():
    gpus = [(0, "GPU-a", {2, 3}), (1, "GPU-b", {0, 1})]
    got = slots.plan("auto", "cuda", threads=None, cpus=[0, 1, 2, 3], gpus=gpus)
    assert [(s.gpu, s.cores) for s in got] == [(0, (2, 3)), (1, (0, 1))]
    assert got[1].env({"X": "1"}) == {"X": "1", "CUDA_VISIBLE_DEVICES": "GPU-b"}
    with pytest.raises(slots.SlotError, match="3 slots but 2 visible GPU"):
        slots.plan(3, "cuda", None, cpus=[0, 1, 2, 3], gpus=gpus)


def test_more_slots_than_cores_is_refused():
    with pytest.raises(slots.SlotError, match="need 4 CPUs; this process may use 2: at most 1"):
        slots.plan(2, "cpu", threads=2, cpus=[0, 1])
    with pytest.raises(slots.SlotError, match="need 3 CPUs"):
        slots.plan(3, "cpu", None, cpus=[0, 1])


def test_assignment_rotates_every_cell_over_the_slots():
    cells = [Cell(fw, wl, replicate=r) for r in (1, 2, 3, 4)
             for wl in ("train", "sample") for fw in ("torch", "jittor", "jax")]
    where = slots.assign(cells, 2)
    per = collections.Counter((c.framework, where[c.label]) for c in cells)
    assert all(per[(fw, s)] == 4 for fw in ("torch", "jittor", "jax") for s in (0, 1))
    # each cell's replicates alternate slots; a round's neighbours run side by side
    assert [where[f"torch-train.r{r}"] for r in (1, 2, 3, 4)] == [0, 1, 0, 1]
    assert where["torch-train.r1"] != where["jittor-train.r1"]


def _run_with(slot_of, times):
    """A RunData stand-in: units with their slot and measured train steps."""
    units = pd.DataFrame([{"unit": u, "slot": s, "slot_info": {"slot": s, "cores": [s]}}
                          for u, s in slot_of.items()])
    recs = pd.DataFrame([{"type": "step", "phase": "measure", "unit": u,
                          "cell": u.split(".")[0], "wall_s": t}
                         for u, ts in times.items() for t in ts])
    return type("Run", (), {"units": units, "records": recs})()


def test_the_slot_check_warns_when_a_slot_is_slower_beyond_the_intervals():
    rng = np.random.default_rng(0)
    slot_of, times = {}, {}
    for cell in ("a", "b", "c", "d"):
        for r in range(4):
            unit, slot = f"{cell}.r{r}", r % 2
            slot_of[unit] = slot
            times[unit] = (1.3 if slot == 1 else 1.0) * (1 + 0.01 * rng.standard_normal(5))
    effects = report_slots.slot_effects(_run_with(slot_of, times))
    (s0, n0, m0, lo0, hi0), (s1, n1, m1, lo1, hi1) = effects
    assert (s0, n0, s1, n1) == (0, 8, 1, 8) and m1 / m0 == pytest.approx(1.3, rel=0.02)
    assert hi0 < lo1
    texts = [b.text for b in report_slots.blocks(_run_with(slot_of, times))
             if b.kind == "note"]
    assert any("Cells ran 2 at a time" in t for t in texts)
    assert any(t.startswith("Warning: slot 0 and slot 1 differ") for t in texts)
    # the same slots without the slow one: no warning
    even = {u: ts / (1.3 if slot_of[u] == 1 else 1.0) for u, ts in times.items()}
    texts = [b.text for b in report_slots.blocks(_run_with(slot_of, even)) if b.kind == "note"]
    assert not any(t.startswith("Warning") for t in texts)


@pytest.mark.slow
@pytest.mark.process
def test_two_slots_run_the_matrix_side_by_side(tmp_path):
    """runner.slots 2 on two cores: each process pinned to one core, each framework on both
    slots, and the report says so, with the slot check."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable CPUs")
    cfg = tiny_config(tmp_path / "results", frameworks=["torch", "jittor"], workloads=["train"],
                      threads=1)
    cfg["runner"].update(replicates=2, slots=2)
    proc, run_dir, report, tmp = bench_and_report(tmp_path, cfg)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    seen = collections.defaultdict(set)
    for unit in os.listdir(os.path.join(run_dir, "cells")):
        with open(os.path.join(run_dir, "cells", unit, "summary.json")) as f:
            summary = json.load(f)
        assert summary["status"] == "ok" and len(summary["slot"]["cores"]) == 1
        seen[summary["framework"]].add(summary["slot"]["slot"])
    assert seen == {"torch": {0, 1}, "jittor": {0, 1}}
    assert report.returncode == 0, report.stderr[-2000:]
    md = (tmp / "report" / "report.md").read_text()
    assert "Cells ran 2 at a time (runner.slots)" in md and "time ÷ its cell's median" in md


@pytest.mark.parametrize("slots_value, message", [
    (3, "runner.slots: 3 slots of 1 thread(s) each need 3 CPUs"),
    ("many", "runner.slots: 'many'"),
])
def test_bad_slots_exit_2_naming_the_key(tmp_path, slots_value, message):
    cfg = tiny_config(tmp_path / "results", threads=1)
    cfg["runner"]["slots"] = slots_value
    if len(os.sched_getaffinity(0)) != 2 and slots_value == 3:
        pytest.skip("the message names this machine's CPU count")
    proc = harness("bench", write_config(tmp_path / "c.yaml", cfg))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()
