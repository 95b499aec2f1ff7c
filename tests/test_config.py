"""Config validation: every kind of bad input is one line, exit 2, and nothing written."""
import glob
import os
import subprocess
import sys

import pytest

from bench.run import config as C
from bench.run import matrix as M
from bench.run import schema as S
from tests.conftest import REPO, harness, tiny_config, write_config


def _load(tmp_path, cfg, overrides=()):
    return C.load_config(write_config(tmp_path / "c.yaml", cfg), overrides)


def _error(tmp_path, cfg, overrides=()):
    with pytest.raises(C.ConfigError) as e:
        _load(tmp_path, cfg, overrides)
    msg = str(e.value)
    assert "\n" not in msg, "errors are one line"
    return msg


def test_tiny_config_resolves_with_defaults(tmp_path):
    cfg = _load(tmp_path, tiny_config(tmp_path / "r"))
    assert cfg["train"]["batch_size"] == 4
    assert cfg["optim"]["grad_clip"] == 1.0  # default filled in
    assert cfg["data"]["loader"] == ["shared"]  # scalar default normalised to a list
    assert cfg["sample"]["runs"][1]["skip"] == "uniform"
    assert [c.cell_id for c in M.expand_cells(cfg)] == ["torch-train", "torch-sample"]
    assert C.config_hash(cfg) == C.config_hash(_load(tmp_path, tiny_config(tmp_path / "r")))


def test_unknown_key_suggests_nearest(tmp_path):
    cfg = tiny_config(tmp_path / "r")
    cfg["train"]["batchsize"] = 4
    msg = _error(tmp_path, cfg)
    assert "c.yaml:train.batchsize" in msg and "did you mean 'batch_size'" in msg
    cfg = tiny_config(tmp_path / "r")
    cfg["trian"] = {}
    assert "did you mean 'train'" in _error(tmp_path, cfg)


def test_wrong_type_names_key_and_type(tmp_path):
    msg = _error(tmp_path, tiny_config(tmp_path / "r", train={"batch_size": "eight"}))
    assert "train.batch_size" in msg and "expected an integer" in msg
    msg = _error(tmp_path, tiny_config(tmp_path / "r", monitor={"enabled": "yes please"}))
    assert "monitor.enabled" in msg and "true or false" in msg


@pytest.mark.parametrize("section,key,value", [
    ("train", "batch_size", 0), ("train", "batch_size", -3), ("sample", "batch_sizes", [4, 0])])
def test_batch_size_must_be_positive(tmp_path, section, key, value):
    msg = _error(tmp_path, tiny_config(tmp_path / "r", **{section: {key: value}}))
    assert key in msg and ">= 1" in msg


def test_ddim_steps_beyond_T_rejected(tmp_path):
    cfg = tiny_config(tmp_path / "r", sample={"runs": [{"sampler": "ddim", "steps": [10, 51],
                                                        "eta": 0.0}]})
    msg = _error(tmp_path, cfg)
    assert "sample.runs[0].steps" in msg and "T=50" in msg


def test_ddim_eta_must_be_explicit(tmp_path):
    cfg = tiny_config(tmp_path / "r", sample={"runs": [{"sampler": "ddim", "steps": [10]}]})
    assert "sample.runs[0].eta" in _error(tmp_path, cfg)


def test_unknown_framework_and_workload(tmp_path):
    msg = _error(tmp_path, tiny_config(tmp_path / "r", frameworks=["torch", "tensorflow"]))
    assert "frameworks[1]" in msg and "'jittor'" in msg
    msg = _error(tmp_path, tiny_config(tmp_path / "r", workloads=["train", "infer"]))
    assert "workloads[1]" in msg and "sample" in msg


def test_model_spec_errors_name_the_config_key(tmp_path):
    msg = _error(tmp_path, tiny_config(tmp_path / "r", model={"image_size": 9}))
    assert "model.image_size" in msg and "divisible" in msg
    msg = _error(tmp_path, tiny_config(tmp_path / "r", model={"attn_resolutions": [3]}))
    assert "model.attn_resolutions" in msg


def test_dataset_shape_and_path_checked(tmp_path):
    msg = _error(tmp_path, tiny_config(tmp_path / "r", data={"source": "cifar10"}))
    assert "cifar10 images are 32x32x3" in msg
    cfg = tiny_config(tmp_path / "r", model={"image_size": 28, "ch_mult": [1, 2],
                                             "attn_resolutions": [14]},
                      data={"source": "fashion_mnist", "path": str(tmp_path / "nowhere")})
    msg = _error(tmp_path, cfg)
    assert "data.path" in msg and "does not exist" in msg
    assert "data.path" in _error(tmp_path, tiny_config(tmp_path / "r",
                                                       data={"source": "folder"}))


def test_results_dir_must_be_a_writable_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    msg = _error(tmp_path, tiny_config(blocker / "results"))
    assert "runner.results_dir" in msg and "not a folder" in msg


def test_overrides_parse_yaml_scalars_and_check_types(tmp_path):
    cfg = _load(tmp_path, tiny_config(tmp_path / "r"),
                ["train.batch_size=2", "frameworks=[torch, jittor]", "monitor.enabled=false",
                 "debug.inject_delay_s=0.05"])
    assert cfg["train"]["batch_size"] == 2 and cfg["frameworks"] == ["torch", "jittor"]
    assert cfg["monitor"]["enabled"] is False and cfg["debug"]["inject_delay_s"] == 0.05
    assert "KEY=VALUE" in _error(tmp_path, tiny_config(tmp_path / "r"), ["train.batch_size"])
    msg = _error(tmp_path, tiny_config(tmp_path / "r"), ["train.bach_size=2"])
    assert "did you mean 'batch_size'" in msg
    msg = _error(tmp_path, tiny_config(tmp_path / "r"), ["train.batch_size=big"])
    assert "--set train.batch_size=big" in msg and "expected an integer" in msg
    assert "not valid YAML" in _error(tmp_path, tiny_config(tmp_path / "r"), ["frameworks=[a"])


def test_measured_steps_must_remain(tmp_path):
    msg = _error(tmp_path, tiny_config(tmp_path / "r", train={"epochs": 1, "steps_per_epoch": 2,
                                                              "warmup_steps": 1}))
    assert "nothing to measure" in msg


def test_only_glob_selects_cells(tmp_path):
    cfg = _load(tmp_path, tiny_config(tmp_path / "r", frameworks=["torch", "jittor"]))
    cells = M.select_cells(M.expand_cells(cfg), ["*-sample"])
    assert [c.cell_id for c in cells] == ["torch-sample", "jittor-sample"]
    with pytest.raises(C.ConfigError, match="matches no cell"):
        M.select_cells(M.expand_cells(cfg), ["mxnet-*"])


def test_loader_list_makes_variants(tmp_path):
    cfg = _load(tmp_path, tiny_config(tmp_path / "r", data={"loader": ["shared", "native"]}))
    assert [c.cell_id for c in M.expand_cells(cfg)] == [
        "torch-train-shared", "torch-train-native", "torch-sample"]


# ------------------------------------------------------------------ through the real CLI

BAD_INPUTS = {
    "unknown_key": ({"trian": {}}, [], "did you mean 'train'"),
    "bad_type": ({"seed": "zero"}, [], "seed: expected an integer"),
    "batch_zero": ({"train": {"batch_size": 0}}, [], "train.batch_size"),
    "ddim_beyond_T": ({"sample": {"runs": [{"sampler": "ddim", "steps": [99], "eta": 0}]}}, [],
                      "T=50"),
    "unknown_framework": ({"frameworks": ["mxnet"]}, [], "frameworks[0]"),
    "unknown_workload": ({"workloads": ["fid"]}, [], "workloads[0]"),
    "bad_set": ({}, ["--set", "train.epochs"], "KEY=VALUE"),
    "bad_set_type": ({}, ["--set", "train.epochs=many"], "expected an integer"),
    "missing_dataset": ({"data": {"source": "folder", "path": "/nonexistent/images"}}, [],
                        "does not exist"),
    "bad_only": ({}, ["--only", "nothing-*"], "matches no cell"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, case):
    patch, extra, expect = BAD_INPUTS[case]
    cfg = tiny_config(tmp_path / "results")
    for k, v in patch.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    path = write_config(tmp_path / "bad.yaml", cfg)
    proc = harness("bench", path, *extra, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / "results")


def test_cli_malformed_yaml_and_unwritable_results(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 2\nmodel: [\n")
    proc = harness("bench", bad, timeout=60)
    assert proc.returncode == 2 and "malformed YAML" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = write_config(tmp_path / "ok.yaml", tiny_config(tmp_path / "unused"))
    proc = harness("bench", path, "--results-dir", blocker / "results", timeout=60)
    assert proc.returncode == 2 and "runner.results_dir" in proc.stderr
    assert blocker.read_text() == "x" and not os.path.exists(tmp_path / "unused")


@pytest.mark.parametrize("text", ["", "# only comments\n\n   \n  # and blank lines\n"],
                         ids=["zero-byte", "comment-only"])
def test_cli_empty_config_exits_2_and_writes_nothing(tmp_path, text):
    """An empty file is a slip, not a request for the defaults: one line naming the file,
    saying it is empty and which config to start from; no results folder is made (the
    harness runs where the default runner.results_dir, results/, would land)."""
    work = tmp_path / "cwd"
    work.mkdir()
    path = work / "empty.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "harness.py"), "bench",
                           "empty.yaml"], capture_output=True, text=True, timeout=60, cwd=work)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: empty.yaml: ") and "is empty" in lines[0]
    assert "start from configs/quick.yaml" in lines[0]
    assert proc.stdout == "" and sorted(os.listdir(work)) == ["empty.yaml"]
    with pytest.raises(C.ConfigError, match="is empty"):
        C.load_config(str(path), check_paths=False)


def test_name_only_config_runs_on_the_quick_defaults(tmp_path):
    """`name: x` alone still loads (the defaults stay usable on purpose), and the defaults are
    configs/quick.yaml's model, train, sample and data sizes: minutes on a CPU, not hours."""
    from models.common.weights import count_params

    path = tmp_path / "x.yaml"
    path.write_text("name: x\n")
    cfg = C.load_config(str(path), check_paths=False)
    quick = C.load_config(os.path.join(REPO, "configs", "quick.yaml"), check_paths=False)
    assert cfg["name"] == "x"
    for section in ("model", "train", "sample"):
        assert cfg[section] == quick[section], section
    for key in ("source", "num_samples", "val_fraction"):
        assert cfg["data"][key] == quick["data"][key], key
    assert cfg == {**S.defaults(), "name": "x"}
    unet, _, _ = C.build_specs(cfg)
    assert round(count_params(unet) / 1e6, 1) == 1.1      # not the paper's 35.7M
    assert sorted({c.cell_id for c in M.expand_cells(cfg)}) == [
        "jittor-sample", "jittor-train", "torch-sample", "torch-train"]
    # and the CLI accepts it: the only complaint here is the glob, nothing written
    proc = harness("bench", path, "--only", "no-such-cell", "--results-dir", tmp_path / "r",
                   timeout=60)
    assert proc.returncode == 2 and "--only no-such-cell: matches no cell" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "r")


# ------------------------------------------------------------------ shipped configs and docs

@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))))
def test_shipped_configs_validate(path):
    cfg = C.load_config(path, check_paths=False)
    assert M.expand_cells(cfg)


def test_cifar10_config_is_the_ddpm_paper_model():
    from models.common.weights import count_params

    cfg = C.load_config(os.path.join(REPO, "configs", "cifar10-ddpm.yaml"), check_paths=False)
    unet, diffusion, optim = C.build_specs(cfg)
    assert round(count_params(unet) / 1e6, 1) == 35.7
    assert (cfg["train"]["batch_size"], optim.lr, optim.warmup_steps, optim.grad_clip,
            optim.ema_decay, unet.dropout) == (128, 2e-4, 5000, 1.0, 0.9999, 0.1)
    assert (diffusion.timesteps, diffusion.beta_schedule, diffusion.beta_start,
            diffusion.beta_end) == (1000, "linear", 1e-4, 0.02)


def test_every_config_key_is_documented():
    with open(os.path.join(REPO, "docs", "CONFIG.md")) as f:
        doc = f.read()
    missing = [k for k, _ in S.schema_keys() if f"`{k}`" not in doc]
    assert not missing, f"docs/CONFIG.md lacks {missing}"


def test_a_framework_that_is_not_installed_is_refused(tmp_path, monkeypatch):
    """A config naming a framework whose package is missing here: one line naming the key,
    the missing framework and the installed ones (exit 2 via ConfigError)."""
    from models import registry

    monkeypatch.setitem(registry.BACKENDS, "jax", ("models.jx.backend", "no_such_package_xyz"))
    msg = _error(tmp_path, tiny_config(tmp_path / "r", frameworks=["torch", "jax"]))
    assert "frameworks: ['jax'] not installed" in msg and "'torch'" in msg, msg
    assert "installed: ['torch', 'jittor']" in msg, msg


def test_an_unknown_framework_names_the_valid_ones(tmp_path):
    msg = _error(tmp_path, tiny_config(tmp_path / "r", frameworks=["torch", "tensorflow"]))
    assert "frameworks" in msg and "tensorflow" in msg and "'jax'" in msg, msg


def test_a_workload_a_framework_does_not_run_is_refused(tmp_path, monkeypatch):
    from models import registry

    monkeypatch.setitem(registry.UNAVAILABLE, "jax", {"profile": "not built (test)"})
    msg = _error(tmp_path, tiny_config(tmp_path / "r", frameworks=["torch", "jax"],
                                       workloads=["train", "profile"]))
    assert msg.endswith("c.yaml:workloads: profile does not run on jax: not built (test)"), msg


def test_data_parallel_with_a_framework_that_lacks_it_is_refused(tmp_path, monkeypatch):
    from models import registry

    monkeypatch.setitem(registry.UNAVAILABLE, "jax", {"data-parallel": "not here (test)"})
    msg = _error(tmp_path, tiny_config(tmp_path / "r", frameworks=["torch", "jax"],
                                       train={"world_size": [1, 2]}))
    assert "train.world_size: jax: not here (test)" in msg, msg


def test_jax_sampling_without_a_warm_up_chain_is_refused(tmp_path):
    msg = _error(tmp_path, tiny_config(tmp_path / "r", frameworks=["torch", "jax"],
                                       sample={"warmup": 0}))
    assert "sample.warmup: 0 would put jax's compile of its sampling step inside the first " \
        "measured chain" in msg, msg
