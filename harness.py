#!/usr/bin/env python3
"""diffbench command line: a thin dispatcher over bench/.

    harness.py bench CONFIG [--set key.sub=value ...] [--only GLOB ...] [--results-dir DIR]
    harness.py bench --resume RUN_DIR [--only GLOB ...]
    harness.py bench CONFIG --executor slurm [--partition P] [--time-limit MIN] ...
    harness.py env [--no-frameworks] [--json]
    harness.py gpu-check [--out FILE]                 # on a GPU machine; docs/GPU.md

Exit codes: 0 success; 1 a cell failed (or, for other commands, a failed/regressed result);
2 bad input (one line on stderr naming file:key and what is valid; nothing is written).

Adding a subcommand: write `add_<name>(subparsers)` that registers its arguments and sets
`func=cmd_<name>`, append it to SUBCOMMANDS, and import what it needs inside cmd_<name> (the
CLI must start fast and never import a framework itself).
"""
import argparse
import json
import os
import sys

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Raised by subcommands for user errors: printed as one line, exit 2."""


# ------------------------------------------------------------------------------------- bench

def add_bench(sub):
    p = sub.add_parser("bench", help="run a benchmark matrix (one subprocess per cell)")
    p.add_argument("config", nargs="?", help="YAML config, e.g. configs/quick.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, value parsed as YAML (repeatable), "
                        "e.g. --set train.batch_size=16 --set frameworks=[torch]")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="finish a run: re-run only its cells without an ok summary")
    p.add_argument("--only", nargs="+", default=[], metavar="GLOB",
                   help="run only the cells whose id matches, e.g. 'torch-*' '*-sample'")
    p.add_argument("--results-dir", metavar="DIR", help="same as --set runner.results_dir=DIR")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--run-dir-file", metavar="FILE",
                   help="write the run folder's path to FILE as soon as it exists (make bench "
                        "uses it to report the run it just made)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: cells run here (default); slurm: a Slurm job per sweep point "
                        "through submitit (docs/CLUSTER.md)")
    p.add_argument("--partition", help="slurm: same as --set slurm.partition=P")
    p.add_argument("--time-limit", type=int, metavar="MIN",
                   help="slurm: same as --set slurm.time_limit_min=MIN")
    p.add_argument("--gpus-per-node", type=int, metavar="N",
                   help="slurm: same as --set slurm.gpus_per_node=N")
    p.add_argument("--account", help="slurm: same as --set slurm.account=A")
    p.set_defaults(func=cmd_bench)


# --executor slurm's flags: (flag, the slurm.* key it overrides, its argparse attribute)
SLURM_FLAGS = (("--partition", "partition", "partition"),
               ("--time-limit", "time_limit_min", "time_limit"),
               ("--gpus-per-node", "gpus_per_node", "gpus_per_node"),
               ("--account", "account", "account"))


def slurm_options(cfg, args):
    """The config's slurm section with the command line's flags on top."""
    options = dict(cfg.get("slurm") or {"time_limit_min": 60})
    for _, key, attr in SLURM_FLAGS:
        if getattr(args, attr) is not None:
            options[key] = getattr(args, attr)
    return options


def cmd_bench(args):
    from bench.run import config as C
    from bench.run import matrix, runner

    try:
        if args.resume:
            run_dir = args.resume
            manifest_path = os.path.join(run_dir, "manifest.json")
            if not os.path.isfile(manifest_path):
                raise C.ConfigError(f"--resume {run_dir}: not a run folder (no manifest.json)")
            if args.overrides or args.results_dir:
                raise C.ConfigError("--resume: --set/--results-dir cannot change a run's "
                                    "config; start a new run instead")
            with open(manifest_path) as f:
                manifest = json.load(f)
            cfg = manifest["config"]
            if args.config:
                given = C.load_config(args.config, check_paths=False)
                if C.config_hash(given) != manifest["config_hash"]:
                    raise C.ConfigError(f"{args.config}: differs from the config of "
                                        f"{run_dir}; resume without CONFIG to use the run's own")
            C.validate(cfg, f"{manifest_path}:config.")
            cells = matrix.select_cells(runner.cells_from_manifest(manifest), args.only)
        else:
            if not args.config:
                raise C.ConfigError("bench: give a CONFIG (e.g. configs/quick.yaml) or "
                                    "--resume RUN_DIR")
            overrides = list(args.overrides)
            if args.results_dir:
                overrides.append(f"runner.results_dir={json.dumps(args.results_dir)}")
            cfg = C.load_config(args.config, overrides)
            cells = matrix.select_cells(matrix.expand_cells(cfg), args.only)
        slurm = None
        stray = [flag for flag, _, attr in SLURM_FLAGS if getattr(args, attr) is not None]
        if stray and args.executor != "slurm":
            raise C.ConfigError(f"{stray[0]}: only with --executor slurm")
        if args.executor == "slurm":   # refused before anything is written
            from bench.run.slurm import SlurmError, check

            slurm = slurm_options(cfg, args)
            try:
                check(slurm, cfg, cells)
            except SlurmError as e:
                raise C.ConfigError(str(e)) from None
        if not args.resume:
            run_dir = runner.new_run_dir(cfg["runner"]["results_dir"], cfg["name"])
    except C.ConfigError as e:
        raise BadInput(str(e)) from None

    if args.run_dir_file:
        with open(args.run_dir_file, "w") as f:
            f.write(run_dir + "\n")
    if slurm is not None:
        from bench.run import slurm as slurm_executor

        code, summaries = slurm_executor.run(cfg, cells, run_dir, slurm,
                                             resume=bool(args.resume), argv=sys.argv,
                                             progress=not args.quiet)
    else:
        code, summaries = runner.run(cfg, cells, run_dir, resume=bool(args.resume),
                                     argv=sys.argv, progress=not args.quiet)
    print(runner.format_table(summaries))
    print(f"results: {run_dir}")
    return code


# --------------------------------------------------------------------------------------- env

def add_env(sub):
    p = sub.add_parser("env", help="print the environment manifest (host, GPU, git, frameworks)")
    p.add_argument("--frameworks", nargs="*", default=None,
                   help="frameworks to query (default: all registered); each in a subprocess")
    p.add_argument("--no-frameworks", action="store_true", help="skip the framework subprocesses")
    p.set_defaults(func=cmd_env)


def cmd_env(args):
    from bench.measure.env import environment
    from bench.run.schema import known_frameworks

    names = [] if args.no_frameworks else (args.frameworks or list(known_frameworks()))
    unknown = [n for n in names if n not in known_frameworks()]
    if unknown:
        raise BadInput(f"env --frameworks: unknown {unknown}; valid: {list(known_frameworks())}")
    print(json.dumps(environment(names), indent=2))
    return EXIT_OK


# ------------------------------------------------------------------------------------ report

def add_report(sub):
    p = sub.add_parser("report", help="write reports/<run-id>/report.md + report.html from a run")
    p.add_argument("run_dir", help="a results/<run-id> folder")
    p.add_argument("--out", metavar="DIR", help="default: reports/<run-id>")
    p.add_argument("--baseline", metavar="FRAMEWORK",
                   help="framework the ratio columns divide by (default: torch)")
    p.set_defaults(func=cmd_report)


def cmd_report(args):
    from bench.report import ReportInputError, write_report

    try:
        paths = write_report(args.run_dir, args.out, baseline=args.baseline)
    except ReportInputError as e:
        raise BadInput(str(e)) from None
    print(f"report: {paths['markdown']}\nreport: {paths['html']}")
    return EXIT_OK


# ----------------------------------------------------------------------------------- compare

def add_compare(sub):
    from bench.gate import compare

    p = sub.add_parser("compare", help="compare timings with a baseline (exit 1 on a regression)")
    compare.add_arguments(p)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args):
    from bench.gate import compare

    return compare.run_cli(args)


# ---------------------------------------------------------------------------------------- ab

def add_ab(sub):
    from bench.gate import ab

    p = sub.add_parser("ab", help="A/B regression gate: two git revisions measured in one job, "
                       "interleaved pairs of processes (exit 1 on a regression)",
                       description=ab.__doc__.split("\n\n")[0],
                       usage="harness.py ab BASE [CANDIDATE] [options] [-- micro-suite args]")
    ab.add_arguments(p)
    p.set_defaults(func=cmd_ab, micro_args=[])


def cmd_ab(args):
    from bench.gate import ab

    return ab.run_cli(args)


# ------------------------------------------------------------------------------ train / fid

def add_train(sub):
    p = sub.add_parser("train", help="train for real, with checkpoints (each framework in turn)")
    p.add_argument("config", nargs="?", help="YAML config, e.g. configs/fmnist-quick.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, help="train to this many steps (default train.total_steps)")
    p.add_argument("--frameworks", nargs="+", help="default: the config's frameworks")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a training run from its "
                   "latest checkpoints (exactly: same batches, noise and dropout)")
    p.add_argument("--results-dir", metavar="DIR", help="same as --set runner.results_dir=DIR")
    p.set_defaults(func=cmd_train)


def cmd_train(args):
    from bench.run import config as C
    from bench.run import runner
    from bench.run.schema import known_frameworks
    from bench.tasks.train import run_training

    try:
        if args.resume:
            cfg = _manifest_config(args.resume)
            run_dir = args.resume
        else:
            if not args.config:
                raise C.ConfigError("train: give a CONFIG or --resume RUN_DIR")
            overrides = list(args.overrides)
            if args.results_dir:
                overrides.append(f"runner.results_dir={json.dumps(args.results_dir)}")
            cfg = C.load_config(args.config, overrides)
            run_dir = runner.new_run_dir(cfg["runner"]["results_dir"], cfg["name"])
        frameworks = args.frameworks or cfg["frameworks"]
        unknown = [f for f in frameworks if f not in known_frameworks()]
        if unknown:
            raise C.ConfigError(f"--frameworks: unknown {unknown}; valid: {list(known_frameworks())}")
        steps = args.steps or cfg["train"]["total_steps"]
        if steps < 1:
            raise C.ConfigError(f"--steps {steps}: must be >= 1")
        if cfg["model"]["family"] == "dit" and cfg["model"]["num_classes"]:
            raise C.ConfigError("model.num_classes: `harness.py train` trains an unconditional "
                                "model (no loader carries labels yet); set it to 0")
    except C.ConfigError as e:
        raise BadInput(str(e)) from None
    codes = run_training(cfg, run_dir, frameworks, steps, resume=bool(args.resume), argv=sys.argv)
    print(f"results: {run_dir}")
    return EXIT_OK if all(c == 0 for c in codes.values()) else EXIT_FAILED


def _manifest_config(run_dir):
    from bench.run import config as C

    path = os.path.join(run_dir, "manifest.json")
    if not os.path.isfile(path):
        raise C.ConfigError(f"{run_dir}: not a run folder (no manifest.json)")
    with open(path) as f:
        return json.load(f)["config"]


def _trained_frameworks(run_dir):
    """Frameworks whose <fw>-train cell in run_dir holds at least one checkpoint."""
    from bench.run.checkpoint import find_checkpoint

    cells = os.path.join(run_dir, "cells")
    out = []
    for d in sorted(os.listdir(cells)) if os.path.isdir(cells) else []:
        if d.endswith("-train"):
            try:
                find_checkpoint(os.path.join(cells, d, "checkpoints"))
                out.append(d[:-len("-train")])
            except FileNotFoundError:
                pass
    return out


def add_fid(sub):
    p = sub.add_parser("fid", help="FID/KID(/IS) of a training run's latest checkpoints, per "
                       "framework and DDIM step count (writes <fw>-quality cells)")
    p.add_argument("run_dir", help="a run made by `harness.py train`")
    p.add_argument("--steps", type=int, nargs="+", help="DDIM step counts (default quality.steps)")
    p.add_argument("--num-images", type=int, help="samples per step count (default quality.num_images)")
    p.add_argument("--frameworks", nargs="+", help="default: every framework with a train cell")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override quality.* keys, e.g. --set quality.eta=1.0")
    p.set_defaults(func=cmd_fid)


def cmd_fid(args):
    import subprocess

    from bench import REPO_ROOT
    from bench.measure.env import child_env
    from bench.run import config as C
    from bench.run.runner import resolved_threads
    from bench.run.schema import defaults

    try:
        cfg = _manifest_config(args.run_dir)
        q = dict(cfg.get("quality") or defaults()["quality"])
        for text in args.overrides:
            parts, value = C.parse_override(text)
            if parts[0] != "quality" or len(parts) != 2 or parts[1] not in q:
                raise C.ConfigError(f"--set {text}: only quality.<key> here; valid: "
                                    f"{['quality.' + k for k in q]}")
            q[parts[1]] = value
        if args.steps:
            q["steps"] = args.steps
        if args.num_images:
            q["num_images"] = args.num_images
        full = dict(cfg, quality=q)
        C.validate_quality(full, f"{args.run_dir}:")
        have = _trained_frameworks(args.run_dir)
        frameworks = args.frameworks or have
        missing = [f for f in frameworks if f not in have]
        if missing or not frameworks:
            raise C.ConfigError(f"{args.run_dir}: no checkpoint for {missing or 'any framework'}"
                                f" (checkpoints exist for {have}); fid scores runs made by "
                                "`harness.py train`")
    except C.ConfigError as e:
        raise BadInput(str(e)) from None
    threads = resolved_threads(cfg)
    code = EXIT_OK
    for fw in frameworks:
        print(f"[fid] {fw}: {q['sampler']} steps {q['steps']}, {q['num_images']} images each",
              flush=True)
        rc = subprocess.call([sys.executable, "-m", "bench.tasks.fid", "--run-dir", args.run_dir,
                              "--framework", fw, "--quality-json", json.dumps(q),
                              "--threads", str(threads)], cwd=REPO_ROOT, env=child_env(threads))
        code = code if rc == 0 else EXIT_FAILED
    print(f"results: {args.run_dir}")
    return code


# ---------------------------------------------------------------------------- sample / parity

def add_sample(sub):
    # Its arguments belong to bench.tasks.sample (main() hands them over untouched, -h too).
    p = sub.add_parser("sample", help="sample from a checkpoint: grid, denoise GIF, "
                       "progressive x0, interpolation (harness.py sample -h)",
                       add_help=False)
    p.set_defaults(func=cmd_sample, rest=[])


def cmd_sample(args):
    import subprocess

    # Its own process: a framework is imported there, never in the CLI.
    return subprocess.call([sys.executable, "-m", "bench.tasks.sample"] + args.rest,
                           cwd=os.path.dirname(os.path.abspath(__file__)))


def add_parity(sub):
    p = sub.add_parser("parity", help="prove the frameworks compute the same model as torch "
                       "(fresh random case, every error vs its tolerance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="check this config's model, diffusion and optimiser "
                   "(default: a tiny model); the verdict is recorded in results/parity/ and "
                   "shown in the headline of every report with these settings")
    p.add_argument("--frameworks", nargs="+", metavar="FW",
                   help="compare these with torch (default: the config's frameworks; without "
                        "--config or for a torch-only config, every installed one)")
    p.set_defaults(func=cmd_parity)


def cmd_parity(args):
    from models.parity import main as parity_main, specs_dict

    argv = ["check", "--seed", str(args.seed)]
    if args.frameworks:
        argv += ["--frameworks", ",".join(args.frameworks)]
    if not args.config:
        return parity_main(argv)
    from bench.run import config as C

    try:
        cfg = C.load_config(args.config, check_paths=False)
        points = C.point_configs(cfg) or {None: cfg}
        specs = {p: C.build_specs(pcfg) for p, pcfg in points.items()}
    except C.ConfigError as e:
        raise BadInput(str(e)) from None
    others = [f for f in cfg["frameworks"] if f != "torch"]
    if not args.frameworks and others:   # the config's, beside torch (a torch-only config:
        argv += ["--frameworks", ",".join(others)]   # every installed one, the default)
    worst = 0
    for point, (unet, diffusion, optim) in specs.items():
        # a sweep: every point's model, each a short check (docs/CONFIG.md "Sweeps")
        extra = ["--short"] if point is not None else []
        if point is not None:
            print(f"sweep point {point}:", flush=True)
        try:
            code = parity_main(argv + extra + ["--specs", json.dumps(
                specs_dict(unet, diffusion, optim))])
        except RuntimeError as e:  # a framework's process failed (e.g. out of memory)
            print(f"parity check did not run to the end: {e}", flush=True)
            code = EXIT_FAILED
        worst = max(worst, code)
    return worst


# ------------------------------------------------------------------------------- gpu-check

def add_gpu_check(sub):
    p = sub.add_parser("gpu-check", help="on a GPU machine: NVML, both frameworks on CUDA, "
                       "parity on CUDA, configs/quick-gpu.yaml; a PASS/FAIL checklist "
                       "(docs/GPU.md). Without a GPU: one line, exit 0")
    p.add_argument("--out", metavar="FILE", help="the checklist as markdown (default "
                   "results/gpu-check.md)")
    p.add_argument("--skip-bench", action="store_true",
                   help="only NVML, the frameworks and parity (no quick-gpu run)")
    p.set_defaults(func=cmd_gpu_check)


def cmd_gpu_check(args):
    import subprocess

    from bench.measure import env

    ok, why = env.cuda_device_present()
    if not ok:
        print(f"gpu-check: no GPU on this machine ({why}); nothing to check")
        return EXIT_OK
    # Its own process: it starts framework children and never imports one here.
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools",
                                        "gpu_check.py")]
    cmd += (["--out", args.out] if args.out else []) + (["--skip-bench"] if args.skip_bench
                                                        else [])
    return subprocess.call(cmd, cwd=os.path.dirname(os.path.abspath(__file__)))


# -------------------------------------------------------------------------------------- main

SUBCOMMANDS = [add_bench, add_env, add_report, add_compare, add_ab, add_train, add_fid,
               add_sample, add_parity, add_gpu_check]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit 2), like every other bad input."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def command_name(add):
    """add_gpu_check -> gpu-check: the subcommand an add_<name> function registers."""
    return add.__name__[len("add_"):].replace("_", "-")


def build_parser(command=None):
    """Every subcommand's parser, or only `command`'s when it names one: some parsers import
    their module for its defaults (ab, compare: scipy and matplotlib, ~0.5 s), which a
    `harness.py bench` should not pay (the tests call the CLI hundreds of times)."""
    ap = _Parser(prog="harness.py", description="diffbench: PyTorch vs Jittor "
                                 "DDPM/DDIM benchmarks, measured honestly.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = [a for a in SUBCOMMANDS if command_name(a) == command] or SUBCOMMANDS
    for add in chosen:
        add(sub)
    return ap


def main(argv=None):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser(argv[0] if argv else None)
    passthrough = []
    if argv[:1] == ["ab"] and "--" in argv:  # ab: what follows -- goes to the micro-suite
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    elif argv[:1] == ["sample"]:  # sample: every argument (-h included) goes to its module
        argv, passthrough = argv[:1], argv[1:]
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors are bad input too
        return EXIT_BAD_INPUT if e.code not in (0, None) else EXIT_OK
    if args.command == "ab":
        args.micro_args = passthrough
    elif args.command == "sample":
        args.rest = passthrough
    try:
        return args.func(args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
