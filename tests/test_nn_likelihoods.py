"""Likelihoods on raw tensors: log_prob against scipy.stats, means, draws, floors."""

import numpy as np
import pytest
import torch
from scipy import stats

from skvae.nn import BernoulliLikelihood, GaussianLikelihood, VAEModule

N, D = 7, 5


def _module(likelihood, rng, n_components=3):
    """A network around ``likelihood`` with a random standardization; returns its loc, scale."""
    module = VAEModule(D, n_components, (), "identity", likelihood).double()
    loc = torch.as_tensor(rng.normal(size=D))
    scale = torch.as_tensor(rng.uniform(0.5, 3.0, size=D))
    module.set_standardization(loc, scale)
    return module, loc.numpy(), scale.numpy()


def test_gaussian_feature_variance_matches_scipy_norm():
    rng = np.random.RandomState(0)
    lik = GaussianLikelihood(D, variance="feature", floor=1e-4).double()
    with torch.no_grad():
        lik.raw_variance.copy_(torch.as_tensor(rng.normal(size=D)))
    params = torch.as_tensor(rng.normal(size=(N, D)))
    x = torch.as_tensor(rng.normal(size=(N, D)) * 2)
    var = np.log1p(np.exp(lik.raw_variance.detach().numpy())) + 1e-4
    expected = stats.norm.logpdf(x.numpy(), loc=params.numpy(), scale=np.sqrt(var)).sum(1)
    np.testing.assert_allclose(lik.log_prob(x, params).detach().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(lik.mean(params).numpy(), params.numpy())
    np.testing.assert_allclose(lik.variance().detach().numpy(), var)


def test_gaussian_sample_variance_matches_scipy_norm():
    rng = np.random.RandomState(1)
    lik = GaussianLikelihood(D, variance="sample", floor=1e-3).double()
    assert lik.n_outputs == 2 * D
    params = torch.as_tensor(rng.normal(size=(N, 2 * D)))
    x = torch.as_tensor(rng.normal(size=(N, D)))
    mean, raw = params[:, :D].numpy(), params[:, D:].numpy()
    var = np.log1p(np.exp(raw)) + 1e-3
    expected = stats.norm.logpdf(x.numpy(), loc=mean, scale=np.sqrt(var)).sum(1)
    np.testing.assert_allclose(lik.log_prob(x, params).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("variance", ["feature", "sample", 0.3])
def test_network_density_is_in_units_of_x(variance):
    # The network owns the standardization: its log_prob of the standardized rows is the
    # density of the raw rows, Jacobian included, for every variance mode; a fixed variance
    # is in the units of x.
    rng = np.random.RandomState(2)
    lik = GaussianLikelihood(D, variance=variance).double()
    module, loc, scale = _module(lik, rng)
    params = torch.as_tensor(rng.normal(size=(4, N, lik.n_outputs)))
    x = torch.as_tensor(rng.normal(size=(N, D)))
    mean = params[..., :D].numpy()
    if variance == "sample":
        var = np.log1p(np.exp(params[..., D:].numpy())) + 1e-4
    elif variance == "feature":
        var = lik.variance().detach().numpy()
    else:
        var = 0.3 / scale**2
    expected = stats.norm.logpdf(
        x.numpy(), loc=loc + scale * mean, scale=scale * np.sqrt(var)
    ).sum(-1)
    got = module.log_prob(module.targets(x), params)
    assert got.shape == (4, N)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(module.mean(params).detach().numpy(), loc + scale * mean,
                               rtol=1e-12)


def test_gaussian_variance_never_below_floor():
    lik = GaussianLikelihood(D, variance="sample", floor=1e-2).double()
    params = torch.cat([torch.zeros(3, D), torch.full((3, D), -1e4)], dim=1)
    var = lik.variance(params)
    assert torch.all(var >= 1e-2)
    assert torch.isfinite(lik.log_prob(torch.zeros(3, D, dtype=torch.float64), params)).all()


def test_gaussian_log_prob_broadcasts_over_draws():
    rng = np.random.RandomState(3)
    lik = GaussianLikelihood(D).double()
    params = torch.as_tensor(rng.normal(size=(4, N, D)))
    x = torch.as_tensor(rng.normal(size=(N, D)))
    batched = lik.log_prob(x, params)
    assert batched.shape == (4, N)
    torch.testing.assert_close(batched[2], lik.log_prob(x, params[2]))


def test_gaussian_draws_have_model_moments():
    lik = GaussianLikelihood(2, variance="feature").double()
    module = VAEModule(2, 1, (), "identity", lik).double()
    module.set_standardization(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5]))
    params = torch.zeros(200_000, 2, dtype=torch.float64)
    draws = module.sample(params, torch.Generator().manual_seed(0)).detach().numpy()
    # Unit standardized variance (the initial value) times scale**2.
    np.testing.assert_allclose(draws.mean(0), [1.0, -2.0], atol=0.01)
    np.testing.assert_allclose(draws.var(0), [4.0 * (1 + 1e-4), 0.25 * (1 + 1e-4)], rtol=0.01)


def test_bernoulli_matches_scipy_bernoulli():
    rng = np.random.RandomState(4)
    lik = BernoulliLikelihood(D)
    logits = torch.as_tensor(rng.normal(scale=3, size=(N, D)))
    x = torch.as_tensor((rng.uniform(size=(N, D)) > 0.5).astype(float))
    p = 1 / (1 + np.exp(-logits.numpy()))
    expected = stats.bernoulli.logpmf(x.numpy(), p).sum(1)
    np.testing.assert_allclose(lik.log_prob(x, logits).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(lik.mean(logits).numpy(), p)


def test_bernoulli_is_stable_for_large_logits():
    lik = BernoulliLikelihood(2)
    logits = torch.tensor([[80.0, -80.0]])
    value = lik.log_prob(torch.tensor([[1.0, 0.0]]), logits)
    assert torch.isfinite(value).all() and float(value) == pytest.approx(0.0, abs=1e-30)
    wrong = lik.log_prob(torch.tensor([[0.0, 1.0]]), logits)
    assert float(wrong) == pytest.approx(-160.0)


def test_bernoulli_draws_and_initial_bias():
    lik = BernoulliLikelihood(3)
    x = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    bias = lik.initial_output_bias(x)
    np.testing.assert_allclose(torch.sigmoid(bias).numpy(), [0.999, 0.25, 0.5], rtol=1e-5)
    draws = lik.sample(torch.zeros(100_000, 3), torch.Generator().manual_seed(0))
    assert set(np.unique(draws.numpy())) == {0.0, 1.0}
    np.testing.assert_allclose(draws.mean(0).numpy(), 0.5, atol=0.01)


@pytest.mark.parametrize("make", [
    lambda: GaussianLikelihood(D, variance="feature"),
    lambda: GaussianLikelihood(D, variance="sample"),
    lambda: GaussianLikelihood(D, variance=0.7),
    lambda: BernoulliLikelihood(D),
])
def test_masked_log_prob_is_the_marginal_of_the_observed_entries(make):
    # Features are independent given z: the density of the observed entries is the sum of
    # theirs; what the masked entries hold (NaN included) does not matter.
    rng = np.random.RandomState(3)
    lik = make().double()
    module, _, _ = _module(lik, rng)
    x = torch.as_tensor((rng.uniform(size=(N, D)) > 0.5).astype(float))
    params = torch.as_tensor(rng.normal(size=(4, N, lik.n_outputs)))
    mask = torch.as_tensor(rng.uniform(size=(N, D)) > 0.4)
    mask[0] = True
    mask[1] = False
    targets = module.targets(x)
    full = module.log_prob(targets, params)
    entries = torch.stack([
        module.log_prob(targets, params, mask=torch.eye(D, dtype=torch.bool)[j].expand(N, D))
        for j in range(D)
    ], dim=-1)
    torch.testing.assert_close(entries.sum(-1), full, rtol=1e-12, atol=1e-12)
    expected = (entries * mask).sum(-1)
    got = module.log_prob(torch.where(mask, targets, torch.nan), params, mask=mask)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.all(got[:, 1] == 0)
