"""Where the time goes: FLOP counts, the op-category table, and the profile workload run for
real in both frameworks (tiny model), down to the report section."""
import os
import time

import pandas as pd
import pytest

from tests.conftest import TINY_MODEL, harness, run_dirs, write_config
from tests.real_runs import profile_run_config
from bench.records.results import RecordWriter, read_records
from bench.report import profile as report_profile
from bench.report.load import load_run
from bench.measure import native as native_mod
from bench.run.workloads import _profile_record
from models.common.flops import forward_flops, train_step_flops
from models.common.nativecats import native_class
from models.common.opcats import (CATEGORIES, jittor_category, jittor_short_name, torch_category,
                                  xla_category)
from models.common.specs import UNetSpec
from models.jx.profiler import parse_hlo, share_wall

SPECS = [
    UNetSpec(image_size=16, in_channels=3, base_channels=32, ch_mult=(1, 2, 2),
             num_res_blocks=1, attn_resolutions=(8,), norm_groups=8),
    UNetSpec(image_size=8, in_channels=1, base_channels=16, ch_mult=(1, 2), num_res_blocks=2,
             attn_resolutions=(4, 8), norm_groups=4),
    UNetSpec(image_size=28, in_channels=1, base_channels=32, ch_mult=(1, 2, 2),
             num_res_blocks=1, attn_resolutions=(7,), norm_groups=8),
    UNetSpec(image_size=16, in_channels=3, base_channels=16, ch_mult=(1, 1, 2, 2),
             num_res_blocks=2, attn_resolutions=(), norm_groups=8),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.image_size}px-{s.ch_mult}")
def test_flops_match_torch_flop_counter(spec):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from models.pt.unet import UNet

    torch.manual_seed(0)
    model, batch = UNet(spec), 3
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size)
    t = torch.randint(0, 1000, (batch,))
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x, t)
    with FlopCounterMode(display=False) as step:
        model(x, t).pow(2).mean().backward()
    assert forward_flops(spec, batch)["total"] == pytest.approx(fwd.get_total_flops(), rel=0.02)
    assert train_step_flops(spec, batch) == pytest.approx(step.get_total_flops(), rel=0.02)


def test_flops_scale_with_batch_and_split_by_kind():
    f1, f4 = forward_flops(SPECS[0], 1), forward_flops(SPECS[0], 4)
    assert f4["total"] == 4 * f1["total"]
    assert f1["total"] == f1["conv"] + f1["linear"] + f1["attention"]
    # no attention resolutions: only the middle block's attention, at 2x2 with 32 channels
    assert forward_flops(SPECS[3], 1)["attention"] == 2 * (2 * 1 * 4 * 4 * 32)


# ------------------------------------------------------------------ the category table

WINDOW_CONV = ("«opkey0:reindex«Tx:float32«XDIM=4«YDIM=7«INDEX2:i3*1-1+i5*1«INDEX3:i4*1-1+i6*1"
               "«opkey1:broadcast_to«Tx:float32«opkey2:binary«OP:multiply«opkey3:reduce«OP:add")


@pytest.mark.parametrize("key, category", [
    ("mkl_conv«Txd:float32«XFORMAT:abcd", "conv_fwd"),
    ("mkl_conv_backward_w«Txd:float32", "conv_bwd"),
    ("cudnn_conv_backward_x«Tx:float32", "conv_bwd"),
    ("mkl_matmul«T:float32«Trans_a:N", "matmul"),
    (WINDOW_CONV, "conv_fwd"),
    ("[marks:backward,]" + WINDOW_CONV, "conv_bwd"),
    ("«opkey0:reindex«Tx:float32«INDEX0:@e0(i0,i1,i2,i3)«opkey1:unary«OP:floor_int", "resample"),
    ("«opkey0:array«opkey1:broadcast_to«opkey2:binary«OP:subtract«opkey3:unary«OP:exp"
     "«opkey4:reduce«OP:add", "matmul"),
    ("«opkey0:broadcast_to«opkey1:broadcast_to«opkey2:binary«OP:multiply«opkey3:reduce"
     "«OP:add", "matmul"),
    ("«opkey0:reduce«OP:mean«opkey1:binary«OP:multiply«opkey2:reduce«OP:mean", "norm"),
    ("[marks:loss,]«opkey0:binary«OP:subtract«opkey1:reduce«OP:mean", "loss"),
    ("[marks:optimizer,]«opkey0:array«opkey1:binary«OP:multiply«opkey2:unary«OP:sqrt",
     "optimizer"),
    ("«opkey0:array«opkey1:binary«OP:multiply«opkey2:unary«OP:sqrt", "elementwise"),
    ("array«T:float32", "data"),
    ("«opkey0:unary«OP:sigmoid«opkey1:binary«OP:multiply", "elementwise"),
    ("some_new_kernel«T:float32", "other"),
])
def test_jittor_rules(key, category):
    assert jittor_category(key) == category


def test_jittor_short_names_keep_region_and_members():
    assert jittor_short_name("mkl_conv«Txd:float32") == "mkl_conv"
    name = jittor_short_name("[marks:backward,]" + WINDOW_CONV)
    assert name.startswith("[backward] fused(reindex") and "binary.multiply" in name


@pytest.mark.parametrize("chain, category", [
    (["aten::conv2d", "aten::convolution", "aten::mkldnn_convolution"], "conv_fwd"),
    (["diffbench:backward", "autograd::engine::evaluate_function: ConvolutionBackward0",
      "aten::convolution_backward"], "conv_bwd"),
    (["diffbench:backward", "autograd::engine::evaluate_function: SiluBackward0",
      "aten::silu_backward"], "elementwise"),
    (["diffbench:optimizer", "Optimizer.step#Adam.step", "aten::add_"], "optimizer"),
    (["diffbench:data", "aten::to", "aten::copy_"], "data"),
    (["aten::group_norm", "aten::native_group_norm"], "norm"),
    (["aten::linear", "aten::addmm"], "matmul"),
    (["diffbench:loss", "aten::mse_loss"], "loss"),
    (["aten::upsample_nearest2d"], "resample"),
    (["aten::add"], "elementwise"),
    (["cudaLaunchKernel"], "other"),
    (["diffbench:backward"], None),  # the engine between ops: unattributed, not an op
])
def test_torch_rules(chain, category):
    assert torch_category(chain) == category


# An excerpt of the optimized HLO of the JAX UNet's training step (compiled.as_text(), jaxlib
# 0.10 on a CPU), trimmed to the lines the rules read.
HLO = """HloModule jit__train_fn, is_scheduled=true, entry_computation_layout={...}

%fused_computation.322 (param_0.386: f32[4,16], param_1.396: f32[16,64]) -> f32[4,64] {
  %param_0.386 = f32[4,16]{1,0} parameter(0)
  %param_1.396 = f32[16,64]{1,0} parameter(1)
  ROOT %dot_general.34 = f32[4,64]{1,0} dot(%param_0.386, %param_1.396), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(_train_fn)/jvp(UNet)/temb.dense.0/dot_general" stack_frame_id=346}
}

%fused_computation.7 (param_0.1: f32[4,16,16,16], param_1.1: f32[4,1,1,16]) -> f32[4,16,16,16] {
  %param_0.1 = f32[4,16,16,16]{3,2,1,0} parameter(0)
  %param_1.1 = f32[4,1,1,16]{3,2,1,0} parameter(1)
  %broadcast.1 = f32[4,16,16,16]{3,2,1,0} broadcast(%param_1.1), dimensions={0,1,2,3}, metadata={op_name="jit(_train_fn)/jvp(UNet)/down.0.block.0/norm1/broadcast_in_dim"}
  ROOT %subtract.2 = f32[4,16,16,16]{3,2,1,0} subtract(%param_0.1, %broadcast.1), metadata={op_name="jit(_train_fn)/jvp(UNet)/down.0.block.0/norm1/sub"}
}

%fused_computation.9 (param_0.2: f32[16], param_1.2: f32[16]) -> f32[16] {
  %param_0.2 = f32[16]{0} parameter(0)
  %param_1.2 = f32[16]{0} parameter(1)
  %sqrt.1 = f32[16]{0} sqrt(%param_1.2), metadata={op_name="jit(_train_fn)/diffbench:optimizer/sqrt"}
  ROOT %divide.3 = f32[16]{0} divide(%param_0.2, %sqrt.1), metadata={op_name="jit(_train_fn)/diffbench:optimizer/div"}
}

%fused_computation.11 (param_0.3: f32[4,16,16,16]) -> f32[4,32,32,16] {
  %param_0.3 = f32[4,16,16,16]{3,2,1,0} parameter(0)
  %broadcast.4 = f32[4,16,2,16,2,16]{5,4,3,2,1,0} broadcast(%param_0.3), dimensions={0,1,3,5}, metadata={op_name="jit(_train_fn)/jvp(UNet)/upsample/broadcast_in_dim"}
  ROOT %bitcast.5 = f32[4,32,32,16]{3,2,1,0} bitcast(%broadcast.4), metadata={op_name="jit(_train_fn)/jvp(UNet)/upsample/reshape"}
}

%region_0.1 (Arg_0.1: s32[], Arg_1.1: f32[4,16]) -> pred[] {
  %Arg_0.1 = s32[] parameter(0)
  ROOT %compare.1 = pred[] compare(%Arg_0.1, %Arg_0.1), direction=LT
}

ENTRY %main.500 (x0.1: f32[4,3,16,16], w.1: f32[3,3,3,16]) -> (f32[16], f32[4,64]) {
  %x0.1 = f32[4,3,16,16]{3,2,1,0} parameter(0)
  %conv_general_dilated.122 = f32[4,16,16,16]{3,2,1,0} convolution(%x0.1, %w.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(_train_fn)/jvp(UNet)/conv_in/conv_general_dilated" stack_frame_id=490}
  %convolution = f32[4,16,16,16]{3,2,1,0} convolution(%x0.1, %w.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(_train_fn)/transpose(jvp(UNet))/conv_out/conv_general_dilated" stack_frame_id=480}
  %ynn_fusion.322 = f32[4,64]{1,0} fusion(%x0.1, %w.1), kind=kCustom, calls=%fused_computation.322, metadata={op_name="jit(_train_fn)/jvp(UNet)/temb.dense.0/dot_general" stack_frame_id=346}, backend_config={"fusion_config":{"kind":"__ynn_fusion"}}
  %broadcast_subtract_fusion.7 = f32[4,16,16,16]{3,2,1,0} fusion(%x0.1, %w.1), kind=kLoop, calls=%fused_computation.7, metadata={op_name="jit(_train_fn)/jvp(UNet)/down.0.block.0/norm1/sub"}
  %sqrt_divide_fusion = f32[16]{0} fusion(%x0.1, %w.1), kind=kLoop, calls=%fused_computation.9, metadata={op_name="jit(_train_fn)/diffbench:optimizer/div"}
  %broadcast_bitcast_fusion = f32[4,32,32,16]{3,2,1,0} fusion(%x0.1), kind=kLoop, calls=%fused_computation.11, metadata={op_name="jit(_train_fn)/jvp(UNet)/upsample/reshape"}
  %while.49 = (s32[], f32[4,16]{1,0}) while(%x0.1), condition=%region_0.1, body=%region_0.1
  %transpose_copy_fusion.3 = f32[4,16,16,3]{3,2,1,0} copy(%x0.1), metadata={op_name="jit(_train_fn)/jvp(UNet)/transpose"}
  ROOT %tuple = (f32[16], f32[4,64]) tuple(%sqrt_divide_fusion, %ynn_fusion.322)
}
"""


def test_xla_rules_read_the_optimized_hlo():
    module, table = parse_hlo(HLO)
    assert module == "jit__train_fn"
    got = {name: table[name][0] for name in (
        "conv_general_dilated.122", "convolution", "ynn_fusion.322",
        "broadcast_subtract_fusion.7", "sqrt_divide_fusion", "broadcast_bitcast_fusion",
        "while.49", "transpose_copy_fusion.3")}
    assert got == {"conv_general_dilated.122": "conv_fwd", "convolution": "conv_bwd",
                   "ynn_fusion.322": "matmul", "broadcast_subtract_fusion.7": "norm",
                   "sqrt_divide_fusion": "optimizer", "broadcast_bitcast_fusion": "resample",
                   "while.49": None,   # control flow: its body's thunks are the ops
                   "transpose_copy_fusion.3": "elementwise"}
    assert table["ynn_fusion.322"][1] == "ynn_fusion"


@pytest.mark.parametrize("members, category", [
    ([("fusion", ""), ("exponential", "a/jvp(UNet)/mid.attn_1/exp"),
      ("reduce", "a/jvp(UNet)/mid.attn_1/reduce_sum")], "matmul"),      # softmax
    ([("fusion", "a/diffbench:loss/sub"), ("multiply", "a/diffbench:loss/mul")], "loss"),
    ([("fusion", ""), ("logistic", "a/jvp(DiT)/blocks.0/LayerNorm_0/x")], "norm"),
    ([("custom-call", "a/b")], "other"),
])
def test_xla_rules(members, category):
    assert xla_category(members, members[0][1]) == category


def test_concurrent_ops_share_the_wall_time():
    """Two thunks overlapping for 2 of their 4 ns each get half of the overlap: the total is
    the time any op ran, never more than the wall time."""
    shares = share_wall([(0, 4, "a"), (2, 6, "b"), (10, 11, "a"), (20, 20, "c")])
    assert shares["a"] * 1e9 == pytest.approx(2 + 1 + 1)
    assert shares["b"] * 1e9 == pytest.approx(1 + 2)
    assert shares["c"] == 0.0
    assert sum(shares.values()) * 1e9 == pytest.approx(7)   # [0, 6] and [10, 11]


def test_profile_record_keeps_unknown_ops_and_adds_up(tmp_path):
    ops = [{"name": "mkl_conv", "category": "conv_fwd", "seconds": 0.6, "count": 20},
           {"name": "mystery_op", "category": "other", "seconds": 0.2, "count": 2}]
    off = {"available": False, "reason": "profile.native is off"}
    nat = {"available": True, "outside_s": 0.05}
    with RecordWriter(str(tmp_path / "events.jsonl")) as out:
        rec = _profile_record(out, "train", 2, plain=[0.4, 0.5], profiled=[0.5, 0.5], ops=ops,
                              raw="raw.json", native=off, flops=1e9)
        with_native = _profile_record(out, "train", 2, plain=[0.4, 0.5], profiled=[0.5, 0.5],
                                      ops=ops, raw="raw.json", native=nat, flops=1e9)
    assert rec["step_s"] == pytest.approx(0.5) and rec["unprofiled_step_s"] == pytest.approx(0.45)
    assert rec["categories"]["other"] == pytest.approx(0.1)
    assert rec["op_total_s"] == pytest.approx(0.4) and rec["coverage"] == pytest.approx(0.8)
    assert [o["name"] for o in rec["ops"]] == ["mkl_conv", "mystery_op"]
    assert set(rec["categories"]) == set(CATEGORIES)
    assert "coverage_native" not in rec and rec["native"] == off
    # per step: 0.4 s of ops + 0.05 s of code outside ops, of a 0.5 s step
    assert with_native["coverage_native"] == pytest.approx(0.9)


# ------------------------------------------------------------------ native (perf) classes

@pytest.mark.parametrize("framework,dso,symbol,cls", [
    # names as perf reported them for real profiles on this project's CPU runs
    ("jittor", "jittor_core.cpython-311-x86_64-linux-gnu.so", "jittor::Executor::run_sync",
     "executor"),
    ("jittor", "jittor_core.cpython-311-x86_64-linux-gnu.so", "jittor::count_fuse", "executor"),
    ("jittor", "jittor_core.cpython-311-x86_64-linux-gnu.so", "jittor::SFRLAllocator::free",
     "alloc"),
    ("jittor", "jittor_core.cpython-311-x86_64-linux-gnu.so",
     "jittor::Profiler::record_and_run", "profiler"),
    ("jittor", "libc.so.6", "_int_malloc", "alloc"),
    ("jittor", "libc.so.6", "__memmove_avx512_unaligned_erms", "op_code"),
    ("jittor", "__opkey0_reduce__Tx_float32__Ty_float32___hash_f015c6556b36d22_op.so",
     "0x1234", "op_code"),
    ("jittor", "gen_ops_mkl_matmul_mkl_conv___hash7f1612.cpython-311-x86_64-linux-gnu.so",
     "jittor::MklConvOp::jit_run", "op_code"),
    ("jittor", "[JIT] tid 9535", "0x00007fbe4d07e032", "op_code"),
    ("jittor", "libdnnl.so.2", "dnnl::impl::lru_primitive_cache_t::get", "op_code"),
    ("jittor", "libpython3.11.so.1.0", "_PyEval_EvalFrameDefault", "python"),
    ("jittor", "[kernel.kallsyms]", "clear_page_erms", "os"),
    ("jax", "libjax_common.so", "xla::ifrt::PjRtLoadedExecutable::Execute", "executor"),
    ("jax", "libjax_common.so", "tsl::profiler::TraceMeRecorder::Record", "profiler"),
    ("jax", "libjax_common.so", "ynn::dot_kernel", "op_code"),
    ("jax", "libc.so.6", "_int_malloc", "alloc"),
    ("jax", "[unknown]", "0x00007f3c2a1b0000", "op_code"),
    ("jax", "libpython3.11.so.1.0", "_PyEval_EvalFrameDefault", "python"),
    ("torch", "libc.so.6", "_int_malloc", "op_code"),
    ("torch", "libtorch_cpu.so", "mkl_blas_def_sgemm_kernel_0_zen", "op_code"),
    ("torch", "libgomp.so.1", "0x000000000001de62", "op_code"),
    ("torch", "libtorch_python.so", "torch::PythonArgParser::raw_parse", "python"),
    ("torch", "libpython3.11.so.1.0", "_PyObject_GenericGetAttrWithDict", "python"),
    ("torch", "libsomething_new.so", "f", "unclassified"),
])
def test_native_classes(framework, dso, symbol, cls):
    assert native_class(framework, dso, symbol) == cls


REPORT_TEXT = """# Samples: 3K of event 'cpu-clock'
#
 8008008    \t   9535:python \tjittor_core.cpython-311-x86_64-linux-gnu.so   \t[.] jittor::Executor::run_sync
 4004004    \t   9535:python \t[JIT] tid 9535                                \t[.] 0x00007fbe4d07e032
 2002002    \t   9535:python \tlibc.so.6                                     \t[.] _int_free
 6006006    \t   9615:python \tlibgomp.so.1.0.0                              \t[.] 0x000000000001f7da
 1001001    \t   9615:python \t[JIT] tid 9535                                \t[.] 0x00007fbe4c6be205
 1001001    \t   9535:python \tlibweird.so                                   \t[.] what
"""


def test_native_report_parsed_and_summarised_per_step():
    rows = native_mod.parse_report(REPORT_TEXT)
    assert len(rows) == 6 and rows[0] == (9535, "jittor_core.cpython-311-x86_64-linux-gnu.so",
                                          "jittor::Executor::run_sync", 0.008008008)
    s = native_mod.summarise(rows, "jittor", units=2, main_tid=9535, hz=999)
    c = s["classes"]
    assert c["executor"] == pytest.approx(0.004004004) and c["alloc"] == pytest.approx(0.001001001)
    assert c["op_code"] == pytest.approx(0.002002002)
    assert c["unclassified"] == pytest.approx(0.0005005005)
    assert s["main_s"] == pytest.approx(sum(c.values()))
    assert s["outside_s"] == pytest.approx(0.004004004 + 0.001001001)  # not unclassified
    assert s["others_spin_s"] == pytest.approx(0.003003003)
    assert s["others_work_s"] == pytest.approx(0.0005005005)
    assert [r["symbol"] for r in s["top_outside"]][:2] == ["jittor::Executor::run_sync",
                                                             "_int_free"]


def test_native_sampler_says_why_without_perf(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no perf on it
    with native_mod.NativeSampler(tmp_path / "x.data") as ns:
        pass
    s = ns.summary("torch", units=1)
    assert s == {"available": False, "reason": native_mod.problem()}
    assert "perf is not on PATH" in s["reason"] and not (tmp_path / "x.data").exists()


@pytest.mark.skipif(native_mod.problem() is not None or not native_mod.has_control(),
                    reason="needs perf with --control")
def test_native_sampler_samples_the_whole_block(tmp_path):
    """Events are on before the block starts, however long perf takes to attach: a short block
    is sampled whole (waiting for perf's file header instead missed 50 ms blocks on CI)."""
    t0 = time.thread_time()
    with native_mod.NativeSampler(tmp_path / "x.data", hz=999) as ns:
        t_block = time.thread_time()
        while time.thread_time() - t_block < 0.1:  # 0.1 s of this thread's CPU
            pass
    spent = time.thread_time() - t0  # the block and the sampler's own work around it
    s = ns.summary("torch", units=1)
    assert s["available"], s
    # cpu-clock periods add up to the thread's on-CPU time while the events were on
    assert 0.05 < s["main_s"] <= spent + 0.01, (s["main_s"], spent)
    assert ns.proc is None and ns.ctl is None and (tmp_path / "x.data").stat().st_size > 0


# ------------------------------------------------------------------ real profiles

@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    cfg = profile_run_config(root / "results")
    proc = harness("bench", write_config(root / "profile.yaml", cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = run_dirs(root / "results")
    return run_dir


def _profiles(run_dir, framework):
    (unit,) = [d for d in os.listdir(os.path.join(run_dir, "cells")) if d.startswith(framework)]
    cdir = os.path.join(run_dir, "cells", unit)
    records, _ = read_records(os.path.join(cdir, "events.jsonl"))
    return cdir, {r["phase"]: r for r in records if r["type"] == "profile"}


@pytest.mark.parametrize("framework", ["torch", "jittor", "jax"])
def test_real_profiles_fill_the_categories(profiled_run, framework):
    cdir, prof = _profiles(profiled_run, framework)
    train, sample = prof["train"], prof["sample"]
    cats = train["categories"]
    for c in ("conv_fwd", "conv_bwd", "matmul", "norm", "elementwise", "optimizer"):
        assert cats[c] > 0, (framework, c, cats)
    assert sample["categories"]["conv_fwd"] > 0
    assert sample["categories"]["optimizer"] == 0 and sample["categories"]["conv_bwd"] == 0
    for p in (train, sample):
        assert p["op_total_s"] == pytest.approx(sum(p["categories"].values()))
        assert 0 < p["coverage"] <= 1.05
        assert p["gflops"] > 0 and p["unprofiled_step_s"] > 0
        assert os.path.getsize(os.path.join(cdir, p["raw_profile"])) > 0
    assert train["steps"] == 3 and sample["steps"] == 3 and sample["sampler"] == "ddpm"
    if native_mod.problem() is None:  # perf works here: the overhead is split
        for p in (train, sample):
            nat = p["native"]
            assert nat["available"], nat
            assert nat["main_s"] == pytest.approx(sum(nat["classes"].values()))
            assert nat["main_s"] > 0, nat
            if framework != "jax":   # JAX's main thread dispatches: XLA's threads run ops,
                # and a 3-step chain leaves its Python thread too little time to be sure of
                # a sample in every class
                assert nat["classes"]["op_code"] > 0 and nat["classes"]["python"] > 0, nat
            assert p["coverage_native"] == pytest.approx(
                (p["op_total_s"] + nat["outside_s"]) / p["step_s"])
            assert os.path.getsize(os.path.join(cdir, nat["raw"])) > 0
        if framework in ("jittor", "jax"):
            assert train["native"]["classes"]["executor"] > 0, train["native"]
    else:
        assert train["native"] == {"available": False, "reason": native_mod.problem()}


def test_timed_cells_carry_no_region_marks(profiled_run):
    """Regions are entered only inside the profiled phase: the backend leaves profiling off."""
    from models.pt.backend import TorchBackend
    from models.common.specs import DiffusionSpec
    b = TorchBackend(UNetSpec(**TINY_MODEL), DiffusionSpec(timesteps=10), device="cpu")
    assert b.profiling is False
    assert type(b.region("optimizer")).__name__ == "nullcontext"


def test_report_section_with_and_without_profiles(profiled_run, tmp_path):
    run = load_run(profiled_run)
    s = report_profile.section(run, tmp_path, "torch")
    tables = [b for b in s.blocks if b.kind == "table"]
    assert "jittor's training step" in s.intro and "jax's training step" in s.intro
    assert "× torch's" in s.intro
    assert (tmp_path / "where_time_goes.png").stat().st_size > 0
    if native_mod.problem() is None:
        # two category tables (train, sample), coverage, the perf table, then per framework
        # (3) and phase the top ops and the top functions outside ops
        assert len(tables) == 2 + 1 + 1 + 6 + 6
        labels = [r[0] for r in tables[0].rows]
        assert "overhead: executor & graph (native)" in labels
        assert labels[-2].startswith("overhead: left") and "%" in tables[2].rows[0][8]
    # without a native sample (perf missing, or profile.native off) the overhead is one row
    # and a note says why
    prof = run.records["type"] == "profile"
    run.records.loc[prof, "native"] = pd.Series(
        [{"available": False, "reason": "profile.native is off"}] * int(prof.sum()),
        index=run.records.index[prof])
    s = report_profile.section(run, tmp_path, "torch")
    tables = [b for b in s.blocks if b.kind == "table"]
    assert len(tables) == 2 + 1 + 6   # the top ops of 3 frameworks x 2 phases
    assert [r[0] for r in tables[0].rows][-2:] == ["framework overhead (unattributed)",
                                                   "synced step time (profiled)"]
    assert any(b.kind == "note" and "profile.native is off" in b.text for b in s.blocks)
    run.records = run.records[run.records["type"] != "profile"]
    empty = report_profile.section(run, tmp_path, "torch")
    assert [b.kind for b in empty.blocks] == ["note"] and "profile" in empty.blocks[0].text
    proc = harness("report", profiled_run, "--out", tmp_path / "report")
    assert proc.returncode == 0, proc.stderr
    assert "## Where the time goes" in (tmp_path / "report" / "report.md").read_text()


def test_train_and_sample_cells_report_gflops(both_frameworks_run):
    from bench.report import tables
    run = load_run(both_frameworks_run["run_dir"])
    m = tables.training_metrics(run)
    assert (m["gflops"] > 0).all() and (m["peak_fraction"] > 0).all()
    s = tables.sampling_metrics(run)
    assert (s["gflops"] > 0).all() and (s["peak_fraction"] > 0).all()
    labels = [r[0] for r in tables.training_table(run, "torch").rows]
    assert "achieved GFLOP/s (conv, matmul)" in labels
