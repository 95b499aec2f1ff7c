"""A framework that failed reads as plainly as one that ran (issue #38): words instead of
numbers where it has no process that finished ok, figures only from the processes that did,
and error text without terminal escape codes, its decisive line first, in the report (md and
HTML), the terminal table and gpu-check's checklist.

Runs are made from records (tests/test_report.py's fixture), then some of Jittor's processes
are turned into failures the way Jittor failed on the first GPU host: a coloured exception that
quotes the g++ command, the compiler's `error:` in stderr.log. Their records are kept, and
inflated 100x, so that any figure taken from a failed process would show.
"""
import importlib.util
import json
import re

import numpy as np

from bench.records.errors import failure_line
from bench.report import write_report
from bench.report.fmt import num
from bench.run.runner import Progress, format_table
from bench.stats.replicates import ratio_of_replicates
from tests.test_report import _md_table_after, make_run

# Jittor's exception on the H200 (reports/reference/h200/): colour codes and the g++ command
ERROR = ("RuntimeError: \x1b[38;5;1m[f 1204 17:35:21.205470 48 log.cc:608] Check failed "
         'ret(256) == 0(0) Run cmd failed: "/usr/bin/g++" "/site/jittor/src/init.cc" -Wall '
         "-std=c++14 -fPIC -fdiagnostics-color=always -c -o init.cc.o\x1b[m")
# ... and what g++ printed before it, coloured
COMPILER_LOG = (
    "\x1b[01m\x1b[K/site/jittor/extern/cuda/inc/helper_cuda.h:\x1b[m\x1b[K In function "
    "‘\x1b[01m\x1b[Kint findIntegratedGPU()\x1b[m\x1b[K’:\n"
    "\x1b[01m\x1b[K/site/jittor/extern/cuda/inc/helper_cuda.h:391:21:\x1b[m\x1b[K "
    "\x1b[01;31m\x1b[Kerror: \x1b[m\x1b[K‘\x1b[01m\x1b[Kstruct cudaDeviceProp\x1b[m\x1b[K’ has "
    "no member named ‘\x1b[01m\x1b[KcomputeMode\x1b[m\x1b[K’\n"
    "Traceback (most recent call last):\n  File \"/site/jittor/compiler.py\", line 150\n"
    f"{ERROR}\n")
DECISIVE = ("/site/jittor/extern/cuda/inc/helper_cuda.h:391:21: error: ‘struct cudaDeviceProp’ "
            "has no member named ‘computeMode’")
INFLATE = 100.0
TIMES = ("wall_s", "compute_s", "data_wait_s", "time_s", "per_step_s")
SIZES = ("peak_rss_bytes", "allocator_peak_bytes", "rss_bytes")


def _rewrite(path, change):
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    path.write_text("".join(json.dumps(change(r)) + "\n" for r in recs))


def _inflated(r):
    return {k: v * INFLATE if k in TIMES + SIZES and isinstance(v, (int, float)) else v
            for k, v in r.items()}


def fail(run_dir, unit):
    """Process `unit` of the run failed as Jittor did on the H200; its records stay, inflated."""
    d = run_dir / "cells" / unit
    _rewrite(d / "events.jsonl", _inflated)
    _rewrite(d / "monitor.jsonl", _inflated)
    with open(d / "events.jsonl", "a") as f:
        f.write(json.dumps({"type": "error", "t_wall": 0, "message": ERROR,
                            "traceback": COMPILER_LOG}) + "\n")
    (d / "stderr.log").write_text(COMPILER_LOG)
    summary = json.loads((d / "summary.json").read_text())
    summary.update(status="failed", error=ERROR, stderr_tail=COMPILER_LOG)
    (d / "summary.json").write_text(json.dumps(summary))


def _report(tmp_path, failing):
    run_dir = make_run(tmp_path, replicates=3, failed=False)
    for unit in failing:
        fail(run_dir, unit)
    paths = write_report(run_dir, tmp_path / "report")
    return run_dir, paths["markdown"].read_text(), paths["html"].read_text()


def _assert_clean(*texts):
    """No NaN shown, no escape sequence (with or without its ESC byte), in any of them."""
    for text in texts:
        assert not re.search(r"\bnan\b", text, re.I), re.search(r".{80}\bnan\b.{40}", text, re.I)
        assert "\x1b" not in text and "[38;5;1m" not in text and "[01;31m" not in text


def _process_medians(run_dir, unit, key="wall_s"):
    steps = [json.loads(line) for line in (run_dir / "cells" / unit / "events.jsonl")
             .read_text().splitlines() if line.endswith("}")]
    return [s[key] for s in steps if s.get("type") == "step" and s.get("phase") == "measure"]


def _column(md, heading, name):
    """{row label: value} of the column `name` of the first table under `heading`."""
    header, rows = _md_table_after(md, heading)
    i = header.index(name)
    return {r[0]: r[i] for r in rows}


def test_a_framework_that_failed_every_process_gets_words_not_numbers(tmp_path):
    units = [f"jittor-{w}.r{k}" for w in ("train", "sample") for k in (1, 2, 3)]
    _, md, html_text = _report(tmp_path, units)
    _assert_clean(md, html_text)

    intro = md.split("## Headline", 1)[1].split("|", 1)[0]
    assert f"jittor: no measurement — 6 of 6 processes failed (first error: {DECISIVE})" in intro
    _, rows = _md_table_after(md, "## Headline")
    jittor = [r for r in rows if r[1] == "jittor"]
    assert {r[0] for r in jittor} == {"training step time, images/s, memory",
                                     "sampling time per step"}
    assert all(r[2] == "no measurement" and "×" not in r[3] and "3 of 3 processes failed" in r[3]
               for r in jittor)

    header, rows = _md_table_after(md, "## Training")
    assert header == ["metric", "torch", "jittor [3 of 3 failed]"]   # no ratio column
    col = {r[0]: r[2] for r in rows}
    assert col.pop("processes (replicates)") == "0 of 3 ok"
    assert set(col.values()) == {"—"}
    assert "jittor-train: no measurement — 3 of 3 processes failed" in md

    # memory of a process that failed is no measurement: no row, a note instead
    _, rows = _md_table_after(md, "## Memory and utilisation")
    assert {r[1] for r in rows} == {"torch"}
    _, rows = _md_table_after(md, "## Sampling")
    assert "jittor" not in {r[4] for r in rows}

    errors = _column(md, "## Failed cells", "error")
    assert set(errors) == set(units) and set(errors.values()) == {DECISIVE}
    assert "**Error of jittor-train.r1**" in md and "Run cmd failed" in md   # the full text too
    assert "no measurement" in html_text and DECISIVE.replace("‘", "") in html_text.replace("‘", "")


def test_a_framework_with_some_failed_processes_keeps_the_figures_of_the_others(tmp_path):
    run_dir, md, html_text = _report(tmp_path, ["jittor-train.r1"])
    _assert_clean(md, html_text)

    jittor = [np.median(_process_medians(run_dir, f"jittor-train.r{k}")) for k in (2, 3)]
    torch = [_process_medians(run_dir, f"torch-train.r{k}") for k in (1, 2, 3)]
    header, rows = _md_table_after(md, "## Training")
    assert header[2] == "jittor [1 of 3 failed]"
    col = {r[0]: r[2] for r in rows}
    assert col["processes (replicates)"] == "2 of 3 ok"
    assert col["step time, median (s)"] == num(np.median(jittor))
    assert col["peak host RSS (MiB)"] == "800.0"          # the failed one's is 100x that

    ratio = ratio_of_replicates([[m] for m in jittor], torch)
    step = {r[0]: r for r in _md_table_after(md, "## Headline")[1]}["training step time"]
    assert step[3].startswith(f"{ratio.value:.2f}× (no interval: 2 vs 3 processes")
    intro = md.split("## Headline", 1)[1].split("|", 1)[0]
    assert "1 of 6 processes failed, its figures are from the others" in intro
    assert "jittor-train: 1 of 3 processes failed; its figures are from the 2 that finished ok" in md
    assert _column(md, "## Failed cells", "error") == {"jittor-train.r1": DECISIVE}


def test_terminal_table_and_progress_lines_are_plain(capsys):
    failed = {"cell": "jittor-train", "unit": "jittor-train.r1", "status": "failed",
              "error": ERROR, "stderr_tail": COMPILER_LOG, "wall_s": 3.0}
    ok = {"cell": "torch-train", "unit": "torch-train.r1", "status": "ok", "workload": "train",
          "wall_s": 9.0, "metrics": {"wall_step_median_s": 0.06, "compute_median_s": 0.05,
                                     "data_wait_median_s": 0.01, "compile_s": 1.5,
                                     "images_per_s": 130.0, "final_val_loss": None}}
    table = format_table([ok, failed])
    _assert_clean(table)
    assert DECISIVE[:100] in table and "val loss —" in table
    Progress(1).records("torch-train.r1", [{"type": "epoch", "epoch": 1, "time_s": 1.0,
                                            "mean_loss": 0.5, "val_loss": None,
                                            "images_per_s": 8.0}])
    line = capsys.readouterr().err
    assert "val —" in line and "nan" not in line


def test_gpu_check_lines_are_plain_and_decisive(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", "tools/gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    # a child that fails as Jittor's import did: the compiler's output, then the exception
    ok, detail = gc._child(f"import sys; sys.stderr.write({COMPILER_LOG!r}); sys.exit(1)", 60)
    assert not ok and detail == f"exit 1: {DECISIVE}"
    run_dir = make_run(tmp_path, gpu=True, replicates=1, failed=False)
    fail(run_dir, "jittor-train.r1")
    check = gc.Checklist()
    gc.bench_checks(check, str(run_dir), "GPU-aaaa1111")
    check.add(False, "a coloured detail", ERROR)
    lines = {name: detail for _, name, detail in check.lines}
    assert lines["GPU figures measured (jittor-train.r1)"] == f"cell failed: {DECISIVE}"
    _assert_clean(check.markdown(0.0))


def test_the_decisive_line_of_a_python_exception_is_its_message():
    assert failure_line("ValueError: bad batch", "Traceback ...\nValueError: bad batch\nbye") \
        == "ValueError: bad batch"
    assert failure_line("timed out after 600 s (runner.timeout_s)", "step 3\nstep 4") == \
        "timed out after 600 s (runner.timeout_s)"


def test_log_axes_label_their_ticks_as_plain_numbers():
    from matplotlib.figure import Figure

    from bench.report.plots import log_scale

    fig = Figure()
    ax = fig.subplots()
    ax.plot([3.2, 74.6], [150, 33528])      # a sweep's GFLOP per step and GFLOP/s
    log_scale(ax, "xy")
    fig.canvas.draw()
    labels = [t.get_text() for axis in (ax.xaxis, ax.yaxis) for minor in (False, True)
              for t in axis.get_ticklabels(minor=minor) if t.get_text()]
    assert {"3", "10", "30", "1,000", "10,000"} <= set(labels)
    assert not any("times" in t or "×" in t or "^" in t or "e+" in t for t in labels), labels
