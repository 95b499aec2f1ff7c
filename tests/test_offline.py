"""The offline GPU bundle (docs/GPU.md, "On an offline GPU host"): run.sh's bad input and
budget, and the dry run end to end from a clean copy of the repository with the network cut
off. Jittor's patches have their own tests (tests/test_patched_jittor.py)."""
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from tools.offline import build_bundle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_sh(*args, env=None, cwd=REPO, network=True):
    cmd = ["bash", os.path.join(cwd, "tools", "offline", "run.sh"), *args]
    if not network:
        cmd = ["unshare", "-n"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_run_sh_without_a_bundle_is_bad_input(tmp_path):
    out = run_sh("--dry-run", env={"DIFFBENCH_BUNDLE": str(tmp_path / "none")})
    assert out.returncode == 2
    assert "no wheels in" in out.stderr and "make offline-bundle" in out.stderr


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A real bundle, built the way `make offline-bundle` builds it (needs PyPI)."""
    out = tmp_path_factory.mktemp("bundle") / ".offline"
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "offline", "build_bundle.py"),
                    "--out", str(out)], check=True, capture_output=True, timeout=600)
    return out


def test_the_bundle_holds_what_a_host_lacks(bundle):
    names = sorted(os.listdir(bundle / "wheels"))
    assert [n.split("-")[0] for n in names] == ["astunparse", "jittor", "torch_fidelity"]
    manifest = (bundle / "MANIFEST.txt").read_text()
    assert "run.sh" in manifest and "wheels/jittor-1.3.11.0-py3-none-any.whl" in manifest
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size <= build_bundle.LIMIT_MIB * 2**20


def test_a_budget_too_small_skips_every_step_with_a_note(bundle, tmp_path):
    out = run_sh("--dry-run", "--budget", "1", "--out", str(tmp_path / "out"),
                 env={"DIFFBENCH_BUNDLE": str(bundle),
                      "DIFFBENCH_OFFLINE_SITE": str(tmp_path / "site")})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    for step in ("jittor-compile", "gpu-check", "paper-fp32"):
        assert f"| {step} | skipped | 0 | budget:" in summary


def clean_copy(dest):
    """The repository's tracked and untracked-but-not-ignored files: what a host receives."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if os.path.isfile(os.path.join(REPO, rel)):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, rel), os.path.join(dest, rel))


def network_can_be_cut():
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_dry_run_from_a_clean_copy_offline(bundle, tmp_path):
    """The whole sequence on this CPU (torch's cells: Jittor's first compile into a fresh site
    folder would add minutes on 2 cores; docs/GPU.md gives the time of a run with both)."""
    repo = tmp_path / "repo"
    clean_copy(repo)
    shutil.copytree(bundle, repo / ".offline")
    out_dir = tmp_path / "out"
    out = run_sh("--dry-run", "--frameworks", "torch", "--out", str(out_dir), cwd=str(repo),
                 env={"DIFFBENCH_OFFLINE_SITE": str(tmp_path / "site")},
                 network=not network_can_be_cut())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    returned = sorted(os.listdir(out_dir))
    assert returned == ["probe.json", "results.tar.gz", "run.log", "summary.md"]
    assert all(os.path.getsize(out_dir / n) <= 16 * 2**20 for n in returned)
    summary = (out_dir / "summary.md").read_text()
    assert summary in out.stdout  # the summary is the last thing printed
    for step in ("gpu-check", "quick-gpu", "paper-fp32", "paper-tf32", "paper-bf16"):
        assert f"| {step} | ok |" in summary, step
    assert "| jittor-compile | skipped | 0 | not in --frameworks |" in summary
    # JAX's own steps come last; here skipped either way (not installed, or not asked for)
    assert "| jax-quick | skipped | 0 |" in summary and "| jax-paper-fp32 | skipped | 0 |" \
        in summary
    assert "Not checked by a dry run" in summary and "NVML on a real driver" in summary
    probe = json.loads((out_dir / "probe.json").read_text())
    assert probe["modules"]["jittor"] == "1.3.11.0"  # the bundle's wheel, installed
    with tarfile.open(out_dir / "results.tar.gz") as t:
        names = t.getnames()
    runs = {n.split("/")[1] for n in names if n.startswith("results/") and
            n.endswith("manifest.json")}
    # quick-gpu, paper fp32, tf32, bf16, and the sweeps (configs/sweep-gpu.yaml, the DiT's
    # configs/dit-gpu.yaml), whose dry run is their first point at 8x8
    assert sorted(r.split("-", 2)[2] for r in runs) == ["dit-gpu"] + ["gpu-paper"] * 3 + [
        "quick-gpu", "sweep-gpu"]
    for step in ("sweep-gpu", "dit-gpu"):
        assert f"| {step} | ok |" in summary, step
    reports = [n for n in names if n.startswith("reports/") and n.endswith("report.md")]
    # a report per run, and a sweep's measured point has its own beside the sweep's
    assert sorted(n.split("/points/")[1] for n in reports if "/points/" in n) == [
        "DiT-S-2/report.md", "quick/report.md"]
    assert len(reports) == 6 + 2
    assert "paper-fp32.log" in names and "run.log" in names


def test_the_host_run_gives_jittor_its_cuda_environment_and_moves_a_stale_jtcuda(
        tmp_path, monkeypatch):
    """What every Jittor process on a GPU host inherits (tools/offline/host_run.py): the
    download switches, FIX_TORCH_ERROR=0, cuDNN on with the patched Jittor, nvcc_path to the
    assembled CUDA folder; a ~/.cache/jittor/jtcuda (which would override it all) moved aside."""
    from models.jt import runtime
    from tools.offline import host_run

    monkeypatch.setenv("HOME", str(tmp_path))
    stale = tmp_path / ".cache" / "jittor" / "jtcuda"
    stale.mkdir(parents=True)
    keys = ["FIX_TORCH_ERROR", "conv_opt", "nvcc_path", *runtime.CUDA_OFFLINE_DEFAULTS]
    for k in keys:  # restored after the test: a leaked nvcc_path breaks later Jittor processes
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    monkeypatch.setenv("use_cutlass", "1")  # a user's own setting wins
    monkeypatch.setattr(runtime, "jittor_cuda_home", lambda: "/opt/cuda-home/bin/nvcc")
    monkeypatch.setattr(runtime, "jittor_patches", lambda: ["cuda13-cxx17", "cudnn9"])
    lines = []
    host_run.jittor_cuda_environment(lines.append)
    assert not stale.exists()
    assert len(list(stale.parent.glob("jtcuda.aside-*"))) == 1
    assert {k: os.environ[k] for k in keys} == {
        "FIX_TORCH_ERROR": "0", "conv_opt": "0", "nvcc_path": "/opt/cuda-home/bin/nvcc",
        "use_cutt": "0", "use_cutlass": "1", "use_nccl": "0"}
    text = "\n".join(lines)
    assert "moved a stale" in text and "patches: cuda13-cxx17, cudnn9" in text
    # A stock Jittor (no cudnn9 patch) runs on its own convolution kernels.
    monkeypatch.delenv("conv_opt")
    monkeypatch.setattr(runtime, "jittor_patches", lambda: [])
    host_run.jittor_cuda_environment(lines.append)
    assert os.environ["conv_opt"] == "1"
