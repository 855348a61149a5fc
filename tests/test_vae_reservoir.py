"""What a fitted VAE keeps of its training rows: codes by default, the rows only on request.

The sample behind ``sample(latent="aggregated_posterior")`` and ``latent_density_`` is a
uniform bottom-k sample of the rows trained on. By default it holds their codes (mean and
log-variance of q(z | x) from the encoder at the end of the call that trained on them), so no
training row reaches a pickle; ``store_training_rows=True`` keeps the rows (today's reservoir).
"""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skvae import BernoulliVAE, CountVAE, GaussianVAE

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(n_components=2, hidden_layer_sizes=(16,), max_iter=5, batch_size=64,
             n_importance_samples=8, device="cpu", random_state=0)


def _real(n=150, d=7, seed=0):
    rng = np.random.RandomState(seed)
    return np.tanh(rng.normal(size=(n, 2)) @ rng.normal(size=(2, d))) * 3 + rng.normal(
        size=(n, d)) * 0.1 + 5


def _data(cls, n=150, seed=0):
    X = _real(n, seed=seed)
    if cls is BernoulliVAE:
        return (X > 5).astype(np.float64)
    if cls is CountVAE:
        return np.round(np.exp(X - 4))
    return X


def _found(rows, payload):
    """How many of ``rows`` appear verbatim (float32 or float64 bytes) in ``payload``."""
    return sum(
        row.astype(dtype).tobytes() in payload
        for row in rows for dtype in (np.float32, np.float64)
    )


@pytest.mark.parametrize("cls", [GaussianVAE, BernoulliVAE, CountVAE])
def test_a_pickled_vae_holds_no_training_row(cls):
    X = _data(cls)
    X = X[np.unique(X, axis=0, return_index=True)[1]]  # distinct rows only
    model = cls(**SMALL).fit(X)
    payload = pickle.dumps(model)
    assert _found(X, payload) == 0
    assert all(v.shape[0] == X.shape[0] and v.shape[1:] in {(), (2,)}
               for v in model._reservoir.values())  # keys and codes, nothing n x d
    # The search finds rows where they are: the opt-in keeps every row of this small set.
    kept = cls(**SMALL, store_training_rows=True).fit(X)
    assert _found(X, pickle.dumps(kept)) == X.shape[0]


def test_the_covariates_of_the_sampled_rows_are_not_kept_either():
    X = _real(120)
    X[:, 2] = np.arange(120) % 3  # a class column the model is conditioned on
    model = GaussianVAE(**SMALL, covariates=[2]).fit(X)
    assert set(model._reservoir) == {"keys", "mean", "logvar"}
    assert _found(np.delete(X, 2, axis=1), pickle.dumps(model)) == 0
    draws = model.sample(50, covariates=1, latent="aggregated_posterior", random_state=0)
    assert np.all(np.isfinite(draws)) and np.all(draws[:, 2] == 1)
    kept = GaussianVAE(**SMALL, covariates=[2], store_training_rows=True).fit(X)
    assert set(kept._reservoir) == {"keys", "rows", "covariates"}
    np.testing.assert_allclose(draws, kept.sample(50, covariates=1, random_state=0,
                                                  latent="aggregated_posterior"),
                               rtol=1e-4, atol=1e-4)


def test_a_pickle_grows_by_a_code_per_training_row_not_by_a_row():
    # 50 features: a stored row costs 200 bytes (float32), a code 8 + 2 * 2 * 4 = 24.
    sizes = {}
    for n in (200, 1200):
        model = GaussianVAE(**{**SMALL, "max_iter": 1}).fit(_real(n, d=50))
        sizes[n] = len(pickle.dumps(model))
    per_row = (sizes[1200] - sizes[200]) / 1000
    assert per_row < 30, sizes


def test_codes_come_from_the_final_encoder_of_each_call_and_stay_with_their_rows():
    X, chunk = _real(150), _real(60, seed=1)
    model = GaussianVAE(**SMALL).fit(X)
    twin = GaussianVAE(**SMALL, store_training_rows=True).fit(X)  # the same fit, rows kept
    np.testing.assert_array_equal(model._reservoir["keys"], twin._reservoir["keys"])
    rows = twin._reservoir["rows"].numpy()
    mean, std = model.transform(rows, return_std=True)
    np.testing.assert_allclose(model._reservoir["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(torch.exp(0.5 * model._reservoir["logvar"]), std, rtol=1e-5)
    before = {float(k): m for k, m in zip(model._reservoir["keys"], model._reservoir["mean"])}
    model.partial_fit(chunk)
    twin.partial_fit(chunk)
    keys, codes = model._reservoir["keys"], model._reservoir["mean"].numpy()
    np.testing.assert_array_equal(keys, twin._reservoir["keys"])  # the same uniform sample
    old = np.array([float(k) in before for k in keys])
    assert old.sum() == 150 and (~old).sum() == 60
    # Rows of the earlier call keep the codes they got then (no rows to encode them again);
    # the chunk's rows get the codes of the encoder partial_fit has just trained.
    np.testing.assert_array_equal(codes[old], np.stack([before[float(k)] for k in keys[old]]))
    new_rows = twin._reservoir["rows"].numpy()[~old]
    np.testing.assert_allclose(codes[~old], model.transform(new_rows), rtol=1e-5, atol=1e-6)
    assert np.abs(codes[old] - model.transform(twin._reservoir["rows"].numpy()[old])).max() > 0


def test_sampling_from_codes_follows_the_aggregated_posterior_as_the_stored_rows_do():
    X = _real(200)
    model = GaussianVAE(**SMALL).fit(X)
    kept = GaussianVAE(**SMALL, store_training_rows=True).fit(X)
    for latent in ("aggregated_posterior", "fitted"):
        np.testing.assert_allclose(
            model.sample(300, random_state=1, latent=latent, return_mean=True),
            kept.sample(300, random_state=1, latent=latent, return_mean=True),
            rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.latent_density_.means_, kept.latent_density_.means_,
                               rtol=1e-4, atol=1e-5)


def test_without_rows_the_codes_are_those_of_the_encoder_at_the_end_of_fit():
    # The mirror of test_aggregated_posterior_codes_come_from_the_current_encoder (rows
    # stored): codes are computed once, by fit, so moving the encoder afterwards moves
    # nothing that sample(latent="aggregated_posterior") draws.
    model = GaussianVAE(**SMALL).fit(_real())
    codes = model._reservoir["mean"].numpy().mean(0)
    with torch.no_grad():
        model.module_.encoder[-1].bias[:2] += 50.0
    decoded = []
    decode = model.module_.decode
    model.module_.decode = lambda z: decoded.append(z.clone()) or decode(z)
    model.sample(2000, random_state=0, latent="aggregated_posterior")
    del model.module_.decode
    assert np.abs(codes).max() < 10
    np.testing.assert_allclose(decoded[0].mean(0).numpy(), codes, atol=0.2)


def test_switching_the_opt_in_between_calls():
    X = _real()
    model = GaussianVAE(**SMALL, store_training_rows=True).fit(X)
    model.set_params(store_training_rows=False).partial_fit(_real(40, seed=1))
    # Rows stored until now are encoded by the current encoder and dropped.
    assert set(model._reservoir) == {"keys", "mean", "logvar"}
    assert model._reservoir["keys"].shape == (190,)
    assert _found(X, pickle.dumps(model)) == 0
    n_iter = model.n_iter_
    with pytest.raises(ValueError, match=r"store_training_rows=True, but .*store_training_rows"
                                         r"=False.*fit with warm_start=False"):
        model.set_params(store_training_rows=True).partial_fit(X)
    assert model.n_iter_ == n_iter and "rows" not in model._reservoir
    with pytest.raises(ValueError, match="store_training_rows=True"):
        model.set_params(warm_start=True).fit(X)
    model.set_params(warm_start=False).fit(X)  # a new fit keeps the rows
    assert model._reservoir["rows"].shape == X.shape


def test_a_model_without_rows_round_trips_and_keeps_training():
    X = _real()
    model = GaussianVAE(**SMALL).fit(X)
    loaded = pickle.loads(pickle.dumps(model))
    for latent in ("aggregated_posterior", "fitted"):
        np.testing.assert_array_equal(loaded.sample(20, random_state=0, latent=latent),
                                      model.sample(20, random_state=0, latent=latent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        loaded.partial_fit(_real(30, seed=2))
    assert loaded._reservoir["mean"].shape == (180, 2)
    assert np.all(np.isfinite(loaded.sample(20, latent="aggregated_posterior")))
