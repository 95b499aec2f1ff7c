"""The GPU paths that can be checked without a GPU (docs/GPU.md).

A small fake `pynvml` stands in for NVML here only to test OUR logic: which GPU the monitor
watches, whose memory it counts, energy over the measured phase, calls that fail. On a GPU
machine the real library is used (`make gpu-check` proves that part)."""
import os
import subprocess
import sys
import types

import pytest

import harness
from bench.measure import env as E
from bench.measure import monitor as M
from bench.report import facts
from models.jt import runtime


class NVMLError(Exception):
    pass


def fake_nvml(devices, procs=(), unsupported=()):
    """A pynvml module with `devices`: dicts {uuid, pci, name, used, util, power_mw,
    energy_mj} in NVML (PCI bus) order; procs: (device index, pid, usedGpuMemory);
    unsupported: names of calls that raise NVMLError."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.NVML_CLOCK_SM, nv.NVML_TEMPERATURE_GPU = 1, 0
    nv.state = {"init": 0}
    handles = [types.SimpleNamespace(i=i, **d) for i, d in enumerate(devices)]

    def call(name, fn):
        def wrapped(*a):
            if name in unsupported:
                raise NVMLError(f"{name}: Not Supported")
            return fn(*a)
        setattr(nv, name, wrapped)

    def by_uuid(u):
        for h in handles:
            if h.uuid == u:
                return h
        raise NVMLError("Not Found")

    call("nvmlInit", lambda: nv.state.__setitem__("init", nv.state["init"] + 1))
    call("nvmlShutdown", lambda: nv.state.__setitem__("init", nv.state["init"] - 1))
    call("nvmlDeviceGetCount", lambda: len(handles))
    call("nvmlDeviceGetHandleByIndex", lambda i: handles[i])
    call("nvmlDeviceGetHandleByUUID", by_uuid)
    call("nvmlDeviceGetHandleByPciBusId",
         lambda b: next((h for h in handles if h.pci == b), None) or (_ for _ in ()).throw(
             NVMLError("Not Found")))
    call("nvmlDeviceGetName", lambda h: h.name.encode())  # old bindings return bytes
    call("nvmlDeviceGetIndex", lambda h: h.i)
    call("nvmlDeviceGetUUID", lambda h: h.uuid)
    call("nvmlDeviceGetPciInfo", lambda h: types.SimpleNamespace(busId=h.pci.encode()))
    call("nvmlDeviceGetUtilizationRates", lambda h: types.SimpleNamespace(gpu=h.util))
    call("nvmlDeviceGetMemoryInfo", lambda h: types.SimpleNamespace(used=h.used, total=8 << 30))
    call("nvmlDeviceGetComputeRunningProcesses",
         lambda h: [types.SimpleNamespace(pid=p, usedGpuMemory=m) for d, p, m in procs
                    if d == h.i])
    call("nvmlDeviceGetPowerUsage", lambda h: h.power_mw)
    call("nvmlDeviceGetTotalEnergyConsumption", lambda h: h.energy_mj)
    call("nvmlDeviceGetClockInfo", lambda h, kind: 1980)
    call("nvmlDeviceGetTemperature", lambda h, kind: 40)
    call("nvmlSystemGetCudaDriverVersion", lambda: 13000)
    call("nvmlSystemGetDriverVersion", lambda: "580.1")
    return nv


GPUS = [dict(uuid="GPU-aaaa1111", pci="00000000:1A:00.0", name="H100 A", used=10 << 30,
             util=11, power_mw=100_000, energy_mj=5_000_000),
        dict(uuid="GPU-bbbb2222", pci="00000000:3B:00.0", name="H100 B", used=20 << 30,
             util=22, power_mw=200_000, energy_mj=9_000_000),
        dict(uuid="MIG-cccc3333", pci="00000000:5C:00.0", name="H100 MIG 1g.10gb",
             used=1 << 30, util=33, power_mw=300_000, energy_mj=1_000_000)]


@pytest.fixture
def nvml(monkeypatch):
    def install(**kw):
        fake = fake_nvml(GPUS, **kw)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake
    return install


@pytest.mark.parametrize("env, name, how", [
    ({}, "H100 A", "index (CUDA_DEVICE_ORDER=FASTEST_FIRST: may differ from NVML's order)"),
    ({"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, "H100 B", "index"),
    ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb2222,GPU-aaaa1111"}, "H100 B", "uuid"),
    ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}, "H100 B", "uuid prefix"),  # CUDA takes a prefix
    ({"CUDA_VISIBLE_DEVICES": "MIG-cccc3333"}, "H100 MIG 1g.10gb", "mig"),
])
def test_the_watched_gpu_is_the_workers_by_index_uuid_or_mig_id(nvml, env, name, how):
    nvml()
    mon, status = M.open_nvml(True, env)
    assert status["gpu"] == "present", status
    assert (status["name"], status["resolved_by"]) == (name, how)
    gpu = next(g for g in GPUS if g["name"] == name)
    assert status["uuid"] == gpu["uuid"] and status["pci_bus_id"] == gpu["pci"]
    assert status["index"] == GPUS.index(gpu)
    mon.close()


def test_a_known_pci_bus_id_or_uuid_wins_over_the_environment(nvml):
    nvml()
    mon = M.Nvml({"CUDA_VISIBLE_DEVICES": "0"}, pci_bus_id="00000000:3B:00.0")
    assert (mon.name, mon.device["resolved_by"]) == ("H100 B", "pci_bus_id")
    mon.close()
    mon = M.Nvml({}, uuid="GPU-aaaa1111")
    assert (mon.name, mon.device["resolved_by"]) == ("H100 A", "uuid")
    mon.close()


def test_unknown_or_hidden_devices_are_absent_not_index_zero(nvml):
    fake = nvml()
    for visible in ("GPU-ffff", "MIG-ffff", "", "-1"):
        mon, status = M.open_nvml(True, {"CUDA_VISIBLE_DEVICES": visible})
        assert mon is None and status["gpu"] == "absent" and status["reason"], visible
    assert fake.state["init"] == 0  # every failed open shut NVML down again


def test_process_memory_is_the_worker_trees_own_not_the_device_total(nvml):
    nvml(procs=[(0, 100, 3 << 30), (0, 101, 1 << 30), (0, 999, 5 << 30), (1, 100, 7 << 30)])
    mon = M.Nvml({"CUDA_VISIBLE_DEVICES": "0"})
    s = mon.sample({100, 101})  # the worker and its DataLoader child; pid 999 is someone else
    assert s["proc_gpu_mem_bytes"] == 4 << 30
    assert s["gpu_mem_used_bytes"] == 10 << 30  # the device total, others included
    assert mon.sample({555})["proc_gpu_mem_bytes"] == 0  # no entry of ours: none held
    mon.close()
    nvml(procs=[(0, 100, None)])  # the driver hides the figure (some containers)
    mon = M.Nvml({})
    assert mon.sample({100})["proc_gpu_mem_bytes"] is None
    mon.close()


def test_unsupported_calls_give_none_and_the_rest_still_works(nvml):
    nvml(unsupported={"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetUtilizationRates",
                      "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetPciInfo"})
    mon, status = M.open_nvml(True, {})
    assert status["gpu"] == "present" and status["pci_bus_id"] is None
    s = mon.sample({1})
    assert s["energy_j_counter"] is None and s["gpu_util_percent"] is None
    assert s["proc_gpu_mem_bytes"] is None and s["power_w"] == 100.0
    assert s["sm_clock_mhz"] == 1980
    mon.close()


def test_nvml_init_failure_is_gpu_absent_with_the_reason(nvml):
    nvml(unsupported={"nvmlInit"})
    mon, status = M.open_nvml(True, {})
    assert mon is None and status["gpu"] == "absent" and "nvmlInit" in status["reason"]
    assert E.cuda_device_present()[0] in (True, False)  # falls back to /dev/nvidia*


def _samples(t_end=20, counter=True):
    """1 Hz samples: 250 W; the energy counter starts at 1e6 J (since the driver loaded)."""
    return [{"t_wall": 1000.0 + t, "cpu_percent": 100.0, "rss_bytes": 1, "power_w": 250.0,
             "gpu_util_percent": 90.0 if t >= 5 else 5.0,
             "energy_j_counter": (1e6 + 250.0 * t) if counter else None}
            for t in range(t_end + 1)]


def test_energy_per_image_is_the_counter_difference_over_the_measured_steps_only():
    samples = _samples()
    # compile/warm-up until t=5, then 10 measured steps of 1 s (8 images each) with a 2 s
    # validation gap after the fifth: the gap is not in the figure.
    windows = [(1005.0 + i, 1006.0 + i) for i in range(5)] + \
              [(1012.0 + i, 1013.0 + i) for i in range(5)]
    out = M.summarize(samples, images_measured=80, measured=(1005.0, 1017.0),
                      measured_windows=windows)
    assert out["energy_j_measured"] == pytest.approx(2500.0)  # 10 s at 250 W, not 1e6 J
    assert out["energy_j_per_image"] == pytest.approx(2500.0 / 80)
    assert out["energy_source"] == "nvml energy counter"
    # without the counter: the integrated power gives the same here
    out = M.summarize(_samples(counter=False), images_measured=80, measured=(1005.0, 1017.0),
                      measured_windows=windows)
    assert out["energy_j_per_image"] == pytest.approx(2500.0 / 80)
    assert out["energy_source"] == "power_w integral"
    # a last step ending just after the last sample: continued at the last rate
    assert M.energy_over(samples, [(1019.5, 1020.5)]) == pytest.approx(250.0)
    assert M.energy_over(samples, [(2000.0, 2001.0)]) is None  # outside the samples


def test_utilisation_is_the_measured_phase_mean_or_not_meaningful():
    out = M.summarize(_samples(), measured=(1005.0, 1017.0))
    assert out["gpu_util_percent_mean"] == pytest.approx(90.0)  # compile's 5% left out
    assert "gpu_util_note" not in out
    short = M.summarize(_samples(), measured=(1005.0, 1006.5))
    assert short["gpu_util_percent_mean"] is None
    assert short["gpu_util_note"].startswith("not meaningful: measured phase 1.50 s")


def test_child_env_pins_device_order_and_the_tf32_override(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    env = E.child_env(2, {"math_mode": "fp32"})
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["NVIDIA_TF32_OVERRIDE"] == "0"
    assert "NVIDIA_TF32_OVERRIDE" not in E.child_env(2, {"math_mode": "tf32"})
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")  # the user's choice wins
    assert E.child_env(None)["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


def test_torch_math_mode_is_pinned_and_recorded():
    from models.pt import backend as pt

    import torch

    try:
        pt.pin_math_mode("tf32")
        v = pt.math_settings()
        assert v["math_mode"] == "tf32" and v["allow_tf32_cudnn"] and v["allow_tf32_matmul"]
        assert v["float32_matmul_precision"] == "high"
        pt.pin_math_mode("fp32")
        v = pt.math_settings()
        assert (v["math_mode"], v["allow_tf32_matmul"], v["allow_tf32_cudnn"]) == \
            ("fp32", False, False)
        assert v["float32_matmul_precision"] == "highest" and v["cudnn_benchmark"] is True
        assert torch.backends.cudnn.allow_tf32 is False
        assert pt.TorchBackend.versions()["math_mode"] == "fp32"
        with pytest.raises(ValueError, match="math_mode"):
            pt.pin_math_mode("fp16")
    finally:
        pt.pin_math_mode("fp32")


def test_jittor_math_mode_sets_use_tensorcore():
    jt = types.SimpleNamespace(flags=types.SimpleNamespace(use_tensorcore=0))
    runtime.pin_math_mode(jt, "tf32")
    assert jt.flags.use_tensorcore == 1 and runtime.math_settings(jt)["math_mode"] == "tf32"
    runtime.pin_math_mode(jt, "fp32")
    s = runtime.math_settings(jt)
    assert (s["math_mode"], s["use_tensorcore"], s["cudnn"]) == ("fp32", 0, False)


def test_jittor_math_mode_in_a_real_jittor_process():
    """The real flag exists and is recorded by versions() (CPU build: one quick import)."""
    code = ("from models.jt.backend import JittorBackend as B; from models.jt import runtime;"
            "jt = runtime.import_jittor(); runtime.pin_math_mode(jt, 'tf32');"
            "v = B.versions(); print('MATH', v['math_mode'], v['use_tensorcore'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=E.child_env(1))
    assert "MATH tf32 1" in out.stdout, out.stdout + out.stderr


def test_jittor_cuda_home_is_assembled_from_toolkit_and_wheels(tmp_path, monkeypatch):
    toolkit, wheel = tmp_path / "cuda-13.0", tmp_path / "site" / "nvidia" / "cu13"
    for d in (toolkit / "bin", toolkit / "include", toolkit / "lib64", wheel / "include",
              wheel / "lib"):
        d.mkdir(parents=True)
    (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\necho 'release 13.0'\n")
    (toolkit / "bin" / "nvcc").chmod(0o755)
    for f in ("cuda_runtime.h", "cublas_v2.h"):
        (toolkit / "include" / f).write_text("toolkit")
    (wheel / "include" / "cublas_v2.h").write_text("wheel")
    (wheel / "include" / "curand.h").write_text("wheel")
    (toolkit / "lib64" / "libcudart.so").write_text("")
    (wheel / "lib" / "libcublas.so.13").write_text("")
    nvcc = runtime.jittor_cuda_home(str(toolkit / "bin" / "nvcc"), [str(wheel)],
                                    cache=str(tmp_path / "cache"))
    home = os.path.dirname(os.path.dirname(nvcc))
    assert subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout \
        .strip() == "release 13.0"
    assert open(os.path.join(home, "include", "cublas_v2.h")).read() == "toolkit"  # first wins
    assert os.path.exists(os.path.join(home, "include", "curand.h"))
    for lib in ("libcudart.so", "libcublas.so.13", "libcublas.so"):  # + the unversioned name
        assert os.path.exists(os.path.join(home, "lib64", lib)), lib
    assert runtime.jittor_cuda_home(str(toolkit / "bin" / "nvcc"), [str(wheel)],
                                    cache=str(tmp_path / "cache")) == nvcc  # built once

    for k in list(runtime.CUDA_OFFLINE_DEFAULTS) + ["nvcc_path", "conv_opt", "FIX_TORCH_ERROR",
                                                    "log_silent", "use_mpi", "use_mkl"]:
        # setenv first records the original state, so teardown also removes what
        # prepare_environment sets below (a leaked nvcc_path breaks every later Jittor process)
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    monkeypatch.setenv("use_cutlass", "1")  # a user's setting wins
    monkeypatch.setattr(runtime, "jittor_cuda_home", lambda: nvcc)
    monkeypatch.setattr(runtime, "jittor_patches", lambda: [])  # a stock Jittor: no cuDNN 9
    runtime.prepare_environment(use_cuda=True)
    assert (os.environ["use_cutt"], os.environ["use_cutlass"], os.environ["conv_opt"]) == \
        ("0", "1", "1")
    assert os.environ["nvcc_path"] == nvcc
    # diffbench's patched Jittor (tools/patched_jittor.py) uses cuDNN 9
    monkeypatch.delenv("conv_opt")
    monkeypatch.setattr(runtime, "jittor_patches", lambda: ["numpy2-descr", "cudnn9"])
    runtime.prepare_environment(use_cuda=True)
    assert os.environ["conv_opt"] == "0"


def test_device_cuda_without_a_gpu_exits_2_with_one_line_before_any_cell(
        tmp_path, monkeypatch, capsys):
    from bench.run import config as C

    monkeypatch.setattr(C, "cuda_device_present", lambda: (False, "NVML sees no GPU"))
    results = tmp_path / "results"
    code = harness.main(["bench", "configs/quick.yaml", "--set", "device=cuda",
                         "--results-dir", str(results)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "device: 'cuda'" in err and "NVML sees no GPU" in err
    assert not results.exists()  # nothing ran, nothing written


def test_math_mode_is_a_validated_config_key(tmp_path, capsys):
    from bench.run import config as C

    assert C.load_config("configs/quick.yaml", check_paths=False)["math_mode"] == "fp32"
    assert C.load_config("configs/quick-gpu.yaml", check_paths=False)["device"] == "cuda"
    with pytest.raises(C.ConfigError, match="math_mode"):
        C.load_config("configs/quick.yaml", ["math_mode=fp16"], check_paths=False)


def test_report_environment_shows_the_math_mode():
    cpu = {"math_mode": "fp32", "frameworks": {"torch": {"device": "cpu"}}}
    assert "CUDA only" in facts.math_mode_line(cpu)
    gpu = {"math_mode": "fp32", "frameworks": {
        "torch": {"device": "cuda", "allow_tf32_cudnn": False, "allow_tf32_matmul": False,
                  "nvidia_tf32_override": "0"},
        "jittor": {"device": "cuda", "use_tensorcore": 0, "cudnn": False}}}
    line = facts.math_mode_line(gpu)
    assert line.startswith("fp32 (no TF32; NVIDIA_TF32_OVERRIDE=0")
    assert "allow_tf32_cudnn False" in line and "use_tensorcore 0" in line


def test_gpu_check_without_a_gpu_prints_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(E, "cuda_device_present", lambda: (False, "NVML sees no GPU"))
    code = harness.main(["gpu-check", "--out", str(tmp_path / "gpu-check.md")])
    out = capsys.readouterr().out.strip()
    assert code == 0 and len(out.splitlines()) == 1, out
    assert out.startswith("gpu-check: no GPU on this machine") and "NVML sees no GPU" in out
    assert not (tmp_path / "gpu-check.md").exists()


def test_gpu_check_judges_a_runs_records(tmp_path):
    """The checklist's bench lines, on a made-up GPU run: synced compute vs dispatch per
    framework pass; a cell whose summary lacks the monitor's GPU figures fails, by name."""
    import importlib.util

    from tests.test_report import make_run

    spec = importlib.util.spec_from_file_location("gpu_check", "tools/gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    run_dir = make_run(tmp_path, gpu=True)
    check = gc.Checklist()
    gc.bench_checks(check, str(run_dir), "GPU-aaaa1111")
    by_name = {name: ok for ok, name, _ in check.lines}
    assert by_name["synced step longer than its dispatch (torch-train)"] is True
    assert by_name["synced step longer than its dispatch (jittor-train)"] is True
    gpu_lines = [(ok, d) for ok, name, d in check.lines if name.startswith("GPU figures")]
    assert gpu_lines and not any(ok for ok, _ in gpu_lines)  # no gpu_watched in these
    md = check.markdown(0.0)
    assert md.startswith("# gpu-check") and "| **FAIL** | GPU figures measured" in md
