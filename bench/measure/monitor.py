"""A sampler thread in the parent that watches a cell's process tree.

Always: psutil CPU% (100 = one core busy) and RSS, summed over the worker and its children
(DataLoader workers), and the whole machine's CPU% (to flag measurements taken while other
processes competed for the cores). With an NVIDIA GPU and NVML: utilisation, memory used, the worker's own
GPU memory, power and the energy counter, SM clock, temperature. No GPU or no NVML is recorded
as `gpu: absent` with the reason, never an error.

Samples go to monitor.jsonl as `monitor` records stamped with time.time(), the clock the
worker's step records use, so the two line up. NVML's utilisation is a duty cycle averaged
over 1/6-1 s, so intervals below MIN_INTERVAL_S would only repeat values.
"""
import os
import threading
import time

import numpy as np
import psutil

from bench.records.results import RecordWriter

MIN_INTERVAL_S = 0.1


def visible_device(env=None):
    """The device a worker's framework calls cuda:0: the first CUDA_VISIBLE_DEVICES entry.

    Returns (kind, value): ("index", n) for an integer, ("uuid", "GPU-...") for a GPU UUID
    (CUDA also accepts a unique prefix of one), ("mig", "MIG-...") for a MIG instance.
    Unset means ("index", 0); an empty or "-1"-like value hides every GPU: (None, None)."""
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return "index", 0
    first = raw.split(",")[0].strip()
    if first.isdigit():
        return "index", int(first)
    if first.startswith("MIG-"):
        return "mig", first
    if first.startswith("GPU-"):
        return "uuid", first
    return None, None  # "", "-1", "none", "NoDevFiles": no GPU visible to the worker


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def resolve_device(nv, env=None, uuid=None, pci_bus_id=None):
    """(handle, how) of the GPU the worker uses, NVML-side.

    NVML enumerates by PCI bus order; CUDA, unless CUDA_DEVICE_ORDER=PCI_BUS_ID, by
    "fastest first", so an integer index means the same GPU in both only under PCI_BUS_ID
    order (bench.measure.env.child_env sets it for every worker) or on a one-GPU machine.
    A known identity (the worker's UUID or PCI bus id, as torch reports them) wins over the
    environment; UUIDs and MIG ids are looked up as such, never read as index 0."""
    if uuid:
        return nv.nvmlDeviceGetHandleByUUID(uuid), "uuid"
    if pci_bus_id:
        return nv.nvmlDeviceGetHandleByPciBusId(pci_bus_id), "pci_bus_id"
    env = os.environ if env is None else env
    kind, value = visible_device(env)
    if kind is None:
        raise RuntimeError(f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r} "
                           "hides every GPU")
    if kind in ("uuid", "mig"):
        try:
            return nv.nvmlDeviceGetHandleByUUID(value), kind
        except nv.NVMLError:
            if kind == "mig":
                raise
        # CUDA accepts a unique prefix of a GPU UUID; NVML wants the whole one.
        matches = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            if _text(nv.nvmlDeviceGetUUID(h)).startswith(value):
                matches.append(h)
        if len(matches) != 1:
            raise RuntimeError(f"CUDA_VISIBLE_DEVICES entry {value!r} matches "
                               f"{len(matches)} GPUs")
        return matches[0], "uuid prefix"
    order = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    handle = nv.nvmlDeviceGetHandleByIndex(value)
    if order == "PCI_BUS_ID" or nv.nvmlDeviceGetCount() == 1:
        return handle, "index"
    # FASTEST_FIRST on a machine with several GPUs: CUDA's n may be another NVML index.
    return handle, "index (CUDA_DEVICE_ORDER=FASTEST_FIRST: may differ from NVML's order)"


class Nvml:
    """The NVML calls the monitor needs; each query returns None where unsupported.

    env: the worker's environment (its CUDA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER); uuid /
    pci_bus_id: the worker's device identity where known. `device` says which GPU is
    watched (index, uuid, name, pci_bus_id, resolved_by)."""

    def __init__(self, env=None, uuid=None, pci_bus_id=None):
        import pynvml  # from nvidia-ml-py; raises ImportError when absent

        self.nv = pynvml
        pynvml.nvmlInit()
        try:
            self.handle, how = resolve_device(pynvml, env, uuid, pci_bus_id)
            self.name = _text(pynvml.nvmlDeviceGetName(self.handle))
            self.index = self._try(pynvml.nvmlDeviceGetIndex)
            self.uuid = self._try(pynvml.nvmlDeviceGetUUID)
            pci = self._try(pynvml.nvmlDeviceGetPciInfo)
            bus = None if pci is None else getattr(pci, "busId", None)
            self.device = {"index": self.index, "uuid": _text(self.uuid), "name": self.name,
                           "pci_bus_id": _text(bus), "resolved_by": how}
        except Exception:
            pynvml.nvmlShutdown()
            raise

    def _try(self, fn, *args):
        try:
            return fn(self.handle, *args)
        except self.nv.NVMLError:
            return None
        except AttributeError:  # an older nvidia-ml-py without this call
            return None

    def sample(self, pids):
        nv, out = self.nv, {}
        util = self._try(nv.nvmlDeviceGetUtilizationRates)
        out["gpu_util_percent"] = None if util is None else float(util.gpu)
        mem = self._try(nv.nvmlDeviceGetMemoryInfo)
        out["gpu_mem_used_bytes"] = None if mem is None else int(mem.used)
        procs = self._try(nv.nvmlDeviceGetComputeRunningProcesses)
        if procs is None:
            out["proc_gpu_mem_bytes"] = None
        else:
            # Only the worker tree's own entries: other processes on the same GPU are in
            # gpu_mem_used_bytes (the device total), never in this figure.
            used = [p.usedGpuMemory for p in procs if p.pid in pids]
            known = [u for u in used if u is not None]
            # usedGpuMemory is None where the driver hides it (some containers): unknown,
            # not 0. No entry of ours: the worker holds no GPU memory (yet).
            out["proc_gpu_mem_bytes"] = sum(known) if known else (None if used else 0)
        power_mw = self._try(nv.nvmlDeviceGetPowerUsage)
        out["power_w"] = None if power_mw is None else power_mw / 1000.0
        energy_mj = self._try(nv.nvmlDeviceGetTotalEnergyConsumption)
        out["energy_j_counter"] = None if energy_mj is None else energy_mj / 1000.0
        out["sm_clock_mhz"] = self._try(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM)
        out["temperature_c"] = self._try(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU)
        return out

    def close(self):
        try:
            self.nv.nvmlShutdown()
        except Exception:
            pass


def open_nvml(use_gpu=True, env=None, uuid=None, pci_bus_id=None):
    """(Nvml or None, status dict) — status is what the manifest/summary records."""
    if not use_gpu:
        return None, {"gpu": "absent", "reason": "device=cpu"}
    try:
        nvml = Nvml(env, uuid, pci_bus_id)
    except ImportError:
        return None, {"gpu": "absent", "reason": "nvidia-ml-py not installed"}
    except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded / no device
        return None, {"gpu": "absent", "reason": f"NVML unavailable: {e}"}
    return nvml, {"gpu": "present", **nvml.device}


class ProcessTree:
    """CPU% and RSS of a process and its descendants.

    CPU is the tree's *cumulative* CPU time, differenced between samples: for every live
    process of the tree its own user+system time plus the time of the children it has reaped
    (children_user/children_system, which the kernel adds to the reaper when a child exits).
    A child that lives and dies between two samples - Jittor's compiler processes, a few
    hundred ms each - is therefore still counted as the cell's own CPU, instead of showing up
    as "other processes" in the machine-wide figure (which once flagged every Jittor cell on a
    fresh cache as run on a busy machine)."""

    def __init__(self, pid):
        self.root = psutil.Process(pid)
        self._last = (time.monotonic(), self._cpu_s([self.root]))

    def _cpu_s(self, procs):
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def sample(self):
        try:
            current = [self.root] + self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        rss, pids, live = 0, set(), []
        for p in current:
            try:
                rss += p.memory_info().rss
                pids.add(p.pid)
                live.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        now, cpu_s = time.monotonic(), self._cpu_s(live)
        t0, cpu0 = self._last
        self._last = (now, cpu_s)
        # A descendant reaped by a process outside the tree takes its time along: never < 0.
        cpu = max(0.0, (cpu_s - cpu0) / (now - t0) * 100.0) if now > t0 else 0.0
        return {"cpu_percent": cpu, "rss_bytes": rss, "num_procs": len(pids)}, pids


class Monitor:
    """Start after the child is spawned, stop after it exits.

        with Monitor(proc.pid, path, interval_s=0.5, use_gpu=True) as mon: proc.wait()
    """

    def __init__(self, pid, path, interval_s=0.5, use_gpu=True, env=None):
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(f"monitor interval_s={interval_s} is invalid: >= {MIN_INTERVAL_S} "
                             "(NVML utilisation is a 1/6-1 s duty cycle)")
        self.pid, self.path, self.interval_s = pid, path, interval_s
        self.use_gpu = use_gpu
        self.env = env  # the worker's environment: which GPU it sees
        self.gpu_status = {"gpu": "absent", "reason": "monitor not started"}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._thread = threading.Thread(target=self._run, name=f"monitor-{self.pid}", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self):
        nvml, self.gpu_status = open_nvml(self.use_gpu, self.env)
        try:
            tree = ProcessTree(self.pid)
        except psutil.NoSuchProcess:
            tree = None
        self.ncpu = psutil.cpu_count() or 1
        psutil.cpu_percent(None)  # start the system-wide interval
        with RecordWriter(self.path) as out:
            while tree is not None and not self._stop.is_set():
                got = tree.sample()
                if got is None:
                    break
                fields, pids = got
                # The whole machine, same unit (100 = one core): what other processes took is
                # what contaminates a measurement on a shared machine.
                fields["host_cpu_percent"] = psutil.cpu_percent(None) * self.ncpu
                if nvml is not None:
                    fields.update(nvml.sample(pids))
                out.write("monitor", **fields)
                self.samples += 1
                self._stop.wait(self.interval_s)
        if nvml is not None:
            nvml.close()


# ------------------------------------------------------------------------------------ energy

# NVML's utilisation is a duty cycle over the driver's window (1/6-1 s): a mean over a phase
# shorter than this, or over fewer samples, says more about where the windows fell than about
# the work. Such a phase gets no number: gpu_util_note says why.
MIN_UTIL_PHASE_S = 2.0
MIN_UTIL_SAMPLES = 4


def cumulative_energy(samples):
    """(times, joules so far) from monitor records, or None without two usable points.

    NVML's counter (millijoules since the driver loaded, recorded as energy_j_counter) when
    every point has it; else power_w integrated with the trapezoid rule (its resolution is
    the sampling interval). Only differences of the result mean anything."""
    pts = [(s["t_wall"], s["energy_j_counter"]) for s in samples
           if s.get("energy_j_counter") is not None]
    if len(pts) >= 2:
        ts, vs = np.array(pts, dtype=float).T
        return ts, vs
    pts = [(s["t_wall"], s["power_w"]) for s in samples if s.get("power_w") is not None]
    if len(pts) < 2:
        return None
    from scipy.integrate import cumulative_trapezoid  # here: scipy costs every run ~0.2 s

    ts, ps = np.array(pts, dtype=float).T
    return ts, np.concatenate([[0.0], cumulative_trapezoid(ps, ts)])


def energy_over(samples, windows):
    """Joules the GPU used inside the (t0, t1) time.time() windows, summed: the cumulative
    energy (counter, else integrated power) differenced at each window's edges, interpolated
    between samples. None without energy data or when a window lies outside the samples."""
    curve = cumulative_energy(samples)
    windows = [(a, b) for a, b in windows if b > a]
    if curve is None or not windows:
        return None
    ts, es = curve
    starts, ends = np.array(windows, dtype=float).T
    if ends.max() <= ts[0] or starts.min() >= ts[-1]:
        return None  # no overlap with the sampled time at all

    def at(t):
        # Linear inside the samples; beyond the first/last one (a phase ending less than an
        # interval before the worker exits) continued at the nearest segment's rate.
        v = np.interp(t, ts, es)
        lo, hi = t < ts[0], t > ts[-1]
        v[lo] = es[0] - (ts[0] - t[lo]) * (es[1] - es[0]) / (ts[1] - ts[0])
        v[hi] = es[-1] + (t[hi] - ts[-1]) * (es[-1] - es[-2]) / (ts[-1] - ts[-2])
        return v

    return float(np.sum(at(ends) - at(starts)))


def energy_between(samples, t0, t1):
    """Joules the GPU used between two time.time() stamps (see energy_over)."""
    return energy_over(samples, [(t0, t1)])


def utilisation(samples, measured=None):
    """(mean GPU utilisation % over the measured phase, None) or (None, why not)."""
    if measured is None:
        return None, "no measured phase"
    t0, t1 = measured
    vals = [s["gpu_util_percent"] for s in samples if s.get("gpu_util_percent") is not None
            and t0 <= s["t_wall"] <= t1]
    if t1 - t0 < MIN_UTIL_PHASE_S or len(vals) < MIN_UTIL_SAMPLES:
        return None, (f"not meaningful: measured phase {t1 - t0:.2f} s with {len(vals)} "
                      f"sample(s); needs >= {MIN_UTIL_PHASE_S:g} s and >= {MIN_UTIL_SAMPLES} "
                      "samples (NVML utilisation is a duty cycle over up to 1 s)")
    return float(np.mean(vals)), None


def summarize(samples, epochs=(), images_measured=None, t_span=None, measured=None,
              measured_windows=None):
    """Monitor metrics for a cell summary: CPU/RSS always, GPU fields and energy when present.

    measured: (t0, t1), the wall-clock span of the cell's measured steps/chains. Contention
    (others_cpu_percent_mean) and GPU utilisation are judged over the samples inside it: what
    happened while compile and warm-up ran does not touch the medians, so it must not flag
    them. measured_windows: the (t0, t1) of every measured step or chain (gaps such as
    validation left out) and images_measured the images they processed: energy per image is
    the energy inside those windows over those images, never since the driver loaded nor
    over compile and warm-up."""
    out = {"monitor_samples": len(samples)}
    if not samples:
        return out
    cpu = np.array([s["cpu_percent"] for s in samples], dtype=float)
    out["cpu_percent_mean"] = float(cpu[1:].mean() if len(cpu) > 1 else cpu.mean())
    out["rss_peak_bytes_monitor"] = int(max(s["rss_bytes"] for s in samples))
    host = [(s["t_wall"], s["host_cpu_percent"], s["cpu_percent"]) for s in samples[1:]
            if s.get("host_cpu_percent") is not None]
    scope = "whole cell"
    if measured is not None:
        inside = [h for h in host if measured[0] < h[0] <= measured[1]]
        if inside:
            host, scope = inside, "measured phase"
    if host:
        # CPU that other processes used while the cell ran (100 = one core): > ~20 means the
        # numbers were taken on a busy machine and are not to be trusted.
        out["others_cpu_percent_mean"] = float(np.mean([max(0.0, h - c) for _, h, c in host]))
        out["others_cpu_scope"] = scope
    if any(s.get("gpu_util_percent") is not None for s in samples):
        out["gpu_util_percent_mean"], note = utilisation(samples, measured)
        if note:
            out["gpu_util_note"] = note
    for key, name in (("gpu_mem_used_bytes", "gpu_mem_used_peak_bytes"),
                      ("proc_gpu_mem_bytes", "proc_gpu_mem_peak_bytes"),
                      ("power_w", "power_w_peak")):
        vals = [s[key] for s in samples if s.get(key) is not None]
        if vals:
            out[name] = max(vals)
    per_epoch = [energy_between(samples, e["t_wall"] - e["time_s"], e["t_wall"]) for e in epochs]
    if per_epoch and all(v is not None for v in per_epoch):
        out["energy_j_per_epoch"] = per_epoch
    if measured_windows:
        energy = energy_over(samples, measured_windows)
        if energy is not None:
            out["energy_j_measured"] = energy
            out["energy_source"] = ("nvml energy counter" if any(
                s.get("energy_j_counter") is not None for s in samples) else "power_w integral")
            if images_measured:
                out["energy_j_per_image"] = float(energy / images_measured)
            out["energy_j_per_step"] = float(energy / len(measured_windows))
    if t_span is not None:
        total = energy_between(samples, *t_span)
        if total is not None:
            out["energy_j_total"] = total
    return out
