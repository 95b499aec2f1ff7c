"""pytest-benchmark micro-suite: one framework per process, picked with --framework.

    pytest benchmarks --framework torch --benchmark-json=micro-torch.json

(`python benchmarks/run_micro.py` runs it per framework, in 3 processes each, and merges.)
The model is the one in --micro-config (default configs/quick.yaml, overridable with
--micro-set like `harness.py bench --set`); every benchmark name carries the framework, e.g.
`test_train_step[torch]`, so both frameworks' results can live in one file.

Each process records in the JSON's machine_info["diffbench"]: the framework's versions, the
hardware (CPU model, usable CPUs, GPU names), the calibration score (bench/measure/calibrate.py) and
the micro settings, so `harness.py compare` can warn when two files are not comparable.

Debug knobs for testing the regression gate (never set them for a real baseline):
--micro-inject-delay-s adds a fixed sleep to every timed call; --micro-inject-slowdown F
sleeps F x the call's own measured time (a proportional slowdown of F, e.g. 0.1 = 10%);
--micro-inject-skip-warmup leaves the (never measured) warm-up calls unslowed.
"""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Per process: enough rounds for a stable process median. The gate's units are processes
# (run_micro.py runs 3 per framework), not rounds.
DEFAULT_ROUNDS = 15
DEFAULT_WARMUP_ROUNDS = 3  # Jittor compiles on call 1 and settles by call 2-3


def pytest_addoption(parser):
    g = parser.getgroup("diffbench micro-benchmarks")
    g.addoption("--framework", default=None, help="torch | jittor (one per process)")
    g.addoption("--micro-config", default=os.path.join(REPO, "configs", "quick.yaml"),
                help="config whose model/diffusion/optim the micro-benchmarks use")
    g.addoption("--micro-set", action="append", default=[], metavar="KEY=VALUE",
                help="override a config key, as harness.py bench --set")
    g.addoption("--micro-batch", type=int, default=None,
                help="batch size (default: the config's train.batch_size)")
    g.addoption("--micro-rounds", type=int, default=DEFAULT_ROUNDS,
                help="measured rounds per benchmark (one call each)")
    g.addoption("--micro-warmup", type=int, default=DEFAULT_WARMUP_ROUNDS,
                help="unmeasured warm-up rounds per benchmark")
    g.addoption("--micro-inject-delay-s", type=float, default=0.0,
                help="DEBUG: fixed sleep added to every timed call")
    g.addoption("--micro-inject-slowdown", type=float, default=0.0,
                help="DEBUG: sleep this fraction of each call's own time (0.1 = 10%% slower)")
    g.addoption("--micro-inject-only", default="*", metavar="GLOB",
                help="DEBUG: inject only into benchmarks whose name matches, e.g. "
                     "'test_train_step*' (default: all)")
    g.addoption("--micro-inject-skip-warmup", action="store_true",
                help="DEBUG: inject only into the measured calls, not the warm-up ones (a "
                     "slowed first call that compiles just costs time: with 9x, ~10 s a "
                     "Jittor train step)")


class MicroSettings:
    """Everything the benchmarks need, resolved once per session from the options."""

    def __init__(self, config):
        from bench.run import config as C
        from bench.run.schema import known_frameworks

        self.framework = config.getoption("framework")
        if self.framework is None:
            raise pytest.UsageError("benchmarks/: pass --framework torch|jittor (one framework "
                                    "per process; run_micro.py runs them all)")
        known = known_frameworks()
        if self.framework not in known:
            raise pytest.UsageError(f"--framework {self.framework}: unknown; valid: "
                                    f"{list(known)}")
        self.config_path = config.getoption("micro_config")
        self.overrides = list(config.getoption("micro_set"))
        try:
            cfg = C.load_config(self.config_path, self.overrides, check_paths=False)
            self.unet, self.diffusion, self.optim = C.build_specs(cfg)
        except C.ConfigError as e:
            raise pytest.UsageError(str(e)) from None
        self.cfg = cfg
        self.batch_size = config.getoption("micro_batch") or cfg["train"]["batch_size"]
        self.rounds = config.getoption("micro_rounds")
        self.warmup_rounds = config.getoption("micro_warmup")
        self.inject_delay_s = config.getoption("micro_inject_delay_s")
        self.inject_slowdown = config.getoption("micro_inject_slowdown")
        self.inject_only = config.getoption("micro_inject_only")
        self.inject_skip_warmup = config.getoption("micro_inject_skip_warmup")
        for name, value, low in (("--micro-batch", self.batch_size, 1),
                                 ("--micro-rounds", self.rounds, 1),
                                 ("--micro-warmup", self.warmup_rounds, 0),
                                 ("--micro-inject-delay-s", self.inject_delay_s, 0),
                                 ("--micro-inject-slowdown", self.inject_slowdown, 0)):
            if value < low:
                raise pytest.UsageError(f"{name}: {value} is too small; must be >= {low}")
        from bench.measure.env import usable_cpus

        self.threads = cfg["threads"] or usable_cpus()

    def describe(self):
        """What makes two micro runs comparable (stored in the JSON, checked by compare)."""
        from dataclasses import asdict

        return {"config": os.path.relpath(self.config_path, REPO), "overrides": self.overrides,
                "model": asdict(self.unet), "diffusion": asdict(self.diffusion),
                "batch_size": self.batch_size, "rounds": self.rounds,
                "warmup_rounds": self.warmup_rounds, "threads": self.threads,
                "device": self.cfg["device"], "inject_delay_s": self.inject_delay_s,
                "inject_slowdown": self.inject_slowdown, "inject_only": self.inject_only,
                "inject_skip_warmup": self.inject_skip_warmup}

    def injection(self, benchmark_name):
        """(delay_s, slowdown) for one benchmark: the debug knobs, if its name matches."""
        import fnmatch

        if fnmatch.fnmatch(benchmark_name, self.inject_only):
            return self.inject_delay_s, self.inject_slowdown
        return 0.0, 0.0


def pytest_configure(config):
    if config.getoption("help", False):
        return
    settings = MicroSettings(config)
    # The same thread count for every framework, set before either is imported (oneDNN and
    # OpenMP read it at start-up), exactly as the harness's worker environment does.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(settings.threads)
    from bench.measure.calibrate import calibration, hardware, machine_id

    # Calibrate before the framework spins up its thread pools.
    hw = hardware()
    config._diffbench = {"settings": settings, "calibration": calibration(),
                         "hardware": hw, "machine_id": machine_id(hw), "versions": None}


def pytest_generate_tests(metafunc):
    # The framework is a parameter so every benchmark name carries it: test_x[torch].
    if "framework" in metafunc.fixturenames:
        metafunc.parametrize("framework", [metafunc.config._diffbench["settings"].framework],
                             scope="session")


@pytest.fixture(scope="session")
def micro(request):
    return request.config._diffbench["settings"]


@pytest.fixture(scope="session")
def backend(request, framework, micro):
    """The framework's backend with the canonical seeded weights (one per session)."""
    from models.common.weights import init_weights
    from models.registry import load_backend

    Backend = load_backend(framework)
    b = Backend(micro.unet, micro.diffusion, micro.optim, device=micro.cfg["device"],
                threads=micro.threads, seed=micro.cfg["seed"])
    b.load_weights(init_weights(micro.unet, seed=micro.cfg["seed"]))
    b.sync()
    request.config._diffbench["versions"] = dict(Backend.versions(), device=b.device)
    return b


def pytest_benchmark_update_machine_info(config, machine_info):
    state = getattr(config, "_diffbench", None)
    if state is None:
        return
    machine_info["diffbench"] = {
        "framework": state["settings"].framework,
        "versions": {state["settings"].framework: state["versions"]},
        "hardware": state["hardware"],
        "machine_id": state["machine_id"],
        "calibration": state["calibration"],
        "micro": state["settings"].describe(),
    }
