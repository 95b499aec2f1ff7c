"""Jittor backend: the only module that runs the Jittor model for the harness.

Jittor executes lazily: nothing below computes until `sync()` (or `.item()`/`.numpy()`).
"""
import math
import os
from collections import OrderedDict

import numpy as np

from models.common.backend_base import BackendBase
from models.jt.runtime import import_jittor, math_settings, onednn_enabled, pin_math_mode


def _jittor(threads, device):
    if threads:
        # oneDNN ops use OpenMP and read this at start-up; set it before the import.
        os.environ.setdefault("OMP_NUM_THREADS", str(int(threads)))
    return import_jittor(use_cuda=None if device == "auto" else device == "cuda")


class JittorBackend(BackendBase):
    name = "jittor"

    def __init__(self, unet, diffusion, optim=None, *, device="auto", threads=None, seed=0,
                 math_mode="fp32", variant=None):
        super().__init__(unet, diffusion, optim, device=device, threads=threads, seed=seed,
                         variant=variant)
        jt = self.jt = _jittor(threads, device)
        pin_math_mode(jt, math_mode)
        for flag, value in self.variant.jittor_flags.items():  # process-global, as documented
            setattr(jt.flags, flag, int(value))
        # Jittor's mixed precision: the model's parameters in the low dtype and AMP level 4
        # ("prefer 16-bit, but sum/exp and friends in float32"); no float32 master weights,
        # no loss scaling: that is what Jittor offers (docs/VARIANTS.md)
        self.low_dtype = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}[
            self.variant.precision]
        if self.low_dtype:
            jt.flags.auto_mixed_precision_level = 4
        if device == "cuda" and not jt.has_cuda:
            raise RuntimeError("device=cuda requested but jittor has no CUDA")
        jt.flags.use_cuda = 1 if device in ("auto", "cuda") and jt.has_cuda else 0
        self.device = "cuda" if jt.flags.use_cuda else "cpu"
        # Peak-memory accounting (jt.get_max_memory_info) only works with this flag on. It
        # stays on in timed cells: on vs off cost nothing measurable (docs/REPORT.md).
        jt.flags.profile_memory_enable = 1
        # under mpirun (docs/DISTRIBUTED.md) Jittor's optimizer all-reduces the gradients
        self.rank, self.world_size = int(jt.rank), int(jt.world_size)
        if self.world_size > 1:
            self.dist_engine = "jittor mpi"
        jt.set_seed(seed + self.rank)  # dropout and noise differ per rank, reproducibly
        from models.common.dit_spec import DiTSpec

        if isinstance(unet, DiTSpec):
            from models.jt.dit import DiT as net
        else:
            from models.jt.unet import UNet as net
        self.model = net(unet)
        # Jittor lists every Var attribute as a parameter: those made with stop_grad (a
        # DiT's fixed pos_embed) are canonical weights, loaded and exported, never trained.
        # Read before any eval(), which marks every parameter stop_grad until train().
        named = self.model.named_parameters()
        self.fixed = {n for n, p in named if p.is_stop_grad()}
        self.ema_model = None
        if self.ema_enabled():
            self.ema_model = net(unet)
            self.ema_model.eval()
            for p in self.ema_model.parameters():
                p.stop_grad()
        self._copy_to_ema()
        self.names = [n for n, _ in named if n not in self.fixed]
        self.params = [p for n, p in named if n not in self.fixed]
        self.ema_params = [] if self.ema_model is None else [
            p for n, p in self.ema_model.named_parameters() if n not in self.fixed]
        self.reset_optimizer()

    def reset_optimizer(self):
        """A fresh Adam at step 0 (the variant quality guard)."""
        o = self.optim_spec
        self.opt = _torch_adam_class(self.jt)(self.params, lr=o.lr, betas=o.betas, eps=o.eps)
        self.step = 0

    @staticmethod
    def versions():
        jt = import_jittor()
        return {"framework": "jittor", "version": jt.__version__,
                "has_cuda": bool(jt.has_cuda), "use_cuda": bool(jt.flags.use_cuda),
                "onednn": onednn_enabled(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                **math_settings(jt)}

    # -- weights ---------------------------------------------------------------------------
    def _copy_to_ema(self, ema_weights=None):
        if self.ema_model is None:
            return
        source = ({n: self.jt.array(np.asarray(w, dtype=np.float32)) for n, w in ema_weights.items()}
                  if ema_weights is not None else dict(self.model.named_parameters()))
        for n, e in self.ema_model.named_parameters():
            e.assign(source[n].detach().clone())

    def _load_weights(self, weights, ema=None):
        jt = self.jt
        for name, p in self.model.named_parameters():
            p.assign(jt.array(np.asarray(weights[name], dtype=np.float32)))
            if name in self.fixed:
                p.stop_grad()
        self._copy_to_ema(ema)
        if self.low_dtype:
            for m in (self.model, self.ema_model):
                if m is not None:
                    getattr(m, self.low_dtype)()  # Module.float16() / .bfloat16(), in place
        jt.sync_all(True)

    def reseed(self, seed):
        """Reset the RNG this backend draws from (noise and dropout)."""
        self.jt.set_seed(seed)

    def export_weights(self, ema=False):
        model = self.ema_model if (ema and self.ema_model is not None) else self.model
        return OrderedDict((n, (p.float32() if self.low_dtype else p).numpy().copy())
                           for n, p in model.named_parameters())

    def optimizer_state(self):
        state = {"step": np.array(self.step, dtype=np.int64)}
        if self.opt.n_step:
            pg = self.opt.param_groups[0]
            for name, m, v in zip(self.names, pg["m"], pg["values"]):
                state[f"m.{name}"] = m.numpy()
                state[f"v.{name}"] = v.numpy()
        return state

    def load_optimizer_state(self, state):
        jt = self.jt
        self.step = self.saved_step(state)
        self.opt.n_step = self.step
        pg = self.opt.param_groups[0]
        for name, m, v in zip(self.names, pg["m"], pg["values"]):
            if f"m.{name}" in state:
                m.assign(jt.array(np.array(state[f"m.{name}"])))
                v.assign(jt.array(np.array(state[f"v.{name}"])))

    # -- tensors -----------------------------------------------------------------------------
    def to_device(self, array):
        return self.jt.array(np.ascontiguousarray(array, dtype=np.float32))

    def to_numpy(self, tensor):
        return tensor.numpy()

    def randn(self, shape):
        return self.jt.randn(*shape)

    def sync(self):
        self.jt.sync_all(True)

    def _no_grad(self):
        return self.jt.no_grad()

    def _clamp(self, x):
        return x.clamp(-1.0, 1.0)

    def _net(self, model, x, t, **cond):
        v = self.variant
        if not (self.low_dtype or v.debug_output_scale != 1.0):
            return model(x, t, **cond)  # the matched comparison: the model, called as is
        out = model(x.cast(self.low_dtype) if self.low_dtype else x, t, **cond).float32()
        return out * v.debug_output_scale if v.debug_output_scale != 1.0 else out

    def _allreduce_op(self, numel):
        buf = self.jt.zeros((numel,))
        buf.sync()
        return lambda: buf.mpi_all_reduce("mean").sync()

    def _region(self, name):
        return self.jt.profile_mark(name)

    def op_profiler(self):
        from models.jt.profiler import JittorOpProfiler

        return JittorOpProfiler(self.jt)

    def matmul(self, a, b):
        return self.jt.matmul(a, b)

    def _t(self, t):
        return self.jt.array(np.asarray(t, dtype=np.int64))

    def _labels(self, y):
        return self.jt.array(np.asarray(y, dtype=np.int32))

    def _mask(self, drop):
        return self.jt.array(np.asarray(drop, dtype=bool))

    def _loss(self, pred, target):
        kind = self.diffusion_spec.loss
        if kind == "l2":
            return ((pred - target) ** 2).mean()
        if kind == "l1":
            return (pred - target).abs().mean()
        return self.jt.nn.smooth_l1_loss(target, pred)  # huber with delta 1

    def _vec(self, a):
        return self.to_device(a).reshape(-1, 1, 1, 1)

    # -- training ----------------------------------------------------------------------------
    def _train_step(self, x0, t, noise, lr, **cond):
        self.model.train()
        loss = self._training_loss(x0, t, noise, **cond)
        self.opt.lr = lr
        with self.region("backward"):
            self.opt.backward(loss)
        with self.region("optimizer"):
            if self.optim_spec.grad_clip > 0:
                self._clip_grad_norm(self.optim_spec.grad_clip)
            self.opt.step()
            if self.ema_model is not None:
                d = self.optim_spec.ema_decay
                for e, p in zip(self.ema_params, self.params):
                    e.update(e * d + p.detach() * (1.0 - d))
        return loss

    def _clip_grad_norm(self, max_norm):
        """Scale every gradient by min(1, max_norm / (||all gradients||_2 + 1e-6)), as
        jt.optim.Optimizer.clip_grad_norm and torch.nn.utils.clip_grad_norm_ do. Jittor's
        concatenates every gradient into one array (a copy of the whole model: a setitem per
        parameter) and reduces it in one op; the sweep's profile of the paper UNet (35.7M
        parameters) put that at 105 ms of a 730 ms step on 2 cores, 0.2 of torch's whole
        step (reports/reference/sweep-cpu). The same norm from per-parameter sums of
        squares, as torch computes it, copies nothing."""
        jt = self.jt
        grads = [g for pg in self.opt.param_groups
                 for p, g in zip(pg["params"], pg["grads"]) if not p.is_stop_grad()]
        if not grads:
            return
        total = jt.sqrt(sum((g * g).sum() for g in grads))
        coef = jt.minimum(max_norm / (total + 1e-6), 1.0)
        for g in grads:
            g.update(g * coef)

    def loss_and_grads(self, x0, t, noise, y=None, drop=None):
        """Training loss and every parameter's gradient, without stepping (parity checks)."""
        self.model.train()
        loss = self._training_loss(x0, t, noise, **self._cond(y, drop))
        grads = self.jt.grad(loss, self.params)
        self.jt.sync_all(True)
        return float(loss.item()), OrderedDict((n, g.numpy().copy()) for n, g in zip(self.names, grads))

    # -- memory ------------------------------------------------------------------------------
    def reset_peak_memory(self):
        # Jittor has no reset for its peak counter; peaks are since process start.
        pass

    def stop_memory_accounting(self):
        # Process-wide. Jittor's memory profiler runs inside the executor after every op and,
        # at each new peak, walks the whole live graph (MemoryProfiler::check); with two
        # models alive in one process it segfaulted there in 1 of 3 processes on this CPU.
        self.jt.flags.profile_memory_enable = 0

    def memory_stats(self):
        self.jt.sync_all(True)
        info = self.jt.get_max_memory_info()  # "<peak bytes>[!@#div1!@#]<allocation dump>"
        try:
            peak = int(str(info).split("[!@#div1!@#]", 1)[0])
        except ValueError:
            peak = None
        current = None
        try:
            current = int(self.jt.flags.stat_allocator_total_alloc_byte
                          - self.jt.flags.stat_allocator_total_free_byte)
        except AttributeError:
            pass
        return {"allocator_peak_bytes": peak, "allocator_current_bytes": current}

    # -- data ----------------------------------------------------------------------------------
    def native_loader(self, images, batch_size, *, shuffle=True, drop_last=True, num_workers=0,
                      pin_memory=False, persistent_workers=False, seed=0):
        # Jittor's Dataset has no pin_memory/persistent_workers: they are accepted and ignored
        # (recorded as such in the cell's start record by the harness).
        ds = _image_dataset_class(self.jt)(images)
        ds.set_attrs(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                     num_workers=num_workers)
        return ds


def _image_dataset_class(jt):
    class ImageDataset(jt.dataset.Dataset):
        """uint8 HWC images -> float32 CHW in [-1, 1], per sample (as the torch loader)."""

        def __init__(self, images):
            super().__init__()
            self.images = images
            self.set_attrs(total_len=len(images))

        def __getitem__(self, i):
            return self.images[i].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0

    return ImageDataset


def _torch_adam_class(jt):
    class TorchAdam(jt.nn.Adam):
        """Adam with PyTorch's update rule, built from the same lazy Jittor ops as jt.nn.Adam.

        jt.nn.Adam computes p -= lr*sqrt(1-b2^n)/(1-b1^n) * m / (sqrt(v) + eps), which puts eps
        inside the bias correction: early steps use an effective eps ~30x larger than torch's
        and the two frameworks would train different models. This is torch.optim.Adam's rule:
        p -= lr/(1-b1^n) * m / (sqrt(v)/sqrt(1-b2^n) + eps).
        """

        def step(self, loss=None, retain_graph=False):
            self.pre_step(loss, retain_graph)
            n = float(self.n_step)
            jt.flags.node_order = 1
            for pg in self.param_groups:
                lr = pg.get("lr", self.lr)
                eps = pg.get("eps", self.eps)
                b0, b1 = pg.get("betas", self.betas)
                step_size = lr / (1 - b0 ** n)
                bc2_sqrt = math.sqrt(1 - b1 ** n)
                for p, g, v, m in zip(pg["params"], pg["grads"], pg["values"], pg["m"]):
                    if p.is_stop_grad():
                        continue
                    m.update(b0 * m + (1 - b0) * g)
                    v.update(b1 * v + (1 - b1) * g * g)
                    p.update(p - step_size * m / (jt.sqrt(v) / bc2_sqrt + eps))
            self.post_step()

    return TorchAdam


Backend = JittorBackend
