"""Data-parallel train cells (docs/DISTRIBUTED.md): how a cell of world size N is launched,
and how a worker knows its rank. Framework-free: no framework is imported here.

torch   `python -m torch.distributed.run` (torchrun) starts N ranks with the env contract
        RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; the backend joins the
        process group (gloo on CPU, NCCL on CUDA) and wraps the model in
        DistributedDataParallel.
jax     the same torchrun starts the ranks (a plain process launcher here), plus
        DIFFBENCH_JAX_COORDINATOR (host:port of JAX's own coordinator, a port of its own);
        the backend calls jax.distributed.initialize and jits the step over a global batch
        sharded by rank (gloo collectives on CPU, NCCL on CUDA): XLA all-reduces the
        gradients.
jittor  `mpirun -np N` (Open MPI) starts N ranks; Jittor sees OMPI_COMM_WORLD_* at import,
        loads its MPI ops, and its optimizer all-reduces (means) the gradients.

Each rank trains on its slice of the same global batch (train.batch_size), so N ranks
compute the single-process step. Rank 0 writes the cell folder's records; rank k > 0 writes
rank<k>/ inside it. Either launcher ends every rank when one fails; the runner's timeout
kills the launcher and all its children.
"""
import os
import shutil
import socket
import sys

MPI_PACKAGES = "openmpi-bin libopenmpi-dev"
# Variables every rank needs; mpirun forwards them explicitly (-x) so that the same command
# also works across nodes, where the environment is not inherited.
FORWARDED = ("PYTHONPATH", "PYTHONUNBUFFERED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "OPENBLAS_NUM_THREADS", "CUDA_DEVICE_ORDER", "NVIDIA_TF32_OVERRIDE",
             "FIX_TORCH_ERROR", "log_silent", "nvcc_path", "use_mpi", "HOME", "PATH")


def rank_dir(cell_dir, rank):
    """Where a rank writes its records: the cell folder (rank 0) or rank<k>/ inside it."""
    return cell_dir if rank == 0 else os.path.join(cell_dir, f"rank{rank}")


def local_ranks(cfg, world_size, framework="torch"):
    """The ranks this machine's launcher runs: all of them on one node (and under mpirun,
    which places every rank itself); torchrun with distributed.nnodes > 1: node k runs ranks
    [k * N/nnodes, (k + 1) * N/nnodes) (its static rendezvous)."""
    d = cfg["distributed"]
    if world_size == 1 or d["nnodes"] == 1 or framework not in TORCHRUN:
        return list(range(world_size))
    per = world_size // d["nnodes"]
    return list(range(d["node_rank"] * per, (d["node_rank"] + 1) * per))


def threads_per_rank(cfg, threads, world_size, framework="torch"):
    """distributed.threads_per_rank, else the cell's threads shared out among the ranks this
    machine runs (at least 1 each)."""
    per = cfg["distributed"]["threads_per_rank"]
    return per if per else max(1, int(threads) // len(local_ranks(cfg, world_size, framework)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mpi_problem():
    """None when mpirun and mpicc (Jittor compiles its MPI ops with it) are on PATH, else
    the one-line reason."""
    missing = [tool for tool in ("mpirun", "mpicc") if shutil.which(tool) is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not found: Jittor's data parallelism runs under Open "
            f"MPI; install the Debian packages {MPI_PACKAGES} (make setup does, as root)")


TORCHRUN = ("torch", "jax")   # the frameworks whose ranks torchrun starts


def launch_argv(framework, world_size, worker_argv, cfg, env):
    """The command that runs `worker_argv` (python -m bench.run.worker ...) as world_size
    ranks of `framework` with environment `env`; worker_argv itself for one process."""
    if world_size == 1:
        return list(worker_argv)
    d = cfg["distributed"]
    module_args = worker_argv[worker_argv.index("-m") + 1:]  # bench.run.worker --cell-dir ...
    if framework in TORCHRUN:
        port = d["master_port"] or free_port()
        if framework == "jax":   # a port every node agrees on: master_port + 1 when set
            env["DIFFBENCH_JAX_COORDINATOR"] = \
                f"{d['master_addr']}:{port + 1 if d['master_port'] else free_port()}"
        return [sys.executable, "-m", "torch.distributed.run",
                f"--nnodes={d['nnodes']}", f"--node-rank={d['node_rank']}",
                f"--nproc-per-node={world_size // d['nnodes']}",
                f"--master-addr={d['master_addr']}", f"--master-port={port}",
                "--module", *module_args]
    if framework == "jittor":
        argv = [shutil.which("mpirun") or "mpirun", "-np", str(world_size),
                "--oversubscribe", "--bind-to", "none"]
        if d["mpirun_hosts"]:
            argv += ["-H", d["mpirun_hosts"]]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv.append("--allow-run-as-root")  # containers run as root; Open MPI refuses it
        for var in FORWARDED:
            if var in env:
                argv += ["-x", var]
        return argv + [sys.executable, "-m", *module_args]
    raise ValueError(f"framework={framework!r} has no data-parallel launcher")
