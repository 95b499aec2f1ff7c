"""What every backend shares, framework-free: specs, the schedule, the step counter, weight
checks, and the composition of a sampling step. A framework's backend.py adds only tensor ops
(see docs/ARCHITECTURE.md for the whole interface)."""
import contextlib
import time

import numpy as np

from .diffusion import Schedule, StepCoefficients, sampler_step
from .dit_spec import DiTSpec
from .specs import DiffusionSpec, OptimSpec, UNetSpec
from .variants import MATCHED, VariantSpec
from .weights import check_weights

DEVICES = ("auto", "cpu", "cuda")


class BackendBase:
    name = "base"

    def __init__(self, unet: UNetSpec, diffusion: DiffusionSpec, optim: OptimSpec = None, *,
                 device="auto", threads=None, seed=0, variant: VariantSpec = None):
        if device not in DEVICES:
            raise ValueError(f"device={device!r} is invalid: one of {list(DEVICES)}")
        self.variant = variant or MATCHED  # models/common/variants.py; default: matched
        # the model's spec: a UNetSpec, or a DiTSpec (models/common/dit_spec.py); the name
        # stays unet_spec for the harness, model_spec says what it is
        self.unet_spec = self.model_spec = unet
        self.diffusion_spec = diffusion
        self.optim_spec = optim or OptimSpec()
        self.schedule = Schedule(diffusion)
        self.threads = threads
        self.seed = seed
        self.step = 0  # optimizer steps taken

    # -- framework-specific parts, implemented by each backend ---------------------------
    def _train_step(self, x0, t, noise, lr):
        raise NotImplementedError

    def _clamp(self, x):
        raise NotImplementedError

    def _no_grad(self):
        """A context manager in which the framework records no gradients."""
        raise NotImplementedError

    def _region(self, name):
        """The framework profiler's named region (record_function / jt.profile_mark)."""
        raise NotImplementedError

    def op_profiler(self):
        """A context manager that profiles every op run inside it; afterwards `.ops()` gives
        [{name, category, seconds, count}] and `.save(dir)` writes the raw profile."""
        raise NotImplementedError

    def matmul(self, a, b):
        """a @ b for two 2-D device tensors (the measured peak of bench/measure/peak.py)."""
        raise NotImplementedError

    def _net(self, model, x, t, **cond):
        """The network's noise prediction, float32. A backend's variant (precision, compiled
        module, memory format) applies here; the matched comparison calls the model as is.
        cond: a DiT's labels y, drop_ids, cfg_scale (`_cond`), native; empty for the UNet."""
        return model(x, t, **cond)

    def _labels(self, y):
        """Class labels (numpy ints) as the framework's integer tensor on the device."""
        raise NotImplementedError

    def _mask(self, drop):
        """A boolean numpy vector as the framework's bool tensor on the device."""
        raise NotImplementedError

    # -- conditioning (the DiT; docs/DIT.md) ------------------------------------------------
    def _cond(self, y=None, drop=None, cfg_scale=None):
        """The model's keyword arguments beyond (x, t): labels y (numpy ints), drop (numpy
        bools: labels replaced by the null class; None in training = drawn by the model with
        the framework's RNG when class_dropout > 0), cfg_scale (classifier-free guidance)."""
        if y is None and drop is None and cfg_scale is None:
            return {}
        spec = self.model_spec
        if not (isinstance(spec, DiTSpec) and spec.num_classes):
            raise ValueError("labels, label dropout and guidance need a class-conditional "
                             "DiT (DiTSpec with num_classes > 0)")
        if y is None:
            raise ValueError("drop and cfg_scale need the labels y")
        cond = {"y": self._labels(np.asarray(y))}
        if drop is not None:
            cond["drop_ids"] = self._mask(np.asarray(drop, dtype=bool))
        if cfg_scale is not None:
            cond["cfg_scale"] = float(cfg_scale)
        return cond

    def _eps_part(self, out):
        """The noise prediction of a model output: a DiT with learn_sigma also returns its
        variance channels after the first in_channels, which the DDPM objective and the
        samplers here do not use."""
        if getattr(self.model_spec, "learn_sigma", False):
            return out[:, :self.model_spec.in_channels]
        return out

    # -- data parallelism (docs/DISTRIBUTED.md); one process unless a launcher started N --
    rank = 0
    world_size = 1
    dist_engine = None  # e.g. "torch.distributed gloo", "jittor mpi"

    def _allreduce_op(self, numel):
        """A callable that all-reduces one `numel` float32 buffer over the ranks with the
        framework's own collective (buffer made and ranks lined up beforehand)."""
        raise NotImplementedError

    def allreduce_seconds(self, numel, repeats=10):
        """Median synced seconds of one all-reduce of `numel` float32 (after one untimed)."""
        run, times = self._allreduce_op(numel), []
        for _ in range(repeats + 1):
            self.sync()
            t0 = time.perf_counter()
            run()
            self.sync()
            times.append(time.perf_counter() - t0)
        return float(np.median(times[1:]))

    def close(self):
        """Release what the backend holds outside the process (a process group)."""

    # -- compilation (frameworks that compile whole steps ahead of time: JAX) ---------------
    def compile_events(self):
        """Every compile this process has made so far, [{function, seconds, at}], where the
        framework reports them (JAX: each XLA compile); empty where compiling is implicit
        (torch eager, Jittor's kernel cache). The workloads fail a cell that compiles during
        its measured steps instead of timing the compile."""
        return []

    def compile_seconds(self):
        """Ahead-of-time compile seconds per compiled function ({} where there is none)."""
        return {}

    def stop_memory_accounting(self):
        """Stop any peak-memory bookkeeping the framework does inside its executor (for
        measurements that report no memory, e.g. the A/B gate's interleaved worker)."""

    # -- profiling ------------------------------------------------------------------------
    profiling = False  # set by the profile workload only: timed cells run unmarked code

    def region(self, name):
        """Mark a region (models/common/opcats.py REGIONS) for the op profiler; outside a
        profile cell it does nothing, so timed cells run exactly the unprofiled code."""
        return self._region(name) if self.profiling else contextlib.nullcontext()

    # -- shared composition ----------------------------------------------------------------
    @staticmethod
    def saved_step(state):
        """The step count of an optimizer state read back from a checkpoint: safetensors
        stores the 0-d step as a 1-element array, and numpy 2 refuses int() of an array
        that is not 0-d."""
        return int(np.asarray(state["step"]).reshape(-1)[0])

    def load_weights(self, weights, ema=None):
        """Load canonical weights; the EMA copy starts equal to them unless `ema` is given."""
        check_weights(self.unet_spec, weights)
        if ema is not None:
            check_weights(self.unet_spec, ema, where="EMA weights")
        self._load_weights(weights, ema)

    def train_step(self, x0, t, noise=None, y=None, drop=None):
        """One optimizer step on x0 at timesteps t (numpy int64). Returns the unsynced loss.
        y, drop: a class-conditional DiT's labels and label-dropout mask (numpy; `_cond`)."""
        t = np.asarray(t, dtype=np.int64)
        if noise is None:
            noise = self.randn(tuple(x0.shape))
        self.step += 1
        return self._train_step(x0, t, noise, self.optim_spec.lr_at(self.step),
                                **self._cond(y, drop))

    def _training_loss(self, x0, t, noise, **cond):
        """The DDPM objective: noise x0 to x_t (Ho et al. eq. 4), predict the noise."""
        a, b = self.schedule.q_sample_coefficients(t)
        x_t = self._vec(a) * x0 + self._vec(b) * noise
        pred = self._eps_part(self._net(self.model, x_t, self._t(t), **cond))
        with self.region("loss"):
            return self._loss(pred, noise)

    def loss_value(self, loss):
        """The loss as a float; reading it forces the framework to finish the step."""
        return float(loss.item())

    def eval_loss(self, x0, t, noise=None, y=None):
        """The training objective without gradients and with dropout off (validation)."""
        if noise is None:
            noise = self.randn(tuple(x0.shape))
        self.model.eval()
        with self._no_grad():
            return float(self._training_loss(x0, t, noise, **self._cond(y)).item())

    def eps(self, x, t, ema=False, y=None, cfg_scale=None):
        """Noise prediction in eval mode, from the EMA weights when ema=True and EMA is on.
        y: a class-conditional DiT's labels; cfg_scale: classifier-free guidance with them."""
        model = self.ema_model if (ema and self.ema_model is not None) else self.model
        model.eval()
        with self._no_grad():
            return self._eps_part(self._net(model, x, self._t(t),
                                            **self._cond(y, cfg_scale=cfg_scale)))

    def sample_step(self, x, coeffs: StepCoefficients, noise=None, ema=True, y=None,
                    cfg_scale=None):
        """One reverse step (DDPM or DDIM, by the coefficients). Returns (x_prev, x0_pred)."""
        t = np.full((x.shape[0],), coeffs.t, dtype=np.int64)
        eps = self.eps(x, t, ema=ema, y=y, cfg_scale=cfg_scale)
        if coeffs.sigma > 0 and noise is None:
            noise = self.randn(tuple(x.shape))
        clamp = self._clamp if self.diffusion_spec.clip_x0 else None
        return sampler_step(x, eps, coeffs, noise, clamp)

    def sample(self, x, plan, noises=None, ema=True, y=None, cfg_scale=None):
        """Run a whole chain from x_T; noises (optional) supplies each step's noise."""
        for i, coeffs in enumerate(plan):
            x, _ = self.sample_step(x, coeffs, None if noises is None else noises[i], ema=ema,
                                    y=y, cfg_scale=cfg_scale)
        return x

    def ema_enabled(self):
        return self.optim_spec.ema_decay > 0
