"""The sweep axis (bench/run/sweep.py, issue #26): config, cells, folders, report.

The config, matrix and report-math tests start no framework; one real two-point sweep of
both frameworks (module fixture) serves the end-to-end tests: its folders, its report
section, a failed point that does not stop the others, and a resume.
"""
import json
import os

import pytest

from bench.report import sweep as sweep_report
from bench.run import config as C
from bench.run import matrix
from bench.stats.replicates import Ratio
from tests.conftest import bench_and_report, harness, tiny_config, write_config

WIDE = {"name": "wide", "model": {"base_channels": 16}, "train": {"batch_size": 8}}


def _load(tmp_path, **sections):
    cfg = tiny_config(tmp_path / "results", **sections)
    return C.load_config(write_config(tmp_path / "c.yaml", cfg))


def _error(tmp_path, sweep, **sections):
    with pytest.raises(C.ConfigError) as e:
        _load(tmp_path, sweep=sweep, **sections)
    return str(e.value)


# ------------------------------------------------------------------------------------ config

def test_points_resolve_to_whole_configs(tmp_path):
    cfg = _load(tmp_path, sweep=[{"name": "small"}, WIDE])
    assert [p["name"] for p in cfg["sweep"]] == ["small", "wide"]
    points = C.point_configs(cfg)
    assert points["small"]["model"] == cfg["model"] and points["small"]["sweep"] == []
    assert points["wide"]["model"]["base_channels"] == 16
    assert points["wide"]["train"]["batch_size"] == 8
    assert points["wide"]["model"]["norm_groups"] == cfg["model"]["norm_groups"]
    assert cfg["model"]["base_channels"] == 8   # the run's own config is unchanged


def test_one_point_is_exactly_the_run_without_a_sweep(tmp_path):
    swept = _load(tmp_path, sweep=[WIDE])
    plain = _load(tmp_path, model=dict(tiny_config("x")["model"], base_channels=16),
                  train=dict(tiny_config("x")["train"], batch_size=8))
    assert swept == plain and C.config_hash(swept) == C.config_hash(plain)
    assert [c.to_dict() for c in matrix.expand_cells(swept)] == \
        [c.to_dict() for c in matrix.expand_cells(plain)]


def test_product_form_names_each_combination(tmp_path):
    cfg = _load(tmp_path, sweep={"product": {"model.base_channels": [8, 16],
                                             "train.batch_size": [2, 4]}})
    names = [p["name"] for p in cfg["sweep"]]
    assert names == ["base_channels=8,batch_size=2", "base_channels=8,batch_size=4",
                     "base_channels=16,batch_size=2", "base_channels=16,batch_size=4"]
    assert C.point_configs(cfg)[names[3]]["train"]["batch_size"] == 4


@pytest.mark.parametrize("sweep, expected", [
    ([], "sweep: empty"),
    ({"product": {}}, "sweep: a mapping must be {product"),
    ({"product": {"base_channels": [8]}}, "sweep.product.base_channels: expected <section>.<key>"),
    ([{"name": "a"}, {"name": "a"}], "sweep[1].name: 'a' repeats sweep[0]'s name"),
    ([{"model": {"base_channels": 8}}], "sweep[0].name: None is not a point name"),
    ([{"name": "a/b"}], "sweep[0].name: 'a/b' is not a point name"),
    ([{"name": "a"}, {"name": "b", "optim": {"lr": 1}}], "sweep[1].optim: not a key of a sweep point"),
    ([{"name": "a"}, {"name": "b", "runner": {"replicates": 5}}],
     "sweep[1].runner.replicates: a point may set only runner.timeout_s"),
    ([{"name": "a"}, {"name": "b", "model": {"base_chanels": 16}}],
     "sweep[1].model.base_chanels"),
    ([{"name": "a"}, {"name": "b", "model": {"base_channels": 10}}],
     "sweep[1].model.norm_groups=4 is invalid: must divide every channel count"),
    ([{"name": "a"}, {"name": "b", "model": {"image_size": 9}}],
     "sweep[1].model.image_size=9 is invalid: must be divisible by 2^(levels-1)"),
    ([{"name": "a"}, {"name": "b", "train": {"batch_size": 64}}],
     "sweep[1].train.batch_size: 64 exceeds the 32 training images"),
])
def test_bad_points_name_the_key(tmp_path, sweep, expected):
    msg = _error(tmp_path, sweep)
    assert expected in msg and "\n" not in msg, msg


def test_bad_sweep_on_the_command_line_exits_2_and_writes_nothing(tmp_path):
    cfg = tiny_config(tmp_path / "results", sweep=[{"name": "a"}, {"name": "a"}])
    proc = harness("bench", write_config(tmp_path / "c.yaml", cfg), timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "sweep[1].name" in proc.stderr and not os.path.exists(tmp_path / "results")


# ------------------------------------------------------------------------------------ matrix

def test_rounds_interleave_points_in_balanced_order(tmp_path):
    cfg = _load(tmp_path, sweep=[{"name": "p"}, WIDE], runner={"replicates": 4,
                                                               "results_dir": str(tmp_path)})
    cells = matrix.expand_cells(cfg)
    first = [[c.point for c in cells if c.replicate == k][0] for k in (1, 2, 3, 4)]
    assert first == ["p", "wide", "wide", "p"]   # Thue-Morse: AB BA BA AB
    assert {c.label for c in cells if c.replicate == 1} == {
        "p/torch-train.r1", "p/torch-sample.r1", "wide/torch-train.r1", "wide/torch-sample.r1"}


def test_only_selects_per_point(tmp_path):
    cfg = _load(tmp_path, sweep=[{"name": "p"}, WIDE])
    cells = matrix.expand_cells(cfg)
    assert {c.label for c in matrix.select_cells(cells, ["wide/*"])} == \
        {"wide/torch-train.r1", "wide/torch-sample.r1"}
    assert {c.label for c in matrix.select_cells(cells, ["torch-train"])} == \
        {"p/torch-train.r1", "wide/torch-train.r1"}
    with pytest.raises(C.ConfigError, match=r"cells are \['p/torch-train'"):
        matrix.select_cells(cells, ["nope/*"])


# ----------------------------------------------------------------------------- report math

def _ratio(v, lo, hi):
    return Ratio(value=v, low=lo, high=hi, n=3, n_baseline=3)


def test_sentence_follows_the_ratio_and_splits_its_change_by_category():
    import pandas as pd
    rows = pd.DataFrame([
        dict(point="s", order=0, x=0.1, workload="training step", framework="jittor",
             ratio=_ratio(1.6, 1.5, 1.7)),
        dict(point="m", order=1, x=1.0, workload="training step", framework="jittor",
             ratio=_ratio(2.2, 2.1, 2.3)),
        dict(point="l", order=2, x=10.0, workload="training step", framework="jittor",
             ratio=_ratio(3.0, 2.8, 3.2)),
    ])
    points = [sweep_report.Point(n, "", None, train_gflop=x)
              for n, x in (("s", 0.1), ("m", 1.0), ("l", 10.0))]
    gaps = {"s": {"jittor": {"ratio": 1.6, "contrib": {"norm": 0.1, "conv_bwd": 0.5},
                             "coverage": 1, "base_coverage": 1}},
            "l": {"jittor": {"ratio": 3.0, "contrib": {"norm": 1.3, "conv_bwd": 0.7},
                             "coverage": 1, "base_coverage": 1}}}
    text = sweep_report.sentence(points, rows, gaps, "torch")
    assert "from 1.60× [1.50, 1.70] torch's time at s" in text
    assert "to 3.00× [2.80, 3.20] at l" in text and "rising at every point" in text
    # the ratio's change +1.40 = norm +1.20 + conv_bwd +0.20: both grew, norm first
    labels = sweep_report.profile.LABELS
    assert "(+1.40, in units of torch's step" in text
    assert f"grew: {labels['norm']} (+1.20), {labels['conv_bwd']} (+0.20)." in text
    assert "shrank" not in text


# ------------------------------------------------------------------------------- end to end

SWEEP_CFG = dict(frameworks=["torch", "jittor", "jax"], workloads=["train", "sample"],
                 train={"epochs": 1, "steps_per_epoch": 4, "batch_size": 4,
                        "warmup_steps": 1, "val_batches": 0},
                 sample={"runs": [{"sampler": "ddim", "steps": [2], "eta": 0.0}],
                         "batch_sizes": [2], "repeats": 2, "warmup": 1},
                 data={"loader": ["shared"]}, monitor={"enabled": False},
                 sweep=[{"name": "small"}, WIDE])


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """One real two-point sweep of the three frameworks; the wide point's jittor train cell fails
    on purpose (debug.raise_in), so the run also shows a failed point that the rest
    survives."""
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = tiny_config(tmp / "results", debug={"raise_in": ["wide/jittor-train"]}, **SWEEP_CFG)
    return bench_and_report(tmp, cfg)


@pytest.mark.slow
def test_a_sweep_runs_every_point_in_its_own_folder(sweep_run):
    proc, run_dir, _, _ = sweep_run
    assert proc.returncode == 1, proc.stderr[-2000:]   # the one deliberate failure
    manifest = json.load(open(os.path.join(run_dir, "manifest.json")))
    assert manifest["sweep"] == ["small", "wide"]
    assert {c["point"] for c in manifest["cells"]} == {"small", "wide"}
    # the sweep's manifest learns the versions from its points' processes
    assert set(manifest["frameworks"]) == {"torch", "jittor", "jax"}
    for point in ("small", "wide"):
        pm = json.load(open(os.path.join(run_dir, "points", point, "manifest.json")))
        assert pm["point"] == point and pm["config"]["sweep"] == []
        assert pm["calibration"] == manifest["calibration"]
        assert sorted(os.listdir(os.path.join(run_dir, "points", point, "cells"))) == [
            "jax-sample.r1", "jax-train.r1", "jittor-sample.r1", "jittor-train.r1",
            "torch-sample.r1", "torch-train.r1"]
    wide = json.load(open(os.path.join(run_dir, "points", "wide", "manifest.json")))
    assert wide["config"]["model"]["base_channels"] == 16
    failed = json.load(open(os.path.join(run_dir, "points", "wide", "cells",
                                         "jittor-train.r1", "summary.json")))
    assert failed["status"] == "failed" and "debug.raise_in" in failed["error"]
    ok = json.load(open(os.path.join(run_dir, "points", "small", "cells",
                                     "jittor-train.r1", "summary.json")))
    assert ok["status"] == "ok" and ok["point"] == "small"
    assert "wide/jittor-train.r1" in proc.stdout   # the terminal table names the point


@pytest.mark.slow
def test_the_sweep_report_has_the_section_and_every_point_its_own(sweep_run):
    _, run_dir, report, tmp = sweep_run
    assert report.returncode == 0, report.stderr
    md = (tmp / "report" / "report.md").read_text()
    assert "## How the gap changes with size" in md and "## Points" in md
    assert "jittor's training step goes from" not in md   # one point's train cell failed
    assert "jax's training step goes from" in md          # a curve per framework
    assert "jittor's sampling step (ddim 2 steps, batch 2) goes from" in md
    assert "(sweep_ratio.png)" in md and "(sweep_gflops.png)" in md
    assert "| wide | 0.18M | 0.196 |" in md   # params, GFLOP of a batch-8 training step
    assert "wide/jittor-train.r1" in md       # the failure, named with its point
    for point in ("small", "wide"):
        assert (tmp / "report" / "points" / point / "report.md").exists()
    for png in ("sweep_ratio.png", "sweep_gflops.png"):
        assert (tmp / "report" / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_resume_reruns_only_the_missing_processes_of_a_point(sweep_run):
    _, run_dir, _, _ = sweep_run
    torn = os.path.join(run_dir, "points", "small", "cells", "torch-sample.r1", "summary.json")
    os.remove(torn)    # as a kill mid-cell leaves it
    proc = harness("bench", "--resume", run_dir, "--only", "*/torch-*", timeout=300)
    assert os.path.exists(torn), proc.stderr[-2000:]
    assert "small/torch-sample.r1  ok " in proc.stdout
    kept = [line for line in proc.stderr.splitlines() if "kept from the earlier attempt" in line]
    assert {line.split("]")[0].lstrip("[") for line in kept} == {
        "small/torch-train.r1", "wide/torch-train.r1", "wide/torch-sample.r1"}


@pytest.mark.slow
@pytest.mark.process
def test_parity_checks_every_point(tmp_path):
    """`harness.py parity --config` on a sweep: a short check of each point's model."""
    cfg = tiny_config(tmp_path / "results", frameworks=["torch"],
                      sweep=[{"name": "small"}, WIDE])
    env = dict(os.environ, DIFFBENCH_PARITY_DIR=str(tmp_path / "parity"))
    # a torch-only config checks every installed framework; Jittor is enough to show each
    # point is checked (JAX's parity has tests of its own)
    proc = harness("parity", "--config", write_config(tmp_path / "c.yaml", cfg),
                   "--frameworks", "jittor", env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "sweep point small:" in proc.stdout and "sweep point wide:" in proc.stdout
    records = [json.load(open(tmp_path / "parity" / f)) for f in os.listdir(tmp_path / "parity")]
    assert len(records) == 2 and all(r["passed"] for r in records)
    assert {r["specs"]["unet"]["base_channels"] for r in records} == {8, 16}
    assert all(r["checked"].startswith("short") for r in records)
    assert all("ddpm" not in r["errors"]["jittor"] for r in records)


def test_a_model_with_dropout_is_checked_without_it_and_says_so():
    """The paper model's dropout 0.1: each framework draws its own masks, so the check runs
    with dropout 0 (first found as a FAILED gradient at the sweep's paper point) and its
    record keeps the configured spec with a note."""
    from models.common.specs import UNetSpec
    from models.parity import dropout_note, make_case, without_dropout
    spec = UNetSpec(image_size=8, in_channels=1, base_channels=8, ch_mult=(1, 2),
                    num_res_blocks=1, attn_resolutions=(4,), dropout=0.1, norm_groups=4)
    assert without_dropout(spec).dropout == 0.0 and without_dropout(spec).base_channels == 8
    assert "dropout 0.1 set to 0" in dropout_note(spec)
    plain = UNetSpec(**dict(spec.to_dict(), dropout=0.0))
    assert without_dropout(plain) is plain and dropout_note(plain) is None
    short = make_case(0, plain, short=True)
    assert short["x0"].shape[0] == 1 and not any(k.startswith("chain_noise") for k in short)
