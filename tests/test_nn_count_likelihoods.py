"""Count likelihoods on raw tensors: log_prob against scipy.stats, masks, gradients, draws."""

import numpy as np
import pytest
import torch
from scipy import stats

from skvae.nn import (
    BernoulliLikelihood,
    GaussianLikelihood,
    NegativeBinomialLikelihood,
    PoissonLikelihood,
    VAEModule,
    ZeroInflatedNegativeBinomialLikelihood,
)
from skvae.nn._likelihoods import standard_gamma

N, D = 9, 6
KINDS = {
    "poisson": PoissonLikelihood,
    "nb": NegativeBinomialLikelihood,
    "zinb": ZeroInflatedNegativeBinomialLikelihood,
}


def _setup(kind, seed=0, n=N, d=D):
    rng = np.random.RandomState(seed)
    lik = KINDS[kind](d).double()
    if kind != "poisson":
        with torch.no_grad():
            lik.log_theta.copy_(torch.as_tensor(rng.uniform(-2.0, 3.0, size=d)))
    params = torch.as_tensor(rng.normal(size=(n, lik.n_outputs)))
    x = rng.negative_binomial(2, 0.1, size=(n, d)).astype(float)
    x[0] = 0.0  # an all-zero row: library 0
    x[1, :3] = 0.0
    return lik, params, torch.as_tensor(x)


def _reference(kind, lik, params, x):
    """Log-mass per row from scipy.stats, with mu = library * softmax(logits)."""
    x = x.numpy()
    logits = params[:, :D].numpy()
    rho = np.exp(logits - logits.max(1, keepdims=True))
    rho /= rho.sum(1, keepdims=True)
    mu = x.sum(1, keepdims=True) * rho
    if kind == "poisson":
        return stats.poisson.logpmf(x, mu).sum(1)
    theta = np.exp(lik.log_theta.detach().numpy())
    log_nb = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    if kind == "nb":
        return log_nb.sum(1)
    pi = 1.0 / (1.0 + np.exp(-params[:, D:].numpy()))
    p = (1.0 - pi) * np.exp(log_nb) + pi * (x == 0)
    return np.log(p).sum(1)


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_matches_scipy(kind):
    lik, params, x = _setup(kind)
    got = lik.log_prob(x, params).detach().numpy()
    np.testing.assert_allclose(got, _reference(kind, lik, params, x), rtol=1e-10, atol=1e-10)
    assert got[0] == pytest.approx(0.0, abs=1e-12)  # library 0: every count is 0 for sure


@pytest.mark.parametrize("log_theta", [-8.0, 0.0, 8.0])
def test_nb_float32_is_accurate_across_dispersions(log_theta):
    # In float32, theta from near-Poisson (e^8) to very overdispersed (e^-8): the terms of
    # the log-mass are formed without catastrophic cancellation (log(1 + mu / theta) by
    # softplus), so the row totals agree with scipy in float64 to float32 rounding: what is
    # left is the rounding of lgamma(x + theta) and lgamma(theta) themselves (~2e4 at
    # theta = e^8, float32 spacing 2e-3), a few 1e-3 nats per row.
    lik, params, x = _setup("nb", seed=4)
    with torch.no_grad():
        lik.log_theta.fill_(log_theta)
    expected = _reference("nb", lik, params, x)
    lik32 = NegativeBinomialLikelihood(D)
    with torch.no_grad():
        lik32.log_theta.fill_(log_theta)
        got = lik32.log_prob(x.float(), params.float()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_broadcasts_over_draws(kind):
    lik, _, x = _setup(kind)
    params = torch.as_tensor(np.random.RandomState(3).normal(size=(4, N, lik.n_outputs)))
    got = lik.log_prob(x, params)
    assert got.shape == (4, N)
    for k in range(4):
        np.testing.assert_allclose(got[k].detach().numpy(),
                                   lik.log_prob(x, params[k]).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_mask_equals_dropping_the_columns(kind):
    # Masked entries (here NaN) leave the library and the softmax: the value is that of the
    # same likelihood on the observed columns only.
    lik, params, x = _setup(kind, seed=1)
    rng = np.random.RandomState(5)
    mask = torch.as_tensor(rng.uniform(size=(N, D)) < 0.7)
    mask[2] = True
    mask[3] = False
    mask[4, 1:] = False
    x_nan = torch.where(mask, x, torch.tensor(float("nan"), dtype=x.dtype))
    got = lik.log_prob(x_nan, params, mask).detach().numpy()
    assert np.all(np.isfinite(got))
    assert got[3] == 0.0
    for i in range(N):
        cols = np.flatnonzero(mask[i].numpy())
        sub = KINDS[kind](len(cols)).double()
        keep = list(cols) + ([D + c for c in cols] if kind == "zinb" else [])
        if kind != "poisson":
            with torch.no_grad():
                sub.log_theta.copy_(lik.log_theta[cols])
        expected = sub.log_prob(x[i : i + 1, cols], params[i : i + 1, keep])
        np.testing.assert_allclose(got[i], float(expected.detach()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_finite_at_extremes(kind):
    lik, _, _ = _setup(kind)
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                      [1e6, 0.0, 0.0, 0.0, 0.0, 1.0],
                      [5e4, 3e4, 1e5, 2.0, 7.0, 0.0]], dtype=torch.float64)
    params = torch.tensor([[50.0] * 6 + [-40.0] * 6,
                           [-60.0, 60.0, 0.0, 0.0, 0.0, -60.0] + [40.0] * 6,
                           [0.0] * 6 + [0.0] * 6], dtype=torch.float64)[:, : lik.n_outputs]
    params.requires_grad_(True)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, 0] = False
    for m in (None, mask):
        lik.zero_grad()
        params.grad = None
        for raw in (-30.0, 0.0, 30.0) if kind != "poisson" else (0.0,):
            if kind != "poisson":
                with torch.no_grad():
                    lik.log_theta.fill_(raw)
            value = lik.log_prob(x, params, m)
            assert torch.all(torch.isfinite(value))
            value.sum().backward()
            assert torch.all(torch.isfinite(params.grad))
            if kind != "poisson":
                assert torch.all(torch.isfinite(lik.log_theta.grad))
    lik32 = KINDS[kind](D)
    value = lik32.log_prob(x.float(), params.detach().float().requires_grad_(True))
    assert torch.all(torch.isfinite(value))


@pytest.mark.parametrize("kind", ["nb", "zinb"])
def test_gradcheck_float64(kind):
    lik, params, x = _setup(kind, n=3)
    params = params[:3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: lik.log_prob(x[:3], p), (params,))


def test_standard_gamma_moments_and_generator():
    alpha = torch.tensor([0.2, 1.0, 4.0, 50.0], dtype=torch.float64).repeat(40_000, 1)
    g = torch.Generator().manual_seed(0)
    draws = standard_gamma(alpha, g)
    np.testing.assert_allclose(draws.mean(0).numpy(), alpha[0].numpy(), rtol=0.03)
    np.testing.assert_allclose(draws.var(0).numpy(), alpha[0].numpy(), rtol=0.06)
    again = standard_gamma(alpha, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    state = torch.random.get_rng_state()
    standard_gamma(alpha[:10], torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("kind", KINDS)
def test_sample_moments(kind):
    # Library fixed at 200 (all recorded quantiles equal): mean l * rho (1 - pi), variance
    # mu + mu^2 / theta for NB.
    lik = KINDS[kind](3).double()
    lik.on_training_data(torch.tensor([[100.0, 60.0, 40.0]], dtype=torch.float64))
    theta = np.array([0.5, 2.0, 20.0])
    if kind != "poisson":
        with torch.no_grad():
            lik.log_theta.copy_(torch.as_tensor(np.log(theta)))
    logits = [np.log(0.5), np.log(0.3), np.log(0.2)]
    d = [-1.0, 0.0, 1.0] if kind == "zinb" else []
    params = torch.tensor([logits + d], dtype=torch.float64).expand(60_000, -1)
    with torch.no_grad():
        draws = lik.sample(params, torch.Generator().manual_seed(0)).numpy()
    assert np.array_equal(draws, np.round(draws)) and draws.min() >= 0
    mu = 200.0 * np.array([0.5, 0.3, 0.2])
    if kind == "poisson":
        mean, var = mu, mu
    else:
        mean, var = mu, mu + mu**2 / theta
    if kind == "zinb":
        keep = 1.0 - 1.0 / (1.0 + np.exp(-np.array(d)))
        mean, var = keep * mu, keep * var + keep * (1 - keep) * mu**2
    np.testing.assert_allclose(draws.mean(0), mean, rtol=0.02)
    np.testing.assert_allclose(draws.var(0), var, rtol=0.05)
    np.testing.assert_allclose(lik.mean(params[:1]).detach().numpy()[0], mean, rtol=1e-12)


def test_library_quantiles_follow_training_totals():
    lik = PoissonLikelihood(2)
    totals = np.arange(1, 101, dtype=float)
    x = torch.as_tensor(np.stack([totals - 1, np.ones(100)], axis=1)).float()
    lik.on_training_data(x)
    q = lik.library_quantiles.numpy()
    assert set(np.unique(q)) <= set(totals)
    # every training total appears about equally often
    counts = np.array([(q == t).sum() for t in totals])
    assert counts.min() >= 10 and counts.max() <= 11
    assert float(lik.mean_library()) == pytest.approx(totals.mean(), rel=0.01)


@pytest.mark.parametrize("kind", KINDS)
def test_network_reads_log1p_and_raw_counts(kind):
    # The encoder's input is log1p(x), standardized; the likelihood reads raw counts and the
    # network adds no Jacobian.
    lik, params, x = _setup(kind)
    module = VAEModule(D, 2, (), "identity", lik).double()
    loc, scale = torch.full((D,), 0.5, dtype=torch.float64), torch.full((D,), 2.0,
                                                                       dtype=torch.float64)
    module.set_standardization(loc, scale)
    np.testing.assert_allclose(module.standardize(x).numpy(),
                               (np.log1p(x.numpy()) - 0.5) / 2.0, rtol=1e-12)
    inputs, targets = module.prepare(x)
    np.testing.assert_allclose(inputs.numpy(), module.standardize(x).numpy(), rtol=1e-12)
    assert torch.equal(targets, x)
    np.testing.assert_allclose(module.log_prob(module.targets(x), params).detach().numpy(),
                               lik.log_prob(x, params).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("lik", [GaussianLikelihood(D), BernoulliLikelihood(D)])
def test_other_likelihoods_keep_identity_encoder_input(lik):
    x = torch.rand(N, D)
    assert lik.encoder_input(x) is x
