"""Reports from a results directory: tables match the records, PNGs are real, HTML is
self-contained and escaped, missing data turns into words.

The fixture writes a results directory in the documented layout (docs/ARCHITECTURE.md) with
plausible numbers from a seeded numpy RNG; a test on a real harness run belongs beside the
harness tests.
"""
import base64
import html
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bench.report import ReportInputError, load_run, write_report
from bench.report import tables
from bench.report.render import md_escape
from bench.stats.replicates import ratio_of_medians, spread

REPO = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>"
PNG = b"\x89PNG\r\n\x1a\n"
T0 = 1_790_000_000.0
MIB = 1024 ** 2


# ---------------------------------------------------------------- fixture

def _write_jsonl(path, records, torn_tail=False):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        if torn_tail:   # a worker killed mid-append
            f.write('{"type": "step", "wall_s": 0.0')


def _monitor(t_start, t_end, rng, gpu, rss0):
    recs, t = [], t_start
    while t <= t_end:
        r = {"type": "monitor", "t_wall": t, "cpu_percent": float(rng.uniform(150, 200)),
             "rss_bytes": int(rss0 + (t - t_start) * 2e5)}
        if gpu:
            r.update(gpu_util_percent=float(rng.uniform(60, 95)),
                     gpu_mem_used_bytes=int(3000 * MIB), proc_gpu_mem_bytes=int(2500 * MIB),
                     power_w=float(rng.uniform(250, 350)), sm_clock_mhz=1980,
                     temperature_c=55.0)
        recs.append(r)
        t += 0.5
    return recs


def _cell(root, cell_id, framework, workload, events, monitor, status="ok", error=None,
          torn_tail=False, summary=True, variant=None, replicate=None):
    """A process folder: cells/<cell>.r<k> for replicate k, or cells/<cell> (replicate=None:
    the layout of `harness.py train` runs, which loads as replicate 1)."""
    d = root / "cells" / (cell_id if replicate is None else f"{cell_id}.r{replicate}")
    d.mkdir(parents=True)
    _write_jsonl(d / "events.jsonl", events, torn_tail)
    _write_jsonl(d / "monitor.jsonl", monitor)
    (d / "stderr.log").write_text("")
    if summary:
        (d / "summary.json").write_text(json.dumps({
            "cell": cell_id, "replicate": replicate or 1, "framework": framework,
            "workload": workload, "variant": variant, "status": status, "error": error,
            "started": events[0]["t_wall"] if events else T0,
            "finished": events[-1]["t_wall"] if events else T0, "metrics": {}}))
    return d


def make_run(root, *, gpu=False, frameworks=("torch", "jittor"), train=True, sample=True,
             fid=False, failed=True, grids=False, config_name="quick", epochs=3,
             steps_per_epoch=10, batch=8, evil_framework=False, replicates=None,
             sample_runs=(("ddim", (10, 50, 250)), ("ddpm", (1000,))), fid_steps=(10, 50, 250)):
    """A results directory with real-shaped records. Returns its path. replicates=N writes N
    processes per train/sample cell (cells/<cell>.r<k>), each with its own process-level
    speed (a lognormal factor, as re-runs differ); None writes one, in the plain layout.
    sample_runs: (sampler, step counts) the sample cells time; fid_steps: the quality cells'."""
    root = Path(root)
    rng = np.random.default_rng(0)
    run_dir = root / "results" / f"20261123-120000-{'x' if config_name != 'quick' else 'quick'}"
    (run_dir / "cells").mkdir(parents=True)
    speed = {"torch": 0.06, "jittor": 0.22}
    compile_s = {"torch": 1.5, "jittor": 40.0}
    cells = []
    for fi, (fw, k) in enumerate((fw, k) for k in range(1, (replicates or 1) + 1)
                                 for fw in frameworks):
        unit = k if replicates else None
        process_speed = float(rng.lognormal(0, 0.05)) if replicates else 1.0
        t = T0 + 1000 * fi
        # Field for field what bench/run/worker.py and bench/run/workloads.py write.
        start = {"type": "start", "t_wall": t, "framework": fw, "workload": "train",
                 "variant": None, "options": {}, "device": "cuda" if gpu else "cpu",
                 "pid": 1000 + fi, "versions": {fw: "1.0", "python": "3.12.3"}, "threads": 2,
                 "params": 123456}
        if train:
            ev = [start, {"type": "train_info", "t_wall": t, "loader": "shared",
                          "train_images": 224, "val_images": 32,
                          "steps_per_epoch": steps_per_epoch, "epochs": epochs,
                          "batch_size": batch}]
            for e in range(1, epochs + 1):
                e_start, imgs = t, 0
                for s in range(steps_per_epoch):
                    phase = "compile" if (e, s) == (1, 0) else "warmup" if e == 1 and s < 3 else "measure"
                    wait = float(rng.uniform(0.001, 0.004))
                    comp = compile_s.get(fw, 0.1) if phase == "compile" else \
                        float(speed.get(fw, 0.1) * process_speed * rng.lognormal(0, 0.08))
                    t += wait + comp
                    step_i = (e - 1) * steps_per_epoch + s
                    ev.append({"type": "step", "t_wall": t, "phase": phase, "epoch": e,
                               "step": step_i, "wall_s": wait + comp, "data_wait_s": wait,
                               "compute_s": comp, "dispatch_s": comp * 0.9, "images": batch,
                               "loss": float(1.0 / (1 + 0.1 * step_i) + rng.normal(0, 0.01))})
                    imgs += batch
                epoch_s, val_s = t - e_start, 0.05
                t += val_s     # validation runs after the epoch clock stopped
                ev.append({"type": "epoch", "t_wall": t, "epoch": e, "t_start": e_start,
                           "time_s": epoch_s, "steps": steps_per_epoch,
                           "measured_steps": sum(1 for r in ev if r.get("epoch") == e
                                                 and r.get("phase") == "measure"),
                           "mean_loss": float(1.0 / e), "val_loss": float(1.1 / e),
                           "val_time_s": val_s, "images": imgs,
                           "images_per_s": imgs / epoch_s})
            ev.append({"type": "memory", "t_wall": t, "peak_rss_bytes": int(800 * MIB),
                       "allocator_peak_bytes": None if fw == "torch" and not gpu else int(300 * MIB),
                       "allocator_current_bytes": None})
            _cell(run_dir, f"{fw}-train", fw, "train", ev,
                  _monitor(T0 + 1000 * fi, t, rng, gpu, 500 * MIB), torn_tail=(fi == 0),
                  replicate=unit)
            cells.append(f"{fw}-train")
        if sample:
            t = T0 + 1000 * fi + 500
            ev = [dict(start, workload="sample", t_wall=t)]
            for sampler, steps_list in sample_runs:
                for n in steps_list:
                    for rep in range(4):
                        per = speed.get(fw, 0.1) * 0.5 * process_speed * rng.lognormal(0, 0.05)
                        t += per * n
                        ev.append({"type": "sample", "t_wall": t, "sampler": sampler, "steps": n,
                                   "eta": 0.0 if sampler == "ddim" else None,
                                   "skip": "uniform" if sampler == "ddim" else None,
                                   "variance": "fixed_large" if sampler == "ddpm" else None,
                                   "batch_size": 16, "repeat": rep,
                                   "phase": "warmup" if rep == 0 else "measure",
                                   "time_s": per * n, "per_step_s": per,
                                   "images_per_s": 16 / (per * n)})
            _cell(run_dir, f"{fw}-sample", fw, "sample", ev,
                  _monitor(T0 + 1000 * fi + 500, t, rng, gpu, 400 * MIB), replicate=unit)
            cells.append(f"{fw}-sample")
        if fid and k == 1:
            t = T0 + 1000 * fi + 800
            ev = [dict(start, workload="quality", t_wall=t)]
            for n in fid_steps:
                ev.append({"type": "fid", "t_wall": t + n, "framework": fw, "sampler": "ddim",
                           "steps": n, "eta": 0.0, "fid": 300.0 / np.sqrt(n) + fi, "kid": 0.01,
                           "is": None, "num_images": 500, "sample_time_s": 0.1 * n * (1 + fi),
                           "images_per_s": 500 / (0.1 * n * (1 + fi))})
            d = _cell(run_dir, f"{fw}-quality", fw, "quality", ev, [])
            if grids:
                (d / "samples").mkdir()
                _tiny_png(d / "samples" / "ddim-50.png", fi)
                (d / "samples" / "fake.png").write_text("not a png")
            cells.append(f"{fw}-quality")
    if failed:
        msg = f"RuntimeError: out of memory for {EVIL}"
        ev = [{"type": "start", "t_wall": T0 + 5000, "framework": "jittor", "workload": "memory",
               "device": "cpu", "pid": 9, "versions": {}},
              {"type": "error", "t_wall": T0 + 5001, "message": msg,
               "traceback": f"Traceback (most recent call last):\n  File \"x.py\"\n{msg}"}]
        _cell(run_dir, "jittor-memory", "jittor", "memory", ev, [], status="failed", error=msg)
        _cell(run_dir, "torch-memory", "torch", "memory", [dict(ev[0], framework="torch")], [],
              summary=False)
        cells += ["jittor-memory", "torch-memory"]
    if evil_framework:
        ev = [{"type": "start", "t_wall": T0 + 6000, "framework": EVIL, "workload": "train",
               "device": "cpu", "pid": 7, "versions": {EVIL: EVIL}},
              {"type": "step", "t_wall": T0 + 6001, "phase": "measure", "epoch": 0, "step": 0,
               "wall_s": 0.5, "data_wait_s": 0.1, "compute_s": 0.4, "loss": 0.3, "images": 8},
              {"type": "step", "t_wall": T0 + 6002, "phase": "measure", "epoch": 0, "step": 1,
               "wall_s": 0.6, "data_wait_s": 0.1, "compute_s": 0.5, "loss": 0.2, "images": 8}]
        _cell(run_dir, "evil-train", EVIL, "train", ev, [])
        cells.append("evil-train")
    manifest = {"run_id": run_dir.name, "created": T0, "created_iso": "2026-09-21T12:00:00+0000",
                "command": ["harness.py", "bench", "configs/quick.yaml"],
                "config_name": config_name, "config_hash": "abc123", "seed": 0, "threads": 2,
                "config": {"name": config_name, "train": {"epochs": epochs, "batch_size": batch}},
                "cells": [{"cell": d.name.split(".r")[0], "unit": d.name,
                           "replicate": int(d.name.split(".r")[1]) if ".r" in d.name else 1}
                          for d in sorted((run_dir / "cells").iterdir())],
                "host": {"python": "3.12.3", "platform": "Linux-x86_64", "cpu_model": "Test CPU",
                         "cpu_count_logical": 2, "memory_total_bytes": 24 * 1024 ** 3},
                "gpu": {"name": "NVIDIA H100", "driver": "580"} if gpu else
                       {"gpu": "absent", "reason": "device=cpu"},
                "git": {"sha": "deadbeef", "dirty": False},
                "frameworks": {fw: {fw: "1.0", "device": "cpu"} for fw in frameworks}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def _tiny_png(path, seed):
    """A real 16x16 PNG written with matplotlib (no extra dependency)."""
    from matplotlib.image import imsave
    imsave(path, np.random.default_rng(seed).random((16, 16, 3)))


# ---------------------------------------------------------------- helpers

def _report(tmp_path, **kw):
    run_dir = make_run(tmp_path, **kw)
    paths = write_report(run_dir, tmp_path / "report")
    return run_dir, paths, paths["markdown"].read_text(), paths["html"].read_text()


def _md_table_after(md, heading):
    """Rows (lists of cells) of the first pipe table after a markdown heading."""
    part = md.split(heading, 1)[1]
    block = []
    for ln in part.splitlines():
        if ln.startswith("|"):
            block.append(ln)
        elif block:
            break
    assert block, f"no table after {heading}"
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in block]
    return rows[0], rows[2:]


def _number(cell):
    return float(cell.split()[0].replace(",", "").rstrip("×"))


# ---------------------------------------------------------------- stats

def test_spread_and_ratio_of_medians():
    s = spread([1, 2, 3, 4, 100, float("nan")])
    assert (s.n, s.median) == (5, 3.0) and s.iqr == 2.0
    rng = np.random.default_rng(1)
    a, b = rng.normal(2.0, 0.05, 200), rng.normal(1.0, 0.05, 200)
    r = ratio_of_medians(a, b)
    assert r.low < r.value < r.high and 1.9 < r.low and r.high < 2.1
    # Medians, not means: one 100x outlier step does not move the ratio.
    outlier = ratio_of_medians([1.0] * 9 + [100.0], [2.0] * 5)
    assert (outlier.value, outlier.low, outlier.high) == (0.5, 0.5, 0.5)
    assert np.isnan(ratio_of_medians([1.0], [1.0, 2.0]).low)        # too few to bootstrap
    assert np.isnan(ratio_of_medians([], [1.0]).value)


# ---------------------------------------------------------------- tables vs records

def test_training_table_matches_records(tmp_path):
    run_dir, paths, md, _ = _report(tmp_path)
    header, rows = _md_table_after(md, "## Training")
    assert header[:3] == ["metric", "torch", "jittor"]
    assert header[3] == "jittor ÷ torch (95% CI)"
    by_metric = {r[0]: r for r in rows}
    assert set(by_metric) == {row[0] for row in tables.TRAINING_ROWS}

    # Recompute the medians straight from the jsonl files.
    for col_i, fw in ((1, "torch"), (2, "jittor")):
        steps = [json.loads(l) for l in
                 (run_dir / "cells" / f"{fw}-train" / "events.jsonl").read_text().splitlines()
                 if l.endswith("}")]
        meas = [r for r in steps if r.get("type") == "step" and r["phase"] == "measure"]
        assert by_metric["measured steps, all processes"][col_i] == str(len(meas))
        assert by_metric["processes (replicates)"][col_i] == "1"
        wall = np.median([r["wall_s"] for r in meas])
        assert _number(by_metric["step time, median (s)"][col_i]) == pytest.approx(wall, rel=5e-3)
        compile_s = [r["wall_s"] for r in steps if r.get("type") == "step" and r["phase"] == "compile"]
        assert _number(by_metric["first iteration / compile (s)"][col_i]) == \
            pytest.approx(compile_s[0], rel=5e-3)
        last_epoch = [r for r in steps if r.get("type") == "epoch"][-1]
        assert _number(by_metric["final validation loss"][col_i]) == \
            pytest.approx(last_epoch["val_loss"], rel=5e-3)

    # jittor is ~3.7x slower per step in the fixture, but one process per framework says
    # nothing about a re-run: the ratio comes without an interval, and the cell says why.
    cell = by_metric["step time, median (s)"][3]
    assert cell.startswith("3.") and "[" not in cell
    assert "no interval: 1 vs 1 processes" in cell
    assert "Independent processes per cell: 1" in md and "says nothing about the next run" in md
    # CPU-only run: GPU-only quantities say so instead of showing numbers.
    assert by_metric["energy per epoch, median (J)"][1:] == ["not measured (no GPU)"] * 3
    assert by_metric["peak device memory (MiB)"][1] == "not measured (no GPU)"
    assert by_metric["peak host RSS (MiB)"][1] == "800.0"


def test_training_table_over_replicates(tmp_path):
    """Four processes per framework: each cell's number is the median of its processes'
    medians, the ratio has an interval over processes, and the count and spread are shown."""
    run_dir, paths, md, _ = _report(tmp_path, replicates=4, sample=False, failed=False)
    header, rows = _md_table_after(md, "## Training")
    by_metric = {r[0]: r for r in rows}
    for col_i, fw in ((1, "torch"), (2, "jittor")):
        medians = []
        for k in range(1, 5):
            recs = [json.loads(l) for l in (run_dir / "cells" / f"{fw}-train.r{k}" /
                                            "events.jsonl").read_text().splitlines()
                    if l.endswith("}")]
            medians.append(np.median([r["wall_s"] for r in recs if r.get("type") == "step"
                                      and r["phase"] == "measure"]))
        assert _number(by_metric["step time, median (s)"][col_i]) == \
            pytest.approx(np.median(medians), rel=5e-3)
        assert by_metric["processes (replicates)"][col_i] == "4"
        assert by_metric["step time, between-process CV"][col_i].endswith("%")
    cell = by_metric["step time, median (s)"][3]
    value, low, high = map(float, re.findall(r"[\d.]+", cell)[:3])
    assert low < value < high and 3.0 < value < 4.5
    assert "n=4/4, CV" in cell
    assert "Independent processes per cell: 4" in md
    assert "replicates_train.png" in md        # the per-process plot
    assert (paths["out_dir"] / "replicates_train.png").read_bytes()[:8] == PNG


def test_energy_on_gpu_run(tmp_path):
    run = load_run(make_run(tmp_path, gpu=True))
    m = tables.training_metrics(run).set_index("framework")
    # ~300 W over an epoch of known length: energy ≈ 300 J/s * epoch seconds (within spread).
    epoch_s = m.loc["torch", "epoch_time_median_s"]
    assert 250 * epoch_s < m.loc["torch", "energy_per_epoch_median_j"] < 350 * epoch_s
    assert m.loc["torch", "device_peak_bytes"] == 2500 * MIB
    md = write_report(run.run_dir, tmp_path / "r")["markdown"].read_text()
    assert "not measured" not in md.split("## Training")[1].split("## Sampling")[0]


def test_sampling_table_rows(tmp_path):
    _, _, md, _ = _report(tmp_path)
    header, rows = _md_table_after(md, "## Sampling")
    assert header[:3] == ["sampler", "steps", "η"] and "images/s" in header
    # 4 sampler configs x 2 frameworks; the baseline row says so, jittor's has a ratio.
    assert len(rows) == 8
    fw_i, ratio_i = header.index("framework"), len(header) - 1
    assert {r[fw_i] for r in rows} == {"torch", "jittor"}
    assert all(r[ratio_i] == "baseline" for r in rows if r[fw_i] == "torch")
    assert all("×" in r[ratio_i] for r in rows if r[fw_i] == "jittor")
    # 3 measured chains each (repeat 0 is warm-up), in one process per framework.
    assert all(r[header.index("chains")] == "3" for r in rows)
    assert all(r[header.index("processes")] == "1" for r in rows)


def test_sampling_ratio_over_replicates(tmp_path):
    _, _, md, _ = _report(tmp_path, replicates=3, train=False, failed=False)
    header, rows = _md_table_after(md, "## Sampling")
    fw_i, ratio_i = header.index("framework"), len(header) - 1
    assert all(r[header.index("processes")] == "3" and r[header.index("chains")] == "9"
               for r in rows)
    for r in rows:
        if r[fw_i] == "jittor":
            value, low, high = map(float, re.findall(r"[\d.]+", r[ratio_i])[:3])
            assert low < value < high and "n=3/3" in r[ratio_i]
    assert "replicates_sample.png" in md


def test_torn_last_line_is_tolerated(tmp_path):
    run = load_run(make_run(tmp_path))
    assert run.problems == []          # the torn tail is expected, not a problem
    assert len(tables.cells_of(run, "train")) == 2


# ---------------------------------------------------------------- files, HTML

def test_pngs_are_valid_and_linked(tmp_path):
    _, paths, md, page = _report(tmp_path, fid=True, grids=True)
    assert len(paths["images"]) >= 9
    for img in paths["images"]:
        data = img.read_bytes()
        assert data[:8] == PNG and len(data) > 1000, img
        assert f"]({img.name})" in md                         # relative link in markdown
    names = {p.name for p in paths["images"]}
    assert {"fid_vs_steps.png", "sampling_vs_steps.png", "step_breakdown.png",
            "samples-torch-quality-ddim-50.png"} <= names
    assert "fake.png" in md and "skipped" in md               # the non-PNG is named, not embedded
    # HTML: one <img> per figure, each an embedded PNG that decodes.
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(paths["images"])
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG


def test_html_is_self_contained_and_escaped(tmp_path):
    _, paths, md, page = _report(tmp_path, config_name=EVIL, evil_framework=True)
    # No external resources: every src is a data URI, every href an in-page anchor.
    assert all(s.startswith("data:") for s in re.findall(r'\ssrc="([^"]*)"', page))
    assert all(h.startswith("#") for h in re.findall(r'\shref="([^"]*)"', page))
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "url(" not in page
    escaped = html.escape(EVIL, quote=True)
    assert escaped in page or html.escape(EVIL, quote=False) in page
    assert page.count("&lt;script&gt;") >= 4    # config name, error text, framework, versions
    # Markdown: no raw tag outside code fences (inside one it is shown literally, never run).
    prose = re.sub(r"^(`{3,})\n.*?^\1$", "", md, flags=re.S | re.M)
    assert EVIL not in prose and md_escape(EVIL) in prose
    assert EVIL in md                              # ... and the fenced error text is verbatim


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(ReportInputError, match="no such results directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match="not a results directory"):
        write_report(tmp_path / "empty")
    run_dir = make_run(tmp_path / "r", sample=False, failed=False)
    with pytest.raises(ReportInputError, match="valid: jittor, torch"):
        write_report(run_dir, tmp_path / "out", baseline="tensorflow")


def test_cli_exit_codes(tmp_path):
    run_dir = make_run(tmp_path, sample=False)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ok = subprocess.run([sys.executable, "-m", "bench.report", str(run_dir), "--out",
                         str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "report.html").exists()
    bad = subprocess.run([sys.executable, "-m", "bench.report", str(tmp_path / "missing")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_never_imports_a_framework(tmp_path):
    run_dir = make_run(tmp_path, sample=False, failed=False)
    code = ("import sys; from bench.report import write_report; "
            f"write_report({str(run_dir)!r}, {str(tmp_path / 'o')!r}); "
            "assert 'torch' not in sys.modules and 'jittor' not in sys.modules, "
            "[m for m in sys.modules if m.startswith(('torch', 'jittor'))]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- missing data

def test_missing_workloads_and_failures_are_words(tmp_path):
    run_dir = make_run(tmp_path, train=False, sample=False, failed=True)
    paths = write_report(run_dir, tmp_path / "r")
    md = paths["markdown"].read_text()
    assert "The training workload was not run" in md
    assert "The sampling workload was not run" in md
    assert "No FID in this run" in md and "No sample grids" in md
    assert "No GPU in this run" in md
    failed = md.split("## Failed cells")[1]
    assert "jittor-memory" in failed and "out of memory" in failed
    assert "torch-memory" in failed and "did not finish" in failed
    assert paths["images"] == []                   # nothing to plot: no empty axes either


def test_default_baseline_without_torch(tmp_path):
    run_dir = make_run(tmp_path, frameworks=("jittor",), sample=False, failed=False)
    md = write_report(run_dir, tmp_path / "r")["markdown"].read_text()
    assert "aseline for ratios: **jittor**" in md


def test_all_ok_run_and_single_framework(tmp_path):
    run_dir = make_run(tmp_path, frameworks=("torch",), failed=False, epochs=1)
    paths = write_report(run_dir, tmp_path / "r")
    md = paths["markdown"].read_text()
    assert "No failed cells." in md
    assert "no other framework to compare with torch" in md
    header, _ = _md_table_after(md, "## Training")
    assert header == ["metric", "torch"]


def test_manifest_missing(tmp_path):
    run_dir = make_run(tmp_path, sample=False, failed=False)
    (run_dir / "manifest.json").unlink()
    md = write_report(run_dir, tmp_path / "r")["markdown"].read_text()
    assert "manifest.json is missing" in md


# ---------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (tools/setup.sh installs it)")
def test_screenshot_in_headless_chromium(tmp_path):
    _, paths, _, _ = _report(tmp_path, fid=True, grids=True)
    out = tmp_path / "shot.png"
    r = subprocess.run(["bash", str(REPO / "tools" / "screenshot.sh"), str(paths["html"]), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == PNG
    # Not a blank page: a rendered report has many distinct colours.
    from matplotlib.image import imread
    pixels = imread(out)[:, :, :3].reshape(-1, 3)
    assert len(np.unique((pixels[::97] * 255).astype(int), axis=0)) > 50


# ---------------------------------------------------------------- headline (the answer first)

def test_headline_comes_first_with_the_key_ratios_and_a_verdict(tmp_path):
    _, _, md, html_text = _report(tmp_path, replicates=4, failed=False)
    assert md.index("## Headline") < md.index("## Overview") < md.index("## Training")
    header, rows = _md_table_after(md, "## Headline")
    assert header[:3] == ["quantity", "framework", "verdict"]
    by_q = {r[0]: r for r in rows}
    step = by_q["training step time"]
    # the fixture's jittor step is ~3.7x torch's: slower, with an interval over 4/4 processes
    assert step[1] == "jittor" and step[2] == "slower" and "n=4/4" in step[3]
    assert 3.0 < _number(step[3]) < 4.5
    assert by_q["training images/s"][2] == "slower" and _number(by_q["training images/s"][3]) < 1
    samplers = [q for q in by_q if q.startswith("sampling time per step")]
    assert len(samplers) == 4 and any("DDPM-1000" in q for q in samplers)
    assert by_q["peak host RSS, training"][2] in ("larger", "smaller", "no clear difference")
    intro = md.split("## Headline", 1)[1].split("|", 1)[0]
    assert "jittor" in intro and "training step takes" in intro and "95% CI" in intro
    # the fixture's config describes no model: parity cannot be looked up, and says so
    assert "Same model? Parity: not checked" in md
    assert "Headline" in html_text


def test_headline_says_when_there_is_no_interval(tmp_path):
    _, _, md, _ = _report(tmp_path, failed=False)   # one process per framework
    _, rows = _md_table_after(md, "## Headline")
    step = {r[0]: r for r in rows}["training step time"]
    assert step[2] == "unclear" and "no interval" in step[3]


def _md_tables_in(md, heading):
    """Every pipe table of the markdown section under `heading`: [(header, rows)]."""
    part = md.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    tables_, block = [], []
    for ln in part.splitlines() + [""]:
        if ln.startswith("|"):
            block.append(ln)
        elif block:
            rows = [[c.strip() for c in re.split(r"(?<!\\)\|", x)[1:-1]] for x in block]
            tables_.append((rows[0], rows[2:]))
            block = []
    return tables_


def _set_start(run_dir, unit, **versions):
    """Change the versions a process reported in its stored start record (events.jsonl)."""
    path = run_dir / "cells" / unit / "events.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    for i, ln in enumerate(lines):
        rec = json.loads(ln) if ln.endswith("}\n") else {}
        if rec.get("type") == "start":
            rec["versions"] = dict(rec["versions"], **versions)
            lines[i] = json.dumps(rec) + "\n"
            break
    path.write_text("".join(lines))


def test_environment_is_a_compact_summary_with_the_framework_settings_as_a_table(tmp_path):
    _, _, md, html_text = _report(tmp_path, failed=False)
    (summary, settings, *more) = _md_tables_in(md, "## Environment")
    facts = {r[0]: r[1] for r in summary[1]}
    assert set(facts) == {"device", "CPU", "math mode", "threads", "git", "started", "python"}
    assert facts["git"] == "deadbeef" and facts["started"] == "2026-09-21T12:00:00+0000"
    assert "Test CPU" in facts["CPU"]
    # one column per framework (the baseline first), one row per setting; a setting a
    # framework does not have is a dash
    header, rows = settings
    assert header == ["setting", "torch", "jittor"]
    by_setting = {r[0]: r[1:] for r in rows}
    assert list(by_setting)[0] == "device" and by_setting["device"] == ["cpu", "cpu"]
    assert by_setting["python"] == ["3.12.3", "3.12.3"]
    assert by_setting["torch"] == ["1.0", "—"] and by_setting["jittor"] == ["—", "1.0"]
    assert "torch on cpu" not in md                      # no long one-line summary any more
    # every cell of a framework ran alike: no per-cell table, one sentence says so
    assert more == []
    assert "All cells of each framework ran with the same settings" in md
    env = md.split("## Environment", 1)[1].split("\n## ", 1)[0]
    assert "Full manifest" not in env and "Full configuration" not in env
    assert "<details><summary>Full manifest" in html_text


def test_cells_that_ran_with_other_settings_get_a_table(tmp_path):
    """Two processes of jittor-sample report another python than the rest of jittor's: a
    table names that cell and setting only; the framework's column keeps the majority."""
    run_dir = make_run(tmp_path, replicates=2, failed=False)
    for unit in ("jittor-sample.r1", "jittor-sample.r2"):
        _set_start(run_dir, unit, python="3.11.7")
    _set_start(run_dir, "torch-train.r2", torch="1.1")         # one process of a cell
    md = write_report(run_dir, tmp_path / "r")["markdown"].read_text()
    (_, settings, diffs) = _md_tables_in(md, "## Environment")
    assert {r[0]: r[1:] for r in settings[1]}["python"] == ["3.12.3", "3.12.3"]
    assert {r[0]: r[1:] for r in settings[1]}["torch"] == ["1.0", "—"]
    header, rows = diffs
    assert header == ["cell", "framework", "setting", "value", "framework's value"]
    assert rows == [["jittor-sample", "jittor", "python", "3.11.7", "3.12.3"],
                    ["torch-train.r2", "torch", "torch", "1.1", "1.0"]]
    assert "All cells of each framework ran with the same settings" not in md


def test_sections_index_and_the_appendix_last(tmp_path):
    _, _, md, html_text = _report(tmp_path, fid=True)
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings[-1] == "Appendix: manifest and configuration"
    index = next(ln for ln in md.splitlines() if ln.startswith("Sections: "))
    assert re.findall(r"\[([^\]]+)\]\(#([^)]+)\)", index) == \
        [(h, re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")) for h in headings]
    appendix = md.split("## Appendix: manifest and configuration", 1)[1]
    assert "**Full manifest (manifest.json without config and processes)**" in appendix
    assert '"run_id": "20261123-120000-quick"' in appendix
    assert "**Full configuration of the run**" in appendix and "name: quick" in appendix
    assert md.count("Full manifest (manifest.json") == 1 and md.count("Full configuration") == 1
    # HTML: the same order, the appendix last in the navigation, its blocks folded
    sections = re.findall(r'<section id="([^"]+)">', html_text)
    assert sections[-1] == "appendix" and len(sections) == len(headings)
    assert re.findall(r'<nav>.*</nav>', html_text)[0].endswith(
        '<a href="#appendix">Appendix: manifest and configuration</a></nav>')
    tail = html_text.split('<section id="appendix">', 1)[1]
    assert tail.count("<details><summary>Full") == 2 and "<details open" not in tail


def test_a_plot_against_a_single_x_value_is_left_out(tmp_path):
    """One sampling step count (and one FID step count, one epoch): no curve to draw, so no
    sampling_vs_steps.png / fid_vs_steps.png / per-epoch plots, and the report says why. Two
    step counts (two epochs): drawn and linked."""
    one = make_run(tmp_path / "one", sample_runs=(("ddim", (50,)),), fid=True, fid_steps=(50,),
                   epochs=1, failed=False)
    paths = write_report(one, tmp_path / "one" / "report")
    md = paths["markdown"].read_text()
    for name in ("sampling_vs_steps.png", "fid_vs_steps.png", "loss_per_epoch.png",
                 "time_per_epoch.png"):
        assert not (paths["out_dir"] / name).exists(), name
        assert name not in md, name
    assert "No plot of sampling time vs steps: each sampler ran at a single step count (50)" in md
    assert "No plot of FID vs steps" in md and "No loss-per-epoch plot" in md
    _, rows = _md_table_after(md, "## Sampling")
    assert [r[:2] for r in rows] == [["ddim", "50"], ["ddim", "50"]]   # the table keeps it
    assert "loss_per_step.png" in md                # steps within the epoch: still a curve
    # two samplers at one step count each: two x values, but each curve is a single point
    from bench.report import plots
    mixed = load_run(make_run(tmp_path / "mixed", train=False, failed=False,
                              sample_runs=(("ddim", (50,)), ("ddpm", (1000,)))))
    note = plots.sampling_vs_steps(mixed, tmp_path)
    assert note.kind == "note" and "(50, 1000)" in note.text
    assert not (tmp_path / "sampling_vs_steps.png").exists()

    two = make_run(tmp_path / "two", sample_runs=(("ddim", (10, 50)),), fid=True,
                   fid_steps=(10, 50), epochs=2, failed=False)
    paths = write_report(two, tmp_path / "two" / "report")
    md = paths["markdown"].read_text()
    for name in ("sampling_vs_steps.png", "fid_vs_steps.png", "loss_per_epoch.png",
                 "time_per_epoch.png"):
        assert (paths["out_dir"] / name).read_bytes()[:8] == PNG, name
        assert f"]({name})" in md, name


@pytest.mark.process
def test_headline_shows_the_recorded_parity_check_for_these_settings(tmp_path, monkeypatch):
    """A real `harness.py parity --config` run records its verdict; a report of a run with
    the same model, diffusion and optimiser settings shows it, another does not."""
    import yaml

    from bench.run.config import load_config

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "tiny", "model": {"image_size": 8, "in_channels": 1, "base_channels": 8,
                                  "ch_mult": [1, 2], "num_res_blocks": 1,
                                  "attn_resolutions": [4], "dropout": 0.0, "norm_groups": 4},
        "diffusion": {"timesteps": 50}}))
    parity_dir = tmp_path / "parity"
    env = dict(os.environ, DIFFBENCH_PARITY_DIR=str(parity_dir))
    proc = subprocess.run([sys.executable, str(REPO / "harness.py"), "parity", "--config",
                           str(cfg_path)], capture_output=True, text=True, env=env, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "recorded:" in proc.stdout and len(list(parity_dir.glob("parity-*.json"))) == 1
    run_dir = make_run(tmp_path, failed=False)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"] = load_config(str(cfg_path), check_paths=False)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("DIFFBENCH_PARITY_DIR", str(parity_dir))
    md = write_report(run_dir, tmp_path / "r1")["markdown"].read_text()
    line = next(ln for ln in md.splitlines() if "Same model? Parity:" in ln)
    assert "passed on the same weights and inputs: jittor vs torch: relative errors" in line \
        and "forward" in line and "(≤ 0.0001)" in line
    manifest["config"]["diffusion"]["timesteps"] = 60   # other settings: not checked
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    md = write_report(run_dir, tmp_path / "r2")["markdown"].read_text()
    assert "Parity: not checked for these settings" in md and "tiny.yaml" not in md


def test_training_run_without_sample_cells_shows_the_quality_cells_generation_speed(tmp_path):
    """A `harness.py train` + `fid` run has no sampling benchmark: the Sampling section shows
    how fast the quality cells generated, with plain ratios (one process each)."""
    from bench.report.render import sampling

    run = load_run(make_run(tmp_path, sample=False, fid=True))
    sec = sampling(run, tmp_path, "torch")
    (table,) = [b for b in sec.blocks if b.kind == "table"]
    jittor_50 = next(r for r in table.rows if r[0] == "jittor" and r[2] == "50")
    assert jittor_50[-1] == "2.00×" and jittor_50[4] == "10"
    plain = sampling(load_run(make_run(tmp_path / "b", sample=False)), tmp_path, "torch")
    assert [b.kind for b in plain.blocks] == ["note"]
