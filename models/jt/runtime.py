"""Importing Jittor the way diffbench needs it: quiet, offline, and without dragging torch in.

Every Jittor import in the project goes through `import_jittor()` so the environment is set
before Jittor's import-time compiler runs (those variables are read once, at import).
"""
import glob
import os


def gpu_present():
    """A CUDA device node exists. Cheap, and true exactly where jittor can find libcudart."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def prepare_environment(use_cuda=None):
    """Set the variables Jittor reads at import. Existing user settings win."""
    # Jittor imports torch itself unless told not to: that costs ~0.7 s and ~170 MB RSS and
    # would pollute a Jittor-only process's memory figures.
    os.environ.setdefault("FIX_TORCH_ERROR", "0")
    os.environ.setdefault("log_silent", "1")
    if use_cuda is None:
        use_cuda = gpu_present()
    if not use_cuda:
        # nvcc exists on the CPU machines without a CUDA runtime; with it visible Jittor
        # crashes looking for libcudart.
        os.environ.setdefault("nvcc_path", "")


def import_jittor(use_cuda=None):
    prepare_environment(use_cuda)
    import jittor

    return jittor


def onednn_enabled():
    """True when Jittor's oneDNN (mkl) conv ops are compiled and loaded."""
    import jittor

    return getattr(jittor, "mkl_ops", None) is not None
