"""PyTorch backend: the only module that runs the torch model for the harness."""
import contextlib
import copy
import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from models.common.backend_base import BackendBase
from models.common.distributed import rank_env
from models.common.dit_spec import DiTSpec
from models.pt.dit import DiT
from models.pt.unet import UNet
from models.registry import MATH_MODES


def pin_math_mode(mode):
    """CUDA float32 math (docs/GPU.md): fp32 = no TF32 in matmuls or cuDNN convolutions
    (torch's default lets cuDNN use TF32 on Ampere and later), tf32 = TF32 in both.
    cudnn.benchmark on: Jittor always times its cuDNN algorithms (cudnnFind*), so both pick
    the fastest algorithm per shape. Process-global settings; readable on CPU builds too."""
    if mode not in MATH_MODES:
        raise ValueError(f"math_mode={mode!r} is invalid: one of {list(MATH_MODES)}")
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.benchmark = True


def math_settings():
    """What the math-mode flags are now, for versions() (the start record, the manifest)."""
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    return {"math_mode": "tf32" if matmul and conv else "mixed" if matmul or conv else "fp32",
            "allow_tf32_matmul": matmul, "allow_tf32_cudnn": conv,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "nvidia_tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE")}


class TorchBackend(BackendBase):
    name = "torch"

    def __init__(self, unet, diffusion, optim=None, *, device="auto", threads=None, seed=0,
                 math_mode="fp32", variant=None):
        super().__init__(unet, diffusion, optim, device=device, threads=threads, seed=seed,
                         variant=variant)
        pin_math_mode(math_mode)
        if threads:
            torch.set_num_threads(int(threads))
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device=cuda requested but torch sees no CUDA device")
        self.device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        self.rank, self.world_size, local_rank = rank_env()  # torchrun's env contract
        if self.world_size > 1:
            import torch.distributed as dist

            if self.device == "cuda":
                torch.cuda.set_device(local_rank)  # "cuda" = this rank's GPU from here on
            engine = "nccl" if self.device == "cuda" else "gloo"
            if not dist.is_initialized():
                dist.init_process_group(engine)  # MASTER_ADDR/PORT, RANK, WORLD_SIZE
            self.dist_engine = f"torch.distributed {engine}"
        seed = seed + self.rank  # dropout and framework noise differ per rank, reproducibly
        torch.manual_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        v = self.variant
        net = DiT if isinstance(unet, DiTSpec) else UNet
        self.model = net(unet, attention=v.attention).to(
            self.device, memory_format=torch.channels_last if v.channels_last
            else torch.contiguous_format)
        self.ema_model = None
        if self.ema_enabled():
            self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.params = list(self.model.parameters())
        # N ranks: DDP averages the gradients in buckets during backward; self.model stays
        # the plain UNet (weights, EMA, eval), training calls go through self.ddp
        self.ddp = None
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model)
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[v.precision]
        self.reset_optimizer()
        # the compiled module per model (the EMA copy samples): first calls compile, which
        # the workloads record as iteration 0 / the warm-up chain, never in the medians
        self.compiled = {}
        if v.compile:
            for m in (self.model, self.ema_model):
                if m is not None:
                    self.compiled[id(m)] = torch.compile(m, mode=v.compile)

    def reset_optimizer(self):
        """A fresh Adam (and loss scaler) at step 0 (the variant quality guard)."""
        o = self.optim_spec
        self.opt = torch.optim.Adam(self.params, lr=o.lr, betas=o.betas, eps=o.eps)
        # fp16 has too little range for small gradients: scale the loss (bf16 needs none)
        self.scaler = torch.amp.GradScaler(self.device) if self.amp_dtype == torch.float16 \
            else None
        self.step = 0

    @staticmethod
    def versions():
        return {"framework": "torch", "version": torch.__version__,
                "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
                "mkldnn": torch.backends.mkldnn.is_available(),
                "threads": torch.get_num_threads(), **math_settings()}

    # -- weights ---------------------------------------------------------------------------
    # The canonical weights are the state dict: the parameters and the persistent buffers (a
    # DiT's fixed pos_embed; the UNet has none), in state-dict order.
    def _load_weights(self, weights, ema=None):
        with torch.no_grad():
            for name, p in self.model.state_dict(keep_vars=True).items():
                p.copy_(torch.from_numpy(np.asarray(weights[name], dtype=np.float32)))
            if self.ema_model is not None:
                for name, p in self.ema_model.state_dict(keep_vars=True).items():
                    p.copy_(torch.from_numpy(np.asarray((ema or weights)[name], dtype=np.float32)))

    def reseed(self, seed):
        """Reset every RNG this backend draws from (noise and dropout)."""
        torch.manual_seed(seed)
        self.generator.manual_seed(seed)

    def export_weights(self, ema=False):
        model = self.ema_model if (ema and self.ema_model is not None) else self.model
        return OrderedDict((n, p.detach().cpu().numpy().copy())
                           for n, p in model.state_dict().items())

    def optimizer_state(self):
        state = {"step": np.array(self.step, dtype=np.int64)}
        for name, p in self.model.named_parameters():
            st = self.opt.state.get(p)
            if st:
                state[f"m.{name}"] = st["exp_avg"].cpu().numpy()
                state[f"v.{name}"] = st["exp_avg_sq"].cpu().numpy()
        return state

    def load_optimizer_state(self, state):
        self.step = self.saved_step(state)
        for name, p in self.model.named_parameters():
            if f"m.{name}" in state:
                self.opt.state[p] = {
                    "step": torch.tensor(float(self.step)),
                    "exp_avg": torch.from_numpy(np.array(state[f"m.{name}"])).to(self.device),
                    "exp_avg_sq": torch.from_numpy(np.array(state[f"v.{name}"])).to(self.device)}

    # -- tensors -----------------------------------------------------------------------------
    def to_device(self, array):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def to_numpy(self, tensor):
        return tensor.detach().cpu().numpy()

    def randn(self, shape):
        return torch.randn(tuple(shape), generator=self.generator, device=self.device)

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def _no_grad(self):
        return torch.no_grad()

    def _clamp(self, x):
        return x.clamp(-1.0, 1.0)

    def _net(self, model, x, t, **cond):
        v = self.variant
        if self.ddp is not None and model is self.model and model.training:
            return self.ddp(x, t, **cond)  # data-parallel: no variant (docs/DISTRIBUTED.md)
        if not (self.compiled or v.channels_last or self.amp_dtype or v.debug_output_scale != 1.0):
            return model(x, t, **cond)  # the matched comparison: the model, called as is
        fn = self.compiled.get(id(model), model)
        if v.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = (torch.autocast(self.device, dtype=self.amp_dtype) if self.amp_dtype
               else contextlib.nullcontext())
        with amp:
            out = fn(x, t, **cond)
        out = out.float().contiguous()
        return out * v.debug_output_scale if v.debug_output_scale != 1.0 else out

    def _allreduce_op(self, numel):
        import torch.distributed as dist

        buf = torch.zeros(numel, device=self.device)
        dist.barrier()
        return lambda: dist.all_reduce(buf)

    def close(self):
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _region(self, name):
        return torch.profiler.record_function(f"diffbench:{name}")

    def op_profiler(self):
        from models.pt.profiler import TorchOpProfiler

        return TorchOpProfiler(self.device)

    def matmul(self, a, b):
        return torch.mm(a, b)

    def _t(self, t):
        return torch.from_numpy(np.asarray(t, dtype=np.int64)).to(self.device)

    def _labels(self, y):
        return torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self.device)

    def _mask(self, drop):
        return torch.from_numpy(np.asarray(drop, dtype=bool)).to(self.device)

    def _vec(self, a):
        return self.to_device(a).view(-1, 1, 1, 1)

    def _loss(self, pred, target):
        kind = self.diffusion_spec.loss
        if kind == "l2":
            return F.mse_loss(pred, target)
        if kind == "l1":
            return F.l1_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=1.0)  # huber with delta 1

    # -- training ----------------------------------------------------------------------------
    def _train_step(self, x0, t, noise, lr, **cond):
        self.model.train()
        loss = self._training_loss(x0, t, noise, **cond)
        self.opt.zero_grad(set_to_none=True)
        with self.region("backward"):
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        with self.region("optimizer"):
            if self.scaler:
                self.scaler.unscale_(self.opt)  # clip the true gradients
            if self.optim_spec.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.optim_spec.grad_clip)
            for group in self.opt.param_groups:
                group["lr"] = lr
            if self.scaler:
                self.scaler.step(self.opt)  # skips the step on inf/nan gradients
                self.scaler.update()
            else:
                self.opt.step()
            if self.ema_model is not None:
                d = self.optim_spec.ema_decay
                with torch.no_grad():
                    ema = list(self.ema_model.parameters())
                    torch._foreach_mul_(ema, d)
                    torch._foreach_add_(ema, self.params, alpha=1.0 - d)
        return loss.detach()

    def loss_and_grads(self, x0, t, noise, y=None, drop=None):
        """Training loss and every parameter's gradient, without stepping (parity checks)."""
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        loss = self._training_loss(x0, t, noise, **self._cond(y, drop))
        loss.backward()
        grads = OrderedDict((n, p.grad.cpu().numpy().copy()) for n, p in self.model.named_parameters())
        self.model.zero_grad(set_to_none=True)
        return float(loss.item()), grads

    # -- memory ------------------------------------------------------------------------------
    def reset_peak_memory(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def memory_stats(self):
        if self.device != "cuda":
            # torch keeps no CPU allocator statistics: the harness reports the process's RSS.
            return {"allocator_peak_bytes": None, "allocator_current_bytes": None}
        return {"allocator_peak_bytes": int(torch.cuda.max_memory_allocated()),
                "allocator_current_bytes": int(torch.cuda.memory_allocated())}

    # -- data ----------------------------------------------------------------------------------
    def native_loader(self, images, batch_size, *, shuffle=True, drop_last=True, num_workers=0,
                      pin_memory=False, persistent_workers=False, seed=0):
        loader = torch.utils.data.DataLoader(
            _ImageDataset(images), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
            num_workers=num_workers, pin_memory=pin_memory and self.device == "cuda",
            persistent_workers=persistent_workers and num_workers > 0,
            generator=torch.Generator().manual_seed(seed))
        return _DeviceLoader(loader, self.device, non_blocking=pin_memory)


class _ImageDataset(torch.utils.data.Dataset):
    """uint8 HWC images -> float32 CHW in [-1, 1], per sample (like ToTensor + Normalize)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1).float() / 127.5 - 1.0


class _DeviceLoader:
    def __init__(self, loader, device, non_blocking):
        self.loader, self.device, self.non_blocking = loader, device, non_blocking

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield batch.to(self.device, non_blocking=self.non_blocking)


Backend = TorchBackend
