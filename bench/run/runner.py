"""Run the cell matrix: one worker subprocess per cell, a timeout, a monitor, and a summary.

A cell fails (status "failed" or "timeout", with the error and the tail of its stderr) when the
worker raises, runs out of memory, exits nonzero, times out, or exits without writing its
summary; the next cell runs anyway. `run()` returns 1 if any cell of the run did not end "ok".
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
from tqdm import tqdm

from bench import REPO_ROOT
from bench.measure.env import child_env, git_info, gpu_info, host_info, usable_cpus
from bench.measure.monitor import Monitor
from bench.measure.monitor import summarize as monitor_summary
from bench.records import results as res
from bench.records.errors import failure_line, log_tail, strip_ansi
from bench.run import distributed, slots as slotmod
from bench.run.config import config_hash, point_configs
from bench.run.matrix import ORDER_SCHEME, Cell, expected_records

STDERR_TAIL_CHARS = 2000
# Other processes' mean CPU (100 = one core) above which a cell's timings get a warning.
BUSY_OTHERS_CPU_PERCENT = 20.0
POLL_S = 0.2


def new_run_dir(results_dir, name):
    """results/<YYYYmmdd-HHMMSS>-<name>, suffixed -2, -3... if that second is taken."""
    base = os.path.join(results_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-{name}")
    path, n = base, 2
    while os.path.exists(path):
        path, n = f"{base}-{n}", n + 1
    return path


def resolved_threads(cfg):
    return cfg["threads"] or usable_cpus()


def machine_calibration(threads):
    """bench/measure/calibrate.py's fixed numpy workload, run under the same thread settings as the
    cells, so `harness.py compare` can normalise timings across machines. None if it fails:
    a missing calibration must never stop a benchmark."""
    try:
        out = subprocess.run([sys.executable, "-m", "bench.measure.calibrate"], capture_output=True,
                             text=True, timeout=120, cwd=REPO_ROOT, env=child_env(threads))
        return json.loads(out.stdout)["calibration"] if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, OSError):
        return None


_NOT_GIVEN = object()


def write_manifest(run_dir, cfg, cells, argv=None, *, run_id=None, calibration=_NOT_GIVEN,
                   extra=None):
    """The run's identity: environment, full config + hash, seed, cells (Cells, or their dicts
    where a task lays out its folders itself). Framework versions are
    filled in from each cell's start record as cells finish (see record_versions).
    A sweep's points pass their run id (<run>/<point>), the sweep's calibration (one machine,
    one job: measured once) and `extra` (the point's name and overrides)."""
    manifest = {
        "run_id": run_id or os.path.basename(os.path.normpath(run_dir)),
        "created": time.time(),
        "created_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(argv) if argv else None,
        "config_name": cfg["name"],
        "config_hash": config_hash(cfg),
        "seed": cfg["seed"],
        "threads": resolved_threads(cfg),
        "math_mode": cfg.get("math_mode", "fp32"),
        "config": cfg,
        # one entry per process, in the order they run (the replicate design)
        "cells": [c if isinstance(c, dict) else c.to_dict() for c in cells],
        "replicates": cfg["runner"]["replicates"],
        "order": ORDER_SCHEME,
        "host": host_info(),
        "gpu": gpu_info() if cfg["device"] != "cpu" else {"gpu": "absent",
                                                           "reason": "device=cpu"},
        "git": git_info(),
        "calibration": machine_calibration(resolved_threads(cfg))
        if calibration is _NOT_GIVEN else calibration,
        "frameworks": {},
        **(extra or {}),
    }
    res.write_json_atomic(os.path.join(run_dir, res.MANIFEST), manifest)
    return manifest


def record_versions(run_dir, manifest, cell, cells_root=None):
    """The framework's versions from the cell's start record into run_dir's manifest;
    cells_root: where the cell's folder is when not under run_dir (a sweep's point)."""
    if manifest["frameworks"].get(cell.framework):
        return  # every replicate of a framework reports the same versions
    events, _ = res.read_records(os.path.join(res.cell_dir(cells_root or run_dir, cell.unit_id),
                                              res.EVENTS))
    for rec in events:
        if rec.get("type") == "start" and rec.get("versions"):
            fw = rec["framework"]
            manifest["frameworks"][fw] = dict(rec["versions"], device=rec.get("device"),
                                              math_mode_applied=rec.get("math_mode"))
            res.write_json_atomic(os.path.join(run_dir, res.MANIFEST), manifest)
            return


def _kill_tree(proc):
    try:
        parent = psutil.Process(proc.pid)
        for child in parent.children(recursive=True):
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    proc.kill()
    proc.wait()


class EventTail:
    """Reads the records a running worker appends (complete lines only) for progress."""

    def __init__(self, path):
        self.path, self.offset, self.buf = path, 0, b""

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out


class Progress:
    """tqdm bars when stderr is a terminal, plain lines otherwise (CI logs stay readable)."""

    def __init__(self, n_cells, enabled=True):
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.outer = self.inner = None
        self.concurrent = False   # cells side by side (runner.slots): no per-cell bar
        self.lock = threading.RLock()
        if self.tty:
            self.outer = tqdm(total=n_cells, desc="cells", unit="cell", position=0)

    def line(self, text):
        if not self.enabled:
            return
        with self.lock:
            if self.tty:
                tqdm.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr, flush=True)

    def cell_start(self, cell_id, total):
        if self.tty and not self.concurrent:
            self.inner = tqdm(total=total, desc=cell_id, unit="rec", position=1, leave=False)
        else:
            self.line(f"[{cell_id}] started")

    def records(self, cell_id, recs):
        for r in recs:
            if r.get("type") in ("step", "sample") and self.inner is not None:
                self.inner.update(1)
                if r.get("loss") is not None:
                    self.inner.set_postfix(loss=f"{r['loss']:.4f}", refresh=False)
            if r.get("type") == "epoch":
                self.line(f"[{cell_id}] epoch {r['epoch']}: {r['time_s']:.2f} s, loss "
                          f"{r['mean_loss']:.4f}, val {_figure(r.get('val_loss'), '.4f')}, "
                          f"{r['images_per_s']:.1f} img/s")
            elif r.get("type") == "sample" and r.get("phase") == "measure" and not self.tty:
                self.line(f"[{cell_id}] {r['sampler']} {r['steps']} steps b{r['batch_size']} "
                          f"#{r['repeat']}: {r['time_s']:.3f} s")

    def cell_end(self, cell_id, status, wall_s):
        with self.lock:
            if self.inner is not None:
                self.inner.close()
                self.inner = None
            if self.outer is not None:
                self.outer.update(1)
            self.line(f"[{cell_id}] {status} in {wall_s:.1f} s")

    def close(self):
        if self.outer is not None:
            self.outer.close()


def exit_reason(rc):
    """' (why)' after a process's exit code when a signal killed it (rc < 0), else ''."""
    return f" ({signal_reason(-rc)})" if rc < 0 else ""


def signal_reason(signum):
    """Why a worker killed by this signal died, in words for the failed cell's error."""
    if signum == signal.SIGSEGV:
        return "SIGSEGV: a segfault; its log has the Python stack of every thread"
    if signum == signal.SIGKILL:
        return "SIGKILL: killed, out of memory?"
    try:
        return f"killed by {signal.Signals(signum).name}"
    except ValueError:
        return f"killed by signal {signum}"


def run_cell(run_dir, cfg, cell, progress, slot=None, stop=None):
    """Run one cell to completion, timeout or failure; returns its final summary dict.
    slot: the bench/run/slots.py Slot it runs in when runner.slots > 1 (its cores, its GPU);
    stop: an Event another thread sets to end the run (Ctrl-C): the worker is killed."""
    d = res.cell_dir(run_dir, cell.unit_id)
    if os.path.isdir(d):  # a torn attempt (resume): its partial records would mix with new ones
        shutil.rmtree(d)
    os.makedirs(d)
    world = cell.options.get("world_size", 1)
    threads = resolved_threads(cfg)
    if world > 1:
        threads = distributed.threads_per_rank(cfg, threads, world, cell.framework)
    if slot is not None:   # the slot's cores, all of them unless `threads` asks for fewer
        threads = min(threads or len(slot.cores), len(slot.cores))
    env = child_env(threads, cfg)
    if slot is not None:
        env = slot.env(env)
    spec_path = os.path.join(d, res.SPEC)
    res.write_json_atomic(spec_path, {"cell": cell.to_dict(), "config": cfg, "threads": threads})
    stderr_path = os.path.join(d, res.STDERR)
    timeout_s = cfg["runner"]["timeout_s"]
    progress.cell_start(cell.label, expected_records(cfg, cell))
    tail = EventTail(os.path.join(d, res.EVENTS))

    started = time.time()
    t0 = time.perf_counter()
    with open(stderr_path, "wb") as err:
        # stdout joins stderr: frameworks print their complaints (Jittor's "please rerun")
        # to either, and the failure tail must show them.
        worker = [sys.executable, "-m", "bench.run.worker", "--cell-dir", d,
                  "--spec-json", spec_path]
        # N ranks: torchrun or mpirun around the same worker (bench/run/distributed.py)
        proc = subprocess.Popen(
            distributed.launch_argv(cell.framework, world, worker, cfg, env),
            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            env=env, preexec_fn=slot.pin if slot is not None else None)
    mon = None
    if cfg["monitor"]["enabled"]:
        mon = Monitor(proc.pid, os.path.join(d, res.MONITOR), cfg["monitor"]["interval_s"],
                      use_gpu=cfg["device"] != "cpu", env=env)
        mon.start()
    timed_out = False
    try:
        while proc.poll() is None:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                _kill_tree(proc)
                break
            progress.records(cell.label, tail.poll())
            time.sleep(POLL_S)
    except BaseException:  # Ctrl-C: don't leave the worker running
        _kill_tree(proc)
        raise
    finally:
        if mon is not None:
            mon.stop()
    progress.records(cell.label, tail.poll())
    wall_s = time.perf_counter() - t0
    rc = proc.returncode

    summary = res.read_summary(run_dir, cell.unit_id)
    events, _ = res.read_records(os.path.join(d, res.EVENTS))
    errors = [r for r in events if r.get("type") == "error"]
    if world > 1:
        ranks = distributed.local_ranks(cfg, world, cell.framework)
        per_rank = _rank_records(d, ranks)
        errors = _rank_errors(per_rank)
        _write_ranks_record(d, per_rank, world)
        if ranks[0] != 0:  # another node: rank 0 (and the cell's records) are on node 0
            summary = _node_summary(d, ranks[0], cfg["distributed"])
    if timed_out:
        summary = failed_summary(cell, "timeout", f"timed out after {timeout_s:g} s "
                          f"(runner.timeout_s)", started, stderr_path)
    elif summary is None or rc != 0:
        if errors:
            why = errors[-1]["message"]
        elif rc != 0:
            why = f"worker exited with code {rc}{exit_reason(rc)}"
        else:
            why = "worker exited 0 without writing a summary (did the framework ask to rerun?)"
        if summary is not None and rc != 0:
            why = f"worker exited with code {rc} after writing its summary"
        summary = failed_summary(cell, "failed", why, started, stderr_path)
    summary.setdefault("metrics", {})
    summary["wall_s"] = wall_s
    summary["returncode"] = rc
    if cell.point:
        summary["point"] = cell.point
    if slot is not None:
        summary["slot"] = slot.to_dict()
    if mon is not None:
        samples, _ = res.read_records(os.path.join(d, res.MONITOR))
        epochs = [r for r in events if r.get("type") == "epoch"]
        epochs = [dict(e, t_wall=e["t_start"] + e["time_s"]) for e in epochs]
        windows, images = measured_windows(events)
        summary["metrics"].update(monitor_summary(samples, epochs, images_measured=images,
                                                  measured=measured_span(events),
                                                  measured_windows=windows))
        status = mon.gpu_status
        summary["metrics"].update(
            {"gpu": "absent", "gpu_reason": status.get("reason")} if status["gpu"] == "absent"
            else {"gpu": "present", "gpu_name": status["name"],
                  "gpu_watched": {k: v for k, v in status.items() if k != "gpu"}})
    res.write_json_atomic(os.path.join(d, res.SUMMARY), summary)
    progress.cell_end(cell.label, summary["status"], wall_s)
    return summary


def _rank_records(cell_dir, ranks):
    """Per rank (of this machine) its records: rank 0's events.jsonl, rank<k>/events.jsonl."""
    out = {}
    for rank in ranks:
        path = os.path.join(distributed.rank_dir(cell_dir, rank), res.EVENTS)
        out[rank] = res.read_records(path)[0] if os.path.exists(path) else []
    return out


def _rank_errors(per_rank):
    """The earliest error of any rank, as 'rank k: message': the cause (the ranks that
    failed after it only saw their peer vanish from a collective)."""
    errors = [dict(r, message=f"rank {rank}: {r.get('message')}")
              for rank, recs in per_rank.items()
              for r in recs if r.get("type") == "error"]
    return sorted(errors, key=lambda r: r.get("t_wall") or 0)[:1]


def _node_summary(cell_dir, lead, dist_cfg):
    """On node k > 0: its first rank's summary stands for the cell here (node 0 holds rank
    0's records and the cell's numbers)."""
    try:
        summary = res.read_json(os.path.join(distributed.rank_dir(cell_dir, lead), res.SUMMARY))
    except (FileNotFoundError, ValueError):
        return None
    summary["node"] = (f"node {dist_cfg['node_rank']} of {dist_cfg['nnodes']}: ranks from "
                       f"{lead}; rank 0 and the cell's records are on node 0")
    return summary


def _write_ranks_record(cell_dir, per_rank, world):
    """Append to rank 0's events one `ranks` record: every (local) rank's memory and error."""
    rows = []
    for rank, recs in per_rank.items():
        mem = next((r for r in reversed(recs) if r.get("type") == "memory"), {})
        err = next((r for r in reversed(recs) if r.get("type") == "error"), {})
        rows.append({"rank": rank, "peak_rss_bytes": mem.get("peak_rss_bytes"),
                     "allocator_peak_bytes": mem.get("allocator_peak_bytes"),
                     "error": err.get("message")})
    with res.RecordWriter(os.path.join(cell_dir, res.EVENTS)) as out:
        out.write("ranks", world_size=world, ranks=rows,
                  peak_rss_bytes=max((r["peak_rss_bytes"] or 0) for r in rows) or None)


def measured_span(events):
    """(t0, t1) wall clock of a cell's measured steps and chains (None if it had none):
    records carry their end time (t_wall) and duration (wall_s / time_s)."""
    spans, _ = measured_windows(events)
    if not spans:
        return None
    return min(a for a, _ in spans), max(b for _, b in spans)


def measured_windows(events):
    """([(t0, t1)] of every measured step and chain, images they processed): the phase that
    energy per image is taken over (validation and compile gaps left out)."""
    windows, images = [], 0
    for r in events:
        if r.get("type") in ("step", "sample") and r.get("phase") == "measure" \
                and r.get("t_wall") is not None:
            windows.append((r["t_wall"] - (r.get("wall_s") or r.get("time_s") or 0.0),
                            r["t_wall"]))
            images += int(r.get("images") or r.get("batch_size") or 0)
    return windows, images


def failed_summary(cell, status, error, started, stderr_path):
    return {"cell": cell.cell_id, "replicate": cell.replicate, "unit": cell.unit_id,
            "framework": cell.framework, "workload": cell.workload,
            "variant": cell.variant, "setting": cell.options.get("setting"),
            "world_size": cell.options.get("world_size", 1), "status": status,
            # escape codes out at record time: Jittor colours its log lines, and every
            # reader of the summary (report, terminal table, gpu-check) shows plain text
            "error": strip_ansi(error), "stderr_tail": log_tail(stderr_path, STDERR_TAIL_CHARS),
            "started": started,
            "finished": time.time(), "metrics": {}}


def open_run(cfg, cells, run_dir, *, resume=False, argv=None, progress=True):
    """The run folder's manifests (new, or marked resumed) and the progress output, with the
    run's first line: (manifest, {point: its manifest}, {point: its config}, Progress).
    Shared by the local runner and the Slurm submitter (bench/run/slurm.py)."""
    points = point_configs(cfg)
    if resume:
        manifest = _resumed(run_dir, argv)
        point_manifests = {p: _resumed(res.point_dir(run_dir, p), argv) for p in points}
    else:
        manifest = _start_run(run_dir, cfg, cells, argv, sweep=list(points))
        point_manifests = {
            p: _start_run(res.point_dir(run_dir, p), pcfg, [c for c in cells if c.point == p],
                          argv, run_id=f"{manifest['run_id']}/{p}",
                          calibration=manifest["calibration"],
                          extra={"point": p, "sweep_run": manifest["run_id"]})
            for p, pcfg in points.items()}
    prog = Progress(len(cells), enabled=progress)
    n_cells = len({c.label.rsplit(".r", 1)[0] for c in cells})
    prog.line(f"run {run_dir}: {n_cells} cell(s)" + (f" over {len(points)} sweep points"
                                                     if points else "") +
              f" x {cfg['runner']['replicates']} replicate(s) "
              f"= {len(cells)} process(es), {resolved_threads(cfg)} thread(s)")
    return manifest, point_manifests, points, prog


def run(cfg, cells, run_dir, *, resume=False, argv=None, progress=True):
    """Run (or resume) a matrix into run_dir. Returns (exit code, list of summaries).
    A sweep's cells run in the folders of their points (records/results.point_dir), each
    point with its own manifest and config, in the one interleaved order of `cells`."""
    manifest, point_manifests, points, prog = open_run(cfg, cells, run_dir, resume=resume,
                                                       argv=argv, progress=progress)
    slots = run_slots(cfg)
    if len(slots) > 1:
        prog.concurrent = True
        prog.line(f"runner.slots: {len(slots)} cells at a time, "
                  + "; ".join(_slot_words(s) for s in slots))
    done_lock = threading.Lock()   # the manifests are read, changed and written per cell

    def one(cell, slot=None, stop=None):
        where = res.cells_root(run_dir, cell.point)
        done = res.ok_summary(where, cell.unit_id) if resume else None
        if done is not None:
            prog.cell_end(cell.label, "ok (kept from the earlier attempt)",
                          done.get("wall_s") or 0.0)
            return done
        summary = run_cell(where, points.get(cell.point, cfg), cell, prog, slot, stop)
        with done_lock:
            record_versions(where, point_manifests.get(cell.point, manifest), cell)
            if cell.point:  # the sweep's own manifest too (its cells are in the point's)
                record_versions(run_dir, manifest, cell, cells_root=where)
        return summary

    try:
        summaries = [one(c) for c in cells] if len(slots) == 1 else \
            _run_in_slots(cells, slots, one)
    finally:
        prog.close()
    failed = [s for s in summaries if s.get("status") != "ok"]
    return (1 if failed else 0), summaries


def run_slots(cfg):
    """The run's slots (runner.slots; bench/run/slots.py): [one slot of every core] unless
    several were asked for."""
    return slotmod.plan(cfg["runner"].get("slots", 1), cfg["device"],
                        cfg.get("threads"))


def _slot_words(slot):
    gpu = f"GPU {slot.gpu} + " if slot.gpu is not None else ""
    return f"slot {slot.index}: {gpu}CPUs {list(slot.cores)}"


def _run_in_slots(cells, slots, one):
    """Each slot's cells (slots.assign) in run order, the slots side by side, one thread
    each. Ctrl-C stops every slot: their workers are killed, then it is raised here."""
    where = slotmod.assign(cells, len(slots))
    results, stop, errors = {}, threading.Event(), []

    def work(slot):
        try:
            for cell in cells:
                if stop.is_set():
                    return
                if where[cell.label] == slot.index:
                    results[cell.label] = one(cell, slot, stop)
        except BaseException as e:  # noqa: B036 - handed to the main thread
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in slots]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=POLL_S)
    except BaseException:
        stop.set()
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]
    return [results[c.label] for c in cells]


def _start_run(run_dir, cfg, cells, argv, *, sweep=(), **manifest_args):
    """A new run folder (or sweep point folder) with its manifest; a sweep's own folder
    holds no cells/, only its points' folders."""
    os.makedirs(os.path.join(run_dir, res.POINTS_DIR if sweep else res.CELLS_DIR))
    extra = dict(manifest_args.pop("extra", None) or {})
    if sweep:
        extra["sweep"] = list(sweep)
    return write_manifest(run_dir, cfg, cells, argv, extra=extra, **manifest_args)


def _resumed(run_dir, argv):
    manifest = res.read_json(os.path.join(run_dir, res.MANIFEST))
    manifest.setdefault("resumed", []).append({"at": time.time(),
                                               "command": list(argv) if argv else None})
    res.write_json_atomic(os.path.join(run_dir, res.MANIFEST), manifest)
    return manifest


def cells_from_manifest(manifest):
    return [cell_from_dict(c) for c in manifest["cells"]]


def cell_from_dict(c):
    return Cell(c["framework"], c["workload"], c.get("variant") or "", c.get("options") or {},
                c.get("replicate") or 1, c.get("point") or "")


def _figure(value, spec):
    """A number for a progress line, '—' where there is none (no validation set: no val loss)."""
    try:
        return format(float(value), spec) if math.isfinite(float(value)) else "—"
    except (TypeError, ValueError):
        return "—"


def format_table(summaries):
    """Plain-text summary of a run for the terminal."""
    rows = [("cell", "status", "wall s", "key result")]
    for s in summaries:
        m = s.get("metrics") or {}
        if s.get("status") != "ok":
            key = failure_line(s.get("error"), s.get("stderr_tail"), limit=120)
        elif s.get("workload") == "train":
            key = (f"step {_figure(m.get('wall_step_median_s'), '.4f')} s "
                   f"(compute {_figure(m.get('compute_median_s'), '.4f')}, data "
                   f"{_figure(m.get('data_wait_median_s'), '.4f')}), compile "
                   f"{_figure(m.get('compile_s'), '.2f')} s, "
                   f"{_figure(m.get('images_per_s'), '.1f')} img/s, "
                   f"val loss {_figure(m.get('final_val_loss'), '.4f')}")
        else:
            key = "; ".join(f"{r['sampler']}{r['steps']} b{r['batch_size']} "
                            f"{r['time_median_s']:.3f} s" for r in m.get("runs", [])[:4])
        if (m.get("others_cpu_percent_mean") or 0) > BUSY_OTHERS_CPU_PERCENT:
            key += f"  [busy machine: other processes used {m['others_cpu_percent_mean']:.0f}% CPU]"
        unit = s.get("unit") or s["cell"]
        rows.append((f"{s['point']}/{unit}" if s.get("point") else unit, s.get("status", "?"),
                     f"{s.get('wall_s') or 0:.1f}", key))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}"
                     for r in rows)
