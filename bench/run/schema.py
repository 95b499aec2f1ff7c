"""The config schema: every key with its type, default, constraints and documentation.

One source for three things: the defaults a config is merged onto (`defaults()`), the
checks bench/run/checks.py and config.py apply to every key, and docs/CONFIG.md's key table
(`python -m bench.run.schema` prints it; a test checks every key is documented there).
"""
import copy
import json
from dataclasses import dataclass, fields

from models.common.dit_spec import PRESETS as DIT_PRESETS
from models.common.specs import DiffusionSpec, OptimSpec, UNetSpec
from models.common.variants import ATTENTION, COMPILE_MODES, PRECISIONS, SAMPLE_LOOPS
from models.registry import FRAMEWORKS, MATH_MODES

DEFAULT_FRAMEWORKS = ("torch", "jittor")
WORKLOADS = ("train", "sample", "quality", "profile")
DATA_SOURCES = ("synthetic", "fashion_mnist", "mnist", "cifar10", "folder")
LOADERS = ("shared", "native")
SAMPLERS = ("ddpm", "ddim")
SKIP_TYPES = ("uniform", "quadratic")
# Native image shapes (H, W, C) of the fixed-size datasets: a model that does not match them is
# rejected at validation time instead of minutes later inside a worker.
DATASET_SHAPES = {"fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
# The built-in defaults are the quick model on the CPU, sized as configs/quick.yaml's model,
# data, train and sample sections: a config that sets little runs in minutes, not the hours the
# DDPM paper's CIFAR-10 UNet (UNetSpec's own defaults, 35.7M parameters) takes on a CPU. That
# model is configs/cifar10-ddpm.yaml, every key spelled out.
QUICK_MODEL = {"image_size": 16, "in_channels": 3, "base_channels": 32, "ch_mult": (1, 2, 2),
               "num_res_blocks": 1, "attn_resolutions": (8,), "dropout": 0.0, "norm_groups": 8}
QUICK_SAMPLE_RUNS = [
    {"sampler": "ddim", "steps": [10, 20], "eta": 0.0, "skip": "uniform", "variance": None},
    {"sampler": "ddpm", "steps": [50], "eta": None, "skip": "uniform",
     "variance": "fixed_large"},   # respaced to 50 steps
]
# NVML's utilisation counter is a duty cycle over 1/6-1 s: sampling faster only repeats values.
MIN_MONITOR_INTERVAL_S = 0.1


def known_frameworks():
    """The registry's framework list (importing it imports no framework)."""
    return tuple(FRAMEWORKS)


@dataclass
class Field:
    """One config leaf: its kind, default, constraints and the line docs/CONFIG.md shows."""

    kind: str  # int | float | bool | str | list | runs | variants | flags | sweep
    default: object
    doc: str
    choices: tuple = None
    minimum: float = None  # inclusive lower bound
    above: float = None  # exclusive lower bound
    nullable: bool = False
    item: "Field" = None  # element type of a list
    scalar_ok: bool = False  # a list field that also accepts one bare value
    choices_fn: object = None  # callable returning choices, for lists known only at run time
    unique: bool = False  # a list whose entries must not repeat (matrix axes)


def _spec_fields(cls, docs, defaults=None):
    """Config fields mirroring a spec dataclass (types from its defaults); `defaults` replaces
    the spec's own default of the fields it names."""
    out = {}
    for f in fields(cls):
        d = (defaults or {}).get(f.name, f.default)
        if isinstance(d, bool):
            out[f.name] = Field("bool", d, docs[f.name])
        elif isinstance(d, int):
            out[f.name] = Field("int", d, docs[f.name])
        elif isinstance(d, float):
            out[f.name] = Field("float", d, docs[f.name])
        elif isinstance(d, str):
            out[f.name] = Field("str", d, docs[f.name])
        elif isinstance(d, tuple):
            kind = "float" if d and isinstance(d[0], float) else "int"
            out[f.name] = Field("list", list(d), docs[f.name], item=Field(kind, None, ""))
        else:  # pragma: no cover - a new spec field type needs a line here
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported default {d!r}")
    return out


_UNET_DOCS = {
    "image_size": "input height = width in pixels; (unet) divisible by 2^(len(ch_mult)-1), "
                  "(dit) by patch_size",
    "in_channels": "image channels (1 grey, 3 RGB)",
    "base_channels": "(unet) channels of the first level (DDPM CIFAR-10: 128); even",
    "ch_mult": "(unet) channel multiplier per resolution level, e.g. [1, 2, 2, 2]",
    "num_res_blocks": "(unet) residual blocks per level",
    "attn_resolutions": "(unet) feature-map sizes that get self-attention, e.g. [16]",
    "dropout": "(unet) dropout probability in the residual blocks, in [0, 1)",
    "norm_groups": "(unet) GroupNorm groups; must divide every channel count",
}
# model.family (docs/DIT.md "In the harness"): which spec the `model` keys build. Each family
# owns its keys; image_size and in_channels are both's; a key of the other family is bad input.
MODEL_FAMILIES = ("unet", "dit")
SHARED_MODEL_KEYS = ("family", "image_size", "in_channels")
UNET_KEYS = tuple(k for k in _UNET_DOCS if k not in SHARED_MODEL_KEYS)
_DIT_FIELDS = {
    "preset": Field("str", None, "(dit) a named size: DiT-S/2, DiT-B/4, ... and DiT-T/2 (tiny, "
                    "for tests); sets patch_size, hidden_size, depth and num_heads, which must "
                    "then be left out; null = give them", nullable=True,
                    choices=tuple(DIT_PRESETS)),
    "patch_size": Field("int", 2, "(dit) patch side in pixels; divides image_size", minimum=1),
    "hidden_size": Field("int", 64, "(dit) token width; divisible by num_heads and by 4",
                         minimum=1),
    "depth": Field("int", 2, "(dit) transformer blocks", minimum=1),
    "num_heads": Field("int", 2, "(dit) attention heads", minimum=1),
    "mlp_ratio": Field("float", 4.0, "(dit) MLP width ÷ hidden_size", above=0.0),
    "num_classes": Field("int", 0, "(dit) classes of the label embedder; 0 = unconditional "
                         "(the benchmark draws seeded labels for a conditional model)",
                         minimum=0),
    "class_dropout": Field("float", 0.0, "(dit) training label dropout for classifier-free "
                           "guidance (adds the null class); needs num_classes > 0",
                           minimum=0.0),
    "learn_sigma": Field("bool", False, "(dit) also output the variance channels (unused by "
                         "the samplers: ε-prediction with the fixed variances)"),
}
DIT_KEYS = tuple(_DIT_FIELDS)

_DIFFUSION_DOCS = {
    "timesteps": "T, the number of diffusion steps",
    "beta_schedule": "linear | cosine | quadratic",
    "beta_start": "beta_1 of the linear/quadratic schedule",
    "beta_end": "beta_T of the linear/quadratic schedule",
    "cosine_s": "offset s of the cosine schedule (Nichol & Dhariwal)",
    "loss": "training loss on the noise prediction: l1 | l2 | huber",
    "variance": "default DDPM sampling variance: fixed_large | fixed_small",
    "clip_x0": "clip the predicted x0 to [-1, 1] while sampling",
}
_OPTIM_DOCS = {
    "lr": "Adam learning rate",
    "betas": "Adam betas [beta1, beta2]",
    "eps": "Adam epsilon",
    "warmup_steps": "linear learning-rate warm-up steps (not the benchmark warm-up: "
                    "that is train.warmup_steps)",
    "grad_clip": "global gradient-norm clip; 0 = off",
    "ema_decay": "EMA decay of the weights used for sampling; 0 = off",
}

RUN_SCHEMA = {
    "sampler": Field("str", "ddim", "ddpm (ancestral) | ddim", choices=SAMPLERS),
    "steps": Field("list", None, "denoising step counts to time; null = T (ddpm only)",
                   nullable=True, scalar_ok=True, unique=True,
                   item=Field("int", None, "", minimum=1)),
    "eta": Field("float", None, "DDIM eta (required for ddim, explicit on purpose: 0 = "
                 "deterministic); ignored by ddpm", nullable=True, minimum=0.0),
    "skip": Field("str", "uniform", "timestep selection for shortened chains: uniform | "
                  "quadratic", choices=SKIP_TYPES),
    "variance": Field("str", None, "ddpm variance: fixed_large | fixed_small; null = "
                      "diffusion.variance", nullable=True,
                      choices=("fixed_large", "fixed_small")),
}

# One entry of `variants` (docs/VARIANTS.md): a name and what it changes; every other setting
# stays the matched comparison's. Which framework offers which key: models/common/variants.py.
VARIANT_SCHEMA = {
    "name": Field("str", None, "the variant's name, in its cell ids (<framework>-<workload>-"
                  "<name>): letters, digits, _ and -"),
    "frameworks": Field("list", None, "frameworks to run it on; null = every framework of the "
                        "run that offers all its settings", nullable=True, scalar_ok=True,
                        unique=True, item=Field("str", None, ""), choices_fn=known_frameworks),
    "precision": Field("str", "fp32", "fp32 | bf16 | fp16: torch autocast (+ GradScaler for "
                       "fp16); Jittor's mixed precision (low-precision parameters, AMP level 4); "
                       "JAX: bf16 convolutions and matmuls, float32 parameters, optimizer, "
                       "normalization and softmax",
                       choices=PRECISIONS),
    "compile": Field("str", None, "torch.compile mode: default | reduce-overhead | "
                     "max-autotune; null = eager (torch only)", nullable=True,
                     choices=COMPILE_MODES),
    "channels_last": Field("bool", False, "NHWC memory format for weights and inputs (torch "
                           "only)"),
    "attention": Field("str", "bmm", "bmm (bmm + softmax, matched) | sdpa "
                       "(scaled_dot_product_attention; torch only)", choices=ATTENTION),
    "jittor_flags": Field("flags", {}, "Jittor flags to set, {flag: int}; only flags that "
                          "change no math (models/common/variants.py JITTOR_FLAGS; Jittor only)"),
    "sample_loop": Field("str", "python", "python (one compiled step per call, looped in "
                         "Python: matched) | scan (the whole sampling chain as one compiled "
                         "lax.scan; JAX only)", choices=SAMPLE_LOOPS),
    "debug_output_scale": Field("float", 1.0, "multiply the noise prediction by this: a "
                                "deliberately broken variant, for testing the quality guard",
                                above=0.0),
}

SCHEMA = {
    "name": Field("str", "run", "run name; the results folder is <timestamp>-<name>"),
    "seed": Field("int", 0, "seed for weights, data, timesteps and noise", minimum=0),
    "device": Field("str", "auto", "auto (CUDA when present) | cpu | cuda",
                    choices=("auto", "cpu", "cuda")),
    "math_mode": Field("str", "fp32", "CUDA float32 math, pinned in every framework: fp32 "
                       "(no TF32: the matched comparison) | tf32 (TF32 tensor cores: a variant, "
                       "run it as its own run); recorded in the manifest; no effect on CPU "
                       "(docs/GPU.md)", choices=MATH_MODES),
    "threads": Field("int", None, "CPU threads for every framework (OMP_NUM_THREADS and the "
                     "framework's own setting); null = the CPUs this process may use",
                     nullable=True, minimum=1),
    "frameworks": Field("list", list(DEFAULT_FRAMEWORKS), "frameworks to compare, in order: "
                        "torch | jittor | jax (each must be installed; docs/JAX.md)",
                        scalar_ok=True, item=Field("str", None, ""),
                        choices_fn=known_frameworks, unique=True),
    "workloads": Field("list", ["train", "sample"], "workloads per framework: train | sample | quality | profile",
                       scalar_ok=True, unique=True, item=Field("str", None, "", choices=WORKLOADS)),
    "model": {
        "family": Field("str", "unet", "unet (the DDPM UNet) | dit (the diffusion transformer, "
                        "docs/DIT.md); each has its own keys below, marked (unet) / (dit)",
                        choices=MODEL_FAMILIES),
        **_spec_fields(UNetSpec, _UNET_DOCS, QUICK_MODEL),
        **_DIT_FIELDS,
    },
    "diffusion": _spec_fields(DiffusionSpec, _DIFFUSION_DOCS),
    "optim": _spec_fields(OptimSpec, _OPTIM_DOCS),
    "data": {
        "source": Field("str", "synthetic", "synthetic | fashion_mnist | mnist | cifar10 | "
                        "folder (real readers live in bench/datasets.py)", choices=DATA_SOURCES),
        "path": Field("str", None, "dataset root; null = the reader's documented search "
                      "order (required for folder)", nullable=True),
        "num_samples": Field("int", 256, "images to use (synthetic: to generate); null = the "
                             "whole dataset", nullable=True, minimum=2),
        "val_fraction": Field("float", 0.125, "fraction held out for the validation loss",
                              above=0.0),
        "loader": Field("list", ["shared"], "shared (numpy batches, timesteps and noise "
                        "identical for every framework) | native (the framework's own "
                        "DataLoader/Dataset; framework noise). A list makes one train cell "
                        "per loader", scalar_ok=True, unique=True, item=Field("str", None, "",
                                                                 choices=LOADERS)),
        "num_workers": Field("int", 0, "native loader worker processes", minimum=0),
        "pin_memory": Field("bool", False, "native loader pin_memory (torch, CUDA)"),
        "persistent_workers": Field("bool", False, "native loader keeps workers between "
                                    "epochs (needs num_workers > 0)"),
        "hflip": Field("bool", False, "random horizontal flip (shared loader only)"),
    },
    "train": {
        "epochs": Field("int", 2, "benchmark epochs", minimum=1),
        "steps_per_epoch": Field("int", 15, "optimizer steps per epoch; null = one pass over "
                                 "the training split", nullable=True, minimum=1),
        "batch_size": Field("int", 8, "training batch size", minimum=1),
        "warmup_steps": Field("int", 2, "steps after iteration 0 (compile) recorded as "
                              "phase 'warmup' and left out of the statistics", minimum=0),
        "val_batches": Field("int", 2, "held-out batches for the validation loss per epoch; "
                             "0 = none", minimum=0),
        "world_size": Field("list", [1], "data-parallel ranks per train cell, a matrix axis: "
                            "[1, 2] = a 1-process cell and a 2-rank cell (<fw>-train-ws2) per "
                            "framework; batch_size is the global batch (docs/DISTRIBUTED.md)",
                            scalar_ok=True, unique=True, item=Field("int", None, "", minimum=1)),
        # `harness.py train` (real training) only:
        "total_steps": Field("int", 1000, "harness.py train: optimizer steps to train to "
                             "(--steps overrides)", minimum=1),
        "checkpoint_every": Field("int", 500, "harness.py train: checkpoint every N steps "
                                  "(and at the end); null = only at the end", nullable=True,
                                  minimum=1),
        "sample_every": Field("int", None, "harness.py train: save a DDIM sample grid of the "
                              "EMA model every N steps (and at the end); null = never",
                              nullable=True, minimum=1),
        "sample_steps": Field("int", 50, "harness.py train: DDIM steps (eta 0) for those grids",
                              minimum=1),
    },
    "sample": {
        # every key of RUN_SCHEMA spelled out: a config without sample.runs gets this whole
        "runs": Field("runs", QUICK_SAMPLE_RUNS,
                      "list of sampler settings, each {sampler, steps, eta, skip, variance}"),
        "batch_sizes": Field("list", [8], "batch sizes to time every run at", scalar_ok=True,
                             unique=True,
                             item=Field("int", None, "", minimum=1)),
        "repeats": Field("int", 2, "measured chains per (run, steps, batch size)", minimum=1),
        "warmup": Field("int", 1, "unmeasured full chains before the measured ones",
                        minimum=0),
        "ema": Field("bool", True, "sample with the EMA weights (when optim.ema_decay > 0)"),
        "cfg_scale": Field("float", None, "classifier-free guidance scale (a class-conditional "
                           "DiT with class_dropout > 0: each step runs the model on the "
                           "labels and the null class); null = none", nullable=True,
                           minimum=0.0),
    },
    "quality": {
        "sampler": Field("str", "ddim", "sampler whose samples are scored", choices=SAMPLERS),
        "steps": Field("list", [10, 50], "step counts to score (the FID-vs-steps curve)",
                       scalar_ok=True, unique=True, item=Field("int", None, "", minimum=1)),
        "eta": Field("float", 0.0, "DDIM eta (explicit: 0 = deterministic)", minimum=0.0),
        "skip": Field("str", "uniform", "DDIM timestep spacing", choices=SKIP_TYPES),
        "num_images": Field("int", 256, "samples per step count (FID is biased upward at "
                            "small N: compare only equal N)", minimum=2),
        "batch_size": Field("int", 64, "sampling batch size", minimum=1),
        "reference": Field("str", None, "reference images 'dataset[:split]'; null = "
                           "<data.source>:test", nullable=True),
        "num_reference": Field("int", 1000, "reference images (a seeded subset)", minimum=2),
        "ema": Field("bool", True, "score the EMA weights (when optim.ema_decay > 0)"),
        "checkpoint": Field("str", None, "a checkpoint (dir) whose weights the quality "
                            "cells score; null = the canonical initial weights (untrained: "
                            "only useful to test the pipeline)", nullable=True),
    },
    "profile": {
        # the profile workload (docs/REPORT.md "Where the time goes"): its own cells, since a
        # profiler perturbs timing; train and sample cells are never profiled
        "train_steps": Field("int", 10, "training steps profiled (after iteration 0 and "
                             "profile.warmup unprofiled steps, and as many timed unprofiled "
                             "ones for the overhead figure); batches as train.batch_size, "
                             "shared loader", minimum=1),
        "warmup": Field("int", 3, "unprofiled steps before the timed ones (and again with the "
                        "profiler's region marks on: Jittor compiles marked kernels anew)",
                        minimum=0),
        "sampler": Field("str", "ddpm", "sampler whose chain is profiled", choices=SAMPLERS),
        "sample_steps": Field("int", 20, "steps of the profiled sampling chain (respaced "
                              "from T, uniform spacing)", minimum=1),
        "eta": Field("float", 0.0, "DDIM eta of the profiled chain (ddim only)", minimum=0.0),
        "sample_batch_size": Field("int", 8, "batch of the profiled sampling chain", minimum=1),
        "native": Field("str", "auto", "sample the profiled steps' machine code with Linux "
                        "perf as well, to split the framework overhead into executor, memory "
                        "allocation, Python, ... (auto: when perf works here, else the report "
                        "says why; off: never)", choices=("auto", "off")),
        "native_hz": Field("int", 999, "perf's sampling frequency (samples per second of "
                           "on-CPU time per thread)", minimum=10),
    },
    "variants": Field("variants", [], "named settings per framework (precision, compilation, "
                      "...), each run as its own train/sample cells beside the matched ones; "
                      "entries {name, frameworks, precision, compile, channels_last, attention, "
                      "jittor_flags, sample_loop, debug_output_scale} (docs/VARIANTS.md)"),
    "sweep": Field("sweep", [], "named points, each overriding model / train / sample / "
                   "profile / data keys (and runner.timeout_s), run as their own cells "
                   "beside the frameworks; or {product: {dotted.key: [values]}} "
                   "(docs/CONFIG.md \"Sweeps\"); [] = no sweep"),
    "variant_guard": {
        # the quality guard of the variants (docs/VARIANTS.md): runs only when variants are
        # configured, after each train (else sample) cell's workload
        "train_steps": Field("int", 10, "training steps from seeded random weights whose "
                             "losses are compared with the matched cell's", minimum=1),
        "loss_rtol": Field("float", 0.02, "a variant passes when every one of those losses "
                           "is within this relative tolerance of the matched cell's",
                           above=0.0),
        "sample_steps": Field("int", 10, "steps of the guard's deterministic DDIM chain "
                              "(eta 0) from a seeded x_T", minimum=1),
        "sample_batch_size": Field("int", 8, "images in that chain", minimum=1),
        "sample_atol": Field("float", 0.02, "a variant passes when the chain's output "
                             "mean and std are each within this of the matched cell's",
                             above=0.0),
    },
    "distributed": {
        # data-parallel train cells (train.world_size > 1; docs/DISTRIBUTED.md)
        "threads_per_rank": Field("int", None, "CPU threads of each rank; null = threads / "
                                  "world size (at least 1)", nullable=True, minimum=1),
        "master_addr": Field("str", "127.0.0.1", "torchrun --master-addr: rank 0's host"),
        "master_port": Field("int", None, "torchrun --master-port; null = a free local port "
                             "(one node)", nullable=True, minimum=1),
        "nnodes": Field("int", 1, "torchrun --nnodes (ranks per node = world size / nnodes); "
                        "under --executor slurm the nodes a data-parallel job asks for",
                        minimum=1),
        "node_rank": Field("int", 0, "torchrun --node-rank of this machine (by hand; Slurm "
                           "sets it)", minimum=0),
        "mpirun_hosts": Field("str", None, "mpirun -H (e.g. 'a:1,b:1'); null = this machine "
                              "(or, under Slurm, the job's nodes)", nullable=True),
    },
    "monitor": {
        "enabled": Field("bool", True, "sample the cell process (psutil, NVML) from the parent"),
        "interval_s": Field("float", 0.5, "sampling interval; >= 0.1 (NVML utilisation is a "
                            "1/6-1 s duty cycle)", minimum=MIN_MONITOR_INTERVAL_S),
    },
    "runner": {
        "replicates": Field("int", 3, "independent processes per cell, frameworks interleaved "
                            "in a balanced order; intervals and verdicts are over these "
                            "(>= 3 for an interval, see docs/STATISTICS.md)", minimum=1),
        "timeout_s": Field("float", 1800.0, "wall-clock limit per cell (per replicate)",
                           above=0.0),
        "results_dir": Field("str", "results", "where run folders are created"),
        "slots": Field("slots", 1, "cells run side by side, each on its own cores (and GPU): "
                       "1 = one at a time; N; auto = one per visible GPU, or on a CPU as many "
                       "sets of `threads` cores as fit (docs/CLUSTER.md)"),
        "peak_matmul_n": Field("int", 2048, "train/sample cells time an n x n float32 matmul "
                               "at start: the measured peak their GFLOP/s is a fraction of "
                               "(~1 s on 2 cores); 0 = skip (no % of peak)", minimum=0),
    },
    "slurm": {   # harness.py bench --executor slurm (docs/CLUSTER.md); flags override these
        "partition": Field("str", None, "the partition to submit to (null: the cluster's "
                           "default)", nullable=True),
        "time_limit_min": Field("int", 60, "each job's time limit in minutes (a job is one "
                                "sweep point, or the whole run without a sweep)", minimum=1),
        "gpus_per_node": Field("int", 0, "GPUs each job asks for (0: none, or 1 when device is "
                               "cuda)", minimum=0),
        "account": Field("str", None, "the account jobs are charged to", nullable=True),
    },
    "debug": {
        "inject_delay_s": Field("float", 0.0, "known sleep added inside every train "
                                "step's compute and every sampling step (the regression "
                                "gate's slowdown knob)", minimum=0.0),
        "raise_in": Field("list", [], "cell-id globs whose worker raises on start (tests the "
                          "failure path)", scalar_ok=True, item=Field("str", None, "")),
        "fail_rank": Field("int", None, "this rank of every train cell fails at "
                           "fail_at_step (tests the data-parallel fault path); null = none",
                           nullable=True, minimum=0),
        "fail_mode": Field("str", "raise", "how fail_rank fails: raise | hang",
                           choices=("raise", "hang")),
        "fail_at_step": Field("int", 1, "the training step at which fail_rank fails",
                              minimum=0),
        "save_final_weights": Field("bool", False, "train cells write rank 0's final weights "
                                    "to final_weights.npz (the data-parallel parity test)"),
    },
}


def defaults():
    """The fully resolved default config."""
    def walk(schema):
        return {k: (walk(v) if isinstance(v, dict) else copy.deepcopy(v.default))
                for k, v in schema.items()}
    return walk(SCHEMA)


def schema_keys(schema=SCHEMA, prefix=""):
    """Every dotted key with its Field, in schema order (docs and tests use this)."""
    out = []
    for k, v in schema.items():
        if isinstance(v, dict):
            out += schema_keys(v, f"{prefix}{k}.")
        else:
            out.append((prefix + k, v))
            if v.kind == "runs":
                out += [(f"{prefix}{k}[].{rk}", rv) for rk, rv in RUN_SCHEMA.items()]
            if v.kind == "variants":
                out += [(f"{prefix}{k}[].{rk}", rv) for rk, rv in VARIANT_SCHEMA.items()]
    return out


def _type_name(f):
    names = {"int": "an integer", "float": "a number", "bool": "true or false",
             "str": "a string", "runs": "a list of mappings",
             "variants": "a list of mappings", "flags": "a mapping",
             "sweep": "a list of points or {product: ...}",
             "slots": "an integer >= 1 or auto"}
    if f.kind == "list":
        plural = {"int": "integers", "float": "numbers", "str": "strings"}[f.item.kind]
        return f"a list of {plural}" + (" (or one value)" if f.scalar_ok else "")
    return names[f.kind]


def markdown_table():
    """The key reference table of docs/CONFIG.md: `python -m bench.run.schema` prints it."""
    def show(v):
        return json.dumps(v)

    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, f in schema_keys():
        kind = _type_name(f) + (" or null" if f.nullable else "")
        if f.choices:
            kind = " \\| ".join(map(str, f.choices)) + (" or null" if f.nullable else "")
        default = "(see below)" if f.kind == "runs" else \
            "required" if key.endswith("[].name") else f"`{show(f.default)}`"
        lines.append(f"| `{key}` | {kind} | {default} | {f.doc.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
