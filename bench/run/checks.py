"""Checking config values against their schema fields: `ConfigError` and the per-key checks
that bench/run/config.py (the whole config) and bench/run/variants.py (each `variants` entry)
both build on. Below both of them, so neither imports the other to reach these.

Every problem is a `ConfigError` whose message is one line naming the key:
`<where>:<key>: <what was wrong>; <what is valid>`.
"""
import copy
import difflib
import json

from bench.run.schema import RUN_SCHEMA, _type_name


class ConfigError(ValueError):
    """Bad user input. str() is the one-line message the CLI prints before exiting 2."""


# The kinds check_value handles; a field of another kind ("variants", "flags") is checked by
# the module that owns it (bench/run/variants.py), through a `check` callable.
KINDS = ("list", "runs", "bool", "int", "float", "str")


def check_value(value, f, key):
    """Type-check and normalise one value; raise ConfigError naming `key`."""
    if value is None:
        if f.nullable:
            return None
        raise ConfigError(f"{key}: must not be null; expected {_type_name(f)}")
    if f.kind not in KINDS:  # pragma: no cover - a programming error, not user input
        raise TypeError(f"{key}: a {f.kind!r} field is checked by its own module, not here")
    if f.kind == "list":
        if not isinstance(value, list):
            if not f.scalar_ok:
                raise ConfigError(f"{key}: expected {_type_name(f)}, got {value!r}")
            value = [value]
        out = [check_value(v, f.item, f"{key}[{i}]") for i, v in enumerate(value)]
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
        return [check_run(r, f"{key}[{i}]") for i, r in enumerate(value)]
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


def unknown_key(key, valid, where):
    """Raise the unknown-key error, with the nearest valid key when one is close."""
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"{where}{key}: unknown key; {hint}valid keys: {sorted(valid)}")


def check_mapping(entry, schema, key, example, check=None):
    """One entry of a list of mappings (sample.runs, variants): known keys only, each value
    checked (by `check(value, field, key)` where given, else by type), defaults filled in."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{key}: expected a mapping like {example}, got {entry!r}")
    out = {}
    for k, v in entry.items():
        if k not in schema:
            unknown_key(str(k), schema, f"{key}.")
        out[k] = (check or check_value)(v, schema[k], f"{key}.{k}")
    for k, f in schema.items():
        out.setdefault(k, copy.deepcopy(f.default))
    return out


def check_run(run, key):
    """One sample.runs entry: its keys checked, the sampler's required ones present."""
    out = check_mapping(run, RUN_SCHEMA, key, "{sampler: ddim, steps: [10], eta: 0.0}")
    if out["sampler"] == "ddim" and out["eta"] is None:
        raise ConfigError(f"{key}.eta: required for ddim (0 = deterministic DDIM, 1 = "
                          "DDPM-like); there is no hidden default")
    if out["sampler"] == "ddim" and out["steps"] is None:
        raise ConfigError(f"{key}.steps: required for ddim; a list of step counts <= T")
    return out
