"""Which rank this process is, framework-free: torchrun's env contract or Open MPI's. Both
backends read it at construction (docs/DISTRIBUTED.md); bench/run/distributed.py launches."""
import os


def rank_env(environ=None):
    """(rank, world size, local rank) of this process: torchrun's variables (RANK,
    WORLD_SIZE, LOCAL_RANK), else Open MPI's (OMPI_COMM_WORLD_*), else one process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "OMPI_COMM_WORLD_SIZE" in env:
        return (int(env["OMPI_COMM_WORLD_RANK"]), int(env["OMPI_COMM_WORLD_SIZE"]),
                int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)))
    return 0, 1, 0
