"""All diffusion math that is not a tensor op, once, in float64 numpy.

Names follow the papers (Ho et al. 2020 "DDPM"; Song et al. 2021 "DDIM"; Nichol & Dhariwal
2021 for the cosine schedule) and openai/improved-diffusion. Backends never recompute any of
this: they receive per-step scalars (sampling) or per-sample float32 vectors (training) and
apply them with `sampler_step`, which is written with arithmetic operators only so the very
same function runs on numpy arrays, torch tensors and Jittor Vars.
"""
from dataclasses import dataclass

import numpy as np

from .specs import DiffusionSpec

# DDIM's last step goes to "t = -1", whose alpha_cumprod we take as 1 (the DDIM paper's
# convention; diffusers' set_alpha_to_one=True). Explicit, not a hidden default.
FINAL_ALPHA_CUMPROD = 1.0
SKIP_TYPES = ("uniform", "quadratic")


def make_betas(spec: DiffusionSpec):
    T = spec.timesteps
    if spec.beta_schedule == "linear":
        return np.linspace(spec.beta_start, spec.beta_end, T, dtype=np.float64)
    if spec.beta_schedule == "quadratic":
        return np.linspace(spec.beta_start ** 0.5, spec.beta_end ** 0.5, T, dtype=np.float64) ** 2
    if spec.beta_schedule == "cosine":
        # Nichol & Dhariwal eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T)+s)/(1+s) * pi/2);
        # beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), clipped at 0.999 to avoid a singular end.
        s = spec.cosine_s
        steps = np.arange(T + 1, dtype=np.float64) / T
        f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
        alpha_bar = f / f[0]
        return np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    raise ValueError(f"DiffusionSpec.beta_schedule={spec.beta_schedule!r} is invalid")


class Schedule:
    """Every per-timestep coefficient of the forward process and the DDPM posterior."""

    def __init__(self, spec: DiffusionSpec, betas=None):
        self.spec = spec
        self.betas = make_betas(spec) if betas is None else np.asarray(betas, dtype=np.float64)
        self.num_timesteps = len(self.betas)
        b = self.betas
        self.alphas = 1.0 - b
        self.alphas_cumprod = np.cumprod(self.alphas)
        ac = self.alphas_cumprod
        self.alphas_cumprod_prev = np.append(1.0, ac[:-1])
        acp = self.alphas_cumprod_prev
        self.sqrt_alphas_cumprod = np.sqrt(ac)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ac)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1.0)
        # q(x_{t-1} | x_t, x_0): Ho et al. eqs. 6-7.
        self.posterior_variance = b * (1.0 - acp) / (1.0 - ac)
        # posterior_variance[0] is 0: clip the log at t=0 to the t=1 value (as the DDPM code).
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = b * np.sqrt(acp) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - acp) * np.sqrt(self.alphas) / (1.0 - ac)

    def q_sample_coefficients(self, t):
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) as float32 vectors for a batch of t:
        x_t = a * x_0 + b * eps (Ho et al. eq. 4)."""
        t = np.asarray(t, dtype=np.int64)
        return (self.sqrt_alphas_cumprod[t].astype(np.float32),
                self.sqrt_one_minus_alphas_cumprod[t].astype(np.float32))

    def ddpm_sigma(self, variance):
        """Per-timestep standard deviation of the DDPM ancestral step."""
        if variance == "fixed_small":
            return np.exp(0.5 * self.posterior_log_variance_clipped)
        if variance == "fixed_large":
            # sigma^2 = beta_t (Ho et al. sec. 3.2), with the t=0 entry set to the posterior
            # variance at t=1 so that the log stays finite, as in the DDPM code.
            return np.sqrt(np.append(self.posterior_variance[1], self.betas[1:]))
        raise ValueError(f"variance={variance!r} is invalid: one of ['fixed_large', 'fixed_small']")


def select_timesteps(T, steps, skip="uniform"):
    """Increasing timesteps (model indices in [0, T)) a shortened sampler visits."""
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r} is invalid: a positive integer <= T={T}")
    if steps > T:
        raise ValueError(f"steps={steps} is invalid: more sampling steps than timesteps T={T}")
    if skip == "uniform":
        # floor(i*T/S): for T % S == 0 this is the DDIM code's range(0, T, T // S).
        seq = np.floor(np.arange(steps) * (T / steps)).astype(np.int64)
    elif skip == "quadratic":
        # The DDIM code's quadratic spacing, denser near t=0. For many steps its first entries
        # collide after rounding (0, 0, 1, ...): bump each to at least previous + 1 so the
        # sampler really takes `steps` distinct steps (seq[i] >= i, and the end stays < T).
        seq = (np.linspace(0, np.sqrt(T * 0.8), steps) ** 2).astype(np.int64)
        for i in range(1, steps):
            seq[i] = max(seq[i], seq[i - 1] + 1)
    else:
        raise ValueError(f"skip={skip!r} is invalid: one of {list(SKIP_TYPES)}")
    return seq


@dataclass(frozen=True)
class StepCoefficients:
    """One reverse step, as scalars: x0 = clip?(recip*x_t - recipm1*eps);
    x_prev = coef_x0*x0 + coef_xt*x_t + sigma*z."""

    t: int  # the timestep the network is conditioned on
    recip: float
    recipm1: float
    coef_x0: float
    coef_xt: float
    sigma: float


def ddpm_plan(spec: DiffusionSpec, steps=None, skip="uniform", variance=None):
    """Ancestral DDPM steps, from x_T down to x_0. With steps < T the chain is respaced
    (Nichol & Dhariwal sec. 4): betas recomputed from alpha_bar at the kept timesteps."""
    base = Schedule(spec)
    T = base.num_timesteps
    seq = np.arange(T) if steps in (None, T) else select_timesteps(T, steps, skip)
    ac = base.alphas_cumprod[seq]
    betas = 1.0 - ac / np.append(1.0, ac[:-1])
    sch = base if len(seq) == T else Schedule(spec, betas=betas)
    sigma = sch.ddpm_sigma(variance or spec.variance)
    plan = []
    for i in reversed(range(len(seq))):
        plan.append(StepCoefficients(
            t=int(seq[i]),
            recip=float(sch.sqrt_recip_alphas_cumprod[i]),
            recipm1=float(sch.sqrt_recipm1_alphas_cumprod[i]),
            coef_x0=float(sch.posterior_mean_coef1[i]),
            coef_xt=float(sch.posterior_mean_coef2[i]),
            sigma=float(sigma[i]) if i > 0 else 0.0))  # no noise on the last step
    return plan


def ddim_sigma(alpha_cumprod_t, alpha_cumprod_prev, eta):
    """Song et al. eq. 16: sigma_t(eta) = eta * sqrt((1-a_prev)/(1-a_t)) * sqrt(1 - a_t/a_prev)."""
    return eta * np.sqrt((1 - alpha_cumprod_prev) / (1 - alpha_cumprod_t)) * np.sqrt(
        1 - alpha_cumprod_t / alpha_cumprod_prev)


def ddim_plan(spec: DiffusionSpec, steps, eta, skip="uniform"):
    """DDIM steps (Song et al. eq. 12), from x_T down to x_0.

    eq. 12 reads x_prev = sqrt(a_prev)*x0 + sqrt(1-a_prev-sigma^2)*eps + sigma*z. With
    eps re-derived from the (possibly clipped) x0, eps = (x_t - sqrt(a_t)*x0)/sqrt(1-a_t),
    it becomes coef_x0*x0 + coef_xt*x_t: the same shape as the DDPM step, so one function
    applies both. Without clipping the two forms are equal.
    """
    if eta is None:
        raise ValueError("DDIM eta must be given explicitly (0 = deterministic, 1 = DDPM-like)")
    if eta < 0:
        raise ValueError(f"eta={eta} is invalid: a number >= 0")
    sch = Schedule(spec)
    seq = select_timesteps(sch.num_timesteps, steps, skip)
    prev = np.append(-1, seq[:-1])
    plan = []
    for t, tp in zip(reversed(seq), reversed(prev)):
        a_t = sch.alphas_cumprod[t]
        a_prev = sch.alphas_cumprod[tp] if tp >= 0 else FINAL_ALPHA_CUMPROD
        sigma = float(ddim_sigma(a_t, a_prev, eta))
        c_eps = np.sqrt(max(1 - a_prev - sigma ** 2, 0.0))
        plan.append(StepCoefficients(
            t=int(t),
            recip=float(sch.sqrt_recip_alphas_cumprod[t]),
            recipm1=float(sch.sqrt_recipm1_alphas_cumprod[t]),
            coef_x0=float(np.sqrt(a_prev) - c_eps * np.sqrt(a_t) / np.sqrt(1 - a_t)),
            coef_xt=float(c_eps / np.sqrt(1 - a_t)),
            sigma=sigma))
    return plan


def sampler_plan(spec: DiffusionSpec, sampler, steps=None, eta=None, skip="uniform", variance=None):
    """One entry point for the workloads: sampler is 'ddpm' or 'ddim'."""
    if sampler == "ddpm":
        return ddpm_plan(spec, steps, skip, variance)
    if sampler == "ddim":
        return ddim_plan(spec, spec.timesteps if steps is None else steps, eta, skip)
    raise ValueError(f"sampler={sampler!r} is invalid: one of ['ddpm', 'ddim']")


def predict_x0(x_t, eps, c: StepCoefficients, clamp=None):
    """x0 from the noise prediction (Ho et al. eq. 15); clamp(x) clips to [-1, 1] if given."""
    x0 = c.recip * x_t - c.recipm1 * eps
    return clamp(x0) if clamp is not None else x0


def sampler_step(x_t, eps, c: StepCoefficients, noise=None, clamp=None):
    """One reverse step. Array-generic: operators only, plus the framework's clamp.

    Returns (x_prev, x0_pred). noise is used only when c.sigma > 0.
    """
    x0 = predict_x0(x_t, eps, c, clamp)
    x_prev = c.coef_x0 * x0 + c.coef_xt * x_t
    if c.sigma > 0:
        if noise is None:
            raise ValueError("this step adds noise (sigma > 0) but no noise was given")
        x_prev = x_prev + c.sigma * noise
    return x_prev, x0
