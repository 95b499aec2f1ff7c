"""The `variants` config key: each entry checked, then resolved to the frameworks it runs on.

A variant runs on every framework of the run that offers all of its settings
(models/common/variants.py SUPPORTED), or on the frameworks it names; naming one that lacks a
setting, a precision or compiler the device cannot run, or a Jittor flag that would change the
math is a ConfigError (exit 2, before anything is written). docs/VARIANTS.md explains them.
"""
import importlib.util
import re
import shutil

from bench.run.checks import ConfigError, check_mapping, check_value
from bench.run.schema import LOADERS, VARIANT_SCHEMA
from models.common.variants import (JITTOR_FLAGS, PRECISION_DEVICES, SUPPORTED,
                                    UNSUPPORTED_WHY, VariantSpec)

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def check_variants(value, key):
    """The `variants` list: each entry checked by check_variant."""
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of mappings like "
                          "[{name: bf16, precision: bf16}]")
    return [check_variant(v, f"{key}[{i}]") for i, v in enumerate(value)]


def check_variant(entry, key):
    """One `variants` entry, type-checked, with every key filled in."""
    out = check_mapping(entry, VARIANT_SCHEMA, key, "{name: bf16, precision: bf16}",
                        check=lambda v, f, k: _check_flags(v, k) if f.kind == "flags"
                        else check_value(v, f, k))
    name = out["name"]
    if not name or not NAME.match(name):
        raise ConfigError(f"{key}.name: {name!r} is not a valid variant name; letters, digits, "
                          "_ and - (it becomes part of the cell ids)")
    if name in LOADERS or name == "matched":
        raise ConfigError(f"{key}.name: {name!r} is reserved (a data loader's or the matched "
                          "comparison's name); choose another")
    if not VariantSpec.from_dict(out).changed():
        raise ConfigError(f"{key}: {name} changes nothing; it would be the matched comparison "
                          "again (set precision, compile, ... )")
    return out


def _check_flags(value, key):
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping {{flag: int}}, got {value!r}")
    for flag, v in value.items():
        if flag not in JITTOR_FLAGS:
            raise ConfigError(f"{key}.{flag}: not a flag a variant may set; valid (they change "
                              f"no math): {sorted(JITTOR_FLAGS)}")
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{key}.{flag}: expected a non-negative integer, got {v!r}")
    return dict(value)


def _settings(entry):
    return set(VariantSpec.from_dict(entry).changed())


def _device_problem(framework, device, spec):
    """Why `spec` cannot run on (framework, device), or None."""
    if spec.precision not in PRECISION_DEVICES.get((framework, device), ()):
        why = UNSUPPORTED_WHY.get((framework, device))
        return f"precision {spec.precision} is not supported" + (f" ({why})" if why else "")
    if framework == "torch" and spec.compile and device == "cpu" and \
            not (shutil.which("g++") or shutil.which("c++")):
        return "torch.compile on CPU needs a C++ compiler (g++) on PATH"
    if framework == "torch" and spec.compile and device == "cuda" and \
            importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs the triton package"
    return None


def resolve_variants(cfg, device, where="config:"):
    """Fill in each variant's `frameworks` (the ones it will run on); raise ConfigError for
    any combination that cannot run. `device` is the device cells will use (cpu | cuda)."""
    names = [v["name"] for v in cfg["variants"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}variants: duplicate names {dup}; each names its own cells")
    if cfg["variants"] and not {"train", "sample"} & set(cfg["workloads"]):
        raise ConfigError(f"{where}variants: they run as train and sample cells; add train "
                          "or sample to workloads")
    if cfg["variants"] and "train" in cfg["workloads"] and "shared" not in cfg["data"]["loader"]:
        raise ConfigError(f"{where}variants: their train cells use the shared loader and are "
                          "compared with the matched shared-loader cell; add shared to "
                          "data.loader")
    for i, entry in enumerate(cfg["variants"]):
        key = f"{where}variants[{i}] ({entry['name']})"
        wanted = _settings(entry)
        named, spec = entry["frameworks"], VariantSpec.from_dict(entry)
        for fw in named or []:
            if fw not in cfg["frameworks"]:
                raise ConfigError(f"{key}.frameworks: {fw} is not in this run's frameworks "
                                  f"{cfg['frameworks']}")
            lacking = sorted(wanted - SUPPORTED[fw])
            if lacking:
                raise ConfigError(f"{key}: framework {fw} has no setting {lacking}; it offers "
                                  f"{sorted(SUPPORTED[fw])}")
            why = _device_problem(fw, device, spec)
            if why:
                raise ConfigError(f"{key}: {why} for framework {fw} on device {device}")
        offered = [fw for fw in cfg["frameworks"] if wanted <= SUPPORTED[fw]]
        runs_on = named or [fw for fw in offered if not _device_problem(fw, device, spec)]
        if not runs_on:
            reasons = {fw: _device_problem(fw, device, spec) for fw in offered} if offered \
                else {fw: f"offers only {sorted(SUPPORTED[fw])}" for fw in cfg["frameworks"]}
            raise ConfigError(f"{key}: no framework of this run can run {sorted(wanted)} on "
                              f"device {device}: {reasons}")
        entry["frameworks"] = list(runs_on)


def not_run(cfg, device):
    """{variant name: {framework: why}} for the run's frameworks that offer a variant's
    settings but cannot run it on `device` (left out when the variant named no framework;
    the report says so)."""
    out = {}
    for entry in cfg.get("variants") or []:
        spec, wanted = VariantSpec.from_dict(entry), _settings(entry)
        for fw in cfg["frameworks"]:
            if fw not in entry["frameworks"] and wanted <= SUPPORTED[fw]:
                out.setdefault(entry["name"], {})[fw] = _device_problem(fw, device, spec) \
                    or "not in the variant's frameworks"
    return out
