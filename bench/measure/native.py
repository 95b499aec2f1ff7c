"""A sampling profile of this process's machine code with Linux `perf`, for the profile
workload: what the time no op row holds is made of (classes in models/common/nativecats.py).

    with NativeSampler("cell/train-perf.data") as ns:   # perf record -p <this pid>
        run_steps()
    ns.summary("jittor", units=10)   # per step: main thread by class, worker threads

`perf record` attaches to the running process (cpu-clock, a software event: works in VMs
without hardware counters) with its events disabled; the sampler enables them through perf's
control pipe (`--control fd:...`, perf >= 5.10) and waits for perf's ack before the block
runs, and disables them (ack again) when it ends, so exactly the block inside `with` is
sampled however long perf takes to attach. (Waiting for perf's file header instead raced:
on a loaded 2-core CI machine a 50 ms sampling block went by before the events were on.)
An older perf without --control gets that header wait. perf is stopped with SIGTERM:
Jittor's SIGCHLD handler exits the whole process when a child dies of any other signal.
Without perf, or where the kernel forbids it, `problem()` says why and the profile record
says so instead of a native breakdown.
"""
import functools
import os
import select
import shutil
import signal
import subprocess
import time

from models.common.nativecats import CLASSES, INSIDE, OUTSIDE_CLASSES, is_spin, native_class

DEFAULT_HZ = 999          # ~1 ms a sample: ~100 samples a training step, ~1% overhead
ATTACH_TIMEOUT_S = 10.0


def problem() -> str | None:
    """Why perf cannot sample this process here, or None."""
    if shutil.which("perf") is None:
        return "perf is not on PATH (Debian/Ubuntu: apt install linux-perf)"
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            paranoid = int(f.read().strip())
    except (OSError, ValueError):
        paranoid = None
    if paranoid is not None and paranoid > 2 and os.geteuid() != 0:
        return (f"/proc/sys/kernel/perf_event_paranoid is {paranoid}: perf may not sample a "
                f"process as a normal user (needs <= 2, or root)")
    return None


@functools.lru_cache(maxsize=1)
def has_control() -> bool:
    """Whether this perf takes --control (enable/disable on command, with an ack)."""
    proc = subprocess.run(["perf", "record", "-h"], capture_output=True, text=True)
    return "--control" in proc.stdout + proc.stderr


class NativeSampler:
    def __init__(self, path, hz=DEFAULT_HZ):
        self.path, self.hz = str(path), int(hz)
        self.proc, self.error, self.rows = None, None, None
        self.ctl = self.ack = None  # our ends of perf's control and ack pipes

    def __enter__(self):
        self.error = problem()
        if self.error:
            return self
        cmd = ["perf", "record", "-q", "-F", str(self.hz), "-e", "cpu-clock",
               "-p", str(os.getpid()), "-o", self.path]
        fds = ()
        if has_control():
            ctl_r, self.ctl = os.pipe()
            self.ack, ack_w = os.pipe()
            cmd += ["-D", "-1", "--control", f"fd:{ctl_r},{ack_w}"]
            fds = (ctl_r, ack_w)
        log = open(self.path + ".log", "w")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, pass_fds=fds)
        log.close()
        for fd in fds:
            os.close(fd)
        started = self._command("enable") if self.ctl is not None else self._header_written()
        if not started:
            self._stop()
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.ctl is not None:
            self._command("disable")
        self._stop()
        return False

    def _command(self, what):
        """Send perf a control command and wait for its ack; False (and self.error) if none."""
        try:
            os.write(self.ctl, f"{what}\n".encode())
            ready, _, _ = select.select([self.ack], [], [], ATTACH_TIMEOUT_S)
            if ready and os.read(self.ack, 64).startswith(b"ack"):
                return True
        except OSError:
            pass  # perf exited: its pipe end is closed
        self._fail(f"perf record did not acknowledge '{what}' within {ATTACH_TIMEOUT_S:g} s")
        return False

    def _header_written(self):
        """Without --control: perf writes its file header once attached; sample after that."""
        t_end = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                break
            if os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
                time.sleep(0.05)
                return True
            time.sleep(0.02)
        self._fail(f"perf record did not attach within {ATTACH_TIMEOUT_S:g} s")
        return False

    def _fail(self, reason):
        if self.proc is not None and self.proc.poll() is not None:
            reason = f"perf record exited {self.proc.returncode}: {self._log_tail()}"
        self.error = self.error or reason

    def _stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # not SIGINT: see the module docstring
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.error = self.error or "perf record did not stop within 60 s"
            self.proc = None
        # only now: perf ends its file badly when its control pipe closes under it
        for fd in (self.ctl, self.ack):
            if fd is not None:
                os.close(fd)
        self.ctl = self.ack = None

    def _log_tail(self):
        try:
            with open(self.path + ".log") as f:
                return " ".join(f.read().split()[-30:])
        except OSError:
            return ""

    def samples(self):
        """[(tid, dso, symbol, seconds)] aggregated by perf report (cpu-clock periods are
        nanoseconds of on-CPU time)."""
        if self.rows is not None:
            return self.rows
        proc = subprocess.run(
            ["perf", "report", "-i", self.path, "--stdio", "--no-children", "-g", "none",
             "--sort", "pid,dso,sym", "-F", "period,pid,dso,sym", "-t", "\t",
             "--percent-limit", "0"], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"perf report -i {self.path}: exit {proc.returncode}: "
                               f"{proc.stderr.strip()[-300:]}")
        self.rows = parse_report(proc.stdout)
        return self.rows

    def summary(self, framework, units):
        """Per unit (a step): the main thread's on-CPU seconds by class, the outside-ops
        total, other threads working and spin-waiting; or {"available": False, "reason"}."""
        if self.error:
            return {"available": False, "reason": self.error}
        try:
            rows = self.samples()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            return {"available": False, "reason": str(e)}
        return summarise(rows, framework, units, main_tid=os.getpid(), hz=self.hz,
                         raw=os.path.basename(self.path))


def parse_report(text):
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 4:
            continue
        period, pid, dso, sym = parts[:4]
        try:
            tid = int(pid.split(":", 1)[0])
            seconds = int(period) / 1e9
        except ValueError:
            continue
        rows.append((tid, dso, sym.removeprefix("[.] ").removeprefix("[k] "), seconds))
    return rows


def summarise(rows, framework, units, main_tid, hz=DEFAULT_HZ, raw=None, top=15):
    main = {c: 0.0 for c in CLASSES}
    symbols = {}
    work = spin = 0.0
    for tid, dso, sym, sec in rows:
        if tid != main_tid:
            if is_spin(dso):
                spin += sec
            else:
                work += sec
            continue
        cls = native_class(framework, dso, sym)
        main[cls] += sec
        if CLASSES[cls][0] != INSIDE:
            key = (cls, dso, sym)
            symbols[key] = symbols.get(key, 0.0) + sec
    per = {c: v / units for c, v in main.items()}
    top_symbols = [{"class": c, "dso": d, "symbol": s, "seconds": v / units}
                   for (c, d, s), v in sorted(symbols.items(), key=lambda kv: -kv[1])[:top]]
    return {"available": True, "hz": hz, "raw": raw, "units": units,
            "main_s": sum(per.values()), "classes": per,
            "outside_s": sum(per[c] for c in OUTSIDE_CLASSES),
            "others_work_s": work / units, "others_spin_s": spin / units,
            "top_outside": top_symbols}
