"""What Jittor's executor-side memory profiler (`profile_memory_enable`) costs in a timed cell.

The harness turns it on in every Jittor cell because the peak-allocator figure
(jt.get_max_memory_info) needs it; torch's CUDA counters are free. If it cost Jittor time,
every Jittor number would carry it. This measures it the way the A/B gate measures a change:
the micro-suite's calls, flag on and off alternated in blocks (on off, off on, ...) inside one
process, one on/off ratio per process (bench.stats.replicates.block_ratio), an interval over
processes (judge_pairs, 5% threshold).

Numbers of 2026-12-03 (2-core AMD EPYC, quick config, 12 processes, ~2 min): training step
x1.02 [1.00, 1.05], DDPM step x1.00 [0.97, 1.02], DDIM step x1.01 [0.97, 1.05], forward
x1.01 [0.97, 1.05]: nothing measurable, so the flag stays on (docs/REPORT.md).

    .venv/bin/python benchmarks/jittor_memory_profiler_cost.py [--processes 5] [--config ...]
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ROUNDS = 4           # of two blocks, flag on then off or the reverse (Thue-Morse)
CALLS_PER_BLOCK = 4
WARMUP_CALLS = 3


def one_process(config):
    """{call name: on/off ratio} of one process, printed as JSON."""
    from bench.measure.micro import micro_calls
    from bench.measure.timer import timed_call
    from bench.run import config as C
    from bench.run.matrix import balanced_order
    from bench.stats.replicates import block_ratio
    from models.common.diffusion import sampler_plan
    from models.common.weights import init_weights
    from models.jt.backend import JittorBackend

    cfg = C.load_config(config, [], check_paths=False)
    unet, diffusion, optim = C.build_specs(cfg)
    backend = JittorBackend(unet, diffusion, optim, device="cpu", seed=cfg["seed"])
    backend.load_weights(init_weights(unet, seed=cfg["seed"]))
    calls = micro_calls(backend, unet, diffusion, cfg["sample"]["runs"],
                        cfg["train"]["batch_size"], sampler_plan)
    ratios = {}
    for name, call in calls.items():
        for _ in range(WARMUP_CALLS):
            timed_call(backend, call)
        blocks = {0: [], 1: []}
        for flags in balanced_order([1, 0], ROUNDS):
            for flag in flags:
                backend.jt.flags.profile_memory_enable = flag
                blocks[flag].append([timed_call(backend, call)
                                     for _ in range(CALLS_PER_BLOCK)])
        ratios[name] = block_ratio(blocks[0], blocks[1])
    backend.jt.flags.profile_memory_enable = 1
    print(json.dumps(ratios))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "quick.yaml"))
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one_process(args.config)

    from bench.stats.replicates import judge_pairs

    per_process = []
    for i in range(args.processes):
        out = subprocess.run([sys.executable, __file__, "--one", "--config", args.config],
                             capture_output=True, text=True, check=True, cwd=ROOT,
                             timeout=600)
        per_process.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"process {i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in per_process[-1].items()),
              flush=True)
    print("\non / off, interval over processes (95%):")
    for name in per_process[0]:
        j = judge_pairs([p[name] for p in per_process], threshold=0.05, alpha=0.05)
        print(f"  {name:32s} x{1 + j.change:.3f} [{1 + j.low:.3f}, {1 + j.high:.3f}]  {j.verdict}")


if __name__ == "__main__":
    main()
