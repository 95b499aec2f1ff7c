"""What a new user meets first: minimal configs, -h on every command, make clean.

Found by trying the project as a new user would (issue "Found when tried as a new user
would"): an empty config or one without sample.runs died with a traceback, `harness.py
sample --help` failed, `make clean` deleted the committed reference reports. An empty config
file is now one line of bad input (tests/test_config.py), no longer a run of the defaults.
"""
import os
import shutil
import subprocess

import pytest
import yaml

from bench.run import config as C
from bench.run.matrix import expand_cells
from tests.conftest import REPO, TINY_MODEL, harness, run_dirs


@pytest.mark.parametrize("text", ["name: minimal\n",
                                  "name: m\nframeworks: [torch]\nworkloads: [sample]\n",
                                  "name: m\nframeworks: [jittor]\nworkloads: [train]\n",
                                  "sample: {batch_sizes: [2]}\n"])
def test_minimal_configs_are_complete_after_loading(tmp_path, text):
    """Every nested key gets its default, each sample.runs entry included."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cfg = C.load_config(str(path), check_paths=False)
    for run in cfg["sample"]["runs"]:
        assert set(run) == {"sampler", "steps", "eta", "skip", "variance"}
    assert expand_cells(cfg)


def test_a_config_without_a_name_is_named_after_the_file(tmp_path):
    path = tmp_path / "unnamed.yaml"
    path.write_text("seed: 3\n")
    proc = harness("bench", path, "--only", "no-such-cell", "--results-dir", tmp_path / "r")
    # validated (no traceback): the only complaint is the glob, exit 2, nothing written
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--only no-such-cell: matches no cell" in lines[0]
    assert "Traceback" not in proc.stderr and not os.path.exists(tmp_path / "r")
    assert C.load_config(str(path), check_paths=False)["name"] == "unnamed"


def test_required_keys_still_give_the_exit_2_message(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"sample": {"runs": [{"sampler": "ddim", "steps": [5]}]}}))
    proc = harness("bench", path)
    assert proc.returncode == 2 and "sample.runs[0].eta: required for ddim" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("workload", ["sample", "train"])
def test_a_minimal_config_per_workload_runs(tmp_path, workload):
    """Only name, frameworks and workloads in the file (no sample.runs, no train section);
    --set shrinks the model so the test is quick. It runs, no traceback."""
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "m", "frameworks": ["torch"],
                                    "workloads": [workload]}))
    small = ["--set", f"model={yaml.safe_dump(TINY_MODEL, default_flow_style=True).strip()}",
             "--set", "diffusion.timesteps=50", "--set", "runner.replicates=1",
             "--set", "data.num_samples=24", "--set", "train.steps_per_epoch=3",
             "--set", "sample.repeats=1", "--set", "sample.batch_sizes=[2]",
             "--results-dir", str(tmp_path / "r"), "--quiet"]
    proc = harness("bench", path, *small, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(run_dirs(tmp_path / "r")) == 1


def _subcommands():
    import harness as H

    return [add.__name__[len("add_"):].replace("_", "-") for add in H.SUBCOMMANDS]


@pytest.mark.parametrize("command", _subcommands())
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_subcommand_answers_help(command, flag):
    proc = harness(command, flag, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usage:" in proc.stdout.lower() and proc.stderr == ""


def test_make_clean_keeps_the_reference_reports(tmp_path):
    """make clean in a copy of the Makefile and reports/ layout: generated reports go, the
    committed reports/reference/ stays."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(os.path.join(REPO, "Makefile"), tmp_path / "Makefile")
    (tmp_path / "reports" / "reference" / "x").mkdir(parents=True)
    (tmp_path / "reports" / "reference" / "x" / "report.md").write_text("keep")
    (tmp_path / "reports" / "20260101-run").mkdir()
    (tmp_path / "reports" / "README.md").write_text("keep too")
    (tmp_path / "results" / "run").mkdir(parents=True)
    proc = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "reports" / "reference" / "x" / "report.md").read_text() == "keep"
    assert (tmp_path / "reports" / "README.md").exists()
    assert not (tmp_path / "reports" / "20260101-run").exists()
    assert not (tmp_path / "results").exists()
