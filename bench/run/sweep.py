"""The sweep axis (docs/CONFIG.md "Sweeps"): one config, many model / batch sizes.

`sweep` is a list of named points, each a set of overrides of the config's model, train,
sample, profile and data keys (and runner.timeout_s: a big point may need longer):

    sweep:
      - {name: quick}                                   # the config as it is
      - {name: b64-32px, model: {base_channels: 64, image_size: 32}, train: {batch_size: 8}}

or the product of a few dotted keys, one point per combination, named after its values:

    sweep:
      product: {model.base_channels: [32, 64], train.batch_size: [1, 8]}

Every point becomes its own cells beside the frameworks (bench/run/matrix.py interleaves
points and frameworks in the balanced order of the rounds), its own folder
results/<run>/points/<name>/ laid out like a whole run, and one row of the report's "How the
gap changes with size" (bench/report/sweep.py). A sweep with one point is the run its
overrides describe: the same config, cells and folders as today's run without a sweep.

This module checks the structure only (names, sections, the product's keys); each point's
values are merged and checked against the schema by bench/run/config.py, which owns that.
"""
import itertools
import re

from bench.run.checks import ConfigError

# The sections a point may override, and the one runner key (a bigger model may need a
# longer limit; replicates and folders stay the run's, so the rounds remain balanced).
POINT_SECTIONS = ("model", "train", "sample", "profile", "data", "runner")
POINT_RUNNER_KEYS = ("timeout_s",)
# A point name is a folder name and part of a --only glob ("<point>/<cell>").
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,+=-]*$")
NAME_RULE = "letters, digits and _ . , + = - (starting with a letter or digit)"
EXAMPLE = ("e.g. [{name: small}, {name: b64-32px, model: {base_channels: 64, image_size: 32}}] "
           "or {product: {model.base_channels: [32, 64]}}")


def normalize(value, key):
    """The `sweep` value as a list of points {name, <section>: {key: value}}; raises
    ConfigError naming `key[i].<field>` for a structural problem."""
    if isinstance(value, dict):
        value = _product_points(value, key)
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of points or {{product: ...}}; {EXAMPLE}")
    if not value:
        raise ConfigError(f"{key}: empty; give at least one point ({EXAMPLE}), or leave "
                          "`sweep` out for a run without one")
    points, seen = [], {}
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping {{name, model, train, ...}}, "
                              f"got {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(f"{where}.name: {name!r} is not a point name; required, "
                              f"{NAME_RULE}")
        if name in seen:
            raise ConfigError(f"{where}.name: {name!r} repeats sweep[{seen[name]}]'s name; "
                              "point names must be unique")
        seen[name] = i
        point = {"name": name}
        for section, overrides in entry.items():
            if section == "name":
                continue
            if section not in POINT_SECTIONS:
                raise ConfigError(f"{where}.{section}: not a key of a sweep point; valid: "
                                  f"name, {', '.join(POINT_SECTIONS)}")
            if not isinstance(overrides, dict):
                raise ConfigError(f"{where}.{section}: expected a mapping of {section} keys, "
                                  f"got {overrides!r}")
            if section == "runner":
                bad = sorted(set(overrides) - set(POINT_RUNNER_KEYS))
                if bad:
                    raise ConfigError(f"{where}.runner.{bad[0]}: a point may set only "
                                      f"runner.{', runner.'.join(POINT_RUNNER_KEYS)} (the rounds "
                                      "and folders are the run's)")
            point[section] = overrides
        points.append(point)
    return points


def _product_points(value, key):
    """{product: {dotted key: [values]}} -> the list form, a point per combination."""
    if set(value) != {"product"} or not isinstance(value["product"], dict) \
            or not value["product"]:
        raise ConfigError(f"{key}: a mapping must be {{product: {{dotted.key: [values], ...}}}}; "
                          f"{EXAMPLE}")
    axes = []
    for dotted, values in value["product"].items():
        parts = str(dotted).split(".")
        if len(parts) != 2 or parts[0] not in POINT_SECTIONS or not parts[1]:
            raise ConfigError(f"{key}.product.{dotted}: expected <section>.<key> with a section "
                              f"of {list(POINT_SECTIONS)}, e.g. model.base_channels")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{key}.product.{dotted}: expected a non-empty list of values")
        axes.append((parts, values))
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        point = {"name": ",".join(f"{parts[1]}={_short(v)}" for (parts, _), v in zip(axes, combo))}
        for (section, leaf), v in zip((parts for parts, _ in axes), combo):
            point.setdefault(section, {})[leaf] = v
        points.append(point)
    return points


def _short(value):
    """A value as it reads in a point name: 64, 0.1, 1+2+2 (a list)."""
    if isinstance(value, (list, tuple)):
        return "+".join(_short(v) for v in value)
    return str(value)


def overrides_text(point):
    """'model.base_channels=64, train.batch_size=8' (the report's and the manifest's words)."""
    parts = [f"{section}.{k}={v}" for section, keys in point.items() if section != "name"
             for k, v in keys.items()]
    return ", ".join(parts) or "(the config as it is)"
