"""KL, ELBO and importance-weighted bounds on raw tensors (no sklearn)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.autograd import gradcheck

from skvae.nn import (
    BernoulliLikelihood,
    GaussianLikelihood,
    VAEModule,
    elbo,
    importance_weighted,
    kl_standard_normal,
    log_diag_normal,
    log_standard_normal,
    log_weights,
    monte_carlo_bounds,
)

D, K = 6, 2


def _linear_model(rng, noise=0.5, exact_posterior=False):
    """A linear-Gaussian VAE x = W z + b + e, e ~ N(0, noise I), and its exact marginal.

    W has orthogonal columns, so the exact posterior N(M^-1 W^T (x - b), noise M^-1) with
    M = W^T W + noise I is diagonal: the encoder is set to it (``exact_posterior``) or to a
    deliberately shrunk and widened version of it.
    """
    Q, _ = np.linalg.qr(rng.normal(size=(D, K)))
    W = Q * np.array([2.0, 1.0])
    b = rng.normal(size=D)
    module = VAEModule(D, K, (), "identity", GaussianLikelihood(D, variance=noise)).double()
    M = W.T @ W + noise * np.eye(K)
    post_mean = np.linalg.solve(M, W.T)  # (K, D): E[z | x] = post_mean @ (x - b)
    post_logvar = np.log(np.diag(noise * np.linalg.inv(M)))
    shrink, widen = (1.0, 0.0) if exact_posterior else (0.7, 0.5)
    with torch.no_grad():
        module.decoder[0].weight.copy_(torch.as_tensor(W))
        module.decoder[0].bias.copy_(torch.as_tensor(b))
        enc_w = np.vstack([post_mean * shrink, np.zeros((K, D))])
        enc_b = np.concatenate([-post_mean @ b * shrink, post_logvar + widen])
        module.encoder[0].weight.copy_(torch.as_tensor(enc_w))
        module.encoder[0].bias.copy_(torch.as_tensor(enc_b))
    exact = stats.multivariate_normal(mean=b, cov=W @ W.T + noise * np.eye(D))
    return module, W, exact


def test_kl_matches_closed_form_and_torch_distributions():
    rng = np.random.RandomState(0)
    mean = rng.normal(size=(20, 4))
    logvar = rng.normal(size=(20, 4))
    std = np.exp(0.5 * logvar)
    expected = (np.log(1 / std) + (std**2 + mean**2) / 2 - 0.5).sum(1)
    got = kl_standard_normal(torch.as_tensor(mean), torch.as_tensor(logvar)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    q = torch.distributions.Normal(torch.as_tensor(mean), torch.as_tensor(std))
    p = torch.distributions.Normal(torch.zeros(20, 4, dtype=torch.float64), 1.0)
    reference = torch.distributions.kl_divergence(q, p).sum(-1).numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-10)
    assert np.all(got >= 0)
    zero = kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4))
    assert torch.equal(zero, torch.zeros(3))


def test_normal_log_densities_match_scipy():
    rng = np.random.RandomState(1)
    z = rng.normal(size=(10, 3))
    mean = rng.normal(size=(10, 3))
    logvar = rng.normal(size=(10, 3))
    np.testing.assert_allclose(
        log_standard_normal(torch.as_tensor(z)).numpy(), stats.norm.logpdf(z).sum(1)
    )
    expected = stats.norm.logpdf(z, loc=mean, scale=np.exp(0.5 * logvar)).sum(1)
    got = log_diag_normal(torch.as_tensor(z), torch.as_tensor(mean), torch.as_tensor(logvar))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_exact_posterior_makes_bounds_equal_log_likelihood():
    # With q(z | x) the exact posterior every importance weight equals p(x): the IW estimate
    # for any K, the mean-log-weight ELBO and the closed-form log-density agree exactly, and
    # the closed-form-KL ELBO agrees in expectation. This ties together the constants of the
    # likelihood, the prior, q and the KL term.
    rng = np.random.RandomState(2)
    module, _, exact = _linear_model(rng, exact_posterior=True)
    x = torch.as_tensor(exact.rvs(size=50, random_state=3))
    reference = exact.logpdf(x.numpy())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mean, logvar = module.encode(x)
        eps = torch.randn(7, 50, K, dtype=torch.float64, generator=generator)
        iw = importance_weighted(x, mean, logvar, eps, module.decode, module.likelihood)
        iw_mc, elbo_mc = monte_carlo_bounds(module, x, eps[:, 0, :])
        draws = torch.randn(2000, 50, K, dtype=torch.float64, generator=generator)
        analytic = elbo(x, mean, logvar, draws, module.decode, module.likelihood).numpy()
    np.testing.assert_allclose(iw.numpy(), reference, rtol=1e-10)
    np.testing.assert_allclose(iw_mc.numpy(), reference, rtol=1e-10)
    np.testing.assert_allclose(elbo_mc.numpy(), reference, rtol=1e-10)
    se = analytic.std(0) / np.sqrt(2000)
    assert np.all(np.abs(analytic.mean(0) - reference) < 5 * se)


def _iw_draws(module, x, n_draws, k, seed):
    """n_draws independent IW estimates with k draws each, for every row: (n_draws, n)."""
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(n_draws, k, x.shape[0], K, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        mean, logvar = module.encode(x)
        lw = log_weights(x, mean, logvar, eps, module.decode, module.likelihood)
    return (torch.logsumexp(lw, dim=1) - math.log(k)).numpy()


def test_iw_with_one_draw_is_the_elbo_in_expectation():
    rng = np.random.RandomState(4)
    module, _, exact = _linear_model(rng, exact_posterior=False)
    x = torch.as_tensor(exact.rvs(size=20, random_state=5))
    iw1 = _iw_draws(module, x, 4000, 1, seed=0).mean(0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        mean, logvar = module.encode(x)
        analytic = torch.stack([
            elbo(x, mean, logvar, torch.randn(20, K, dtype=torch.float64, generator=generator),
                 module.decode, module.likelihood)
            for _ in range(4000)
        ]).numpy()
    # Both are unbiased for the ELBO; compare within 5 standard errors of the difference.
    se = np.sqrt(analytic.var(0) / 4000 + _iw_draws(module, x, 4000, 1, seed=2).var(0) / 4000)
    assert np.all(np.abs(iw1 - analytic.mean(0)) < 5 * se + 1e-9)


def test_iw_rises_with_k_towards_log_likelihood():
    rng = np.random.RandomState(6)
    module, _, exact = _linear_model(rng, exact_posterior=False)
    x = torch.as_tensor(exact.rvs(size=20, random_state=7))
    reference = exact.logpdf(x.numpy()).mean()
    means = [
        _iw_draws(module, x, n, k, seed=k).mean()
        for k, n in ((1, 4000), (10, 400), (100, 100), (1000, 20))
    ]
    assert means[0] < means[1] < means[2] < means[3] <= reference + 1e-3
    assert reference - means[0] > 0.5  # q is deliberately off: the ELBO has a visible gap
    assert reference - means[3] < 0.05


def test_gradcheck_elbo_and_iw_in_float64():
    rng = np.random.RandomState(8)
    for variance in ("feature", "sample"):
        likelihood = GaussianLikelihood(D, variance=variance).double()
        decoder = torch.nn.Sequential(
            torch.nn.Linear(K, 4), torch.nn.Tanh(), torch.nn.Linear(4, likelihood.n_outputs)
        ).double()
        _gradcheck_bounds(rng, decoder, likelihood)


def _gradcheck_bounds(rng, decoder, likelihood):
    x = torch.as_tensor(rng.normal(size=(3, D)))
    mean = torch.as_tensor(rng.normal(size=(3, K)), dtype=torch.float64).requires_grad_()
    logvar = torch.as_tensor(rng.normal(size=(3, K)) * 0.3).requires_grad_()
    eps = torch.as_tensor(rng.normal(size=(5, 3, K)))

    assert gradcheck(
        lambda m, lv: elbo(x, m, lv, eps[0], decoder, likelihood, beta=0.7), (mean, logvar)
    )
    assert gradcheck(
        lambda m, lv: importance_weighted(x, m, lv, eps, decoder, likelihood), (mean, logvar)
    )
    assert gradcheck(
        lambda raw: elbo(x, mean.detach(), logvar.detach(), eps[0],
                         lambda z: decoder(z) + raw, likelihood),
        (torch.zeros(likelihood.n_outputs, dtype=torch.float64, requires_grad=True),),
    )


@pytest.mark.parametrize("budget", [1, 50, 10_000_000])
def test_monte_carlo_bounds_chunking_and_row_independence(budget):
    rng = np.random.RandomState(9)
    module, _, exact = _linear_model(rng, exact_posterior=False)
    X = torch.as_tensor(exact.rvs(size=30, random_state=10))
    eps = torch.as_tensor(rng.normal(size=(37, K)))
    with torch.no_grad():
        iw, lower = monte_carlo_bounds(module, X, eps, budget=budget)
        # Unchunked reference: every row with the same 37 draws.
        mean, logvar = module.encode(X)
        reference = importance_weighted(X, mean, logvar, eps[:, None, :], module.decode,
                                        module.likelihood)
        perm = torch.as_tensor(rng.permutation(30))
        iw_perm, _ = monte_carlo_bounds(module, X[perm[:11]], eps, budget=budget)
    np.testing.assert_allclose(iw.numpy(), reference.numpy(), rtol=1e-12)
    np.testing.assert_allclose(iw_perm.numpy(), iw.numpy()[perm[:11].numpy()], rtol=1e-12)
    assert torch.all(lower <= iw)
    assert math.isfinite(float(iw.sum()))


def test_prepare_standardizes_once_into_row_major_rows():
    rng = np.random.RandomState(4)
    X = torch.as_tensor(np.asfortranarray(rng.normal(size=(9, D))))
    loc, scale = X.mean(0), X.std(0)
    for likelihood, shared in ((GaussianLikelihood(D), True), (BernoulliLikelihood(D), False)):
        module = VAEModule(D, K, (5,), "tanh", likelihood).double()
        module.set_standardization(loc, scale)
        inputs, targets = module.prepare(X)
        assert inputs.is_contiguous() and targets.is_contiguous()
        torch.testing.assert_close(inputs, (X - loc) / scale, rtol=0, atol=0)
        assert (targets is inputs) is shared
        if not shared:
            torch.testing.assert_close(targets, X, rtol=0, atol=0)


def test_elbo_and_log_weights_are_densities_of_the_raw_rows():
    rng = np.random.RandomState(5)
    module = VAEModule(D, K, (5,), "tanh", GaussianLikelihood(D)).double()
    X = torch.as_tensor(rng.normal(size=(8, D)) * 3.0 + 1.0)
    loc, scale = X.mean(0), X.std(0)
    module.set_standardization(loc, scale)
    module.reset_parameters(torch.Generator().manual_seed(0))
    u = module.standardize(X)
    mean, logvar = module.encode_standardized(u)
    eps = torch.as_tensor(rng.normal(size=(8, K)))
    lik = module.likelihood
    for beta in (1.0, 0.3):
        # The network's density of x is the likelihood's density of u minus sum log scale.
        torch.testing.assert_close(
            elbo(u, mean, logvar, eps, module.decode, module, beta),
            elbo(u, mean, logvar, eps, module.decode, lik, beta) - torch.log(scale).sum(),
        )
    draws = torch.as_tensor(rng.normal(size=(7, 1, K)))
    raw = log_weights(u, mean, logvar, draws, module.decode, module)
    # Against the definition log p(x | z) + log p(z) - log q(z | x), term by term, with
    # p(x | z) written out in the units of x.
    z = mean + torch.exp(0.5 * logvar) * draws
    params = module.decode(z)
    sd = scale * torch.sqrt(lik.variance())
    log_px = torch.distributions.Normal(loc + scale * params, sd).log_prob(X).sum(-1)
    expected = log_px + log_standard_normal(z) - log_diag_normal(z, mean, logvar)
    torch.testing.assert_close(raw, expected)
