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

Several nodes (distributed.nnodes > 1) are placed by hand (node_rank, master_addr,
mpirun_hosts on each node), or by Slurm: in the batch script of a job of exactly nnodes
nodes (`harness.py bench --executor slurm` submits such jobs) srun starts one torchrun on
every node, each told its node rank by $SLURM_NODEID, meeting at the first node's address;
mpirun maps world size / nnodes ranks to each node of the allocation and starts its remote
daemons through srun itself (Open MPI's Slurm support). The run folder is on a shared file
system there, so node 0's runner reads every rank's records.
"""
import os
import shutil
import socket
import subprocess
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
    """The ranks whose records this machine's runner reads: all of them on one node, under
    mpirun (which places every rank itself) and in a Slurm allocation (the launcher reaches
    every node; their records meet on the shared file system); torchrun with
    distributed.nnodes > 1 placed by hand: node k runs ranks [k * N/nnodes, (k + 1) * N/nnodes)
    (its static rendezvous)."""
    d = cfg["distributed"]
    if world_size == 1 or d["nnodes"] == 1 or framework not in TORCHRUN or \
            in_slurm_allocation(cfg):
        return list(range(world_size))
    per = world_size // d["nnodes"]
    return list(range(d["node_rank"] * per, (d["node_rank"] + 1) * per))


def threads_per_rank(cfg, threads, world_size, framework="torch"):
    """distributed.threads_per_rank, else the cell's threads shared out among the ranks one
    node runs (at least 1 each)."""
    per = cfg["distributed"]["threads_per_rank"]
    if per:
        return per
    on_node = world_size // cfg["distributed"]["nnodes"] if in_slurm_allocation(cfg) \
        else len(local_ranks(cfg, world_size, framework))
    return max(1, int(threads) // on_node)


def in_slurm_allocation(cfg):
    """True in the batch script of a Slurm job of exactly distributed.nnodes > 1 nodes: the
    data-parallel launchers then start on every node through srun. Not inside a job step
    (SLURM_STEP_ID: someone ran the harness with srun and placed the processes)."""
    env, n = os.environ, cfg["distributed"]["nnodes"]
    return (n > 1 and "SLURM_JOB_ID" in env and "SLURM_STEP_ID" not in env
            and env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES")) == str(n))


def slurm_first_node_address():
    """The allocation's first node (srun's node 0), by the address Slurm reaches it at
    (its NodeAddr, which is its name unless slurm.conf says otherwise)."""
    def scontrol(*args):
        return subprocess.run(["scontrol", *args], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    first = scontrol("show", "hostnames", os.environ["SLURM_JOB_NODELIST"]).split()[0]
    fields = dict(f.split("=", 1) for f in scontrol("show", "node", "-o", first).split()
                  if "=" in f)
    return fields.get("NodeAddr") or first


def node_name():
    """The node this process runs on, as its start record names it: Slurm's name for it
    inside a job (SLURMD_NODENAME; several Slurm nodes may share one host), else the host."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


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
    slurm = in_slurm_allocation(cfg)
    if framework in TORCHRUN:
        addr = slurm_first_node_address() if slurm else d["master_addr"]
        port = d["master_port"] or free_port()
        if framework == "jax":   # a port every node agrees on: master_port + 1 when set
            env["DIFFBENCH_JAX_COORDINATOR"] = \
                f"{addr}:{port + 1 if d['master_port'] else free_port()}"
        options = [f"--nnodes={d['nnodes']}", f"--nproc-per-node={world_size // d['nnodes']}",
                   f"--master-addr={addr}", f"--master-port={port}", "--module", *module_args]
        if not slurm:
            return [sys.executable, "-m", "torch.distributed.run",
                    f"--node-rank={d['node_rank']}", *options]
        # one torchrun a node, its node rank srun's node id; one failing ends them all
        return ["srun", "--overlap", f"--nodes={d['nnodes']}", "--ntasks-per-node=1",
                "--kill-on-bad-exit=1", "bash", "-c",
                'exec "$0" -m torch.distributed.run --node-rank="$SLURM_NODEID" "$@"',
                sys.executable, *options]
    if framework == "jittor":
        argv = [shutil.which("mpirun") or "mpirun", "-np", str(world_size),
                "--oversubscribe", "--bind-to", "none"]
        if slurm:   # the allocation's nodes, an equal share of ranks each
            argv += ["--map-by", f"ppr:{world_size // d['nnodes']}:node"]
        elif d["mpirun_hosts"]:
            argv += ["-H", d["mpirun_hosts"]]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv.append("--allow-run-as-root")  # containers run as root; Open MPI refuses it
        for var in FORWARDED:
            if var in env:
                argv += ["-x", var]
        return argv + [sys.executable, "-m", *module_args]
    raise ValueError(f"framework={framework!r} has no data-parallel launcher")
