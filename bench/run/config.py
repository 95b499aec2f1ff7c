"""Benchmark configs: YAML in, a resolved plain dict out, every value checked.

Everything a run will do is checked here, before any run directory exists or any framework is
imported: unknown keys (with the nearest valid key), wrong types, impossible values, the model
specs (through models/common/specs.py so errors name the field), DDIM steps > T, dataset paths
and the results directory. Every problem becomes a `ConfigError` whose message is one line:
`<where>:<key>: <what was wrong>; <what is valid>`.

The keys themselves live in bench/run/schema.py, the per-value checks and `ConfigError` in
bench/run/checks.py (also used by bench/run/variants.py, which checks the `variants` entries);
the cells a config expands into in bench/run/matrix.py. The resolved config is a plain
JSON-able dict (it travels to the worker as JSON and is hashed into the manifest).
"""
import copy
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import fields

import yaml

from bench.data.datasets import dataset_info, search_dirs
from bench.measure.env import cuda_device_present
from bench.run.checks import ConfigError, check_value, unknown_key
from bench.run.schema import (DATASET_SHAPES, DIT_KEYS, LOADERS, SCHEMA, UNET_KEYS, WORKLOADS,
                              defaults, known_frameworks)
from bench.run import sweep as sweep_axis
from bench.run.variants import check_variants, resolve_variants
from models.common.diffusion import select_timesteps
from models.common.dit_spec import PRESETS as DIT_PRESETS
from models.common.dit_spec import DiTSpec, dit_spec_from_dict
from models.common.specs import DiffusionSpec, OptimSpec, UNetSpec, spec_from_dict
from models.registry import COMPILES_AHEAD, UNAVAILABLE, installed, installed_frameworks

# The config an empty config file is pointed to (the built-in defaults are its sizes).
STARTER_CONFIG = "configs/quick.yaml"


# ---------------------------------------------------------------------------------- checking

def _check_value(value, f, key):
    """One value of the config: the `variants` list by bench/run/variants.py, every other
    kind by bench/run/checks.py."""
    if f.kind == "variants" and value is not None:
        return check_variants(value, key)
    if f.kind == "sweep":
        return sweep_axis.normalize(value, key)
    if f.kind == "slots":
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
            return value
        raise ConfigError(f"{key}: {value!r}: a number of slots (>= 1) or 'auto'")
    return check_value(value, f, key)


def _merge(base, data, schema, where, prefix=""):
    """Overlay a user mapping on the defaults, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}{prefix.rstrip('.') or '<top>'}: expected a mapping, "
                          f"got {data!r}")
    for k, v in data.items():
        if not isinstance(k, str) or k not in schema:
            unknown_key(str(k), schema, f"{where}{prefix}")
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
            unknown_key(p, valid, f"--set {text}: " + "".join(x + "." for x in parts[:i]))
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

    Returns the resolved plain dict. Raises ConfigError (one line, naming file:key), also for
    a file that holds no setting at all (empty, or only comments and whitespace).
    """
    cfg = defaults()
    where = ""
    given = set()   # the model keys the file and --set name (checked against model.family)
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
        if data is None:
            # a slip (the wrong file, an unsaved editor buffer), not a choice: the defaults
            # alone would start a whole run nobody asked for; `name: x` still runs on them
            raise ConfigError(f"{path}: the config file is empty (nothing but comments or "
                              f"whitespace); start from {STARTER_CONFIG} (copy it and edit)")
        _merge(cfg, data, SCHEMA, where)
        if "name" not in data:
            cfg["name"] = os.path.splitext(os.path.basename(path))[0]
        if isinstance(data.get("model"), dict):
            given |= set(data["model"])
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(cfg, parts, value, text)
        if parts[0] == "model":
            given |= set(value) if len(parts) == 1 and isinstance(value, dict) else {parts[-1]}
    check_model_keys(given, cfg["model"], f"{where or 'config:'}model.")
    if len(cfg["sweep"]) == 1:
        # one point is the run its overrides describe: today's config, cells and folders
        cfg = point_config(cfg, cfg["sweep"][0], f"{where or 'config:'}sweep[0].")
    validate(cfg, where or "config:", check_paths=check_paths)
    return cfg


# ------------------------------------------------------------------------------------- sweeps

def point_config(cfg, point, where="config:sweep[i]."):
    """The resolved config of one sweep point (bench/run/sweep.py): the run's config with the
    point's overrides merged and no sweep of its own; the worker of a point's cell gets it."""
    out = copy.deepcopy(cfg)
    out["sweep"] = []
    for section, overrides in point.items():
        if section != "name":
            _merge(out[section], overrides, SCHEMA[section], where, f"{section}.")
    check_model_keys(set(point.get("model") or {}), out["model"], f"{where}model.")
    return out


def check_model_keys(given, model, where):
    """The model keys a mapping names must belong to its family (docs/DIT.md "In the
    harness"), and a DiT preset fixes four keys that must then be left out."""
    family = model.get("family", "unet")
    foreign = sorted(given & set(UNET_KEYS if family == "dit" else DIT_KEYS))
    if foreign:
        other = "unet" if family == "dit" else "dit"
        raise ConfigError(f"{where}{foreign[0]}: a {other} key, but model.family is {family!r}; "
                          f"drop it or set model.family: {other} ({family} keys: "
                          f"{', '.join(DIT_KEYS if family == 'dit' else UNET_KEYS)})")
    preset = model.get("preset")
    if family == "dit" and preset:
        fixed = sorted(given & set(DIT_PRESETS[preset]))
        if fixed:
            raise ConfigError(f"{where}{fixed[0]}: model.preset {preset} sets it "
                              f"({', '.join(sorted(DIT_PRESETS[preset]))}); drop it or the "
                              "preset")


def point_configs(cfg):
    """{point name: its resolved config} of a sweep, in the config's order ({} without one)."""
    where = "config:"
    return {p["name"]: point_config(cfg, p, f"{where}sweep[{i}].")
            for i, p in enumerate(cfg.get("sweep") or [])}


def model_spec_keys(model):
    """(spec class, its keyword arguments) of a resolved `model` section: the family's keys
    and the shared ones; a DiT preset's four keys come from the preset."""
    shared = {"image_size": model["image_size"], "in_channels": model["in_channels"]}
    # .get: a run recorded before model.family existed is a UNet's (its report still reads)
    if model.get("family", "unet") == "dit":
        keys = dict(shared, **{k: model[k] for k in DIT_KEYS})
        if keys["preset"]:
            keys = {k: v for k, v in keys.items() if k not in DIT_PRESETS[keys["preset"]]}
        else:
            keys.pop("preset")
        return DiTSpec, keys
    return UNetSpec, dict(shared, **{k: model[k] for k in UNET_KEYS})


def build_specs(cfg, where="config:"):
    """(model spec, DiffusionSpec, OptimSpec) from a resolved config, errors naming the key;
    the model spec is a UNetSpec or, with model.family dit, a DiTSpec."""
    out = []
    model_cls, model_keys = model_spec_keys(cfg["model"])
    for section, cls, data in (("model", model_cls, model_keys),
                               ("diffusion", DiffusionSpec, cfg["diffusion"]),
                               ("optim", OptimSpec, cfg["optim"])):
        try:
            out.append(dit_spec_from_dict(data, where=section) if cls is DiTSpec
                       else spec_from_dict(cls, data, where=section))
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
    missing = [fw for fw in cfg["frameworks"] if not installed(fw)]
    if missing:
        raise ConfigError(f"{where}frameworks: {missing} not installed in this Python "
                          f"({sys.executable}); installed: {list(installed_frameworks())} "
                          "(make setup installs torch, jittor and jax: docs/SETUP.md)")
    if not cfg["workloads"]:
        raise ConfigError(f"{where}workloads: empty; choose from {list(WORKLOADS)}")
    for fw in cfg["frameworks"]:
        for workload in cfg["workloads"]:
            why = UNAVAILABLE.get(fw, {}).get(workload)
            if why:
                raise ConfigError(f"{where}workloads: {workload} does not run on {fw}: {why}")
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

    if "train" in cfg["workloads"]:
        _check_world_sizes(cfg, where)

    _check_slots(cfg, where)

    if cfg["sample"]["cfg_scale"] is not None and not (
            isinstance(unet, DiTSpec) and unet.num_classes and unet.class_dropout > 0):
        raise ConfigError(f"{where}sample.cfg_scale: guidance needs a class-conditional DiT "
                          "trained with label dropout (model.family: dit, num_classes > 0, "
                          "class_dropout > 0: the null class); set it to null")

    if "sample" in cfg["workloads"]:
        for i, run in enumerate(cfg["sample"]["runs"]):
            _check_steps(f"{where}sample.runs[{i}]", run["steps"] or [], run["sampler"],
                         run["skip"], T)
        ahead = [fw for fw in cfg["frameworks"] if fw in COMPILES_AHEAD]
        if ahead and cfg["sample"]["warmup"] < 1:
            raise ConfigError(f"{where}sample.warmup: 0 would put {ahead[0]}'s compile of its "
                              "sampling step inside the first measured chain (a compile "
                              "there fails the cell); set it to 1 or more")

    if "profile" in cfg["workloads"]:
        pr = cfg["profile"]
        _check_steps(f"{where}profile", [pr["sample_steps"]], pr["sampler"], "uniform", T)
        n_train = _train_count(data)
        if n_train is not None and n_train < cfg["train"]["batch_size"]:
            raise ConfigError(f"{where}train.batch_size: {cfg['train']['batch_size']} exceeds "
                              f"the {n_train} training images the profile cells train on")

    if "quality" in cfg["workloads"] and getattr(unet, "num_classes", 0):
        raise ConfigError(f"{where}workloads: quality scores an unconditional model (its "
                          "images have no labels to draw from); set model.num_classes: 0 "
                          "for the DiT, or leave quality out")
    if "quality" in cfg["workloads"]:
        validate_quality(cfg, where)
        ckpt = cfg["quality"]["checkpoint"]
        if check_paths and ckpt is not None and not os.path.exists(ckpt):
            raise ConfigError(f"{where}quality.checkpoint: {ckpt} does not exist; give a "
                              "checkpoint dir made by `harness.py train` or null")

    if cfg["variants"]:
        device = cfg["device"]
        if device == "auto":
            device = "cuda" if cuda_device_present()[0] else "cpu"
        resolve_variants(cfg, device, where)

    for i, point in enumerate(cfg.get("sweep") or []):
        # every point is a whole config of its own: the same checks, naming sweep[i].<key>
        p_where = f"{where}sweep[{i}]."
        validate(point_config(cfg, point, p_where), p_where, check_paths=check_paths)

    if check_paths:
        check_results_dir(cfg["runner"]["results_dir"], where)
        if cfg["device"] == "cuda":
            ok, why = cuda_device_present()
            if not ok:
                raise ConfigError(f"{where}device: 'cuda' but this machine has no usable GPU "
                                  f"({why}); use auto (CUDA when present) or cpu")


def _check_world_sizes(cfg, where):
    """Data-parallel train cells (docs/DISTRIBUTED.md): the global batch splits evenly, the
    shared loader feeds them, the launcher for each framework exists."""
    sizes, tr, d = cfg["train"]["world_size"], cfg["train"], cfg["distributed"]
    if not sizes:
        raise ConfigError(f"{where}train.world_size: empty; e.g. [1] or [1, 2]")
    for n in sizes:
        if tr["batch_size"] % n:
            raise ConfigError(f"{where}train.batch_size: {tr['batch_size']} is not divisible by "
                              f"world size {n} (train.world_size); each rank takes an equal "
                              "slice of the global batch")
        if n > 1 and n % d["nnodes"]:
            raise ConfigError(f"{where}distributed.nnodes: world size {n} does not split "
                              f"over {d['nnodes']} nodes")
    if d["node_rank"] >= d["nnodes"]:
        raise ConfigError(f"{where}distributed.node_rank: {d['node_rank']} must be < "
                          f"distributed.nnodes={d['nnodes']}")
    if max(sizes) > 1:
        for fw in cfg["frameworks"]:
            why = UNAVAILABLE.get(fw, {}).get("data-parallel")
            if why:
                raise ConfigError(f"{where}train.world_size: {fw}: {why}")
        if "shared" not in cfg["data"]["loader"]:
            raise ConfigError(f"{where}train.world_size: data-parallel cells use the shared "
                              "loader (every rank slices the same global batch); add shared to "
                              "data.loader")
        if "jittor" in cfg["frameworks"]:
            from bench.run.distributed import mpi_problem

            why = mpi_problem()
            if why:
                raise ConfigError(f"{where}train.world_size: {why}")


def _check_slots(cfg, where):
    """runner.slots must fit the machine (bench/run/slots.py); a data-parallel cell takes
    several devices itself, so it does not run in a slot."""
    from bench.run.slots import SlotError, plan

    try:
        n = len(plan(cfg["runner"].get("slots", 1), cfg["device"], cfg.get("threads")))
    except SlotError as e:
        raise ConfigError(f"{where}runner.slots: {e}") from None
    if n > 1 and "train" in cfg["workloads"] and max(cfg["train"]["world_size"]) > 1:
        raise ConfigError(f"{where}runner.slots: {n} slots with train.world_size "
                          f"{cfg['train']['world_size']}: a data-parallel cell takes several "
                          f"devices itself; use slots 1 for data-parallel runs")


def _check_steps(key, steps, sampler, skip, T):
    """Sampling step counts must fit in T timesteps with the chosen spacing."""
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
