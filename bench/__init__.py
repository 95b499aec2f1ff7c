"""diffbench's framework-free engine: config, runner, worker, workloads, monitor, results.

Nothing in this package imports torch or jittor at module level; a worker process loads one
framework through models.registry.load_backend.
"""
