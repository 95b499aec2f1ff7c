"""diffbench's framework-free engine, in layers that import only downward.

    gate      compare result sets: the regression gate (harness.py compare)
    report    tables, plots, markdown and HTML from a results folder
    tasks     the train / sample / fid commands (real training, sampling, scoring a run)
    run       configs, the cell matrix, the runner, the worker and its workloads, checkpoints
    quality   sample quality: FID/KID/IS, image grids and GIFs, generating images
    measure   clocks, the process monitor, the environment manifest, machine calibration
    data      datasets (real file formats) and the loaders that feed batches
    stats     statistics over replicate processes (intervals, verdicts)
    records   the results folder: append-only records, atomic JSON, loading a run

A module may import from its own layer and the layers below it, never above (even inside a
function); tests/test_layers.py enforces it, with LAYERS below as the order. Nothing in this
package imports torch or jittor at module level; a worker process loads one framework
through models.registry.load_backend. docs/ARCHITECTURE.md walks one cell through the layers.
"""
import os

# The checkout this package lives in (subprocesses run from it; data/ is searched in it).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lowest first: each layer may import the ones before it.
LAYERS = ("records", "stats", "data", "measure", "quality", "run", "tasks", "report", "gate")
