"""`make offline-bundle`: the folder an offline GPU host needs beside the working tree (docs/GPU.md,
"On an offline GPU host").

.offline/ (git-ignored), at most 60 MiB:
  wheels/    what such a host lacks: diffbench's patched Jittor 1.3.11 (tools/patched_jittor.py:
             numpy 2, CUDA 13, CCCL 3, cuDNN 9; the same Jittor `make setup` installs), its
             astunparse, torch-fidelity
  pyinclude-3.12.tar.gz   CPython 3.12's headers, for a host without python3.12-dev (Jittor
             compiles its core against Python.h at import); used only where the host has none
  run.sh     the one command to run there (a copy of tools/offline/run.sh)
  MANIFEST.txt  every file with its size and sha256
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tools import patched_jittor  # noqa: E402  (the same Jittor `make setup` installs)

LIMIT_MIB = 60
# Pure-Python wheels the hosts lack (their torch, numpy, pandas, ... stay theirs).
PURE_WHEELS = ["astunparse==1.6.3", "torch-fidelity==0.4.0"]
PY_VERSION = "3.12"


def run(cmd, **kw):
    print("[offline-bundle] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def pip(*args):
    run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"])


def pack_python_headers(dest):
    """CPython 3.12's include/python3.12 from this machine (pyenv), for hosts without them."""
    out = subprocess.run(["pyenv", "prefix", PY_VERSION + ".1"], capture_output=True, text=True)
    candidates = [os.path.join(out.stdout.strip(), "include", "python" + PY_VERSION)] + \
        [f"/usr/include/python{PY_VERSION}"]
    inc = next((c for c in candidates if os.path.isfile(os.path.join(c, "Python.h"))), None)
    if inc is None:
        print(f"[offline-bundle] no CPython {PY_VERSION} headers here (pyenv {PY_VERSION}.1 or "
              f"python{PY_VERSION}-dev): the bundle relies on the host's own", flush=True)
        return
    with tarfile.open(os.path.join(dest, f"pyinclude-{PY_VERSION}.tar.gz"), "w:gz") as t:
        t.add(inc, arcname="python" + PY_VERSION)


def write_manifest(out):
    rows = []
    for root, _, files in os.walk(out):
        for name in sorted(files):
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            rows.append(f"{os.path.getsize(path):>10}  {digest}  {os.path.relpath(path, out)}")
    with open(os.path.join(out, "MANIFEST.txt"), "w") as f:
        f.write("\n".join(sorted(rows, key=lambda r: r.split()[-1])) + "\n")


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(r, n)) for r, _, fs in os.walk(path) for n in fs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, ".offline"))
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    tmp = out + ".building"
    shutil.rmtree(tmp, ignore_errors=True)
    wheels = os.path.join(tmp, "wheels")
    os.makedirs(wheels)
    patched_jittor.build_jittor_wheel(wheels)
    pip("download", "--no-deps", "--only-binary=:all:", "-d", wheels, *PURE_WHEELS)
    pack_python_headers(tmp)
    shutil.copy2(os.path.join(REPO, "tools", "offline", "run.sh"), os.path.join(tmp, "run.sh"))
    write_manifest(tmp)
    size = folder_bytes(tmp)
    if size > LIMIT_MIB * 2**20:
        raise SystemExit(f"offline-bundle: {size / 2**20:.1f} MiB is over the {LIMIT_MIB} MiB "
                         f"a host call carries ({tmp})")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)  # whole or not at all
    print(open(os.path.join(out, "MANIFEST.txt")).read(), end="")
    print(f"[offline-bundle] {out}: {size / 2**20:.1f} MiB (limit {LIMIT_MIB} MiB)")


if __name__ == "__main__":
    main()
