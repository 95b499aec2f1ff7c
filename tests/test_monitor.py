"""The monitor samples a real child process tree; energy integrates power samples."""
import subprocess
import sys
import textwrap

import pytest

from bench.measure import monitor as M
from bench.records.results import read_records

# A child that allocates ~80 MB, then starts a grandchild, then burns CPU for ~1.5 s.
CHILD = textwrap.dedent("""
    import subprocess, sys, time
    block = bytearray(80 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    t0 = time.time()
    x = 0
    while time.time() - t0 < 1.5:
        x += 1
    grandchild.kill()
""")


def test_monitor_records_cpu_and_rss_of_the_child_tree(tmp_path):
    path = tmp_path / "monitor.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", CHILD])
    with M.Monitor(proc.pid, str(path), interval_s=0.1, use_gpu=False) as mon:
        proc.wait(timeout=60)
    recs, skipped = read_records(str(path))
    assert skipped == 0 and mon.samples == len(recs) >= 5
    assert all(r["type"] == "monitor" for r in recs)
    assert [r["t_wall"] for r in recs] == sorted(r["t_wall"] for r in recs)
    # the busy loop (a loaded machine may give it far less than a core: no tighter bound)
    assert max(r["cpu_percent"] for r in recs) > 10
    assert max(r["rss_bytes"] for r in recs) > 80 * 1024 * 1024
    assert max(r["num_procs"] for r in recs) >= 2  # the grandchild was seen
    # the whole machine was at least as busy as the child (same unit: 100 = one core)
    assert max(r["host_cpu_percent"] for r in recs) > 50
    assert M.summarize(recs)["others_cpu_percent_mean"] >= 0
    assert mon.gpu_status == {"gpu": "absent", "reason": "device=cpu"}
    assert "gpu_util_percent" not in recs[0]


def test_monitor_without_nvml_reports_gpu_absent(tmp_path):
    nvml, status = M.open_nvml(use_gpu=True)
    if nvml is not None:  # a GPU machine: the NVML path must produce numbers
        sample = nvml.sample(set())
        nvml.close()
        assert status["gpu"] == "present" and sample["gpu_mem_used_bytes"] > 0
    else:
        assert status["gpu"] == "absent" and status["reason"]


def test_monitor_refuses_intervals_finer_than_nvml_resolution(tmp_path):
    with pytest.raises(ValueError, match="duty cycle"):
        M.Monitor(1, str(tmp_path / "m.jsonl"), interval_s=0.01)


def test_energy_from_power_and_from_the_counter():
    power = [{"t_wall": t, "power_w": 100.0} for t in range(0, 11)]
    assert M.energy_between(power, 2.0, 7.0) == pytest.approx(500.0)
    ramp = [{"t_wall": t, "power_w": 10.0 * t} for t in range(0, 11)]
    assert M.energy_between(ramp, 0.0, 10.0) == pytest.approx(500.0)  # trapezoid is exact
    counter = [{"t_wall": t, "energy_j_counter": 1000.0 + 50.0 * t, "power_w": 1.0}
               for t in range(0, 11)]
    assert M.energy_between(counter, 1.0, 3.0) == pytest.approx(100.0)  # counter wins
    assert M.energy_between([{"t_wall": 0, "cpu_percent": 5}], 0, 1) is None


def test_summarize_energy_per_epoch_and_image():
    samples = [{"t_wall": float(t), "cpu_percent": 100.0, "rss_bytes": 10 + t, "power_w": 200.0}
               for t in range(0, 21)]
    epochs = [{"t_wall": 10.0, "time_s": 10.0, "images": 80},
              {"t_wall": 20.0, "time_s": 10.0, "images": 80}]
    out = M.summarize(samples, epochs)
    assert out["energy_j_per_epoch"] == pytest.approx([2000.0, 2000.0])
    assert "energy_j_per_image" not in out  # only over measured steps, and none were given
    assert out["rss_peak_bytes_monitor"] == 30 and out["power_w_peak"] == 200.0
    # 4 measured steps of 0.5 s with 8 images each: 200 W * 2 s / 32 images
    windows = [(12.0, 12.5), (12.5, 13.0), (15.0, 15.5), (15.5, 16.0)]
    out = M.summarize(samples, epochs, images_measured=32, measured_windows=windows)
    assert out["energy_j_measured"] == pytest.approx(400.0)
    assert out["energy_j_per_image"] == pytest.approx(12.5)
    assert out["energy_j_per_step"] == pytest.approx(100.0)


# A "worker" that, like Jittor compiling its kernels, keeps starting short-lived busy
# children (~0.15 s of CPU each, most of them born and reaped between two samples) and
# waits for each; it burns no CPU itself.
COMPILER_LIKE = textwrap.dedent("""
    import resource, subprocess, sys, time
    burn = "import time\\nt0 = time.process_time()\\nwhile time.process_time() - t0 < 0.15: pass"
    t0 = time.time()
    while time.time() - t0 < 2.5:
        subprocess.run([sys.executable, "-c", burn])
    if len(sys.argv) > 1:  # the CPU its children really used, for the test to compare
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        open(sys.argv[1], "w").write(str(r.ru_utime + r.ru_stime))
""")
# A cell that does nothing for as long (the baseline of what else the machine runs).
IDLE = "import time\ntime.sleep(2.5)"
# Someone else's job: a busy loop outside the monitored tree.
COMPETITOR = "import time\nt0 = time.time()\nwhile time.time() - t0 < 4: pass"


def _monitored(tmp_path, code, competitor=False, args=()):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "monitor.jsonl"
    other = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if competitor else None
    proc = subprocess.Popen([sys.executable, "-c", code, *args])
    try:
        with M.Monitor(proc.pid, str(path), interval_s=0.25, use_gpu=False):
            proc.wait(timeout=60)
    finally:
        if other is not None:
            other.kill()
            other.wait()
    recs, _ = read_records(str(path))
    return recs


def test_short_lived_children_count_as_the_cell_not_as_other_processes(tmp_path):
    """Their CPU is the cell's (reaped children's times), so the machine is not 'busy'.

    Both checks hold whatever else the machine runs: the cell's CPU is compared with what
    its children really used (which a loaded machine lowers on both sides), and the
    'other processes' figure with that of an idle cell monitored just before (another job's
    load appears in both and cancels; the children counted as other processes would add
    their ~one core)."""
    idle = M.summarize(_monitored(tmp_path / "idle", IDLE))
    used = tmp_path / "children_cpu_s"
    recs = _monitored(tmp_path, COMPILER_LIKE, args=[str(used)])
    out = M.summarize(recs)
    samples = [r for r in recs if r.get("type", "monitor") == "monitor"]
    span = samples[-1]["t_wall"] - samples[0]["t_wall"]
    cell_cpu_s = out["cpu_percent_mean"] / 100 * span
    children_cpu_s = float(used.read_text())
    assert children_cpu_s > 0.3  # the children did burn CPU
    assert cell_cpu_s > 0.5 * children_cpu_s, (cell_cpu_s, children_cpu_s, recs)
    excess = out["others_cpu_percent_mean"] - idle["others_cpu_percent_mean"]
    assert excess < 100 * 0.5 * children_cpu_s / span, (excess, idle, recs)


def test_a_real_competing_process_is_counted_as_other_processes(tmp_path):
    recs = _monitored(tmp_path, COMPILER_LIKE, competitor=True)
    assert M.summarize(recs)["others_cpu_percent_mean"] > 50, recs


def test_contention_is_judged_over_the_measured_phase_only():
    # other processes busy during the first 5 s (compile), quiet while measuring (5-10 s)
    samples = [{"t_wall": float(t), "cpu_percent": 100.0, "rss_bytes": 1,
                "host_cpu_percent": 190.0 if t <= 5 else 100.0} for t in range(11)]
    whole = M.summarize(samples)
    assert whole["others_cpu_percent_mean"] > 20 and whole["others_cpu_scope"] == "whole cell"
    measured = M.summarize(samples, measured=(5.0, 10.0))
    assert measured["others_cpu_percent_mean"] == 0.0
    assert measured["others_cpu_scope"] == "measured phase"
    # a measured span with no sample inside falls back to the whole cell, and says so
    assert M.summarize(samples, measured=(5.2, 5.4))["others_cpu_scope"] == "whole cell"
