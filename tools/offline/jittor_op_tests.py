"""Jittor's own CUDA op tests, run on a GPU host before the benchmarks (tools/offline/host_run.py,
step jittor-op-tests) so that a Jittor failure on a new CUDA names the op: cuDNN convolution
forward and backward, cuBLAS, cuDNN's and CUB's self-tests, CUB's cumsum and the softmax code
op (every attention layer). They come with Jittor (jittor/test/) and run here with the
environment every diffbench Jittor process gets (models/jt/runtime.py).

One line per test: PASS, FAIL (first line of the error) or SKIP (the reason: e.g. cuDNN off
under conv_opt=1); exit 1 when any failed, or when a cuDNN test was skipped although cuDNN
should be on.
"""
import io
import os
import sys
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# (what it proves, the test's unittest name)
TESTS = [
    ("cuDNN convolution forward", "jittor.test.test_cudnn_op.TestCudnnConvOp.test"),
    ("cuDNN convolution backward", "jittor.test.test_cudnn_op.TestCudnnConvOp.test_backward"),
    ("cuDNN self-test", "jittor.test.test_cublas_test_op.TestCudnnTestOp.test"),
    ("cuBLAS self-test", "jittor.test.test_cublas_test_op.TestCublasTestOp.test"),
    ("CUB self-test", "jittor.test.test_cublas_test_op.TestCubTestOp.test"),
    ("CUB cumsum", "jittor.test.test_cub_cumsum.TestCubCumsumOp"),
    ("softmax code op (attention)", "jittor.test.test_misc_op.TestOther.test_code_softmax"),
]


def run_one(name):
    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    if result.errors or result.failures:
        text = (result.errors + result.failures)[0][1]
        lines = [l for l in text.strip().splitlines() if l.strip()]
        return "FAIL", lines[-1][:300] if lines else "failed"
    if result.skipped:
        return "SKIP", result.skipped[0][1][:200]
    if not result.testsRun:
        return "FAIL", "no test ran"
    return "PASS", f"{result.testsRun} test(s)"


def main():
    from bench.records.errors import strip_ansi
    from models.jt.runtime import import_jittor

    jt = import_jittor(use_cuda=True)
    cudnn_on = os.environ.get("conv_opt") == "0"
    print(f"[jittor-op-tests] jittor {jt.__version__}, has_cuda {int(jt.has_cuda)}, "
          f"conv_opt={os.environ.get('conv_opt')}", flush=True)
    bad = 0
    for what, name in TESTS:
        try:
            status, detail = run_one(name)
        except Exception as e:  # an import of the test module failed
            status, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if status == "SKIP" and cudnn_on and "cuDNN" in what:
            status, detail = "FAIL", f"skipped although cuDNN should be on: {detail}"
        bad += status == "FAIL"
        print(f"{status}  {what}: {strip_ansi(detail)}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
