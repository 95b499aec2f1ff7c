"""Slots: cells of one run side by side on one machine (`runner.slots`, docs/CLUSTER.md).

A slot is a share of the machine that one worker process has to itself: a GPU (its
CUDA_VISIBLE_DEVICES entry) with the CPU cores nearest it, or on a machine without a GPU a set
of cores. The runner pins a cell's process to its slot's cores (CPU affinity, inherited by
every thread and child the framework starts) and gives it the slot's GPU alone, so cells in
different slots share no core and no device. They still share memory bandwidth, caches and
the power budget: what that costs is measured (docs/CLUSTER.md "What concurrency costs").

Which cell runs where is fixed before the run (`assign`): the replicates of each cell rotate
over the slots, so every framework runs on every slot equally often where the counts allow
and a slow slot falls on each framework alike; the cells of one round go to neighbouring
slots, so the frameworks of a round run at the same time.
"""
import os
from dataclasses import dataclass


class SlotError(ValueError):
    """runner.slots asks for more than the machine has."""


@dataclass(frozen=True)
class Slot:
    index: int
    cores: tuple
    gpu: int | None = None         # the CUDA device index (PCI bus order), None on a CPU slot
    gpu_uuid: str | None = None

    def env(self, env):
        """The worker's environment in this slot: its GPU alone, its cores' thread count."""
        env = dict(env)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu_uuid or str(self.gpu)
        return env

    def pin(self):
        """Run in the child before exec (subprocess preexec_fn): only the slot's cores."""
        os.sched_setaffinity(0, self.cores)

    def to_dict(self):
        return {"slot": self.index, "cores": list(self.cores), "gpu": self.gpu,
                "gpu_uuid": self.gpu_uuid}


def _gpus():
    """[(index, uuid, CPU set NVML calls nearest)] of the visible GPUs; [] without NVML."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:   # no NVML library, no driver: a machine without a GPU
        return []
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            if visible is not None and str(i) not in visible.split(",") and \
                    not any(uuid.startswith(v) for v in visible.split(",") if v):
                continue
            try:
                words = pynvml.nvmlDeviceGetCpuAffinity(h, (os.cpu_count() + 63) // 64)
                near = {w * 64 + b for w, word in enumerate(words) for b in range(64)
                        if word >> b & 1}
            except pynvml.NVMLError:
                near = set()
            out.append((i, uuid, near))
        return out
    finally:
        pynvml.nvmlShutdown()


def plan(spec, device, threads, cpus=None, gpus=None):
    """The slots of `runner.slots` = spec (1, N or "auto") for a run on `device` with
    `threads` per process (None: all of a slot's cores). On a GPU run (device cuda, or auto
    with GPUs) a slot per GPU; otherwise disjoint core sets of `threads` cores (auto: as many
    as fit). Raises SlotError when spec asks for more than there is."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
    if gpus is None:
        gpus = _gpus() if device != "cpu" else []
    on_gpu = bool(gpus) and device != "cpu"
    if spec == "auto":
        n = len(gpus) if on_gpu else max(1, len(cpus) // (threads or len(cpus)))
    else:
        n = int(spec)
    if n == 1:
        return [Slot(0, tuple(cpus))]
    if on_gpu and n > len(gpus):
        raise SlotError(f"{n} slots but {len(gpus)} visible GPU(s): at most {len(gpus)}, "
                        f"or 'auto'")
    per = len(cpus) // n
    if per < 1 or (threads and threads * n > len(cpus)):
        need = f"{threads} thread(s) each" if threads else "a core each"
        raise SlotError(f"{n} slots of {need} need {n * (threads or 1)} CPUs; this process "
                        f"may use {len(cpus)}: at most {len(cpus) // (threads or 1)}, or 'auto'")
    size = threads or per
    free, slots = list(cpus), []
    for k in range(n):
        gpu = gpus[k] if on_gpu else None
        near = [c for c in free if gpu and c in gpu[2]]      # the GPU's own cores first
        cores = (near + [c for c in free if c not in near])[:size]
        free = [c for c in free if c not in cores]
        slots.append(Slot(k, tuple(sorted(cores)), gpu[0] if gpu else None,
                          gpu[1] if gpu else None))
    return slots


def assign(cells, n):
    """{cell label: slot index}: replicate r of the k-th distinct cell (in run order) goes to
    slot (k + r - 1) mod n."""
    keys = {}
    for c in cells:
        keys.setdefault((c.point, c.cell_id), len(keys))
    return {c.label: (keys[(c.point, c.cell_id)] + c.replicate - 1) % n for c in cells}
