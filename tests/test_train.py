"""`harness.py train`: checkpoints round-trip, and resuming continues exactly.

A test trains 4 steps straight vs 2 + resume + 2 in each framework (each in its own process,
through the real training entry point) and compares parameters, EMA and Adam state.
Dropout is on, so the framework RNG must be restored too.
"""
import os

import numpy as np
import pytest
import yaml

from bench.run.checkpoint import read_checkpoint
from bench.run.config import load_config
from bench.records.results import read_records
from bench.tasks.train import cell_dir, run_training

TINY = {
    "name": "tiny-train",
    "seed": 5,
    "device": "cpu",
    "threads": 1,
    "workloads": ["train"],
    "model": {"image_size": 8, "in_channels": 1, "base_channels": 8, "ch_mult": [1, 2],
              "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.1, "norm_groups": 4},
    "diffusion": {"timesteps": 50},
    "optim": {"lr": 0.001, "warmup_steps": 2, "grad_clip": 1.0, "ema_decay": 0.9},
    "data": {"source": "synthetic", "num_samples": 40, "val_fraction": 0.2},
    "train": {"batch_size": 4, "steps_per_epoch": 2, "val_batches": 1, "checkpoint_every": 2,
              "total_steps": 4, "sample_every": 4, "sample_steps": 5},
    "runner": {"peak_matmul_n": 128},
}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return load_config(str(path))


@pytest.mark.parametrize("framework", ["torch", "jittor", "jax"])
def test_resume_continues_identically(cfg, tmp_path, framework):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert run_training(cfg, straight, [framework], 4) == {framework: 0}
    assert run_training(cfg, split, [framework], 2) == {framework: 0}
    assert run_training(cfg, split, [framework], 4, resume=True) == {framework: 0}

    a = read_checkpoint(os.path.join(cell_dir(straight, framework), "checkpoints"))
    b = read_checkpoint(os.path.join(cell_dir(split, framework), "checkpoints"))
    assert a["state"]["step"] == b["state"]["step"] == 4
    for part in ("weights", "ema", "optimizer"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            np.testing.assert_allclose(b[part][k], a[part][k], rtol=1e-6, atol=1e-9,
                                       err_msg=f"{framework} {part} {k}")
    # the model really trained: weights moved away from the step-2 checkpoint
    mid = read_checkpoint(os.path.join(cell_dir(split, framework), "checkpoints", "ckpt-00000002"))
    assert any(not np.allclose(mid["weights"][k], a["weights"][k]) for k in a["weights"])

    # the resumed log has each step once, 1..4, with the same losses as the straight run
    def losses(run):
        recs, _ = read_records(os.path.join(cell_dir(run, framework), "events.jsonl"))
        return [(r["step"], r["loss"]) for r in recs if r["type"] == "step"]
    assert [s for s, _ in losses(split)] == [1, 2, 3, 4]
    np.testing.assert_allclose([l for _, l in losses(split)], [l for _, l in losses(straight)],
                               rtol=1e-6)
    grid = os.path.join(cell_dir(split, framework), "samples", "step-00000004.png")
    assert os.path.getsize(grid) > 0

    # like a benchmark cell: the process monitor's samples, a memory record per training
    # process, and epoch records with their start time (the report's memory, utilisation
    # and energy windows)
    recs, _ = read_records(os.path.join(cell_dir(split, framework), "events.jsonl"))
    assert [r["flops_per_step"] > 0 for r in recs if r["type"] == "train_info"] == [True] * 2
    assert [r["peak_gflops"] > 0 for r in recs if r["type"] == "peak"] == [True] * 2
    memory = [r for r in recs if r["type"] == "memory"]
    assert len(memory) == 2 and all(r["peak_rss_bytes"] > 0 for r in memory)
    epochs = [r for r in recs if r["type"] == "epoch"]
    assert len(epochs) == 2 and all(e["t_start"] <= e["t_wall"] for e in epochs)
    monitor, _ = read_records(os.path.join(cell_dir(split, framework), "monitor.jsonl"))
    # (a sample taken as a process exits may read 0: the process is what matters, not each one)
    assert max(m["rss_bytes"] or 0 for m in monitor if m["type"] == "monitor") > 0


def test_checkpoint_without_state_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint here"):
        read_checkpoint(str(tmp_path))
