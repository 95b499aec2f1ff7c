"""The configs of the tests' real harness runs, in one place, as plain dicts (no pytest).

The tests build their runs from these functions, and setup runs the Jittor cells of the
shared ones once (tools/warm_jittor.py --runs, WARM_RUNS below). Jittor keys its fused kernels
by op graph and shape traits (batch 2 or 4, one input channel, one level, the DiT's patch grid,
the optimizer, profiling, two MPI ranks), so every run shape brings kernels of its own: without
this a fresh clone compiled ~140 of them inside the tests, on the one compile thread the tests
allow (tests/conftest.py), ~2 minutes of the suite. A test that changes its run's config here
changes what setup warms with it (this file is part of setup's stamp)."""
from tests.tiny_models import TINY_DIT, TINY_MODEL


def tiny_config(results_dir, **sections):
    """A complete, fast config; keyword sections are merged one level deep."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "threads": 2,
        "frameworks": ["torch"],
        "workloads": ["train", "sample"],
        "model": dict(TINY_MODEL),
        "diffusion": {"timesteps": 50},
        "optim": {"warmup_steps": 10},
        "data": {"source": "synthetic", "num_samples": 40, "val_fraction": 0.2},
        "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "warmup_steps": 1,
                  "val_batches": 1},
        "sample": {"runs": [{"sampler": "ddim", "steps": [2], "eta": 0.0},
                            {"sampler": "ddpm", "steps": [3]}],
                   "batch_sizes": [2], "repeats": 2, "warmup": 1},
        "monitor": {"enabled": True, "interval_s": 0.1},
        # one process per cell: these tests check mechanics, not re-run statistics (the
        # replicate tests set more)
        "runner": {"timeout_s": 900, "results_dir": str(results_dir), "replicates": 1,
                   # the measured-peak mechanics, without the 2048^3 default's second a cell
                   "peak_matmul_n": 256},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def dit_run_config(results_dir):
    """tests/test_dit_harness.py's real run: the tiny class-conditional DiT trained, sampled
    with guidance and profiled in both frameworks."""
    cfg = tiny_config(results_dir, frameworks=["torch", "jittor"],
                      workloads=["train", "sample", "profile"],
                      sample={"runs": [{"sampler": "ddim", "steps": [3], "eta": 0.0}],
                              "batch_sizes": [2], "repeats": 1, "warmup": 1,
                              "cfg_scale": 2.0},
                      profile={"train_steps": 2, "warmup": 1, "sample_steps": 2,
                               "sample_batch_size": 2, "native": "off"})
    cfg["model"] = dict(TINY_DIT)
    return cfg


def profile_run_config(results_dir):
    """tests/test_profile.py's real run: every framework's profile workload."""
    cfg = tiny_config(results_dir, name="profile", frameworks=["torch", "jittor", "jax"],
                      workloads=["profile"],
                      profile={"train_steps": 3, "warmup": 1, "sampler": "ddpm",
                               "sample_steps": 3, "sample_batch_size": 2,
                               # ~5 samples a ms of on-CPU time: every class of a tiny step
                               # is seen
                               "native_hz": 4999})
    cfg["train"]["batch_size"] = 4
    return cfg


def variants_run_config(results_dir):
    """tests/test_variants.py's one real run: 16 processes (the train and sample cell of each
    framework's matched comparison and of each variant). Every size is the least that still
    exercises a path: one epoch of 3 steps (compile, warm-up, one measured step: a median and a
    speed-up), one 2-step DDIM chain, a guard of 2 training steps and a 2-step chain of 2
    images, no validation pass, no peak-matmul timing (none of it is what these tests read),
    one thread (two OpenMP threads on two cores that others also use can spin-wait a tiny step
    into seconds). The compiled variant is still compiled, in both its cells; each variant
    still gets both. The model is the tiny UNet at one level (attention included):
    torch.compile's cold compile of the two-level one cost ~90 s on a fresh machine (its
    inductor cache empty), this one ~60."""
    cfg = tiny_config(results_dir, name="variants", frameworks=["torch", "jittor"],
                      model={"ch_mult": [1], "attn_resolutions": [8]},
                      train={"epochs": 1, "steps_per_epoch": 3, "batch_size": 4,
                             "warmup_steps": 1, "val_batches": 0},
                      sample={"runs": [{"sampler": "ddim", "steps": [2], "eta": 0.0}],
                              "batch_sizes": [2], "repeats": 1, "warmup": 1},
                      variant_guard={"train_steps": 2, "sample_steps": 2,
                                     "sample_batch_size": 2},
                      runner={"peak_matmul_n": 0}, threads=1)
    cfg["monitor"] = {"enabled": False}
    cfg["variants"] = [
        # every torch path this CPU runs, bf16 + channels_last + sdpa in one variant
        {"name": "open", "precision": "bf16", "channels_last": True, "attention": "sdpa"},
        {"name": "fp16", "precision": "fp16", "frameworks": ["torch"]},   # + GradScaler
        {"name": "compiled", "compile": "default"},
        {"name": "idx32", "jittor_flags": {"try_use_32bit_index": 1}},
        {"name": "broken", "debug_output_scale": 3.0},
    ]
    return cfg


def dp_config(results_dir, **sections):
    """tests/test_distributed.py's configs: tiny_config without the monitor."""
    cfg = tiny_config(results_dir, name="dp", **sections)
    cfg["monitor"] = {"enabled": False}
    return cfg


def data_parallel_config(results_dir, frameworks=("torch", "jittor")):
    """tests/test_distributed.py's real 2-rank run: each framework's single-process training
    cell and its 2-rank cell (Jittor's needs Open MPI)."""
    return dp_config(results_dir, frameworks=list(frameworks), workloads=["train"],
                     train={"epochs": 1, "steps_per_epoch": 4, "batch_size": 4,
                            "warmup_steps": 1, "val_batches": 1, "world_size": [1, 2]},
                     debug={"save_final_weights": True})


# What setup runs of them (tools/warm_jittor.py --runs): (name, config function, the cells to
# run, whether it needs Open MPI). Jittor's cells compile Jittor's kernels; the compiled
# variant's torch cells fill torch.compile's inductor cache (its C++ compile: ~1 minute on 2
# cores, once per machine). The 2-rank run only where Open MPI is installed (Jittor's ranks).
WARM_RUNS = (
    ("DiT run", dit_run_config, ["jittor-*"], False),
    ("profile run", profile_run_config, ["jittor-*"], False),
    ("variants run", variants_run_config, ["jittor-*", "torch-*-compiled"], False),
    ("data-parallel run", data_parallel_config, ["jittor-*"], True),
)
