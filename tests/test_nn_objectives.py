"""Training objectives (ELBO, IWAE) and covariates in the networks, on raw tensors."""

import math

import numpy as np
import pytest
import torch
from test_nn_bounds import K, _linear_model

from skvae.nn import (
    ELBO,
    IWAE,
    BernoulliLikelihood,
    GaussianLikelihood,
    TrainingHistory,
    VAEModule,
    elbo,
    importance_weighted,
    monte_carlo_bounds,
    train_epochs,
)
from skvae.nn._engine import make_optimizer


def _rows(module, exact, n=40, seed=3):
    x = torch.as_tensor(exact.rvs(size=n, random_state=seed))
    return x, module.standardize(x)


def test_objectives_replay_the_bounds_with_their_draws():
    # Each objective draws its noise from the generator it is given, then computes the bound
    # of skvae.nn._bounds with it: replaying the generator gives the same values.
    rng = np.random.RandomState(0)
    module, _, exact = _linear_model(rng)
    x, u = _rows(module, exact)
    with torch.no_grad():
        mean, logvar = module.encode(x)
        for weight in (1.0, 0.4):
            got = ELBO()(module, u, u, torch.Generator().manual_seed(5), weight)
            eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5),
                              dtype=mean.dtype)
            expected = elbo(u, mean, logvar, eps, module.decode, module, weight)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        got = IWAE(7)(module, u, u, torch.Generator().manual_seed(6), 1.0)
        eps = torch.randn((7, *mean.shape), generator=torch.Generator().manual_seed(6),
                          dtype=mean.dtype)
        expected = importance_weighted(u, mean, logvar, eps, module.decode, module)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_iwae_objective_tightens_with_k_below_the_exact_log_likelihood():
    # E[IWAE_1] = ELBO <= E[IWAE_5] <= E[IWAE_50] <= log p(x) (Burda et al., Theorem 1),
    # on a linear-Gaussian model whose exact marginal is known and whose encoder is off.
    rng = np.random.RandomState(1)
    module, _, exact = _linear_model(rng, exact_posterior=False)
    x, u = _rows(module, exact, n=200)
    log_px = exact.logpdf(x.numpy()).mean()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        values = {
            k: np.mean([float(IWAE(k)(module, u, u, generator, 1.0).mean()) for _ in range(40)])
            for k in (1, 5, 50)
        }
        elbo_value = np.mean([float(ELBO()(module, u, u, generator, 1.0).mean())
                              for _ in range(200)])
    assert abs(values[1] - elbo_value) < 0.02 * abs(elbo_value - log_px) + 0.01
    assert elbo_value < values[5] < values[50] < log_px
    assert log_px - values[50] < 0.5 * (log_px - elbo_value)


@pytest.mark.parametrize("objective", [ELBO(), IWAE(5)])
def test_training_with_each_objective_raises_the_held_out_bound(objective):
    rng = np.random.RandomState(2)
    module, _, exact = _linear_model(rng, exact_posterior=False)
    X = torch.as_tensor(exact.rvs(size=400, random_state=4))
    X_test = torch.as_tensor(exact.rvs(size=400, random_state=5))
    module = VAEModule(X.shape[1], K, (8,), "tanh", GaussianLikelihood(X.shape[1])).double()
    module.set_standardization(X.mean(0), X.std(0))
    generator = torch.Generator().manual_seed(0)
    module.reset_parameters(generator, X)
    eps = torch.randn(50, K, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = float(monte_carlo_bounds(module, X_test, eps)[0].mean())
    train_epochs(module, make_optimizer(module.parameters(), 1e-2), X, generator=generator,
                 batch_size=50, max_epochs=15, beta=1.0, kl_warmup=0,
                 history=TrainingHistory(), objective=objective)
    with torch.no_grad():
        after = float(monte_carlo_bounds(module, X_test, eps)[0].mean())
    assert after > before + 1.0
    assert after < exact.logpdf(X_test.numpy()).mean() + 0.2


def test_covariates_enter_encoder_and_decoder_and_broadcast_over_draws():
    torch.manual_seed(0)
    module = VAEModule(4, 2, (6,), "tanh", BernoulliLikelihood(4), n_covariates=3).double()
    module.reset_parameters(torch.Generator().manual_seed(0))
    assert module.encoder[0].in_features == 7 and module.decoder[0].in_features == 5
    x = torch.bernoulli(torch.full((5, 4), 0.5, dtype=torch.float64))
    c = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0, 1]]
    mean, _ = module.encode(x, c)
    other, _ = module.encode(x, c.flip(-1))
    assert not torch.allclose(mean, other)
    z = torch.randn(7, 5, 2, dtype=torch.float64)
    params = module.decode(z, c)
    assert params.shape == (7, 5, 4)
    for i in range(5):
        torch.testing.assert_close(params[:, i], module.decode(z[:, i], c[i].expand(7, 3)))
    # Bounds with covariates: row by row the same as each row alone (same draws).
    eps = torch.randn(30, 2, dtype=torch.float64)
    with torch.no_grad():
        iw, lower = monte_carlo_bounds(module, x, eps, C=c)
        alone = torch.cat([monte_carlo_bounds(module, x[i:i + 1], eps, C=c[i:i + 1])[0]
                           for i in range(5)])
    torch.testing.assert_close(iw, alone, rtol=1e-12, atol=1e-12)
    assert torch.all(lower <= iw) and math.isfinite(float(iw.sum()))


def test_training_with_covariates_learns_a_conditional_mean():
    # x = 3 c + noise: the decoder must read c, since z alone cannot know it once the
    # encoder ... also sees c; the trained model's mean given c follows 3 c.
    rng = np.random.RandomState(3)
    c = torch.as_tensor(rng.randint(0, 2, size=(600, 1)).astype(float))
    X = 3.0 * c + 0.1 * torch.as_tensor(rng.normal(size=(600, 2)))
    module = VAEModule(2, 1, (8,), "tanh", GaussianLikelihood(2), n_covariates=1).double()
    module.set_standardization(X.mean(0), X.std(0))
    generator = torch.Generator().manual_seed(0)
    module.reset_parameters(generator, X)
    train_epochs(module, make_optimizer(module.parameters(), 1e-2), X, generator=generator,
                 batch_size=60, max_epochs=40, beta=1.0, kl_warmup=0,
                 history=TrainingHistory(), C=c)
    with torch.no_grad():
        z = torch.zeros(2, 1, dtype=torch.float64)
        means = module.mean(module.decode(z, torch.tensor([[0.0], [1.0]], dtype=torch.float64)))
    np.testing.assert_allclose(means.numpy(), [[0.0, 0.0], [3.0, 3.0]], atol=0.3)
