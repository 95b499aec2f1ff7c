"""End to end through the CLI: a real run -> its report; the quality workload -> FID records;
a training run -> `harness.py fid`."""
import os
import re

import pytest

from bench.records.results import read_records
from tests.conftest import harness, run_dirs, tiny_config, write_config


@pytest.mark.slow  # both_frameworks_run (shared, once per session)
def test_report_of_a_real_run(both_frameworks_run, tmp_path):
    run_dir = both_frameworks_run["run_dir"]
    out = tmp_path / "report"
    proc = harness("report", run_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for fw in ("torch", "jittor"):
        assert re.search(rf"\|\s*{fw}\b", md), f"no table row for {fw}"
    assert re.search(r"\| jittor[^|]*÷ torch \(95% CI\) \|", md)  # ratio column with its CI
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert images and all((out / p).is_file() for p in images)
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained
    assert html.count("data:image/png;base64,") >= len(set(images))


def test_report_of_a_missing_dir_is_bad_input(tmp_path):
    proc = harness("report", tmp_path / "nope")
    assert proc.returncode == 2 and "no such results directory" in proc.stderr


@pytest.mark.slow
def test_quality_workload_writes_fid_records_for_every_framework(tmp_path):
    # Each step count is scored in a FID child process (~10 s: torch's import, an Inception
    # pass per image, a 2048 x 2048 eigenproblem): 3 images, the pipeline is what is checked.
    cfg = tiny_config(tmp_path / "results", name="quality",
                      frameworks=["torch", "jittor", "jax"],
                      workloads=["quality"],
                      quality={"steps": [2, 4], "num_images": 3, "batch_size": 3,
                               "num_reference": 3, "reference": "synthetic:test"})
    proc = harness("bench", write_config(tmp_path / "q.yaml", cfg), "--quiet", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = run_dirs(tmp_path / "results")
    for fw in ("torch", "jittor", "jax"):
        recs, _ = read_records(os.path.join(run, "cells", f"{fw}-quality.r1", "events.jsonl"))
        fids = [r for r in recs if r["type"] == "fid"]
        assert [r["steps"] for r in fids] == [2, 4]
        for r in fids:
            assert r["framework"] == fw and r["num_images"] == 3 and r["fid"] > 0
            assert r["extractor"] and r["reference"].startswith("synthetic")
        assert os.path.isfile(os.path.join(run, "cells", f"{fw}-quality.r1", "samples",
                                           "ddim-0002.png"))


@pytest.mark.slow  # both_frameworks_run
def test_fid_command_rejects_a_run_without_checkpoints(tmp_path, both_frameworks_run):
    run_dir = both_frameworks_run["run_dir"]
    proc = harness("fid", run_dir, "--frameworks", "torch")
    assert proc.returncode == 2 and "no checkpoint for ['torch']" in proc.stderr
    proc = harness("fid", run_dir, "--set", "quality.bogus=1")
    assert proc.returncode == 2 and "quality.<key>" in proc.stderr
