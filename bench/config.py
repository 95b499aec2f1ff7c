"""Benchmark configs: one schema, YAML in, a resolved plain dict out, and the cell matrix.

Everything a run will do is checked here, before any run directory exists or any framework is
imported: unknown keys (with the nearest valid key), wrong types, impossible values, the model
specs (through models/common/specs.py so errors name the field), DDIM steps > T, dataset paths
and the results directory. Every problem becomes a `ConfigError` whose message is one line:
`<where>:<key>: <what was wrong>; <what is valid>`.

The resolved config is a plain JSON-able dict (it travels to the worker as JSON and is hashed
into the manifest). `SCHEMA` is also the source of docs/CONFIG.md's key list (a test checks
that every key is documented there).
"""
import copy
import difflib
import fnmatch
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, fields

import yaml

from models.common.specs import DiffusionSpec, OptimSpec, UNetSpec, spec_from_dict

DEFAULT_FRAMEWORKS = ("torch", "jittor")
WORKLOADS = ("train", "sample", "quality")
DATA_SOURCES = ("synthetic", "fashion_mnist", "mnist", "cifar10", "folder")
LOADERS = ("shared", "native")
SAMPLERS = ("ddpm", "ddim")
SKIP_TYPES = ("uniform", "quadratic")
# Native image shapes (H, W, C) of the fixed-size datasets: a model that does not match them is
# rejected at validation time instead of minutes later inside a worker.
DATASET_SHAPES = {"fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
# NVML's utilisation counter is a duty cycle over 1/6-1 s: sampling faster only repeats values.
MIN_MONITOR_INTERVAL_S = 0.1


class ConfigError(ValueError):
    """Bad user input. str() is the one-line message the CLI prints before exiting 2."""


def known_frameworks():
    """The registry's framework list; the documented default when models/ is incomplete."""
    try:
        from models.registry import FRAMEWORKS
        return tuple(FRAMEWORKS)
    except ImportError:
        return DEFAULT_FRAMEWORKS


@dataclass
class Field:
    """One config leaf: its kind, default, constraints and the line docs/CONFIG.md shows."""

    kind: str  # int | float | bool | str | list | runs
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


def _spec_fields(cls, docs):
    """Config fields mirroring a spec dataclass (types from its defaults)."""
    out = {}
    for f in fields(cls):
        d = f.default
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
    "image_size": "input height = width in pixels; divisible by 2^(len(ch_mult)-1)",
    "in_channels": "image channels (1 grey, 3 RGB)",
    "base_channels": "channels of the first level (DDPM CIFAR-10: 128); even",
    "ch_mult": "channel multiplier per resolution level, e.g. [1, 2, 2, 2]",
    "num_res_blocks": "residual blocks per level",
    "attn_resolutions": "feature-map sizes that get self-attention, e.g. [16]",
    "dropout": "dropout probability in the residual blocks, in [0, 1)",
    "norm_groups": "GroupNorm groups; must divide every channel count",
}
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

SCHEMA = {
    "name": Field("str", "run", "run name; the results folder is <timestamp>-<name>"),
    "seed": Field("int", 0, "seed for weights, data, timesteps and noise", minimum=0),
    "device": Field("str", "auto", "auto (CUDA when present) | cpu | cuda",
                    choices=("auto", "cpu", "cuda")),
    "threads": Field("int", None, "CPU threads for every framework (OMP_NUM_THREADS and the "
                     "framework's own setting); null = the CPUs this process may use",
                     nullable=True, minimum=1),
    "frameworks": Field("list", list(DEFAULT_FRAMEWORKS), "frameworks to compare, in order",
                        scalar_ok=True, item=Field("str", None, ""),
                        choices_fn=known_frameworks, unique=True),
    "workloads": Field("list", ["train", "sample"], "workloads per framework: train | sample | quality",
                       scalar_ok=True, unique=True, item=Field("str", None, "", choices=WORKLOADS)),
    "model": _spec_fields(UNetSpec, _UNET_DOCS),
    "diffusion": _spec_fields(DiffusionSpec, _DIFFUSION_DOCS),
    "optim": _spec_fields(OptimSpec, _OPTIM_DOCS),
    "data": {
        "source": Field("str", "synthetic", "synthetic | fashion_mnist | mnist | cifar10 | "
                        "folder (real readers live in bench/datasets.py)", choices=DATA_SOURCES),
        "path": Field("str", None, "dataset root; null = the reader's documented search "
                      "order (required for folder)", nullable=True),
        "num_samples": Field("int", 512, "images to use (synthetic: to generate); null = the "
                             "whole dataset", nullable=True, minimum=2),
        "val_fraction": Field("float", 0.1, "fraction held out for the validation loss",
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
        "steps_per_epoch": Field("int", None, "optimizer steps per epoch; null = one pass over "
                                 "the training split", nullable=True, minimum=1),
        "batch_size": Field("int", 8, "training batch size", minimum=1),
        "warmup_steps": Field("int", 2, "steps after iteration 0 (compile) recorded as "
                              "phase 'warmup' and left out of the statistics", minimum=0),
        "val_batches": Field("int", 2, "held-out batches for the validation loss per epoch; "
                             "0 = none", minimum=0),
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
        "runs": Field("runs", [{"sampler": "ddim", "steps": [10], "eta": 0.0}],
                      "list of sampler settings, each {sampler, steps, eta, skip, variance}"),
        "batch_sizes": Field("list", [8], "batch sizes to time every run at", scalar_ok=True,
                             unique=True,
                             item=Field("int", None, "", minimum=1)),
        "repeats": Field("int", 3, "measured chains per (run, steps, batch size)", minimum=1),
        "warmup": Field("int", 1, "unmeasured full chains before the measured ones",
                        minimum=0),
        "ema": Field("bool", True, "sample with the EMA weights (when optim.ema_decay > 0)"),
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
    },
    "debug": {
        "inject_delay_s": Field("float", 0.0, "known sleep added inside every train "
                                "step's compute and every sampling step (the regression "
                                "gate's slowdown knob)", minimum=0.0),
        "raise_in": Field("list", [], "cell-id globs whose worker raises on start (tests the "
                          "failure path)", scalar_ok=True, item=Field("str", None, "")),
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
    return out


# ---------------------------------------------------------------------------------- checking

def _type_name(f):
    names = {"int": "an integer", "float": "a number", "bool": "true or false",
             "str": "a string", "runs": "a list of mappings"}
    if f.kind == "list":
        plural = {"int": "integers", "float": "numbers", "str": "strings"}[f.item.kind]
        return f"a list of {plural}" + (" (or one value)" if f.scalar_ok else "")
    return names[f.kind]


def _check_value(value, f, key):
    """Type-check and normalise one value; raise ConfigError naming `key`."""
    if value is None:
        if f.nullable:
            return None
        raise ConfigError(f"{key}: must not be null; expected {_type_name(f)}")
    if f.kind == "list":
        if not isinstance(value, list):
            if not f.scalar_ok:
                raise ConfigError(f"{key}: expected {_type_name(f)}, got {value!r}")
            value = [value]
        out = [_check_value(v, f.item, f"{key}[{i}]") for i, v in enumerate(value)]
        choices = f.choices_fn() if f.choices_fn else None
        for i, v in enumerate(out):
            if choices is not None and v not in choices:
                raise ConfigError(f"{key}[{i}]: unknown {v!r}; valid: {list(choices)}")
        if f.unique and len(set(map(json.dumps, out))) != len(out):
            raise ConfigError(f"{key}: duplicate entries in {out}")
        return out
    if f.kind == "runs":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key}: expected a non-empty list of mappings like "
                              "{sampler: ddim, steps: [10], eta: 0.0}")
        return [_check_run(r, f"{key}[{i}]") for i, r in enumerate(value)]
    if f.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
    elif f.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    elif f.kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    if f.choices is not None and value not in f.choices:
        raise ConfigError(f"{key}: {value!r} is not valid; one of {list(f.choices)}")
    if f.minimum is not None and value < f.minimum:
        raise ConfigError(f"{key}: {value!r} is too small; must be >= {f.minimum}")
    if f.above is not None and value <= f.above:
        raise ConfigError(f"{key}: {value!r} is too small; must be > {f.above}")
    return value


def _unknown_key(key, valid, where):
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"{where}{key}: unknown key; {hint}valid keys: {sorted(valid)}")


def _check_run(run, key):
    if not isinstance(run, dict):
        raise ConfigError(f"{key}: expected a mapping like {{sampler: ddim, steps: [10], "
                          f"eta: 0.0}}, got {run!r}")
    out = {}
    for k, v in run.items():
        if k not in RUN_SCHEMA:
            _unknown_key(k, RUN_SCHEMA, f"{key}.")
        out[k] = _check_value(v, RUN_SCHEMA[k], f"{key}.{k}")
    for k, f in RUN_SCHEMA.items():
        out.setdefault(k, copy.deepcopy(f.default))
    if out["sampler"] == "ddim" and out["eta"] is None:
        raise ConfigError(f"{key}.eta: required for ddim (0 = deterministic DDIM, 1 = "
                          "DDPM-like); there is no hidden default")
    if out["sampler"] == "ddim" and out["steps"] is None:
        raise ConfigError(f"{key}.steps: required for ddim; a list of step counts <= T")
    return out


def _merge(base, data, schema, where, prefix=""):
    """Overlay a user mapping on the defaults, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}{prefix.rstrip('.') or '<top>'}: expected a mapping, "
                          f"got {data!r}")
    for k, v in data.items():
        if not isinstance(k, str) or k not in schema:
            _unknown_key(str(k), schema, f"{where}{prefix}")
        sub = schema[k]
        if isinstance(sub, dict):
            _merge(base[k], v if v is not None else {}, sub, where, f"{prefix}{k}.")
        else:
            base[k] = _check_value(v, sub, f"{where}{prefix}{k}")


# --------------------------------------------------------------------------------- overrides

def parse_override(text):
    """'a.b=c' -> (['a', 'b'], value) with the value parsed as a YAML scalar or flow list."""
    where = f"--set {text}"
    if "=" not in text:
        raise ConfigError(f"{where}: expected KEY=VALUE, e.g. train.batch_size=16")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"{where}: bad key {key!r}; use dotted names like train.batch_size")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: value is not valid YAML ({_yaml_problem(e)})") from None
    return parts, value


def _apply_override(cfg, parts, value, text):
    schema, node = SCHEMA, cfg
    for i, p in enumerate(parts):
        if not isinstance(schema, dict) or p not in schema:
            valid = schema if isinstance(schema, dict) else {}
            _unknown_key(p, valid, f"--set {text}: " + "".join(x + "." for x in parts[:i]))
        if i == len(parts) - 1:
            sub = schema[p]
            if isinstance(sub, dict):
                if not isinstance(value, dict):
                    raise ConfigError(f"--set {text}: {'.'.join(parts)} is a section; set "
                                      f"one of its keys: {sorted(sub)}")
                _merge(node[p], value, sub, f"--set {text}: ", ".".join(parts) + ".")
            else:
                node[p] = _check_value(value, sub, f"--set {text}: {'.'.join(parts)}")
        else:
            schema, node = schema[p], node[p]


# ------------------------------------------------------------------------------------ loading

def _yaml_problem(e):
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def load_config(path=None, overrides=(), check_paths=True):
    """Read, merge and validate a config: defaults <- YAML file <- --set overrides.

    Returns the resolved plain dict. Raises ConfigError (one line, naming file:key).
    """
    cfg = defaults()
    where = ""
    if path is not None:
        where = f"{path}:"
        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: malformed YAML at {_yaml_problem(e)}") from None
        if data is not None:
            _merge(cfg, data, SCHEMA, where)
        if data is None or "name" not in data:
            cfg["name"] = os.path.splitext(os.path.basename(path))[0]
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(cfg, parts, value, text)
    validate(cfg, where or "config:", check_paths=check_paths)
    return cfg


def build_specs(cfg, where="config:"):
    """(UNetSpec, DiffusionSpec, OptimSpec) from a resolved config, errors naming the key."""
    out = []
    for section, cls in (("model", UNetSpec), ("diffusion", DiffusionSpec), ("optim", OptimSpec)):
        try:
            out.append(spec_from_dict(cls, cfg[section], where=section))
        except (ValueError, TypeError) as e:
            # e.g. "UNetSpec.image_size=30 is invalid: ..." -> name the config key.
            msg = str(e)
            for f in fields(cls):
                if msg.startswith(f"{cls.__name__}.{f.name}"):
                    msg = msg[len(cls.__name__) + 1:]
                    break
            raise ConfigError(f"{where}{section}.{msg}") from None
    return tuple(out)


def validate(cfg, where="config:", check_paths=True):
    """Cross-field checks the per-key types cannot express."""
    if not cfg["frameworks"]:
        raise ConfigError(f"{where}frameworks: empty; choose from {list(known_frameworks())}")
    if not cfg["workloads"]:
        raise ConfigError(f"{where}workloads: empty; choose from {list(WORKLOADS)}")
    if not cfg["data"]["loader"]:
        raise ConfigError(f"{where}data.loader: empty; choose from {list(LOADERS)}")
    if not cfg["name"] or any(c in cfg["name"] for c in "/\\\0") or cfg["name"].startswith("."):
        raise ConfigError(f"{where}name: {cfg['name']!r} cannot be a folder name")
    unet, diffusion, _ = build_specs(cfg, where)
    T = diffusion.timesteps

    data = cfg["data"]
    if "native" in data["loader"] and data["hflip"]:
        raise ConfigError(f"{where}data.hflip: only the shared loader flips; the native "
                          "loaders have no flip transform (set data.loader: shared)")
    if data["persistent_workers"] and data["num_workers"] == 0:
        raise ConfigError(f"{where}data.persistent_workers: needs data.num_workers > 0")
    if data["val_fraction"] >= 1.0:
        raise ConfigError(f"{where}data.val_fraction: {data['val_fraction']} leaves no "
                          "training data; must be in (0, 1)")
    if data["source"] == "synthetic" and data["num_samples"] is None:
        raise ConfigError(f"{where}data.num_samples: synthetic data needs a number of images")
    if data["source"] == "folder" and not data["path"]:
        raise ConfigError(f"{where}data.path: required for source 'folder' (a folder of images)")
    if data["source"] in DATASET_SHAPES:
        h, w, c = DATASET_SHAPES[data["source"]]
        if (unet.image_size, unet.in_channels) != (h, c):
            raise ConfigError(
                f"{where}model.image_size/in_channels: {data['source']} images are {h}x{w}x{c}; "
                f"the model has image_size={unet.image_size}, in_channels={unet.in_channels}")
    if check_paths and data["source"] != "synthetic" and data["path"] is not None:
        if not os.path.exists(data["path"]):
            raise ConfigError(f"{where}data.path: {data['path']!r} does not exist; point it at "
                              f"the {data['source']} files (see docs/CONFIG.md)")
    elif check_paths and data["source"] != "synthetic":
        # No path: the reader searches its documented folders. If none of them even exists
        # the run cannot work; say so now (a folder without the right files is reported by
        # the reader itself, with the file names it expects).
        from bench.datasets import search_dirs

        dirs = search_dirs(data["source"], None)
        if not any(d.is_dir() for d in dirs):
            raise ConfigError(f"{where}data.path: null and no {data['source']} folder in the "
                              f"search order {[str(d) for d in dirs]}; set data.path or put the "
                              f"files in data/{data['source']}/")

    if "train" in cfg["workloads"]:
        tr = cfg["train"]
        n_train = _train_count(data)
        if n_train is not None and n_train < tr["batch_size"]:
            raise ConfigError(f"{where}train.batch_size: {tr['batch_size']} exceeds the "
                              f"{n_train} training images; lower it or raise data.num_samples")
        total = tr["epochs"] * (tr["steps_per_epoch"] or max(1, (n_train or 10 ** 9)
                                                             // tr["batch_size"]))
        if total < 2 + tr["warmup_steps"]:
            raise ConfigError(f"{where}train.epochs/steps_per_epoch: {total} steps leave nothing "
                              f"to measure after iteration 0 and {tr['warmup_steps']} warm-up "
                              f"steps; need >= {2 + tr['warmup_steps']}")
        if tr["val_batches"] and n_train is not None:
            n_val = (data["num_samples"] or 0) - n_train
            if n_val < 1:
                raise ConfigError(f"{where}data.val_fraction: no validation images out of "
                                  f"{data['num_samples']}; raise it or set train.val_batches: 0")

    if "sample" in cfg["workloads"]:
        for i, run in enumerate(cfg["sample"]["runs"]):
            _check_steps(f"{where}sample.runs[{i}]", run["steps"] or [], run["sampler"],
                         run["skip"], T)

    if "quality" in cfg["workloads"]:
        validate_quality(cfg, where)
        ckpt = cfg["quality"]["checkpoint"]
        if check_paths and ckpt is not None and not os.path.exists(ckpt):
            raise ConfigError(f"{where}quality.checkpoint: {ckpt} does not exist; give a "
                              "checkpoint dir made by `harness.py train` or null")

    if check_paths:
        check_results_dir(cfg["runner"]["results_dir"], where)


def _check_steps(key, steps, sampler, skip, T):
    """Sampling step counts must fit in T timesteps with the chosen spacing."""
    from models.common.diffusion import select_timesteps

    for s in steps:
        if s > T:
            raise ConfigError(f"{key}.steps: {s} {sampler} steps > diffusion.timesteps T={T}; "
                              f"valid: 1..{T}")
        try:
            select_timesteps(T, s, skip)
        except ValueError as e:
            raise ConfigError(f"{key}.skip: {e}") from None


def validate_quality(cfg, where="config:"):
    """The quality section's cross-field checks (also used by `harness.py fid`)."""
    q = cfg["quality"]
    _check_steps(f"{where}quality", q["steps"], q["sampler"], q["skip"],
                 cfg["diffusion"]["timesteps"])
    if q["reference"] is not None:
        from bench.datasets import dataset_info

        name = q["reference"].split(":", 1)[0]
        try:
            dataset_info(name)
        except ValueError as e:
            raise ConfigError(f"{where}quality.reference: {e}") from None


def _train_count(data):
    """Training images for a known num_samples, else None (whole real dataset)."""
    n = data["num_samples"]
    if n is None:
        return None
    return n - max(1, int(round(n * data["val_fraction"])))


def check_results_dir(path, where="config:"):
    """The results dir (or its nearest existing ancestor) must be a writable folder.

    Probes with a temporary file that is deleted at once, because os.access says yes to root
    even on a read-only file system. Nothing is left behind.
    """
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError(f"{where}runner.results_dir: {path!r} is not usable: {probe!r} is "
                          "not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ConfigError(f"{where}runner.results_dir: {path!r} is not writable "
                          f"({e.strerror} in {probe!r})") from None


def config_hash(cfg):
    """sha256 of the canonical JSON of the resolved config (what makes two runs comparable)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# ------------------------------------------------------------------------------------- matrix

@dataclass
class Cell:
    """One subprocess: a framework running a workload (and, for train, one loader), as
    replicate number `replicate` (1-based) of runner.replicates independent processes.

    `cell_id` names what is measured (the same for every replicate); `unit_id` names this one
    process and its folder under cells/."""

    framework: str
    workload: str
    variant: str = ""
    options: dict = field(default_factory=dict)  # what the variant changes (e.g. loader)
    replicate: int = 1

    @property
    def cell_id(self):
        return "-".join(p for p in (self.framework, self.workload, self.variant) if p)

    @property
    def unit_id(self):
        return f"{self.cell_id}.r{self.replicate}"

    def to_dict(self):
        return {"cell": self.cell_id, "framework": self.framework, "workload": self.workload,
                "variant": self.variant, "options": dict(self.options),
                "replicate": self.replicate, "unit": self.unit_id}


def thue_morse(k):
    """0, 1, 1, 0, 1, 0, 0, 1, ...: the parity of the 1-bits of k."""
    return bin(k).count("1") % 2


def balanced_order(items, rounds):
    """The order of `items` in each of `rounds` rounds: as given, or reversed, following the
    Thue-Morse sequence (AB BA BA AB ...). Over 2^m rounds every position is held equally
    often by each item and linear and quadratic drift of the machine cancel in the sums, so
    the minute a framework ran in is not confounded with the framework."""
    items = list(items)
    return [items if thue_morse(k) == 0 else items[::-1] for k in range(rounds)]


ORDER_SCHEME = ("rounds; in each round every workload's frameworks run back to back, in the "
                "given order or reversed by the Thue-Morse sequence (AB BA BA AB ...)")


def expand_cells(cfg):
    """The matrix as the processes will run, in order: runner.replicates rounds, each running
    every cell once; within a workload (and variant) the frameworks follow balanced_order."""
    groups = []
    for wl in cfg["workloads"]:
        variants = [("", {})]
        if wl == "train":
            loaders = cfg["data"]["loader"]
            variants = [(ld if len(loaders) > 1 else "", {"loader": ld}) for ld in loaders]
        groups += [(wl, variant, options) for variant, options in variants]
    rounds = cfg["runner"]["replicates"]
    orders = balanced_order(cfg["frameworks"], rounds)
    return [Cell(fw, wl, variant, dict(options), replicate=k + 1)
            for k in range(rounds) for wl, variant, options in groups for fw in orders[k]]


def select_cells(cells, patterns, where="--only"):
    """Keep cells whose id (every replicate) or unit id (one replicate, e.g. 'torch-*.r2')
    matches any glob; a pattern that matches nothing is bad input."""
    if not patterns:
        return cells

    def hit(cell, p):
        return fnmatch.fnmatch(cell.cell_id, p) or fnmatch.fnmatch(cell.unit_id, p)

    for p in patterns:
        if not any(hit(c, p) for c in cells):
            ids = list(dict.fromkeys(c.cell_id for c in cells))
            raise ConfigError(f"{where} {p}: matches no cell; cells are {ids} (one replicate: "
                              f"<cell>.r<k>)")
    return [c for c in cells if any(hit(c, p) for p in patterns)]


def expected_records(cfg, cell):
    """How many step/sample records a cell will write (the progress bar's total)."""
    if cell.workload == "train":
        tr = cfg["train"]
        n_train = _train_count(cfg["data"])
        per_epoch = tr["steps_per_epoch"] or (max(1, n_train // tr["batch_size"])
                                              if n_train else None)
        return None if per_epoch is None else tr["epochs"] * per_epoch
    s = cfg["sample"]
    chains = sum(len(r["steps"] or [None]) for r in s["runs"]) * len(s["batch_sizes"])
    return chains * (s["warmup"] + s["repeats"])


def markdown_table():
    """The key reference table of docs/CONFIG.md: `python -m bench.config` prints it."""
    def show(v):
        return json.dumps(v)

    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, f in schema_keys():
        kind = _type_name(f) + (" or null" if f.nullable else "")
        if f.choices:
            kind = " \\| ".join(map(str, f.choices)) + (" or null" if f.nullable else "")
        default = "(see below)" if f.kind == "runs" else f"`{show(f.default)}`"
        lines.append(f"| `{key}` | {kind} | {default} | {f.doc.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
