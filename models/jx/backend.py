"""JAX backend (Flax Linen + Optax): the only module that runs the JAX model for the harness.

Where torch dispatches op by op and Jittor fuses lazily, XLA compiles each whole step into
one program. The training step (forward, backward, clipping, Adam, EMA) is one jitted
function over (params, Adam state, EMA), all three donated; a sampling step is another,
looped in Python as the other frameworks do. Each is compiled ahead of time on its first
call, timed apart (`compile_seconds`), and every later compile of the process is counted
(`compile_events`: the workloads fail a cell that compiles during measured steps).

Dispatch is asynchronous: `sync()` blocks on every array handed out since the last sync.
Tensors at the interface are NCHW like the other frameworks'; the model runs NHWC inside.
docs/JAX.md lists every default matched to torch's on purpose.
"""
import glob
import os
from collections import OrderedDict

import numpy as np

from models.jx import runtime  # before jax: XLA's start-up environment

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from models.common.backend_base import BackendBase  # noqa: E402
from models.common.opcats import REGION_PREFIX  # noqa: E402
from models.common.diffusion import StepCoefficients, sampler_step  # noqa: E402
from models.common.distributed import rank_env  # noqa: E402
from models.common.dit_spec import DiTSpec  # noqa: E402
from models.common.variants import SUPPORTED  # noqa: E402
from models.common.weights import init_weights  # noqa: E402
from models.jx.layout import BUFFERS, Layout  # noqa: E402
from models.jx.profiler import JaxOpProfiler  # noqa: E402
from models.jx.runtime import scope  # noqa: E402
from models.registry import MATH_MODES  # noqa: E402

# jax.config names of the CUDA float32 math modes (docs/GPU.md); no effect on a CPU
MATMUL_PRECISION = {"fp32": "float32", "tf32": "tensorfloat32"}
# jax.distributed's heartbeat and shutdown timeouts (data-parallel cells): how long a rank
# waits for a dead peer before its cell fails (docs/JAX.md)
DIST_TIMEOUT_S = int(os.environ.get("DIFFBENCH_JAX_DIST_TIMEOUT_S", "15"))
# torch.nn.utils.clip_grad_norm_'s guard: scale = max_norm / (norm + 1e-6), at most 1
CLIP_EPS = 1e-6


def nchw(x):
    return jnp.transpose(x, (0, 3, 1, 2))


def nhwc(x):
    return jnp.transpose(x, (0, 2, 3, 1))


def _pick_device(device):
    if device in ("auto", "cuda"):
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:
            if device == "cuda":
                raise RuntimeError("device=cuda requested but jax sees no GPU (is its CUDA "
                                   "build installed? docs/JAX.md)") from None
    return jax.devices("cpu")[0]


class JaxBackend(BackendBase):
    name = "jax"

    def __init__(self, unet, diffusion, optim=None, *, device="auto", threads=None, seed=0,
                 math_mode="fp32", variant=None):
        super().__init__(unet, diffusion, optim, device=device, threads=threads, seed=seed,
                         variant=variant)
        offered = SUPPORTED["jax"]
        if set(self.variant.changed()) - offered:
            raise ValueError(f"variant {self.variant.describe()!r}: jax offers only "
                             f"{sorted(offered)} (models/common/variants.py SUPPORTED)")
        if math_mode not in MATH_MODES:
            raise ValueError(f"math_mode={math_mode!r} is invalid: one of {list(MATH_MODES)}")
        self.rank, self.world_size, local_rank = rank_env()   # torchrun's env contract
        # first, before anything starts XLA's thread pools (a rank: CPUs of its own)
        self.thread_limit = runtime.limit_cpus(threads, local_rank if self.world_size > 1
                                               else 0)
        runtime.install_compile_listener()
        self.compilation_cache = runtime.compilation_cache()
        self.math_mode = math_mode
        jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION[math_mode])
        self.mesh = None
        if self.world_size > 1:
            self._join(local_rank, device)
        self.jdev = jax.local_devices()[0] if self.mesh is not None else _pick_device(device)
        # one framework per process: every array and computation of this one on this device
        jax.config.update("jax_default_device", self.jdev)
        self.device = "cuda" if self.jdev.platform == "gpu" else "cpu"
        self.seed = seed
        self.reseed(seed)
        self._pending = {}

        if isinstance(unet, DiTSpec):
            from models.jx.dit import DiT as net
        else:
            from models.jx.unet import UNet as net
        # the bf16 variant: convolutions and matmuls compute in bfloat16; parameters, Adam, EMA,
        # normalization, softmax and the loss stay float32 (what torch's autocast does)
        self.compute_dtype = {"fp32": None, "bf16": jnp.bfloat16}[self.variant.precision]
        self.net = net(unet, dtype=self.compute_dtype)
        self.conditional = isinstance(unet, DiTSpec) and unet.num_classes > 0
        # the variable tree's structure from shapes alone (nothing computed or compiled)
        self.layout = Layout(unet, jax.eval_shape(self._init_variables, jax.random.PRNGKey(0)))
        self.buffers = {BUFFERS: None} if self.layout.has(BUFFERS) else {}
        self.ema = {} if self.ema_enabled() else None
        # the canonical seeded init (numpy) until load_weights: Flax's own init would be
        # one more XLA compile, and every harness cell loads the canonical weights anyway
        self._load_weights(init_weights(unet, seed=seed))
        o = self.optim_spec
        self.adam = optax.scale_by_adam(b1=o.betas[0], b2=o.betas[1], eps=o.eps)
        self.reset_optimizer()
        self._train = runtime.AheadOfTime(self._train_fn, "train step", donate_argnums=(0, 1, 2))
        self._grads = runtime.AheadOfTime(self._grads_fn, "loss and gradients")
        self._eps_fn = runtime.AheadOfTime(self._apply, "noise prediction")
        self._step_fn = runtime.AheadOfTime(self._sample_fn, "sampling step")
        self._chain_fn = runtime.AheadOfTime(self._chain, "sampling chain (lax.scan)")
        self._loss_fn = runtime.AheadOfTime(self._objective, "validation loss")
        self._normal = runtime.AheadOfTime(lambda key, i, shape: jax.random.normal(
            jax.random.fold_in(key, i), shape, jnp.float32), "noise draw", static_argnums=(2,))

    # -- data parallelism (docs/DISTRIBUTED.md) ----------------------------------------------
    def _join(self, local_rank, device):
        """N ranks (started by torchrun): jax.distributed over the coordinator the launcher
        chose, one global mesh axis "data" over every rank's device. The training step then
        runs on a global batch sharded by rank with replicated parameters, and XLA inserts
        the gradients' all-reduce (gloo on CPU, NCCL on CUDA)."""
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        # jax.distributed must come before anything asks jax for its devices: look for a
        # GPU the way the harness does, by its device nodes
        gpu = device != "cpu" and bool(glob.glob("/dev/nvidia[0-9]*"))
        if not gpu:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # Short timeouts: a rank that failed waits in shutdown's barrier for the others,
        # which wait in a collective for it; after these seconds it exits, and torchrun then
        # ends the other ranks (the cell fails instead of running into its timeout).
        jax.distributed.initialize(
            coordinator_address=os.environ["DIFFBENCH_JAX_COORDINATOR"],
            num_processes=self.world_size, process_id=self.rank,
            local_device_ids=[local_rank] if gpu else None,
            heartbeat_timeout_seconds=DIST_TIMEOUT_S, shutdown_timeout_seconds=DIST_TIMEOUT_S)
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self._by_rank = NamedSharding(self.mesh, PartitionSpec("data"))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self.dist_engine = f"jax.distributed {'nccl' if gpu else 'gloo'}"

    def _global(self, local, sharding=None):
        """A rank's numpy slice (or a replicated value) as one global array; as is with one
        process."""
        if self.mesh is None or local is None:
            return local
        return jax.make_array_from_process_local_data(sharding or self._by_rank,
                                                      np.asarray(local))

    def _host(self, tree):
        """A tree of (replicated) arrays as numpy, on every rank."""
        if self.mesh is None:
            return jax.device_get(tree)
        return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)

    def _allreduce_op(self, numel):
        if self.mesh is None:
            raise RuntimeError("one process: nothing to all-reduce")
        buf = self._global(np.zeros((1, numel), np.float32))   # (world, numel), by rank
        total = jax.jit(lambda b: jnp.sum(b, axis=0), out_shardings=self._replicated)
        total(buf).block_until_ready()   # compiled before the clock
        return lambda: self._out("allreduce", total(buf))

    def close(self):
        if self.mesh is not None:
            jax.distributed.shutdown()

    def _init_variables(self, key):
        s = self.model_spec
        x = jnp.zeros((1, s.image_size, s.image_size, s.in_channels), jnp.float32)
        t = jnp.zeros((1,), jnp.int32)
        y = {"y": jnp.zeros((1,), jnp.int32)} if self.conditional else {}
        return self.net.init(key, x, t, **y)

    def reset_optimizer(self):
        """A fresh Adam at step 0: optax's state, made on the host (no eager XLA ops)."""
        zeros = lambda: jax.tree.map(lambda p: np.zeros(p.shape, np.float32), self.params)
        self.opt_state = self._put(optax.ScaleByAdamState(
            count=np.zeros([], np.int32), mu=zeros(), nu=zeros()))
        self.step = 0

    def versions(self=None):
        if self is None:   # the class, before a device was chosen (the harness's env table)
            return runtime.versions(jax.devices()[0], None, None)
        return runtime.versions(self.jdev, self.thread_limit, self.math_mode,
                                self.compilation_cache)

    # -- compile accounting ----------------------------------------------------------------
    def compile_events(self):
        return runtime.compile_log()

    def _compiled_functions(self):
        return (self._train, self._grads, self._eps_fn, self._step_fn, self._loss_fn,
                self._chain_fn, self._normal)

    def compile_seconds(self):
        """Ahead-of-time compile seconds per jitted function (summed over its shapes)."""
        out = {}
        for fn in self._compiled_functions():
            if fn.seconds:
                out[fn.name] = float(sum(fn.seconds.values()))
        return out

    # -- weights ---------------------------------------------------------------------------
    def _put(self, tree):
        if self.mesh is not None:   # parameters and optimizer state: the same on every rank
            return jax.tree.map(lambda a: self._global(a, self._replicated), tree)
        return jax.device_put(tree, self.jdev)

    def _load_weights(self, weights, ema=None):
        self.params = self._put(self.layout.to_flax(weights))
        if BUFFERS in self.buffers:
            self.buffers = {BUFFERS: self._put(self.layout.to_flax(weights, BUFFERS))}
        if self.ema is not None:
            self.ema = self._put(self.layout.to_flax(ema or weights))

    def export_weights(self, ema=False):
        params = self._weights(ema)
        host = self._host((params, self.buffers.get(BUFFERS)))
        return OrderedDict((k, np.array(v, dtype=np.float32))
                           for k, v in self.layout.to_canonical(*host).items())

    def reseed(self, seed):
        """Reset every RNG this backend draws from: noise (randn) and dropout, the latter
        keyed by fold_in(seed key, step) inside the training step."""
        self.seed, self._draws = seed, 0
        self._key = jax.random.PRNGKey(seed)
        # numpy, so that N ranks pass it to the step as one replicated value
        self._dropout_base = np.asarray(jax.random.fold_in(self._key, 1))

    def optimizer_state(self):
        mu, nu = self._host((self.opt_state.mu, self.opt_state.nu))
        state = {"step": np.array(self.step, dtype=np.int64)}
        state.update({f"m.{k}": v for k, v in self.layout.to_canonical(mu).items()})
        state.update({f"v.{k}": v for k, v in self.layout.to_canonical(nu).items()})
        return state

    def load_optimizer_state(self, state):
        self.step = self.saved_step(state)
        if not any(k.startswith("m.") for k in state):
            return self.reset_optimizer() or setattr(self, "step", self.saved_step(state))
        names = [n for n in self.layout.order if self.layout.paths[n][0] == "params"]
        mu = self.layout.to_flax({n: state[f"m.{n}"] for n in names})
        nu = self.layout.to_flax({n: state[f"v.{n}"] for n in names})
        self.opt_state = self._put(self.opt_state._replace(
            count=np.asarray(self.step, np.int32), mu=mu, nu=nu))

    # -- tensors -----------------------------------------------------------------------------
    def _out(self, kind, *arrays):
        """Remember arrays handed out, for sync(); returns the first. One slot per kind
        holds the newest result only (it depends on the earlier ones: a sampling chain's
        x, the training state), so a long chain keeps no old arrays alive; "data" keeps
        every transfer until the next sync."""
        if kind == "data":
            self._pending.setdefault(kind, []).extend(arrays)
        else:
            self._pending[kind] = arrays
        return arrays[0]

    def to_device(self, array):
        """A batch on the device; with N ranks, the rank's slice of the global batch (every
        rank passes its own part, as the shared loader's RankSlice gives it)."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self.mesh is not None:
            return self._out("data", self._global(array))
        return self._out("data", jax.device_put(array, self.jdev))

    def to_numpy(self, tensor):
        return np.asarray(tensor)

    def randn(self, shape):
        self._draws += 1
        shape = tuple(shape)
        return self._out("randn", self._normal(("randn", shape), self._key,
                                               np.uint32(self._draws), shape))

    def sync(self):
        """Block until every array handed out since the last sync is computed (a state a
        later step donated is gone, and the later step's result waits for it anyway)."""
        live = [a for a in jax.tree.leaves(self._pending) if not a.is_deleted()]
        jax.block_until_ready(live)
        self._pending = {}

    def loss_value(self, loss):
        return float(self._host(loss))

    def _clamp(self, x):
        return jnp.clip(x, -1.0, 1.0)

    def _no_grad(self):
        raise NotImplementedError("jax computes gradients only where asked (jax.grad)")

    def _region(self, name):
        """Host-side regions (the data fetch) as trace annotations. The regions inside the
        jitted functions (loss, optimizer) are named scopes, always on (models/jx/runtime.py
        `scope`): they only name the HLO, so profiled and timed cells run one executable."""
        return jax.profiler.TraceAnnotation(REGION_PREFIX + name)

    def op_profiler(self):
        return JaxOpProfiler(self.compiled_modules)

    def compiled_modules(self):
        """The optimized HLO text of every executable this backend compiled."""
        return [exe.as_text() for aot in self._compiled_functions()
                for exe in aot.compiled.values()]

    def matmul(self, a, b):
        return self._out("matmul", jnp.matmul(a, b))

    def _labels(self, y):
        return np.asarray(y, dtype=np.int32)

    def _mask(self, drop):
        return np.asarray(drop, dtype=bool)

    # -- the pure functions (jitted) ---------------------------------------------------------
    def _apply(self, params, buffers, x_nchw, t, cond, train=False, rng=None):
        """The network's noise prediction (eps channels only), NCHW in and out."""
        out = self.net.apply({"params": params, **buffers}, nhwc(x_nchw), t,
                             train=train, rngs={"dropout": rng} if rng is not None else None,
                             **cond)
        if getattr(self.model_spec, "learn_sigma", False):
            out = out[..., :self.model_spec.in_channels]
        out = out.astype(jnp.float32)
        if self.variant.debug_output_scale != 1.0:   # the quality guard's test variant
            out = out * self.variant.debug_output_scale
        return nchw(out)

    def _objective(self, params, buffers, x0, noise, t, ab, cond, train=False, rng=None):
        """The DDPM objective (BackendBase._training_loss): x_t = a x0 + b noise, the
        network predicts the noise; loss by DiffusionSpec.loss."""
        a, b = ab[:, 0, None, None, None], ab[:, 1, None, None, None]
        pred = self._apply(params, buffers, a * x0 + b * noise, t, cond, train, rng)
        with scope("loss"):
            d = pred - noise
            kind = self.diffusion_spec.loss
            if kind == "l2":
                return jnp.mean(d * d)
            if kind == "l1":
                return jnp.mean(jnp.abs(d))
            ad = jnp.abs(d)   # huber with delta 1 = torch's smooth_l1 with beta 1
            return jnp.mean(jnp.where(ad < 1.0, 0.5 * d * d, ad - 0.5))

    def _train_fn(self, params, opt_state, ema, buffers, x0, noise, t, ab, lr, key, step,
                  cond):
        if self.mesh is not None:
            return self._train_fn_ranks(params, opt_state, ema, buffers, x0, noise, t, ab, lr,
                                        key, step, cond)
        loss, grads = self._grads_fn(params, buffers, x0, noise, t, ab, cond, key, step)
        return self._update(params, opt_state, ema, grads, lr) + (loss,)

    def _train_fn_ranks(self, params, opt_state, ema, buffers, x0, noise, t, ab, lr, key, step,
                        cond):
        """N ranks: each computes its slice's loss and gradients (shard_map over "data"),
        the gradients are averaged in ONE all-reduce of the flattened vector (as DDP's
        buckets; XLA's own SPMD partitioning all-reduced every tensor apart, ~27x slower on
        gloo here), then every rank applies the same update. Dropout keys differ by rank."""
        from jax.flatten_util import ravel_pytree
        from jax.sharding import PartitionSpec as P

        def local(params, opt_state, ema, buffers, x0, noise, t, ab, lr, key, step, cond):
            rank_key = jax.random.fold_in(jax.random.fold_in(key, step),
                                          jax.lax.axis_index("data"))
            loss, grads = jax.value_and_grad(self._objective)(
                params, buffers, x0, noise, t, ab, cond, True, rank_key)
            flat, unravel = ravel_pytree(grads)
            flat, loss = jax.lax.pmean((flat, loss), "data")
            return self._update(params, opt_state, ema, unravel(flat), lr) + (loss,)

        rep, data = P(), P("data")
        specs = (rep, rep, rep, rep, data, data, data, data, rep, rep, rep,
                 jax.tree.map(lambda _: data, cond))
        return jax.shard_map(local, mesh=self.mesh, in_specs=specs,
                             out_specs=(rep, rep, rep, rep), check_vma=False)(
            params, opt_state, ema, buffers, x0, noise, t, ab, lr, key, step, cond)

    @scope("optimizer")
    def _update(self, params, opt_state, ema, grads, lr):
        """Clip, Adam, EMA: (params, opt_state, ema)."""
        clip = self.optim_spec.grad_clip
        if clip > 0:   # torch's clip_grad_norm_: one global norm, scale min(1, clip/(n+eps))
            norm = optax.global_norm(grads)
            scale = jnp.minimum(1.0, clip / (norm + CLIP_EPS))
            grads = jax.tree.map(lambda g: g * scale, grads)
        updates, opt_state = self.adam.update(grads, opt_state)
        params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        if ema is not None:
            d = self.optim_spec.ema_decay
            ema = jax.tree.map(lambda e, p: e * d + p * (1.0 - d), ema, params)
        return params, opt_state, ema

    def _grads_fn(self, params, buffers, x0, noise, t, ab, cond, key, step):
        return jax.value_and_grad(self._objective)(params, buffers, x0, noise, t, ab, cond,
                                                   True, jax.random.fold_in(key, step))

    def _sample_fn(self, params, buffers, x, t, coeffs, noise, cond):
        """One reverse step: models.common.diffusion.sampler_step with the coefficients as
        arguments (so one compile serves every step of every chain); its noise term added
        here, where sigma is a traced number."""
        eps = self._apply(params, buffers, x, t, cond)
        c = StepCoefficients(t=0, recip=coeffs[0], recipm1=coeffs[1], coef_x0=coeffs[2],
                             coef_xt=coeffs[3], sigma=0.0)
        clamp = self._clamp if self.diffusion_spec.clip_x0 else None
        x_prev, x0 = sampler_step(x, eps, c, None, clamp)
        if noise is not None:
            x_prev = x_prev + coeffs[4] * noise
        return x_prev, x0

    def _chain(self, params, buffers, x, ts, coeffs, noises, key, cond):
        """A whole sampling chain as one lax.scan (the sample_loop=scan variant): step i
        conditions on ts[i] with coeffs[i]; its noise is noises[i] (given) or drawn from
        fold_in(key, i); no noise at all when key and noises are None (a deterministic
        chain)."""
        def body(x, i):
            t = jnp.full((x.shape[0],), ts[i], jnp.int32)
            noise = noises[i] if noises is not None else None if key is None else \
                jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
            return self._sample_fn(params, buffers, x, t, coeffs[i], noise, cond)[0], None

        x, _ = jax.lax.scan(body, x, jnp.arange(ts.shape[0]))
        return x

    # -- the harness's calls -----------------------------------------------------------------
    def sample(self, x, plan, noises=None, ema=True, y=None, cfg_scale=None):
        """The whole chain: step by step (BackendBase.sample, the matched comparison), or
        as one compiled lax.scan in the sample_loop=scan variant."""
        if self.variant.sample_loop != "scan":
            return super().sample(x, plan, noises, ema=ema, y=y, cfg_scale=cfg_scale)
        cond = self._cond_arrays(self._cond(y, cfg_scale=cfg_scale))
        ts = np.array([c.t for c in plan], np.int32)
        coeffs = np.array([[c.recip, c.recipm1, c.coef_x0, c.coef_xt, c.sigma] for c in plan],
                          np.float32)
        key = None
        if noises is not None:
            noises = jnp.stack(noises)
        elif any(c.sigma > 0 for c in plan):
            self._draws += 1
            key = jax.random.fold_in(self._key, self._draws)
        fn_key = self._key_of("chain", x, cond) + (len(plan), noises is not None,
                                                    key is not None)
        return self._out("sample", self._chain_fn(fn_key, self._weights(ema), self.buffers, x,
                                                  ts, coeffs, noises, key, cond))

    def _ab(self, t):
        """q_sample's coefficients per sample, (B, 2); a rank's slice of the global batch."""
        a, b = self.schedule.q_sample_coefficients(t)
        return self._global(np.stack([np.asarray(a, np.float32), np.asarray(b, np.float32)],
                                     axis=1))

    def _t_arg(self, t):
        return self._global(np.asarray(t, np.int32))

    def _cond_arrays(self, cond):
        """The model's keyword arguments as arrays (cfg_scale a float32 scalar), so the
        jitted functions trace them instead of baking them in; labels and masks are per
        sample (a rank's slice of the global batch)."""
        return {k: (np.float32(v) if k == "cfg_scale" else self._global(v))
                for k, v in cond.items()}

    @staticmethod
    def _key_of(what, x, cond):
        return (what, tuple(x.shape), tuple(sorted(cond)))

    def _train_step(self, x0, t, noise, lr, **cond):
        cond = self._cond_arrays(cond)
        self.params, self.opt_state, self.ema, loss = self._train(
            self._key_of("train", x0, cond), self.params, self.opt_state, self.ema,
            self.buffers, x0, noise, self._t_arg(t), self._ab(t), np.float32(lr),
            self._dropout_base, np.uint32(self.step), cond)
        return self._out("train", loss, self.params, self.opt_state, self.ema)

    def loss_and_grads(self, x0, t, noise, y=None, drop=None):
        cond = self._cond_arrays(self._cond(y, drop))
        loss, grads = self._grads(self._key_of("grads", x0, cond), self.params, self.buffers,
                                  x0, noise, self._t_arg(t), self._ab(t), cond,
                                  self._dropout_base, np.uint32(self.step))
        loss, grads = self._host((loss, grads))
        return float(loss), OrderedDict((k, np.array(v)) for k, v in
                                        self.layout.to_canonical(grads).items())

    def eval_loss(self, x0, t, noise=None, y=None):
        if noise is None:
            noise = self.randn(tuple(x0.shape))
        cond = self._cond_arrays(self._cond(y))
        return self.loss_value(self._loss_fn(self._key_of("loss", x0, cond), self.params,
                                             self.buffers, x0, noise, self._t_arg(t),
                                             self._ab(t), cond))

    def _weights(self, ema):
        return self.ema if (ema and self.ema is not None) else self.params

    def eps(self, x, t, ema=False, y=None, cfg_scale=None):
        cond = self._cond_arrays(self._cond(y, cfg_scale=cfg_scale))
        return self._out("eps", self._eps_fn(self._key_of("eps", x, cond), self._weights(ema),
                                             self.buffers, x, self._t_arg(t), cond))

    def sample_step(self, x, coeffs, noise=None, ema=True, y=None, cfg_scale=None):
        if coeffs.sigma > 0 and noise is None:
            noise = self.randn(tuple(x.shape))
        noise = noise if coeffs.sigma > 0 else None
        cond = self._cond_arrays(self._cond(y, cfg_scale=cfg_scale))
        c = np.array([coeffs.recip, coeffs.recipm1, coeffs.coef_x0, coeffs.coef_xt,
                      coeffs.sigma], dtype=np.float32)
        t = np.full((x.shape[0],), coeffs.t, dtype=np.int32)
        key = self._key_of("sample", x, cond) + (noise is not None,)
        x_prev, x0 = self._step_fn(key, self._weights(ema), self.buffers, x, t, c, noise, cond)
        return self._out("sample", x_prev, x0), x0

    # -- memory ------------------------------------------------------------------------------
    def reset_peak_memory(self):
        """XLA's allocator has no reset: one process per measurement (docs/JAX.md)."""

    def memory_stats(self):
        stats = self.jdev.memory_stats() if self.device == "cuda" else None
        if not stats:   # XLA:CPU keeps none: the harness reports the process's RSS
            return {"allocator_peak_bytes": None, "allocator_current_bytes": None}
        return {"allocator_peak_bytes": int(stats.get("peak_bytes_in_use", 0)),
                "allocator_current_bytes": int(stats.get("bytes_in_use", 0))}

    # -- data --------------------------------------------------------------------------------
    def native_loader(self, images, batch_size, *, shuffle=True, drop_last=True, num_workers=0,
                      pin_memory=False, persistent_workers=False, seed=0):
        return _HostLoader(self, images, batch_size, shuffle, drop_last, seed)


class _HostLoader:
    """JAX has no data loader of its own: its idiom is numpy batches put on the device. The
    uint8 batch goes over as is (a quarter of float32's bytes) and is converted to float32
    in [-1, 1] and NCHW by one jitted function there. num_workers, pin_memory and
    persistent_workers have no JAX meaning and are ignored (docs/JAX.md)."""

    def __init__(self, backend, images, batch_size, shuffle, drop_last, seed):
        self.backend, self.images, self.bs = backend, images, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rng = np.random.default_rng(seed)
        self.convert = jax.jit(lambda u8: jnp.transpose(u8.astype(jnp.float32) / 127.5 - 1.0,
                                                        (0, 3, 1, 2)))

    def __len__(self):
        n = len(self.images) // self.bs
        return n if self.drop_last or len(self.images) % self.bs == 0 else n + 1

    def __iter__(self):
        order = self.rng.permutation(len(self.images)) if self.shuffle else \
            np.arange(len(self.images))
        for i in range(len(self)):
            idx = np.sort(order[i * self.bs:(i + 1) * self.bs])
            batch = jax.device_put(np.ascontiguousarray(self.images[idx]), self.backend.jdev)
            yield self.backend._out("data", self.convert(batch))


Backend = JaxBackend
