"""models/common/diffusion.py against the papers' closed forms (float64 numpy).

Ho et al. 2020 (DDPM) eqs. 4, 7, 11, 12; Song et al. 2021 (DDIM) eq. 12 and sigma(eta) (eq. 16).
"""
import numpy as np
import pytest

from models.common.diffusion import (Schedule, ddim_plan, ddpm_plan, make_betas, sampler_step,
                                     select_timesteps)
from models.common.specs import DiffusionSpec

SCHEDULES = ["linear", "cosine"]


def spec(schedule, **kw):
    return DiffusionSpec(timesteps=kw.pop("timesteps", 1000), beta_schedule=schedule, **kw)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_eq4_marginal_from_composing_the_one_step_kernels(schedule):
    """q(x_t|x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), built by composing
    q(x_t|x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t I) one step at a time."""
    s = Schedule(spec(schedule))
    mean_coef, var = 1.0, 0.0
    for t, beta in enumerate(s.betas):
        mean_coef *= np.sqrt(1 - beta)
        var = (1 - beta) * var + beta
        if t in (0, 10, 500, 999):
            a, b = s.q_sample_coefficients([t])
            assert a[0] == pytest.approx(mean_coef, rel=1e-6)
            assert b[0] == pytest.approx(np.sqrt(var), rel=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_eq7_posterior_by_gaussian_conditioning(schedule):
    """q(x_{t-1}|x_t, x_0) from Bayes' rule on the two Gaussians, independently of eq. 7."""
    s = Schedule(spec(schedule))
    for t in (1, 2, 50, 999):
        abar_prev, alpha, beta = s.alphas_cumprod[t - 1], s.alphas[t], s.betas[t]
        prior_var = 1 - abar_prev  # x_{t-1} | x_0
        post_var = 1 / (1 / prior_var + alpha / beta)
        coef_x0 = post_var * np.sqrt(abar_prev) / prior_var
        coef_xt = post_var * np.sqrt(alpha) / beta
        assert s.posterior_variance[t] == pytest.approx(post_var, rel=1e-10)
        assert s.posterior_mean_coef1[t] == pytest.approx(coef_x0, rel=1e-10)
        assert s.posterior_mean_coef2[t] == pytest.approx(coef_xt, rel=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_eq11_ddpm_step_mean_and_sigma(schedule, variance):
    """mu = 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1-abar_t) eps); sigma^2 = beta_t or beta~_t."""
    sp = spec(schedule, clip_x0=False, variance=variance)
    s = Schedule(sp)
    plan = ddpm_plan(sp)
    rng = np.random.default_rng(0)
    x, eps, z = rng.standard_normal((3, 2, 3, 4, 4))
    for c in plan[::97]:
        t = c.t
        mu = (x - s.betas[t] / np.sqrt(1 - s.alphas_cumprod[t]) * eps) / np.sqrt(s.alphas[t])
        want_sigma = 0.0 if t == 0 else np.sqrt(
            s.betas[t] if variance == "fixed_large" else s.posterior_variance[t])
        assert c.sigma == pytest.approx(want_sigma, rel=1e-10)
        got, _ = sampler_step(x, eps, c, noise=z)
        np.testing.assert_allclose(got, mu + want_sigma * z, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_eq12_training_input(schedule):
    """The loss's network input sqrt(abar_t) x_0 + sqrt(1-abar_t) eps (eq. 12/14)."""
    s = Schedule(spec(schedule))
    t = np.array([0, 17, 999])
    a, b = s.q_sample_coefficients(t)
    np.testing.assert_allclose(a, np.sqrt(np.cumprod(1 - make_betas(spec(schedule))))[t], rtol=1e-6)
    np.testing.assert_allclose(a ** 2 + b ** 2, 1.0, rtol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_eq12_and_sigma_eta(schedule, eta):
    sp = spec(schedule, clip_x0=False)
    s = Schedule(sp)
    plan = ddim_plan(sp, steps=50, eta=eta)
    seq = list(range(0, 1000, 20))
    assert [c.t for c in plan] == seq[::-1]
    rng = np.random.default_rng(1)
    x, eps, z = rng.standard_normal((3, 2, 3, 4, 4))
    for c in plan:
        a_t = s.alphas_cumprod[c.t]
        a_prev = s.alphas_cumprod[c.t - 20] if c.t >= 20 else 1.0
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        assert c.sigma == pytest.approx(sigma, rel=1e-10, abs=1e-15)
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        want = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma ** 2) * eps + sigma * z
        got, got_x0 = sampler_step(x, eps, c, noise=z)
        np.testing.assert_allclose(got_x0, x0, rtol=1e-9)
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_ddim_eta1_over_all_steps_is_the_ddpm_fixed_small_posterior():
    sp = DiffusionSpec(timesteps=100, variance="fixed_small", clip_x0=False)
    ddim, ddpm = ddim_plan(sp, steps=100, eta=1.0), ddpm_plan(sp)
    for a, b in zip(ddim[:-1], ddpm[:-1]):  # the last step differs only in that DDPM adds no noise
        assert (a.t, a.sigma, a.coef_x0, a.coef_xt) == pytest.approx((b.t, b.sigma, b.coef_x0, b.coef_xt), rel=1e-9)


def test_clipping_is_applied_to_x0_and_eps_rederived():
    sp = DiffusionSpec(timesteps=100, clip_x0=True)
    c = ddim_plan(sp, steps=10, eta=0.0)[0]
    x = np.full((1, 1, 2, 2), 5.0)
    eps = np.zeros_like(x)
    _, x0 = sampler_step(x, eps, c, clamp=lambda v: np.clip(v, -1, 1))
    assert x0.max() == 1.0


def test_cosine_schedule_matches_nichol_dhariwal():
    sp = spec("cosine")
    s = Schedule(sp)
    f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
    t = np.array([0, 10, 500, 900])
    np.testing.assert_allclose(s.alphas_cumprod[t], f(t + 1) / f(0), rtol=1e-9)
    assert s.betas.max() <= 0.999 and np.all(np.diff(s.alphas_cumprod) < 0)


def test_quadratic_schedule_endpoints():
    b = make_betas(spec("quadratic"))
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and np.all(np.diff(b) > 0)


def test_timestep_selection():
    assert list(select_timesteps(1000, 50)) == list(range(0, 1000, 20))
    assert len(set(select_timesteps(1000, 300))) == 300  # T % S != 0 still gives S steps
    q = select_timesteps(1000, 50, "quadratic")
    assert len(q) == 50 and q[0] == 0 and np.all(np.diff(q) > 0) and q[-1] == 800
    assert np.diff(q)[0] < np.diff(q)[-1]  # denser near t = 0
    with pytest.raises(ValueError, match="more sampling steps than timesteps"):
        select_timesteps(1000, 1001)
    assert list(select_timesteps(100, 100, "quadratic")) == list(range(100))
    with pytest.raises(ValueError, match="skip='cubic'"):
        select_timesteps(1000, 10, "cubic")


def test_eta_must_be_explicit():
    with pytest.raises(ValueError, match="eta must be given explicitly"):
        ddim_plan(DiffusionSpec(), steps=10, eta=None)


def test_respaced_ddpm_keeps_the_marginals():
    sp = DiffusionSpec(timesteps=1000)
    plan = ddpm_plan(sp, steps=10)
    s = Schedule(sp)
    assert [c.t for c in plan] == list(range(900, -1, -100))
    # recip = 1/sqrt(abar_t) at the kept timesteps: the respaced chain has the same marginals.
    for c in plan:
        assert c.recip == pytest.approx(s.sqrt_recip_alphas_cumprod[c.t], rel=1e-12)
