"""Records on disk: append-only lines, torn-line tolerance, atomic summaries, the loader."""
import json
import os

import pytest

from bench.records import results as R


def _make_run(tmp_path, cells):
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True)
    R.write_json_atomic(run / "manifest.json", {"run_id": "run", "cells": [
        {"cell": c, "framework": c.split("-")[0], "workload": c.split("-")[1], "variant": ""}
        for c in cells]})
    for c in cells:
        (run / "cells" / c).mkdir()
    return run


def test_writer_appends_one_line_per_record(tmp_path):
    path = tmp_path / "events.jsonl"
    with R.RecordWriter(str(path)) as w:
        w.write("start", framework="torch")
        w.write("step", loss=float("nan"), wall_s=0.5)
    with R.RecordWriter(str(path)) as w:  # reopened: appends, never truncates
        w.write("memory", peak_rss_bytes=10)
    recs, skipped = R.read_records(str(path))
    assert [r["type"] for r in recs] == ["start", "step", "memory"] and skipped == 0
    assert all("t_wall" in r for r in recs)
    assert recs[1]["wall_s"] == 0.5


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    with R.RecordWriter(str(path)) as w:
        w.write("step", step=0)
        w.write("step", step=1)
    with open(path, "ab") as f:
        f.write(b'{"type": "step", "t_wall": 1.0, "st')  # a kill mid-write
    recs, skipped = R.read_records(str(path))
    assert [r["step"] for r in recs] == [0, 1] and skipped == 1


def test_atomic_json_leaves_no_temp_file(tmp_path):
    path = tmp_path / "summary.json"
    R.write_json_atomic(str(path), {"status": "ok", "metrics": {"x": 1.5}})
    R.write_json_atomic(str(path), {"status": "failed"})
    assert json.loads(path.read_text()) == {"status": "failed"}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_load_run_with_a_missing_summary_and_torn_events(tmp_path):
    run = _make_run(tmp_path, ["torch-train", "jittor-train"])
    with R.RecordWriter(str(run / "cells" / "torch-train" / "events.jsonl")) as w:
        w.write("start", framework="torch", device="cpu", versions={"version": "x"})
        for i in range(3):
            w.write("step", phase="measure", epoch=1, step=i, wall_s=0.1, data_wait_s=0.01,
                    compute_s=0.09, loss=1.0 - i / 10)
        w.write("epoch", epoch=1, time_s=0.3, t_start=0.0, mean_loss=0.9, val_loss=0.95,
                images_per_s=80.0)
    R.write_json_atomic(str(run / "cells" / "torch-train" / "summary.json"),
                        {"cell": "torch-train", "status": "ok", "error": None,
                         "metrics": {"wall_step_median_s": 0.1, "runs": [1, 2]}})
    with R.RecordWriter(str(run / "cells" / "jittor-train" / "events.jsonl")) as w:
        w.write("step", phase="compile", epoch=1, step=0, wall_s=9.0, loss=1.0)
    with open(run / "cells" / "jittor-train" / "events.jsonl", "ab") as f:
        f.write(b'{"type": "step", "pha')
    with R.RecordWriter(str(run / "cells" / "jittor-train" / "monitor.jsonl")) as w:
        w.write("monitor", cpu_percent=150.0, rss_bytes=1000)
        w.write("monitor", cpu_percent=190.0, rss_bytes=2000)

    data = R.load_run(str(run))
    s = data.summaries.set_index("cell")
    assert s.loc["torch-train", "status"] == "ok"
    assert s.loc["torch-train", "wall_step_median_s"] == 0.1  # scalar metric flattened
    assert s.loc["jittor-train", "status"] == "missing"
    assert list(data.steps.columns[:len(R.CELL_COLUMNS)]) == R.CELL_COLUMNS
    assert len(data.steps[data.steps.cell == "torch-train"]) == 3
    assert list(data.steps[data.steps.cell == "jittor-train"].phase) == ["compile"]
    assert data.skipped_lines == {os.path.join("jittor-train", "events.jsonl"): 1}
    assert list(data.monitor.t_rel_s) == pytest.approx([0.0, data.monitor.t_wall.iloc[1]
                                                         - data.monitor.t_wall.iloc[0]])
    assert data.epochs.val_loss.tolist() == [0.95]
    assert data.samples.empty and data.errors.empty
    assert "cell" in data.samples.columns  # empty frames still have the id columns


def test_load_run_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a diffbench run"):
        R.load_run(str(tmp_path))
