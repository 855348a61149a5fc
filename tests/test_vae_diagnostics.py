"""Diagnostics of a fitted VAE: the per-row breakdown of the bounds and posterior collapse."""

import numpy as np
import pytest
import torch

from skvae import BernoulliVAE, GaussianVAE


def _low_rank(n=400, d=8, rank=2, seed=0):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) * 2 + 0.1 * rng.normal(
        size=(n, d)
    )


@pytest.fixture(scope="module")
def collapsed():
    """A VAE with more latent components than the data's two dimensions."""
    X = _low_rank()
    model = GaussianVAE(n_components=6, hidden_layer_sizes=(32,), max_iter=60, batch_size=50,
                        learning_rate_init=3e-3, device="cpu", random_state=0)
    with pytest.warns(Warning):  # max_iter reached
        model.fit(X)
    return model, X


def test_breakdown_terms_are_consistent_with_the_scores(collapsed):
    model, X = collapsed
    parts = model.score_breakdown(X[:50])
    assert set(parts) == {"log_likelihood", "elbo", "reconstruction", "kl", "gap"}
    assert all(v.shape == (50,) and v.dtype == np.float64 for v in parts.values())
    np.testing.assert_array_equal(parts["log_likelihood"], model.score_samples(X[:50]))
    np.testing.assert_array_equal(parts["elbo"], model.elbo_samples(X[:50]))
    np.testing.assert_allclose(parts["elbo"], parts["reconstruction"] - parts["kl"], rtol=1e-12)
    np.testing.assert_allclose(parts["log_likelihood"], parts["elbo"] + parts["gap"], rtol=1e-12)
    assert np.all(parts["gap"] >= 0) and np.all(parts["kl"] >= 0)
    # The KL term against torch.distributions, from transform's posterior mean and std.
    mean, std = model.transform(X[:50].astype(np.float32), return_std=True)
    q = torch.distributions.Normal(torch.as_tensor(mean, dtype=torch.float64),
                                   torch.as_tensor(std, dtype=torch.float64))
    prior = torch.distributions.Normal(0.0, 1.0)
    expected = torch.distributions.kl_divergence(q, prior).sum(-1).numpy()
    np.testing.assert_allclose(parts["kl"], expected, rtol=1e-4, atol=1e-5)


def test_collapsed_components_are_reported(collapsed):
    model, X = collapsed
    kl, activity = model.kl_per_component_, model.latent_activity_
    assert kl.shape == activity.shape == (6,)
    # Two dimensions of signal: at most three components stay active (one may linger).
    assert 2 <= model.n_active_components_ <= 3
    active = activity > 0.01
    assert model.n_active_components_ == active.sum()
    assert np.all(kl[~active] < 0.05) and np.all(kl[active] > 0.5)
    # The per-component KL sums to the mean per-row KL over the training rows.
    assert kl.sum() == pytest.approx(model.score_breakdown(X)["kl"].mean(), rel=1e-5)
    mean, _ = model.transform(X, return_std=True)
    np.testing.assert_allclose(activity, mean.var(axis=0), rtol=1e-4, atol=1e-7)


def test_a_heavy_beta_switches_components_off():
    X = _low_rank(seed=1)
    common = dict(n_components=4, hidden_layer_sizes=(32,), max_iter=30, batch_size=50,
                  learning_rate_init=3e-3, device="cpu", random_state=0)
    with pytest.warns(Warning):
        light = GaussianVAE(beta=1.0, **common).fit(X)
    with pytest.warns(Warning):
        heavy = GaussianVAE(beta=200.0, **common).fit(X)
    assert heavy.kl_per_component_.sum() < 0.2 * light.kl_per_component_.sum()
    assert heavy.n_active_components_ < light.n_active_components_


def test_breakdown_reconstruction_is_the_expected_log_likelihood_under_q():
    # reconstruction = ELBO + KL estimates E_q[log p(x | z)]: compare with a direct Monte Carlo
    # average of log p(x | z) over 4000 fresh draws from q(z | x), within 5 standard errors.
    rng = np.random.RandomState(2)
    X = (rng.uniform(size=(40, 10)) < 0.3).astype(float)
    with pytest.warns(Warning):
        model = BernoulliVAE(n_components=2, hidden_layer_sizes=(8,), max_iter=5,
                             n_importance_samples=2000, device="cpu", random_state=0).fit(X)
    parts = model.score_breakdown(X)
    module = model.module_
    x = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        mean, logvar = module.encode(x)
        eps = torch.randn((4000, *mean.shape), generator=torch.Generator().manual_seed(0))
        z = mean + torch.exp(0.5 * logvar) * eps
        log_px = module.log_prob(module.targets(x), module.decode(z)).double().numpy()
        log_ratio = (-0.5 * (z.square().sum(-1) - eps.square().sum(-1) - logvar.sum(-1)))
        log_w = log_px + log_ratio.double().numpy()
    direct = log_px.mean(0)
    # The breakdown averages log p(x | z) + log p(z) - log q(z | x) over its 2000 draws and adds
    # the closed-form KL: its standard error is that of the log weights; the direct one's is
    # that of log p(x | z). Allow 5 of the combined error.
    se = np.sqrt(log_w.var(0) / 2000 + log_px.var(0) / 4000)
    assert np.all(np.abs(parts["reconstruction"] - direct) < 5 * se)
    assert np.all(parts["reconstruction"] < 0)



def test_iwae_objective_fits_a_tighter_model_than_the_elbo():
    # Same data, architecture and epochs: training on the IWAE-5 bound gives a held-out
    # log-likelihood at least that of ELBO training, and its own training loss is the
    # negative IWAE bound, which lies below the negative ELBO of the same weights.
    rng = np.random.RandomState(3)
    Z = rng.normal(size=(700, 2))
    X = np.tanh(Z @ rng.normal(size=(2, 6))) * 2 + 0.05 * rng.normal(size=(700, 6))
    common = dict(n_components=2, hidden_layer_sizes=(32,), max_iter=25, batch_size=50,
                  learning_rate_init=3e-3, device="cpu", random_state=0)
    with pytest.warns(Warning):
        plain = GaussianVAE(**common).fit(X[:500])
    with pytest.warns(Warning):
        iwae = GaussianVAE(objective="iwae", iwae_samples=5, **common).fit(X[:500])
    assert iwae.score(X[500:]) > plain.score(X[500:]) - 0.05
    assert -iwae.loss_curve_[-1] > iwae.elbo_samples(X[:500]).mean() - 0.05
    with pytest.raises(ValueError, match="objective"):
        GaussianVAE(objective="vi").fit(X)
