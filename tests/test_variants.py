"""Variants (docs/VARIANTS.md): config checks, the cell matrix, the quality guard's verdict on
synthetic records, the model-level equivalence of the torch variants, and one real run of
every variant this CPU supports (both frameworks, tiny model) down to the report section,
with a deliberately broken variant the guard must fail."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.conftest import REPO, TINY_MODEL, harness, run_dirs, tiny_config, write_config
from tests.real_runs import variants_run_config
from bench.report import variants as report_variants
from bench.report.load import load_run
from bench.run.config import ConfigError, load_config
from bench.run.matrix import expand_cells

TOL = {"loss_rtol": 0.02, "sample_atol": 0.02}


def _guard(losses, mean=0.1, std=0.9, finite=True):
    return {"losses": list(losses), "sample_mean": mean, "sample_std": std, "finite": finite}


# ------------------------------------------------------------------ the guard's verdict

def test_guard_passes_within_tolerance_and_fails_outside():
    matched = _guard([1.0, 0.9, 0.8])
    ok = report_variants.guard_verdict(_guard([1.01, 0.905, 0.79], mean=0.11), matched, TOL)
    assert ok["passed"] is True and ok["loss_rel_max"] == pytest.approx(0.0125)
    off = report_variants.guard_verdict(_guard([1.0, 0.9, 0.7]), matched, TOL)
    assert off["passed"] is False and "loss off by 12.5%" in off["why"]
    drift = report_variants.guard_verdict(_guard([1.0, 0.9, 0.8], std=0.95), matched, TOL)
    assert drift["passed"] is False and "sample std" in drift["why"]


def test_guard_fails_non_finite_and_abstains_without_a_reference():
    matched = _guard([1.0, 0.9])
    nan = report_variants.guard_verdict(_guard([1.0, float("nan")], finite=False), matched, TOL)
    assert nan["passed"] is False and "non-finite" in nan["why"]
    none = report_variants.guard_verdict(_guard([1.0, 0.9]), None, TOL)
    assert none["passed"] is None and "matched" in none["why"]


# ------------------------------------------------------------------ config and matrix

def _cfg(tmp_path, variants, **sections):
    cfg = tiny_config(tmp_path / "results", frameworks=["torch", "jittor"], **sections)
    cfg["variants"] = variants
    return write_config(tmp_path / "v.yaml", cfg)


def test_variants_expand_into_cells_on_the_frameworks_that_offer_them(tmp_path):
    cfg = load_config(_cfg(tmp_path, [{"name": "cl", "channels_last": True},
                                      {"name": "idx", "jittor_flags": {"try_use_32bit_index": 1}},
                                      {"name": "wide", "debug_output_scale": 2.0}],
                           runner={"replicates": 2}))
    assert [(v["name"], v["frameworks"]) for v in cfg["variants"]] == [
        ("cl", ["torch"]), ("idx", ["jittor"]), ("wide", ["torch", "jittor"])]
    cells = expand_cells(cfg)
    ids = {c.cell_id for c in cells}
    assert {"torch-train-cl", "torch-sample-cl", "jittor-train-idx", "jittor-sample-idx",
            "torch-train-wide", "jittor-train-wide"} <= ids
    assert "jittor-train-cl" not in ids and "torch-train-idx" not in ids
    cl = next(c for c in cells if c.cell_id == "torch-train-cl")
    assert cl.options == {"loader": "shared", "setting": "cl"}
    # the groups of a workload take turns: round 2 runs them in the reverse order
    train = [[c.cell_id for c in cells if c.workload == "train" and c.replicate == r]
             for r in (1, 2)]
    firsts = [[cid for cid in t if cid.startswith("torch")] for t in train]
    assert firsts[1] == firsts[0][::-1]


@pytest.mark.parametrize("variant, message", [
    ({"name": "lp", "precision": "bf16", "frameworks": ["jittor"]},
     "precision bf16 is not supported"),
    ({"name": "c", "compile": "default", "frameworks": ["jittor"]},
     "framework jittor has no setting ['compile']"),
    ({"name": "f", "jittor_flags": {"use_cuda": 1}}, "not a flag a variant may set"),
    ({"name": "shared", "precision": "bf16"}, "reserved"),
    ({"name": "same"}, "changes nothing"),
    ({"name": "typo", "precison": "bf16"}, "did you mean 'precision'"),
])
def test_unsupported_or_bad_variants_exit_2_and_write_nothing(tmp_path, variant, message):
    path = _cfg(tmp_path, [variant])
    proc = harness("bench", path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "variants[0]" in proc.stderr
    assert not os.path.exists(tmp_path / "results")


def test_a_variant_no_framework_can_run_is_an_error(tmp_path):
    cfg = tiny_config(tmp_path / "results", frameworks=["jittor"])
    cfg["variants"] = [{"name": "lp", "precision": "fp16"}]
    with pytest.raises(ConfigError, match="no framework of this run can run"):
        load_config(write_config(tmp_path / "v.yaml", cfg))


# ------------------------------------------------------------------ the torch model paths

def test_torch_variant_paths_compute_the_matched_model():
    """sdpa and channels_last are the same math; bf16 autocast is close (its guard's job)."""
    import torch

    from models.common.specs import DiffusionSpec, UNetSpec
    from models.common.variants import VariantSpec
    from models.common.weights import init_weights
    from models.pt.backend import TorchBackend

    spec = UNetSpec(**TINY_MODEL)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    t = np.array([3, 40])

    def eps(**settings):
        b = TorchBackend(spec, DiffusionSpec(timesteps=50), device="cpu",
                         variant=VariantSpec(name="v", **settings))
        b.load_weights(init_weights(spec, seed=0, scheme="random"))
        return b.to_numpy(b.eps(b.to_device(x), t))

    ref = eps()
    np.testing.assert_allclose(eps(attention="sdpa"), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eps(channels_last=True), ref, rtol=1e-4, atol=1e-5)
    low = eps(precision="bf16")
    assert low.dtype == np.float32 and np.abs(low - ref).max() < 0.1 * np.abs(ref).max()


# ------------------------------------------------------------------ one real run

def _variants_config(root):
    """The one harness run of this module (tests/real_runs.py says what it holds), shared by the
    three tests at the end: the slowest thing in this module."""
    return write_config(root / "v.yaml", variants_run_config(root / "results"))


@pytest.fixture(scope="module", autouse=True)
def variants_run_started(request, tmp_path_factory):
    """Starts the real run before this module's first test, so that the quick tests above
    (config checks, harness calls that exit 2, in-process model math; none of them timed)
    run while it does; variants_run waits for it. Only when a selected test reads it."""
    module = request.module
    if not any(item.module is module and "variants_run" in item.fixturenames
               for item in request.session.items):
        yield None
        return
    root = tmp_path_factory.mktemp("variants")
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    cmd = [sys.executable, os.path.join(REPO, "harness.py"), "bench", _variants_config(root)]
    job = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=REPO)
    try:
        yield {"root": root, "cmd": cmd, "job": job, "out": out, "err": err}
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()


@pytest.fixture(scope="module")
def variants_run(variants_run_started):
    started = variants_run_started
    started["job"].wait(timeout=1500)
    started["out"].seek(0)
    started["err"].seek(0)
    proc = subprocess.CompletedProcess(started["cmd"], started["job"].returncode,
                                       started["out"].read(), started["err"].read())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = run_dirs(started["root"] / "results")
    return run_dir


@pytest.mark.slow  # the shared real run (whichever test comes first waits for it)
def test_every_supported_variant_runs_and_the_guard_judges_it(variants_run):
    frame = report_variants.variants_frame(load_run(variants_run))
    got = {(r["framework"], r["variant"]): r for _, r in frame.iterrows()}
    assert set(got) == {("torch", v) for v in ("matched", "open", "fp16", "compiled", "broken")} \
        | {("jittor", v) for v in ("matched", "idx32", "broken")}
    for key, r in got.items():
        assert r["status"] == "ok", key
        assert r["train_step_s"] > 0 and r["sample_step_s"] > 0, key
        assert np.isfinite(r["first_call_s"]) and r["peak_bytes"] > 0, key
        if key[1] == "broken":
            assert r["guard_passed"] is False and "loss off by" in r["guard_why"], key
        else:
            assert r["guard_passed"] is True, (key, r["guard_why"])
        if key[1] != "matched":
            assert r["train_speedup"] is not None and r["train_speedup"].value > 0, key
    # the broken variant is never the "best"
    best = report_variants.best_of_each(frame, "train_step_s")
    assert set(best) == {"torch", "jittor"}
    assert all(r["variant"] != "broken" for r in best.values())


@pytest.mark.slow  # the shared real run (whichever test comes first waits for it)
def test_variant_cells_stay_out_of_the_matched_tables(variants_run):
    from bench.report import tables
    run = load_run(variants_run)
    assert set(tables.training_metrics(run)["cell"]) == {"torch-train", "jittor-train"}
    assert set(tables.sampling_metrics(run)["cell"]) == {"torch-sample", "jittor-sample"}


@pytest.mark.slow  # the shared real run (whichever test comes first waits for it)
def test_report_section_with_and_without_variants(variants_run, tmp_path):
    out = tmp_path / "report"
    proc = harness("report", variants_run, "--out", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    section = md.split("## Variants", 1)[1].split("\n## ", 1)[0]
    assert "**FAIL**" in section and "Fastest passing training step per framework" in section
    assert "unverified" in section   # CPU run: the CUDA paths are marked
    run = load_run(variants_run)
    run.cells = run.cells[run.cells["setting"].isna()]
    empty = report_variants.section(run, tmp_path, "torch")
    assert [b.kind for b in empty.blocks] == ["note"] and "No variants" in empty.blocks[0].text
