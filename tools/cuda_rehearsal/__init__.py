"""make cuda-rehearsal: tools/cuda_rehearsal/run.py."""
