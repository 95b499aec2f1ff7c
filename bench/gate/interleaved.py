"""The A/B gate's interleaved worker: both revisions' models in ONE process, calls alternated.

    python -m bench.gate.interleaved --framework torch --base TREE --candidate TREE --out F.json
        [--first base|candidate] [--blocks 1] [--rounds 8] [--warmup 2]
        [--micro-config CFG] [--micro-set KEY=VALUE ...] [--micro-batch N]

Why: on a shared VM most of the noise is a property of the process (measured here: two
processes of the same code differ by 15-25% in log SD, while two fresh instances of the
model alternated inside one process differ by ~5% a block and ~2% over four blocks;
docs/REGRESSION.md). Whatever makes a process fast or slow then hits both revisions alike,
and each process yields one candidate ÷ base ratio; the gate's units stay processes.

How: each revision's `models` package is imported from its own checkout under its own
module objects (`Revision.active()` swaps the `models*` entries of sys.modules and puts the
tree first on sys.path), so revision A's code runs A's UNet and B's runs B's. The framework
itself (torch or Jittor) is imported once and shared. In each block both revisions build a
fresh backend with the canonical weights (the instance's own memory placement is noise too,
so it is redrawn every block), warm up, then run every micro-benchmark as A B B A ...
(which revision opens alternates by block), each call ending with backend.sync().

What this cannot see: a change to process-wide settings made at import or construction
(thread counts, framework flags, environment variables) applies to both revisions at once.
`harness.py ab --interleave processes` runs each revision in its own processes for that.

Output: JSON with, per benchmark and revision, each block's call times; per revision the
error that stopped it, if any (exit 0 all the same: the gate reads which side failed).
"""
import argparse
import contextlib
import importlib
import json
import os
import sys
import traceback
from dataclasses import asdict

from bench.measure.timer import timed_call
from bench.run.matrix import balanced_order

SIDES = ("base", "candidate")
PACKAGE = "models"
DEFAULT_BLOCKS = 1
DEFAULT_ROUNDS = 8     # measured calls per revision, benchmark and block
DEFAULT_WARMUP = 2     # unmeasured calls per revision, benchmark and block
ABBA = (0, 1, 1, 0)


def _owned(name):
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _take_modules():
    return {k: sys.modules.pop(k) for k in [k for k in sys.modules if _owned(k)]}


class Revision:
    """One revision's `models` package, imported from its checkout beside the other's."""

    def __init__(self, side, tree):
        self.side, self.tree = side, os.path.abspath(tree)
        self.modules = {}
        self.error = None
        self.backend = self.calls = None

    @contextlib.contextmanager
    def active(self):
        """While inside, `import models...` (also lazy imports in its own code) is this
        revision's."""
        others = _take_modules()
        sys.modules.update(self.modules)
        sys.path.insert(0, self.tree)
        try:
            yield
        finally:
            sys.path.remove(self.tree)
            self.modules = _take_modules()
            sys.modules.update(others)

    def build(self, framework, specs, device, threads, seed):
        """A fresh backend of this revision with the canonical seeded weights, and its
        revision's sampler_plan. Specs are rebuilt as this revision's own classes."""
        with self.active():
            spec_mod = importlib.import_module(f"{PACKAGE}.common.specs")
            own = [getattr(spec_mod, type(s).__name__)(**asdict(s)) for s in specs]
            Backend = importlib.import_module(f"{PACKAGE}.registry").load_backend(framework)
            weights = importlib.import_module(f"{PACKAGE}.common.weights")
            backend = Backend(*own, device=device, threads=threads, seed=seed)
            backend.load_weights(weights.init_weights(own[0], seed=seed))
            backend.sync()
            plan = importlib.import_module(f"{PACKAGE}.common.diffusion").sampler_plan
        return backend, own, plan

    # -- one block: a fresh backend, its benchmark calls, each timed to the framework's sync --
    def start_block(self, framework, specs, cfg, threads, batch):
        """Build this block's backend; False (and the error kept) if this revision fails."""
        from bench.measure.micro import micro_calls

        if self.error:
            return False
        try:
            self.backend, (unet, diffusion, _), plan = self.build(
                framework, specs, cfg["device"], threads, cfg["seed"])
            with self.active():
                self.calls = micro_calls(self.backend, unet, diffusion, cfg["sample"]["runs"],
                                         batch, plan)
            return True
        except Exception:
            self.error = _last_line()
            return False

    def stop_memory_accounting(self):
        stop = getattr(self.backend, "stop_memory_accounting", None)
        if stop:
            with self.active():
                stop()

    def timed(self, name):
        """One call of benchmark `name` to the framework's sync, in seconds; None (and the
        revision marked failed) if it raised."""
        if self.error:
            return None
        try:
            with self.active():
                return timed_call(self.backend, self.calls[name])
        except Exception:
            self.error = _last_line()
            return None

    def end_block(self):
        self.backend = self.calls = None


def micro_parser():
    """The micro-suite options this worker understands (the gate validates `-- ...` with it)."""
    p = argparse.ArgumentParser(prog="interleaved micro-suite options", add_help=False)
    from bench import REPO_ROOT

    p.add_argument("--micro-config", default=os.path.join(REPO_ROOT, "configs", "quick.yaml"))
    p.add_argument("--micro-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--micro-batch", type=int, default=None)
    return p


def run(args, micro):
    from bench.measure.env import usable_cpus
    from bench.run import config as C

    cfg = C.load_config(micro.micro_config, micro.micro_set, check_paths=False)
    specs = C.build_specs(cfg)
    batch = micro.micro_batch or cfg["train"]["batch_size"]
    threads = cfg["threads"] or usable_cpus()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)   # before either revision imports the framework
    # The driver's own `models` (loaded by bench.run.config) steps aside for the revisions'.
    revs = {s: Revision(s, getattr(args, s)) for s in SIDES}
    times = {}
    other = {"base": "candidate", "candidate": "base"}
    for order in balanced_order((args.first, other[args.first]), args.blocks):
        alive = [revs[s] for s in order
                 if revs[s].start_block(args.framework, specs, cfg, threads, batch)]
        if not alive:
            break
        # the gate reports no memory: the framework's own accounting stays out of the timed
        # calls (process-wide, so one revision that knows how suffices; older ones lack it)
        for rev in alive:
            rev.stop_memory_accounting()
        for name in list(alive[0].calls):
            for rev in alive:
                for _ in range(args.warmup):
                    rev.timed(name)
            # A B B A ...: each revision equally often first and second, call by call
            sequence = [alive[ABBA[k % 4] % len(alive)] for k in range(len(alive) * args.rounds)]
            block = {rev.side: [] for rev in alive}
            for rev in sequence:
                dt = rev.timed(name)
                if dt is not None:
                    block[rev.side].append(dt)
            for side, values in block.items():
                times.setdefault(name, {s: [] for s in SIDES})[side].append(values)
        for rev in alive:
            rev.end_block()
    return {"framework": args.framework, "first": args.first, "blocks": args.blocks,
            "rounds": args.rounds, "warmup": args.warmup, "batch_size": batch,
            "threads": threads, "config": micro.micro_config, "overrides": micro.micro_set,
            "times_s": times,
            "sides": {s: {"tree": rev.tree, "error": rev.error} for s, rev in revs.items()}}


def _last_line():
    lines = [line for line in traceback.format_exc().strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "error"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.gate.interleaved", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", required=True)
    ap.add_argument("--base", required=True, help="the base revision's checkout")
    ap.add_argument("--candidate", required=True, help="the candidate revision's checkout")
    ap.add_argument("--first", choices=SIDES, default="base",
                    help="the revision that opens block 1 (blocks alternate)")
    ap.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS)
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    ap.add_argument("--out", required=True)
    args, rest = ap.parse_known_args(argv)
    micro = micro_parser().parse_args(rest)
    result = run(args, micro)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
