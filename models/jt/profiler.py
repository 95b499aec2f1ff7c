"""Jittor's op profile (jt.profile_scope), reduced to the shared categories of
models/common/opcats.py. Jittor reports one row per compiled (possibly fused) op: its key,
call count and TotalTime in ns; relayed parents (patterns run by a oneDNN/cuDNN kernel) have
TotalTime 0, so summing TotalTime counts their work once, in the kernel's row."""
import json

from models.common.opcats import jittor_category, jittor_short_name


class JittorOpProfiler:
    raw_name = "profile-jittor.json"

    def __init__(self, jt):
        self.jt = jt
        self.scope = jt.profile_scope()
        self.report = []

    def __enter__(self):
        self.report = self.scope.__enter__()
        return self

    def __exit__(self, *exc):
        self.jt.sync_all(True)
        self.scope.__exit__(*exc)
        return False

    def rows(self):
        """The report as dicts keyed by its header (Name, Count, TotalTime, ...)."""
        if not self.report:
            return []
        header = self.report[0]
        return [dict(zip(header, r)) for r in self.report[1:]]

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.rows(), f)

    def ops(self):
        out = {}
        for r in self.rows():
            key = r["Name"]
            name, category = jittor_short_name(key), jittor_category(key)
            row = out.setdefault((name, category), {"seconds": 0.0, "count": 0, "keys": 0})
            row["seconds"] += float(r["TotalTime"]) / 1e9
            row["count"] += int(float(r["Count"]))
            row["keys"] += 1
        return [{"name": n, "category": c, "seconds": v["seconds"], "count": v["count"]}
                for (n, c), v in out.items()]
