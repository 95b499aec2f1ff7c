"""The workloads a cell runs, framework-free: everything goes through the backend interface.

train   epochs x steps. Iteration 0 is recorded as phase "compile" (first call: graph
        building, kernel compilation, allocator warm-up), the next train.warmup_steps as
        "warmup", the rest as "measure"; only "measure" steps enter the statistics.
sample  for each sampler setting x step count x batch size: sample.warmup unmeasured chains,
        then sample.repeats measured chains.
profile profile.train_steps training steps and one profile.sample_steps sampling chain
        under the framework's own op profiler (its own cells: profilers perturb timing), each
        also timed unprofiled for the overhead figure; one `profile` record per phase with
        the op table reduced to the shared categories of models/common/opcats.py, and the
        raw profile kept in the cell folder.
guard   (configs with variants; after the workload and its memory record) the variant
        quality guard's raw material: from seeded random weights (no near-zero layer that
        would hide a difference) and a fresh optimizer, variant_guard.train_steps steps on
        the shared batches, then one deterministic DDIM chain from a seeded x_T; one `guard`
        record {losses, sample_mean, sample_std}. The report compares each variant's with
        its framework's matched cell (bench/report/variants.py).
quality for each step count: quality.num_images samples, saved, scored (FID/KID, IS where
        possible) by bench.quality.fid in a child process (torch-fidelity imports torch, which
        must never share a process with Jittor); one `fid` record each:
        {framework, sampler, steps, eta, num_images, sample_time_s, images_per_s, fid,
         kid_mean, kid_std, is_mean, is_std, extractor, num_reference, reference, notes}

Each function streams records through `out.write(type, **fields)` and returns the metrics
for the cell's summary.
"""
import contextlib
import os
import time

import numpy as np

from bench.data import loaders as datamod
from bench.measure.native import NativeSampler
from bench.measure.timer import timed_chain, timed_train_step
from bench.quality.fid import fid_in_child
from bench.quality.generate import generate
from bench.quality.images import save_grid
from models.common.diffusion import sampler_plan
from models.common.flops import sample_step_flops, train_step_flops
from models.common.opcats import CATEGORIES
from models.common.weights import count_params, init_weights


def _stats(values, prefix):
    """median / IQR / p95 / mean of a list of seconds, keyed with a prefix."""
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    q25, q50, q75, q95 = np.percentile(a, [25, 50, 75, 95])
    return {f"{prefix}_median_s": float(q50), f"{prefix}_iqr_s": float(q75 - q25),
            f"{prefix}_p95_s": float(q95), f"{prefix}_mean_s": float(a.mean())}


def phase_of(global_step, warmup_steps):
    if global_step == 0:
        return "compile"
    return "warmup" if global_step <= warmup_steps else "measure"


def train_batches(backend, cfg, loader):
    """(batch stream, training images, validation images) of the configured data."""
    unet, T, seed = backend.unet_spec, backend.diffusion_spec.timesteps, cfg["seed"]
    dcfg, bs = cfg["data"], cfg["train"]["batch_size"]
    images = datamod.load_images(dcfg, unet.image_size, unet.in_channels, seed)
    train_images, val_images = datamod.split(images, dcfg["val_fraction"], seed)
    if loader == "shared":
        batches = datamod.SharedBatches(train_images, bs, T, seed, hflip=dcfg["hflip"])
    else:
        batches = datamod.NativeBatches(
            backend, train_images, bs, T, seed, num_workers=dcfg["num_workers"],
            pin_memory=dcfg["pin_memory"], persistent_workers=dcfg["persistent_workers"])
    return batches, train_images, val_images


def run_train(backend, cfg, loader, out):
    """Benchmark training. Returns summary metrics."""
    unet, T, seed = backend.unet_spec, backend.diffusion_spec.timesteps, cfg["seed"]
    tcfg = cfg["train"]
    bs = tcfg["batch_size"]
    delay_s = cfg["debug"]["inject_delay_s"]

    batches, train_images, val_images = train_batches(backend, cfg, loader)
    rank, world = backend.rank, backend.world_size
    if world > 1:  # every rank draws the same global batch and trains on its slice
        batches = datamod.RankSlice(batches, rank, world)
    val = datamod.validation_batches(val_images, bs, tcfg["val_batches"], T, seed)
    # a class-conditional DiT's labels (seeded, the same in every framework); None otherwise
    labels = datamod.benchmark_labels(unet, seed, rank, world)
    val_labels = [labels.sample(len(t)) if labels else {} for _, t, _ in val]
    steps_per_epoch = tcfg["steps_per_epoch"] or len(train_images) // bs
    flops = train_step_flops(unet, bs)  # the global batch: what the N ranks compute together
    out.write("train_info", loader=loader, train_images=len(train_images),
              val_images=len(val_images), steps_per_epoch=steps_per_epoch,
              epochs=tcfg["epochs"], batch_size=bs, flops_per_step=flops, world_size=world,
              rank=rank)
    fail = cfg["debug"]["fail_rank"]

    measured = {"wall": [], "data_wait": [], "compute": [], "dispatch": []}
    compile_s, warmup_wall, epoch_rows = None, [], []
    global_step = 0
    for epoch in range(1, tcfg["epochs"] + 1):
        t_start = time.time()
        t0 = time.perf_counter()
        losses, n_measured = [], 0
        for _ in range(steps_per_epoch):
            if fail == rank and global_step == cfg["debug"]["fail_at_step"]:
                _fail_here(cfg["debug"]["fail_mode"], rank)
            phase = phase_of(global_step, tcfg["warmup_steps"])
            compiles = len(backend.compile_events())
            loss_t, _, tm = timed_train_step(backend, batches, inject_delay_s=delay_s,
                                             labels=labels)
            if phase == "measure":
                no_compile_in(backend, compiles, f"measured training step {global_step}")
            loss = backend.loss_value(loss_t)  # after the clock stopped (it syncs)
            losses.append(loss)
            out.write("step", phase=phase, epoch=epoch, step=global_step, wall_s=tm.wall_s,
                      data_wait_s=tm.data_wait_s, compute_s=tm.compute_s,
                      dispatch_s=tm.dispatch_s, loss=loss, images=bs)
            if phase == "compile":
                compile_s = tm.wall_s
            elif phase == "warmup":
                warmup_wall.append(tm.wall_s)
            else:
                n_measured += 1
                for k in measured:
                    measured[k].append(getattr(tm, f"{k}_s"))
            if not np.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss} at step {global_step}")
            global_step += 1
        epoch_s = time.perf_counter() - t0
        tv = time.perf_counter()
        val_loss = None
        if val:
            val_loss = float(np.mean([
                backend.eval_loss(backend.to_device(x0), t, backend.to_device(noise),
                                  **vl) for (x0, t, noise), vl in zip(val, val_labels)]))
        val_s = time.perf_counter() - tv
        images_done = steps_per_epoch * bs
        row = out.write("epoch", epoch=epoch, t_start=t_start, time_s=epoch_s,
                        steps=steps_per_epoch, measured_steps=n_measured,
                        mean_loss=float(np.mean(losses)), val_loss=val_loss, val_time_s=val_s,
                        images=images_done, images_per_s=images_done / epoch_s)
        epoch_rows.append(row)

    metrics = {"loader": loader, "batch_size": bs, "steps_total": global_step,
               "steps_measured": len(measured["wall"]), "compile_s": compile_s,
               "aot_compile_s": backend.compile_seconds() or None,
               "warmup_step_median_s": float(np.median(warmup_wall)) if warmup_wall else None}
    for k, vals in measured.items():
        metrics.update(_stats(vals, f"{k}_step" if k == "wall" else k))
    if measured["wall"]:
        metrics["images_per_s"] = bs / metrics["wall_step_median_s"]
        metrics["flops_per_step"] = flops
        metrics["gflops"] = flops / metrics["wall_step_median_s"] / 1e9
    # Epoch 1 carries compile + warm-up; with more epochs, quote the steady ones.
    steady = epoch_rows[1:] or epoch_rows
    metrics["epoch_time_median_s"] = float(np.median([e["time_s"] for e in steady]))
    metrics["epoch_images_per_s_median"] = float(np.median([e["images_per_s"] for e in steady]))
    metrics["first_epoch_time_s"] = epoch_rows[0]["time_s"]
    metrics["final_train_loss"] = epoch_rows[-1]["mean_loss"]
    metrics["final_val_loss"] = epoch_rows[-1]["val_loss"]
    return metrics


def no_compile_in(backend, before, what):
    """Fail the cell if the framework compiled since `before` compile events: a compile
    inside measured work would be timed as if it were the step (a JAX recompile on a new
    shape or dtype; docs/JAX.md)."""
    new = backend.compile_events()[before:]
    if new:
        names = sorted({e["function"] for e in new})
        raise RuntimeError(f"{backend.name} compiled during the {what} "
                           f"({len(new)} compile(s) of {names}, "
                           f"{sum(e['seconds'] for e in new):.2f} s): a compile is never "
                           "timed as a step, so the cell fails")


def _fail_here(mode, rank):
    """debug.fail_rank: the deliberate fault of the data-parallel tests."""
    if mode == "hang":
        while True:  # the other ranks block in their next all-reduce; the runner's timeout
            time.sleep(60)
    raise RuntimeError(f"debug.fail_rank: rank {rank} fails here (deliberate failure)")


def time_allreduce(backend, out, threads=None, repeats=10):
    """One all-reduce of a buffer the size of the whole gradient, timed (median of
    `repeats`, after one untimed) with the framework's own collective: record
    `distributed`."""
    numel = count_params(backend.unet_spec)
    secs = backend.allreduce_seconds(numel, repeats)
    return out.write("distributed", world_size=backend.world_size, rank=backend.rank,
                     threads_per_rank=threads, engine=backend.dist_engine,
                     grad_bytes=4 * numel, allreduce_s=secs, repeats=repeats)


def run_sample(backend, cfg, out):
    """Benchmark sampling chains. Returns summary metrics (one entry per setting and batch)."""
    spec, unet = backend.diffusion_spec, backend.unet_spec
    scfg = cfg["sample"]
    delay_s = cfg["debug"]["inject_delay_s"]
    shape = (unet.in_channels, unet.image_size, unet.image_size)
    labels = datamod.benchmark_labels(unet, cfg["seed"])
    results = []
    for run in scfg["runs"]:
        for steps in run["steps"] or [spec.timesteps]:
            plan = sampler_plan(spec, run["sampler"], steps, run["eta"], run["skip"],
                                run["variance"])
            eta = run["eta"] if run["sampler"] == "ddim" else None
            variance = (run["variance"] or spec.variance) if run["sampler"] == "ddpm" else None
            for bs in scfg["batch_sizes"]:
                flops = sample_step_flops(unet, bs)
                times = []
                for i in range(scfg["warmup"] + scfg["repeats"]):
                    phase = "warmup" if i < scfg["warmup"] else "measure"
                    cond = labels.sample(bs, scfg["cfg_scale"]) if labels else None
                    compiles = len(backend.compile_events())
                    secs, x = timed_chain(backend, plan, bs, shape, ema=scfg["ema"],
                                          inject_delay_s=delay_s, cond=cond)
                    if phase == "measure":
                        no_compile_in(backend, compiles, f"measured {run['sampler']} chain "
                                      f"{i} ({len(plan)} steps, batch {bs})")
                    finite = bool(np.isfinite(backend.to_numpy(x)).all())
                    out.write("sample", sampler=run["sampler"], steps=len(plan), eta=eta,
                              skip=run["skip"], variance=variance, batch_size=bs, repeat=i,
                              phase=phase, time_s=secs, per_step_s=secs / len(plan),
                              images_per_s=bs / secs, finite=finite, flops_per_step=flops)
                    if not finite:
                        raise FloatingPointError(f"{run['sampler']} {steps} steps produced "
                                                 "non-finite samples")
                    if phase == "measure":
                        times.append(secs)
                t = np.asarray(times)
                q25, q50, q75 = np.percentile(t, [25, 50, 75])
                results.append({"sampler": run["sampler"], "steps": len(plan), "eta": eta,
                                "skip": run["skip"], "variance": variance, "batch_size": bs,
                                "time_median_s": float(q50), "time_iqr_s": float(q75 - q25),
                                "per_step_median_s": float(q50 / len(plan)),
                                "images_per_s": float(bs / q50), "flops_per_step": flops,
                                "gflops": flops * len(plan) / float(q50) / 1e9})
    return {"runs": results, "chains_measured": sum(1 for _ in results) * scfg["repeats"]}


def _profiled(backend, run_once, n, warmup, cell_dir, phase, pc, units):
    """Time `run_once` (-> seconds it took, synced) n times unprofiled, then n times under
    the op profiler with the backend's region marks on (after `warmup` marked runs: Jittor
    compiles marked kernels anew) and, with profile.native, under perf too (the same steps:
    bench/measure/native.py). Returns (unprofiled seconds, profiled seconds, op rows, raw
    profile file name, the native summary per unit)."""
    backend.profiling = False
    plain = [run_once() for _ in range(n)]
    backend.profiling = True
    native = (NativeSampler(os.path.join(cell_dir, f"{phase}-perf.data"), pc["native_hz"])
              if pc["native"] != "off" else None)
    try:
        for _ in range(warmup):
            run_once()
        with backend.op_profiler() as prof:
            with native or contextlib.nullcontext():
                profiled = [run_once() for _ in range(n)]
        raw = f"{phase}-{prof.raw_name}"
        prof.save(os.path.join(cell_dir, raw))
        nat = native.summary(backend.name, units) if native is not None else \
            {"available": False, "reason": "profile.native is off"}
        return plain, profiled, prof.ops(), raw, nat
    finally:
        backend.profiling = False


def _profile_record(out, phase, units, plain, profiled, ops, raw, native, flops, **extra):
    """One `profile` record: per unit (a training step, a sampling step) the synced time
    profiled and not, each category's op time, every op (largest first), coverage; with a
    native sample, the main thread's time by class of code and the coverage counting the
    measured code outside ops too (models/common/nativecats.py)."""
    step_s, plain_s = float(np.sum(profiled)) / units, float(np.sum(plain)) / units
    ops = sorted(({**o, "seconds": o["seconds"] / units, "count": o["count"] / units}
                  for o in ops), key=lambda o: -o["seconds"])
    categories = {c: 0.0 for c in CATEGORIES}
    for o in ops:
        categories[o["category"]] += o["seconds"]
    op_total = float(sum(categories.values()))
    if native["available"]:
        extra["coverage_native"] = (op_total + native["outside_s"]) / step_s
    return out.write("profile", phase=phase, units=units, step_s=step_s, native=native,
                     unprofiled_step_s=plain_s, overhead=step_s / plain_s - 1.0,
                     op_total_s=op_total, coverage=op_total / step_s,
                     unattributed_s=step_s - op_total, categories=categories, ops=ops,
                     raw_profile=raw, flops_per_step=flops,
                     gflops=flops / plain_s / 1e9, **extra)


def run_profile(backend, cfg, out, cell_dir):
    """Profile training steps and one sampling chain (docs/REPORT.md "Where the time goes").
    Returns summary metrics: per phase the synced step time, coverage and overhead."""
    pc, unet = cfg["profile"], backend.unet_spec
    bs, n = cfg["train"]["batch_size"], pc["train_steps"]
    batches, _, _ = train_batches(backend, cfg, "shared")
    labels = datamod.benchmark_labels(unet, cfg["seed"])

    dispatch = []

    def train_once():
        tm = timed_train_step(backend, batches, labels=labels)[2]
        dispatch.append(tm.dispatch_s)
        return tm.wall_s

    for _ in range(1 + pc["warmup"]):  # iteration 0 (compile) and warm-up, unprofiled
        train_once()
    plain, prof, ops, raw, native = _profiled(backend, train_once, n, pc["warmup"], cell_dir,
                                              "train", pc, n)
    # dispatch: until train_step returned, before the sync. Lazy Jittor only builds its graph
    # then (Python time no op row holds); eager CPU torch has run its ops by then.
    train = _profile_record(out, "train", n, plain, prof, ops, raw, native,
                            train_step_flops(unet, bs),
                            batch_size=bs, steps=n,
                            dispatch_s=float(np.median(dispatch[-n:])))

    plan = sampler_plan(backend.diffusion_spec, pc["sampler"], steps=pc["sample_steps"],
                        eta=pc["eta"])
    sbs = pc["sample_batch_size"]
    shape = (sbs, unet.in_channels, unet.image_size, unet.image_size)

    def chain_once():
        cond = labels.sample(sbs, cfg["sample"]["cfg_scale"]) if labels else None
        return timed_chain(backend, plan, sbs, shape[1:], ema=cfg["sample"]["ema"],
                           cond=cond)[0]

    chain_once()  # warm-up chain (compile), unprofiled
    # no marked warm-up chain: sampling enters no region, so nothing new to compile
    plain, prof, ops, raw, native = _profiled(backend, chain_once, 1, 0, cell_dir, "sample", pc,
                                              len(plan))
    sample = _profile_record(out, "sample", len(plan), plain, prof, ops, raw, native,
                             sample_step_flops(unet, sbs), batch_size=sbs,
                             sampler=pc["sampler"], steps=len(plan),
                             eta=pc["eta"] if pc["sampler"] == "ddim" else None)
    return {p["phase"]: {k: p[k] for k in ("step_s", "unprofiled_step_s", "overhead",
                                           "coverage", "coverage_native", "op_total_s")
                         if k in p}
            for p in (train, sample)}


def run_guard(backend, cfg, out):
    """The variant quality guard's measurements (see the module docstring)."""
    g, unet, seed = cfg["variant_guard"], backend.unet_spec, cfg["seed"]
    backend.load_weights(init_weights(unet, seed=seed, scheme="random"))
    backend.reset_optimizer()
    batches, _, _ = train_batches(backend, cfg, "shared")
    labels = datamod.benchmark_labels(unet, seed)
    losses = []
    for _ in range(g["train_steps"]):
        x0, t, noise = next(batches)
        cond = labels.train(len(t)) if labels else {}
        losses.append(backend.loss_value(backend.train_step(
            backend.to_device(x0), t, backend.to_device(noise), **cond)))
    plan = sampler_plan(backend.diffusion_spec, "ddim", steps=g["sample_steps"], eta=0.0)
    shape = (g["sample_batch_size"], unet.in_channels, unet.image_size, unet.image_size)
    x_t = np.random.default_rng(seed + GUARD_SEED_OFFSET).standard_normal(shape)
    cond = labels.sample(shape[0]) if labels else {}
    x = backend.to_numpy(backend.sample(backend.to_device(x_t.astype(np.float32)), plan,
                                        ema=False, **cond)).astype(np.float64)
    return out.write("guard", variant=backend.variant.name, losses=losses,
                     train_steps=len(losses), sample_steps=len(plan),
                     sample_mean=float(x.mean()), sample_std=float(x.std()),
                     finite=bool(np.isfinite(x).all() and np.isfinite(losses).all()))


GUARD_SEED_OFFSET = 7919  # the guard's x_T: its own stream, never the timed chains'


def default_reference(data_cfg):
    """The held-out split of the training dataset (synthetic data has its own test split)."""
    return f"{data_cfg['source']}:test"


def run_quality(backend, qcfg, data_cfg, out, cell_dir, seed=0):
    """Generate and score samples for each configured step count. Returns summary metrics."""
    reference = qcfg["reference"] or default_reference(data_cfg)
    samples_dir = os.path.join(cell_dir, "samples")
    os.makedirs(samples_dir, exist_ok=True)
    rows = []
    for steps in qcfg["steps"]:
        plan = sampler_plan(backend.diffusion_spec, qcfg["sampler"], steps=steps,
                            eta=qcfg["eta"], skip=qcfg["skip"])
        images, secs = generate(backend, plan, qcfg["num_images"], qcfg["batch_size"], seed,
                                ema=qcfg["ema"])
        tag = f"{qcfg['sampler']}-{len(plan):04d}"
        npz = os.path.join(samples_dir, f"{tag}.npz")
        np.savez(npz, images=images)
        save_grid(images[:64], os.path.join(samples_dir, f"{tag}.png"), scale=2)
        m = fid_in_child(npz, reference, qcfg["num_reference"], data_cfg.get("path"))
        rec = out.write("fid", framework=backend.name, sampler=qcfg["sampler"], steps=len(plan),
                        eta=qcfg["eta"] if qcfg["sampler"] == "ddim" else None,
                        num_images=len(images), sample_time_s=secs,
                        images_per_s=len(images) / secs,
                        **{k: m.get(k) for k in ("fid", "kid_mean", "kid_std", "is_mean",
                                                 "is_std", "extractor", "num_reference",
                                                 "reference", "notes")})
        rows.append({k: rec[k] for k in ("steps", "fid", "kid_mean", "is_mean", "num_images")})
    return {"fid": rows, "reference": reference}
