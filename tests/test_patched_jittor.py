"""The Jittor diffbench installs (tools/patched_jittor.py): every patch against the real Jittor
1.3.11 source, the installed package carrying all of them, and the numpy-2 checks of the CUDA-13
issue on this machine's numpy: every dtype round trip, float64, transposed and non-contiguous
arrays, numpy integers as indices."""
import os
import subprocess
import sys

import numpy as np
import pytest

from models.jt.runtime import jittor_patches
from tools import patched_jittor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """PyPI's jittor 1.3.11 source, unpatched (the sdist setup downloaded once)."""
    work = tmp_path_factory.mktemp("sdist")
    return os.path.join(patched_jittor.unpack_sdist(str(work)), "python")


def edits():
    return [(pid, *edit) for pid, _, es in patched_jittor.PATCHES for edit in es]


def test_each_edit_matches_the_real_jittor_source_and_applies(pristine, tmp_path):
    for pid, rel, old, new, *times in edits():
        text = open(os.path.join(pristine, rel)).read()
        assert text.count(old) == (times[0] if times else 1), (pid, rel)
    root = tmp_path / "python"
    for pid, rel, *_ in edits():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(open(os.path.join(pristine, rel)).read())
    patched_jittor.patch_jittor_source(str(root))
    for pid, rel, old, new, *_ in edits():
        text = (root / rel).read_text()
        assert new in text and old not in text.replace(new, ""), (pid, rel)
    assert (root / "jittor" / patched_jittor.MARKER).read_text().split() == patched_jittor.patch_ids()
    # The C++17 switch sits after Jittor's own -std rewrite inside convert_nvcc_flags.
    compiler = (root / "jittor" / "compiler.py").read_text()
    body = compiler[compiler.index("def convert_nvcc_flags"):]
    body = body[:body.index("return nvcc_flags")]
    assert body.index('"-std=c++14 -Xcompiler -std:c++14"') < body.index('"-std=c++17")')
    # The patched Python files still parse.
    for rel in {rel for _, rel, *_ in edits() if rel.endswith(".py")}:
        compile((root / rel).read_text(), rel, "exec")


def test_a_source_that_differs_stops_the_build(tmp_path):
    pid, _, ((rel, *_), *_) = patched_jittor.PATCHES[0]
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text("// not Jittor 1.3.11's numpy.h\n")
    with pytest.raises(SystemExit, match=f"{pid}: .*not Jittor 1.3.11's source"):
        patched_jittor.patch_jittor_source(str(tmp_path))


def test_setup_installed_the_patched_jittor():
    assert jittor_patches() == patched_jittor.patch_ids()


NUMPY_CHECKS = r"""
import numpy as np
from models.jt.runtime import import_jittor
jt = import_jittor()
checked = []
for dtype in ["bool", "int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64"]:
    a = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    back = jt.array(a).numpy()
    # Jittor keeps 64-bit numpy arrays 64-bit only with auto_convert_64_to_32 off (below)
    assert back.shape == a.shape and np.array_equal(back.astype(a.dtype), a), dtype
    checked.append(dtype)
jt.flags.auto_convert_64_to_32 = 0
f64 = np.linspace(-1, 1, 12).reshape(3, 4) * (1 + 2.0 ** -40)
back = jt.array(f64).numpy()
assert back.dtype == np.float64 and np.array_equal(back, f64)
jt.flags.auto_convert_64_to_32 = 1
x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
for view in (x.T, x[:, ::2, 1:], x.transpose(1, 0, 2)[::-1], np.asfortranarray(x)):
    assert not view.flags.c_contiguous or view is x
    assert np.array_equal(jt.array(view).numpy(), view)
v = jt.array(x)
for i in (np.int64(2), np.int32(1), np.uint8(0), np.intp(-1)):
    assert np.array_equal(v[i].numpy(), x[int(i)]), i
assert np.array_equal(v[np.int64(1), np.int32(2)].numpy(), x[1, 2])
print("NUMPY_OK", np.__version__, len(checked))
"""


def test_jittor_under_this_numpy_round_trips_every_dtype_and_layout():
    out = subprocess.run([sys.executable, "-c", NUMPY_CHECKS], cwd=REPO, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0 and "NUMPY_OK" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"NUMPY_OK {np.__version__} 9" in out.stdout
