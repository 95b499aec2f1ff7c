"""torch's op profile, reduced to the shared categories of models/common/opcats.py."""
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from models.common.opcats import torch_category


class TorchOpProfiler:
    """torch.profiler over CPU (and CUDA) activities. On the CPU an op's time is its self CPU
    time; on CUDA it is the self device time of the kernels it launched (their CPU-side
    launch cost is then framework overhead)."""

    raw_name = "profile-torch-trace.json"

    def __init__(self, device):
        self.device = device
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        self.prof = profile(activities=acts)

    def __enter__(self):
        self.prof.__enter__()
        return self

    def __exit__(self, *exc):
        self.prof.__exit__(*exc)
        return False

    def save(self, path):
        """The chrome trace (open in chrome://tracing or Perfetto)."""
        self.prof.export_chrome_trace(str(path))

    def ops(self):
        """[{name, category, seconds, count}], one row per (op name, category), every op."""
        rows = defaultdict(lambda: {"seconds": 0.0, "count": 0})
        for e in self.prof.events():
            if e.device_type != torch.autograd.DeviceType.CPU:
                continue  # device kernels are counted through the CPU op that launched them
            chain, p = [e.name], e.cpu_parent
            while p is not None:
                chain.append(p.name)
                p = p.cpu_parent
            category = torch_category(chain[::-1])
            if category is None:
                continue
            us = e.self_device_time_total if self.device == "cuda" else e.self_cpu_time_total
            row = rows[(e.name, category)]
            row["seconds"] += us / 1e6
            row["count"] += 1
        return [{"name": n, "category": c, **v} for (n, c), v in rows.items()]
