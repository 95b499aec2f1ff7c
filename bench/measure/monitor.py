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
from scipy.integrate import trapezoid

from bench.records.results import RecordWriter

MIN_INTERVAL_S = 0.1


def _nvml_device_index():
    """The first visible GPU, as the worker's framework will use it."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


class Nvml:
    """The NVML calls the monitor needs; each query returns None where unsupported."""

    def __init__(self, index=None):
        import pynvml  # from nvidia-ml-py; raises ImportError when absent

        self.nv = pynvml
        pynvml.nvmlInit()
        try:
            self.index = _nvml_device_index() if index is None else index
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            name = pynvml.nvmlDeviceGetName(self.handle)
            self.name = name.decode() if isinstance(name, bytes) else name
        except Exception:
            pynvml.nvmlShutdown()
            raise

    def _try(self, fn, *args):
        try:
            return fn(self.handle, *args)
        except self.nv.NVMLError:
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
            used = [p.usedGpuMemory for p in procs if p.pid in pids]
            # usedGpuMemory is None where the driver hides it (some containers).
            out["proc_gpu_mem_bytes"] = sum(u for u in used if u is not None) if used else 0
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


def open_nvml(use_gpu=True):
    """(Nvml or None, status dict) — status is what the manifest/summary records."""
    if not use_gpu:
        return None, {"gpu": "absent", "reason": "device=cpu"}
    try:
        nvml = Nvml()
    except ImportError:
        return None, {"gpu": "absent", "reason": "nvidia-ml-py not installed"}
    except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded / no device
        return None, {"gpu": "absent", "reason": f"NVML unavailable: {e}"}
    return nvml, {"gpu": "present", "index": nvml.index, "name": nvml.name}


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

    def __init__(self, pid, path, interval_s=0.5, use_gpu=True):
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(f"monitor interval_s={interval_s} is invalid: >= {MIN_INTERVAL_S} "
                             "(NVML utilisation is a 1/6-1 s duty cycle)")
        self.pid, self.path, self.interval_s = pid, path, interval_s
        self.use_gpu = use_gpu
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
        nvml, self.gpu_status = open_nvml(self.use_gpu)
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

def energy_between(samples, t0, t1):
    """Joules the GPU used between two time.time() stamps, from monitor records.

    Uses NVML's cumulative energy counter when it is there (exact), else integrates power_w
    with the trapezoid rule (resolution = the sampling interval). None without power data.
    """
    def interp(key):
        pts = [(s["t_wall"], s[key]) for s in samples if s.get(key) is not None]
        if len(pts) < 2 or t1 <= t0 or pts[0][0] > t1 or pts[-1][0] < t0:
            return None
        ts, vs = np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)
        return ts, vs

    got = interp("energy_j_counter")
    if got is not None:
        ts, vs = got
        return float(np.interp(t1, ts, vs) - np.interp(t0, ts, vs))
    got = interp("power_w")
    if got is None:
        return None
    ts, vs = got
    grid = np.concatenate([[t0], ts[(ts > t0) & (ts < t1)], [t1]])
    return float(trapezoid(np.interp(grid, ts, vs), grid))


def summarize(samples, epochs=(), images_measured=None, t_span=None, measured=None):
    """Monitor metrics for a cell summary: CPU/RSS always, GPU fields and energy when present.

    measured: (t0, t1), the wall-clock span of the cell's measured steps/chains. Contention
    (others_cpu_percent_mean) is judged over the samples inside it: what other processes did
    while compile and warm-up ran does not touch the medians, so it must not flag them."""
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
    for key, name in (("gpu_util_percent", "gpu_util_percent_mean"),):
        vals = [s[key] for s in samples if s.get(key) is not None]
        if vals:
            out[name] = float(np.mean(vals))
    for key, name in (("gpu_mem_used_bytes", "gpu_mem_used_peak_bytes"),
                      ("proc_gpu_mem_bytes", "proc_gpu_mem_peak_bytes"),
                      ("power_w", "power_w_peak")):
        vals = [s[key] for s in samples if s.get(key) is not None]
        if vals:
            out[name] = max(vals)
    per_epoch = [energy_between(samples, e["t_wall"] - e["time_s"], e["t_wall"]) for e in epochs]
    if per_epoch and all(v is not None for v in per_epoch):
        out["energy_j_per_epoch"] = per_epoch
        images = sum(e.get("images", 0) for e in epochs)
        if images:
            out["energy_j_per_image"] = float(sum(per_epoch) / images)
    if t_span is not None:
        total = energy_between(samples, *t_span)
        if total is not None:
            out["energy_j_total"] = total
    return out
