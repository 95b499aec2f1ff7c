"""How much time Jittor spends per executed op outside the op's kernel (what its profiler
does not time: "framework overhead" in the report's "Where the time goes").

Three graphs, each synced as a whole and timed (median of 5), then profiled: the synced wall
time minus the profiled op time, per executed op. Numbers of 2026-12-02 (2-core AMD EPYC, 2
threads, three runs): 0.9-1.0 us per plain op (2000 independent reductions), 11-12.5 us per
fused op (500 independent chains of 6 elementwise ops and a reduction), 5-13.5 us per op on
activation-sized tensors (8x64x16x16). A quick-model training step executes 2718 ops, mostly
fused, and has ~29 ms outside its ops and its graph building: ~10 us an op, what fused ops
cost here. So the cost comes with fusion (work per fused op at every sync), not with every
op alike.

    .venv/bin/python benchmarks/jittor_executor_cost.py
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from models.jt.runtime import import_jittor  # noqa: E402

jt = import_jittor(use_cuda=False)


def outside_ops_per_op(make_graph, repeats=5):
    """(executed ops, synced wall s, profiled op s, seconds outside ops per executed op)."""
    for _ in range(3):  # compile and warm
        jt.sync(make_graph())
    walls = []
    for _ in range(repeats):
        outs = make_graph()
        t0 = time.perf_counter()
        jt.sync(outs)
        walls.append(time.perf_counter() - t0)
    outs = make_graph()
    with jt.profile_scope() as rep:
        jt.sync(outs)
    op_s = sum(float(r[3]) for r in rep[1:]) / 1e9
    n = sum(int(float(r[2])) for r in rep[1:])
    wall = float(np.median(walls))
    return n, wall, op_s, (wall - op_s) / n


def main():
    rng = np.random.default_rng(0)
    small = [jt.array(rng.random(64, dtype=np.float32)) for _ in range(2000)]
    big = [jt.array(rng.random((8, 64, 16, 16), dtype=np.float32)) for _ in range(200)]
    jt.sync_all(True)
    graphs = {
        "plain op (independent reductions)": lambda: [x.sum() for x in small],
        "fused op (6 elementwise + a reduction)":
            lambda: [((x * 2.0 + 1.0).sigmoid() * x - 0.5).exp().sum() for x in small[:500]],
        "activation-sized op (8x64x16x16)": lambda: [(b * 2.0).sum(dims=[2, 3]) for b in big],
    }
    for name, make in graphs.items():
        n, wall, op_s, per = outside_ops_per_op(make)
        print(f"{name:42s} {n:5d} ops  synced {wall * 1e3:7.2f} ms  ops {op_s * 1e3:7.2f} ms  "
              f"outside ops {per * 1e6:5.1f} us/op")


if __name__ == "__main__":
    main()
