"""The commands beyond a benchmark matrix: real training with checkpoints and exact resume
(`train`), sampling from a checkpoint (`sample`: grids, GIFs, interpolation) and scoring a
training run's checkpoints (`fid`). Each runs one framework per process.

May import every layer up to run.
"""
