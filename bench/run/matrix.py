"""The cell matrix: which processes a config runs, and in which order.

A cell is a framework running a workload (and, for train, one data loader); each cell runs as
runner.replicates independent processes (units), in rounds, with the frameworks of a workload
in a balanced order so that the minute a process ran in is not confounded with its framework
(docs/STATISTICS.md).
"""
import fnmatch
from dataclasses import dataclass, field

from bench.run.config import ConfigError, _train_count, point_configs

@dataclass
class Cell:
    """One subprocess: a framework running a workload (and, for train, one loader), as
    replicate number `replicate` (1-based) of runner.replicates independent processes.

    `cell_id` names what is measured (the same for every replicate); `unit_id` names this one
    process and its folder under cells/."""

    framework: str
    workload: str
    variant: str = ""
    options: dict = field(default_factory=dict)  # what the variant changes: loader, setting
    # (options["setting"]: the name of a `variants` entry; absent for the matched cells)
    replicate: int = 1
    point: str = ""  # the sweep point (bench/run/sweep.py) this cell belongs to; "" = no sweep

    @property
    def cell_id(self):
        return "-".join(p for p in (self.framework, self.workload, self.variant) if p)

    @property
    def unit_id(self):
        return f"{self.cell_id}.r{self.replicate}"

    @property
    def label(self):
        """The process as the terminal and --only name it: <point>/<unit> in a sweep."""
        return f"{self.point}/{self.unit_id}" if self.point else self.unit_id

    def to_dict(self):
        out = {"cell": self.cell_id, "framework": self.framework, "workload": self.workload,
               "variant": self.variant, "options": dict(self.options),
               "replicate": self.replicate, "unit": self.unit_id}
        if self.point:  # a run without a sweep records exactly what it always did
            out["point"] = self.point
        return out


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
                "given order or reversed by the Thue-Morse sequence (AB BA BA AB ...); a "
                "workload's loaders and variants take turns the same way")


def expand_cells(cfg):
    """The matrix as the processes will run, in order: runner.replicates rounds, each running
    every cell once; within a workload (and variant) the frameworks follow balanced_order.
    A sweep: each point's cells, round by round, the points of a round in balanced_order too
    (so a point is not always measured first, or last, in a round)."""
    points = point_configs(cfg)
    if not points:
        return _expand_point(cfg)
    rounds = cfg["runner"]["replicates"]
    per_point = {name: _expand_point(pcfg, name) for name, pcfg in points.items()}
    return [c for k, order in enumerate(balanced_order(points, rounds)) for name in order
            for c in per_point[name] if c.replicate == k + 1]


def _expand_point(cfg, point=""):
    """One config's (or sweep point's) cells in round order."""
    groups = []
    for wl in cfg["workloads"]:
        variants = [("", {})]
        if wl == "train":
            loaders, sizes = cfg["data"]["loader"], cfg["train"].get("world_size", [1])
            variants = [(ld if len(loaders) > 1 else "", {"loader": ld}) for ld in loaders] \
                if 1 in sizes else []
            # data-parallel cells (docs/DISTRIBUTED.md): the shared loader, N ranks
            variants += [(f"ws{n}", {"loader": "shared", "world_size": n})
                         for n in sizes if n > 1]
        groups += [(wl, variant, options, cfg["frameworks"]) for variant, options in variants]
        if wl in ("train", "sample"):
            # the variants axis (docs/VARIANTS.md): each on the frameworks it resolved to;
            # train variants on the shared loader (the quality guard compares them with it)
            for v in cfg.get("variants", []):
                options = {"loader": "shared"} if wl == "train" else {}
                groups.append((wl, v["name"], dict(options, setting=v["name"]),
                               [fw for fw in cfg["frameworks"] if fw in v["frameworks"]]))
    rounds = cfg["runner"]["replicates"]
    orders = balanced_order(cfg["frameworks"], rounds)
    # the groups of a workload (loaders, variants) take turns the same way, so a variant and
    # its matched cell are not always measured in the same minute of a round either
    by_workload = {}
    for g in groups:
        by_workload.setdefault(g[0], []).append(g)
    group_orders = {wl: balanced_order(gs, rounds) for wl, gs in by_workload.items()}
    return [Cell(fw, wl, variant, dict(options), replicate=k + 1, point=point)
            for k in range(rounds) for wl in by_workload
            for _, variant, options, fws in group_orders[wl][k]
            for fw in orders[k] if fw in fws]


def select_cells(cells, patterns, where="--only"):
    """Keep cells whose id (every replicate) or unit id (one replicate, e.g. 'torch-*.r2')
    matches any glob; in a sweep also '<point>/<cell or unit>' (e.g. 'b64-32px/*'), a
    pattern without '/' matching that cell at every point. A pattern that matches nothing is
    bad input."""
    if not patterns:
        return cells

    def hit(cell, p):
        names = [cell.cell_id, cell.unit_id]
        if cell.point:
            names += [f"{cell.point}/{cell.cell_id}", cell.label]
        return any(fnmatch.fnmatch(n, p) for n in names)

    for p in patterns:
        if not any(hit(c, p) for c in cells):
            ids = list(dict.fromkeys(f"{c.point}/{c.cell_id}" if c.point else c.cell_id
                                     for c in cells))
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
    if cell.workload == "profile":
        return None  # no step/sample records: a bar without a total
    s = cfg["sample"]
    chains = sum(len(r["steps"] or [None]) for r in s["runs"]) * len(s["batch_sizes"])
    return chains * (s["warmup"] + s["repeats"])
