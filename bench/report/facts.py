"""The report's tables that describe a run rather than time it: FID/KID, peak memory per
cell, the environment, the cells and their processes, and what failed.

Same conventions as bench/report/tables.py (the timing tables), whose helpers these share.
"""
import pandas as pd

from bench.report import fmt
from bench.report.load import RunData, of_type
from bench.report.tables import NO_GPU, NOT_MEASURED, _key, cell_records, col, has_gpu


# ---------------------------------------------------------------- quality (FID)

def fid_metrics(run: RunData) -> pd.DataFrame:
    recs = of_type(run.records, "fid")
    if recs.empty:
        return recs
    # bench.fid.compute_metrics names them kid_mean / is_mean; accept either spelling.
    for short in ("kid", "is"):
        if short not in recs and f"{short}_mean" in recs:
            recs = recs.assign(**{short: recs[f"{short}_mean"]})
    keep = [c for c in ("cell", "framework", "sampler", "steps", "eta", "fid", "kid", "is",
                        "num_images") if c in recs]
    return recs[keep].sort_values([c for c in ("framework", "sampler", "steps") if c in keep])


def fid_table(run: RunData) -> fmt.Table | None:
    m = fid_metrics(run)
    if m.empty:
        return None
    cols = [c for c in ("framework", "sampler", "steps", "eta", "fid", "kid", "is", "num_images")
            if c in m]
    names = {"eta": "η", "fid": "FID ↓", "kid": "KID ↓", "is": "IS ↑", "num_images": "images"}
    rows = []
    for _, r in m.iterrows():
        rows.append([fmt.num(r[c]) if c in ("fid", "kid", "is") else _key(r[c]) for c in cols])
    return fmt.Table([names.get(c, c) for c in cols], rows,
                     "FID/KID against the reference set (lower is better); IS higher is better.")


def generation_speed_table(run: RunData, baseline: str) -> fmt.Table | None:
    """How fast the quality cells generated their samples (a training run scored by
    `harness.py fid` has no sampling benchmark, but it timed this): one process per
    framework, so plain ratios without an interval."""
    recs = of_type(run.records, "fid")
    if recs.empty or "sample_time_s" not in recs:
        return None
    rows = []
    for _, r in recs.sort_values(["sampler", "steps", "framework"]).iterrows():
        base = recs[(recs["framework"] == baseline) & (recs["sampler"] == r["sampler"])
                    & (recs["steps"] == r["steps"])]
        ratio = "baseline" if r["framework"] == baseline else (
            f"{r['sample_time_s'] / base.iloc[0]['sample_time_s']:.2f}×" if len(base)
            else fmt.DASH)
        rows.append([r["framework"], r["sampler"], _key(r["steps"]), _key(r["num_images"]),
                     fmt.num(r["sample_time_s"]), fmt.num(r["images_per_s"]),
                     fmt.num(r["sample_time_s"] / r["steps"]), ratio])
    return fmt.Table(["framework", "sampler", "steps", "images", "time (s)", "images/s",
                      "time per step, all images (s)", f"time ÷ {baseline}"], rows,
                     caption="Generation of the quality cells' samples (quality.batch_size per "
                             "batch), timed in one process per framework: no interval, and "
                             "not a replicated benchmark (add the sample workload for that).")


# ---------------------------------------------------------------- memory (every cell)

def memory_table(run: RunData) -> fmt.Table | None:
    if run.cells.empty:
        return None
    gpu = has_gpu(run)
    rows = []
    for _, c in run.cells.iterrows():
        mem = cell_records(run, c["cell"], "memory")
        mon = cell_records(run, c["cell"], "monitor")
        if mem.empty and mon.empty:
            continue
        dev = col(mon, "proc_gpu_mem_bytes")
        if not dev.notna().any():
            dev = col(mon, "gpu_mem_used_bytes")
        rss = pd.concat([col(mem, "peak_rss_bytes"), col(mon, "rss_bytes")])
        rows.append([c["cell"], c["framework"], c["workload"],
                     fmt.mib(col(mem, "allocator_peak_bytes").max()),
                     (fmt.mib(dev.max()) if dev.notna().any() else NOT_MEASURED) if gpu
                     else NO_GPU, fmt.mib(rss.max())])
    if not rows:
        return None
    return fmt.Table(["cell", "framework", "workload", "peak allocator (MiB)",
                      "peak device (MiB)", "peak host RSS (MiB)"], rows,
                     "Allocator: the framework's own counter (— where it has none). Device: NVML "
                     "process memory. Host RSS: peak resident set of the worker process.")


# ---------------------------------------------------------------- environment, cells, failures

def environment_summary(run: RunData) -> fmt.Table | None:
    """What a reader needs to place the numbers: device, CPU, frameworks, threads, git, time."""
    m = run.manifest
    if not m:
        return None
    host, gpu, git = m.get("host") or {}, m.get("gpu") or {}, m.get("git") or {}
    devices = [d.get("name") for d in gpu.get("devices") or [] if d.get("name")]
    device = ", ".join(devices) if devices else f"CPU only ({gpu.get('reason') or 'no GPU'})"
    if devices and gpu.get("driver"):
        device += f" (driver {gpu['driver']}, CUDA {gpu.get('cuda_driver', '?')})"
    cpu = f"{host.get('cpu_model') or fmt.DASH}, {host.get('cpu_count_usable', '?')} usable " \
          f"of {host.get('cpu_count_logical', '?')} CPUs"
    fws = []
    for fw, v in (m.get("frameworks") or {}).items():
        if isinstance(v, dict):
            ver = ", ".join(f"{k} {x}" for k, x in v.items() if k not in ("framework", "device"))
            fws.append(f"{fw} on {v.get('device', '?')}: {ver}")
    sha = git.get("sha")
    rows = [["device", device], ["CPU", cpu],
            ["frameworks", "; ".join(fws) or fmt.DASH],
            ["math mode", math_mode_line(m)],
            ["threads", str(m.get("threads", fmt.DASH))],
            ["git", (f"{sha[:12]}{' (dirty: uncommitted changes)' if git.get('dirty') else ''}"
                     if sha else fmt.DASH)],
            ["started", str(m.get("created_iso") or fmt.DASH)],
            ["python", f"{host.get('python', fmt.DASH)} ({host.get('platform', fmt.DASH)})"]]
    return fmt.Table(["", ""], rows, numeric=False)


def math_mode_line(m) -> str:
    """'fp32 (no TF32; torch: ..., jittor: ...)', or the mode marked CUDA only on a CPU run."""
    mode = m.get("math_mode") or (m.get("config") or {}).get("math_mode")
    if not mode:
        return fmt.DASH
    fws = {fw: v for fw, v in (m.get("frameworks") or {}).items() if isinstance(v, dict)}
    if not any(v.get("device") == "cuda" for v in fws.values()):
        return f"{mode} (CUDA only; not applicable: no framework ran on CUDA)"
    bits = []
    for fw, v in fws.items():
        keys = [k for k in ("allow_tf32_matmul", "allow_tf32_cudnn", "float32_matmul_precision",
                            "cudnn_benchmark", "use_tensorcore", "cudnn") if k in v]
        bits.append(f"{fw}: " + ", ".join(f"{k} {v[k]}" for k in keys))
    override = next((v.get("nvidia_tf32_override") for v in fws.values()), None)
    what = "no TF32" if mode == "fp32" else "TF32 tensor cores allowed"
    return (f"{mode} ({what}; NVIDIA_TF32_OVERRIDE={override}; " + "; ".join(bits) + ")")


def frameworks_table(run: RunData) -> fmt.Table | None:
    """Per cell: device and versions as the worker reported them in its `start` record."""
    rows = []
    for _, c in run.cells.iterrows():
        start = cell_records(run, c["cell"], "start")
        if start.empty:
            continue
        s = start.iloc[0]
        versions = s.get("versions")
        versions = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "framework") \
            if isinstance(versions, dict) else (fmt.DASH if versions is None else str(versions))
        rows.append([c["cell"], c["framework"], str(s.get("device", fmt.DASH)), versions])
    if not rows:
        return None
    return fmt.Table(["cell", "framework", "device", "versions"], rows, numeric=False)


def cells_table(run: RunData) -> fmt.Table | None:
    if run.cells.empty:
        return None
    rows = [[c["cell"], c["framework"], c["workload"], _variant(c["variant"]),
             f"{c['replicates_ok']}/{c['replicates']}", c["status"]]
            for _, c in run.cells.iterrows()]
    return fmt.Table(["cell", "framework", "workload", "variant", "processes ok", "status"],
                     rows, numeric=False)


def _variant(v) -> str:
    return fmt.DASH if v is None or v != v or v == "" else _key(v)


def failed_cells(run: RunData) -> pd.DataFrame:
    """The processes (units) that did not finish ok, each with its own error."""
    if run.units is None or run.units.empty:
        return run.units if run.units is not None else run.cells
    return run.units[run.units["status"] != "ok"]


def first_line(text, limit=200) -> str:
    if text is None or text != text:
        return fmt.DASH
    line = str(text).strip().splitlines()[0] if str(text).strip() else fmt.DASH
    return line if len(line) <= limit else line[:limit - 1] + "…"
