"""A real Slurm cluster for the tests: munged, slurmctld and one slurmd per node on this
machine (one node, or several sharing it; Debian's slurm-wlm and munge, which
tools/setup.sh installs), configured in a temporary folder and stopped afterwards. Jobs run as root in the test's own file system, which the
"nodes" share by being this machine."""
import os
import shutil
import signal
import socket
import subprocess
import time

import psutil

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")
MUNGE_KEY = "/etc/munge/munge.key"
MUNGE_SOCKET_DIR = "/run/munge"


def missing():
    """Why a Slurm cluster cannot be started here, or None."""
    gone = [d for d in DAEMONS if shutil.which(d) is None]
    if gone:
        return f"{', '.join(gone)} not on PATH (apt install slurm-wlm munge; tools/setup.sh does)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """ClusterName=diffbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool-%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
InactiveLimit=0
KillWait=5
{nodes}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""
# Several "nodes" on this one machine: each its own slurmd (`slurmd -N name`) on a port of its
# own, all reached at 127.0.0.1; jobs of several nodes get srun steps on each of them.
NODE = "NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} State=UNKNOWN"


class Cluster:
    """nodes=1: one node named as this machine; nodes=N: nodes n1..nN, all on this machine."""

    def __init__(self, folder, nodes=1):
        self.dir = str(folder)
        self.nodes = nodes
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.munged = None

    def _run(self, *argv, check=True):
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                              timeout=60, check=check)

    def start(self):
        host = socket.gethostname().split(".")[0]
        os.makedirs(os.path.join(self.dir, "state"), exist_ok=True)
        names = [host] if self.nodes == 1 else [f"n{i + 1}" for i in range(self.nodes)]
        # every address is 127.0.0.1: no name lookup, whatever the machine's resolver says
        lines = [f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN"] \
            if self.nodes == 1 \
            else [NODE.format(name=n, host=host, port=_free_port(), cpus=os.cpu_count())
                  for n in names]
        with open(self.conf, "w") as f:
            f.write(CONF.format(host=host, dir=self.dir, ctld_port=_free_port(),
                                d_port=_free_port(), nodes="\n".join(lines),
                                names=",".join(names)))
        self._start_munge()
        self._run("slurmctld", "-f", self.conf)
        for name in names:
            self._run("slurmd", "-f", self.conf, *(["-N", name] if self.nodes > 1 else []))
        deadline = time.time() + 60
        while time.time() < deadline:
            states = self._run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            state = " ".join(states)
            if len(states) == len(names) and \
                    all(s in ("idle", "mixed", "allocated") for s in states):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test Slurm did not come up (sinfo: {state!r}); logs in "
                           f"{self.dir}")

    def _start_munge(self):
        if self._run("munge", "-n", check=False).returncode == 0:
            return   # a munged is already running (the machine's own)
        if not os.path.exists(MUNGE_KEY):
            os.makedirs(os.path.dirname(MUNGE_KEY), exist_ok=True)
            with open(MUNGE_KEY, "wb") as f:
                f.write(os.urandom(1024))
            os.chmod(MUNGE_KEY, 0o400)
        os.makedirs(MUNGE_SOCKET_DIR, exist_ok=True)
        pidfile = os.path.join(self.dir, "munged.pid")
        self._run("munged", "--force", f"--pid-file={pidfile}")
        self.munged = pidfile

    def jobs(self):
        out = self._run("squeue", "-h", "-o", "%i %T", check=False).stdout
        return [line.split() for line in out.splitlines() if line.strip()]

    def stop(self):
        self._run("scancel", "--full", "-u", "root", check=False)
        pidfiles = [os.path.join(self.dir, f) for f in sorted(os.listdir(self.dir))
                    if f.startswith("slurm") and f.endswith(".pid")]  # slurmctld, slurmd-<node>
        _stop([*pidfiles, *([self.munged] if self.munged else [])])


def _stop(pidfiles, grace_s=5.0):
    """SIGTERM to every daemon at once, SIGKILL to those still there after grace_s."""
    pids = []
    for path in pidfiles:
        try:
            with open(path) as f:
                pids.append(int(f.read().strip()))
        except (OSError, ValueError):
            continue
    pids = [pid for pid in pids if _signal(pid, signal.SIGTERM)]
    deadline = time.time() + grace_s
    while pids and time.time() < deadline:
        time.sleep(0.1)
        pids = [pid for pid in pids if _signal(pid, 0)]
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _signal(pid, sig):
    """True if the process was there to receive it (a zombie is gone: a daemon's parent is
    PID 1, which in a container may never reap it)."""
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, psutil.NoSuchProcess):
        return False
