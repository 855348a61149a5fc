"""Variational autoencoder for count data (scVI-style): Poisson, NB or ZINB decoder."""

import math

import numpy as np
import torch

from .._backend import host_array, to_numpy
from .._compat import StrOptions
from ..nn import (
    NegativeBinomialLikelihood,
    PoissonLikelihood,
    ZeroInflatedNegativeBinomialLikelihood,
    kl_standard_normal,
)
from ..nn._bounds import encode_in_chunks
from ._base import BaseVAE

# The largest integer up to which float32 holds every integer exactly.
_FLOAT32_EXACT = 2**24

_LIKELIHOODS = {
    "poisson": PoissonLikelihood,
    "nb": NegativeBinomialLikelihood,
    "zinb": ZeroInflatedNegativeBinomialLikelihood,
}


class CountVAE(BaseVAE):
    """Variational autoencoder for counts (e.g. UMIs per gene and cell), as scVI models them.

    The model is z ~ N(0, I), x_j | z ~ D(mu_j) independently over features, with
    mu_j = l * rho_j: rho = softmax(f(z)) are the per-feature proportions given by an MLP
    decoder f and l is the row's library size, its observed total sum_j x_j (an offset, as
    scVI with observed library sizes). D is Poisson, negative binomial (NB, one learned
    inverse dispersion theta_j per feature: Var = mu + mu^2 / theta) or zero-inflated NB (the
    decoder also gives a dropout probability pi_j(z)). The encoder reads log1p(x), standardized,
    and gives q(z | x) = N(m, diag v). Trained by maximizing the beta-ELBO with Adam.

    Parameters
    ----------
    n_components : int, default=8
        Number of latent dimensions.

    covariates : int, str, array-like of int, str or bool, or None, default=None
        Columns of X to condition on instead of modeling (a conditional VAE): e.g. a batch
        or a class label. Given as column indices, as names (when X is a pandas DataFrame
        with string column names, see ``feature_names_in_``) or as a boolean mask over the
        columns. Both the encoder and the decoder read them, encoded as
        ``covariate_encoding`` says; the likelihood covers the other columns only, so
        ``score_samples`` is log p(x | c), ``transform`` gives q(z | x, c), and ``sample``,
        ``inverse_transform`` and ``interpolate`` take ``covariates=`` values to generate
        for. None (or an empty selection) models every column. See Notes.

    covariate_encoding : {"onehot", "numeric"}, default="onehot"
        How the covariate columns reach the networks: "onehot" treats each as categorical
        (``sklearn.preprocessing.OneHotEncoder`` fitted in ``fit``; a category ``fit`` did
        not see is an error later), "numeric" standardizes them
        (``sklearn.preprocessing.StandardScaler``), for continuous covariates.

    hidden_layer_sizes : tuple of int, default=(256, 128)
        Widths of the encoder's hidden layers; the decoder mirrors them. ``()`` gives a linear
        encoder and decoder.

    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
        Nonlinearity between hidden layers.

    likelihood : {"nb", "poisson", "zinb"}, default="nb"
        Distribution of a count given z: negative binomial with one learned inverse
        dispersion per feature, Poisson, or zero-inflated negative binomial (the decoder
        also predicts a dropout probability per entry).

    beta : float, default=1.0
        Weight of the KL term in the training objective (beta-VAE). ``beta=1`` maximizes the
        evidence lower bound; larger values favour a more regular latent space.

    kl_warmup : int, default=0
        Number of epochs over which the KL weight rises linearly from 0 to ``beta``. Early
        stopping only starts counting once the warm-up is over.

    objective : {"elbo", "iwae"}, default="elbo"
        What each minibatch step maximizes: the (beta-)ELBO with one draw per row, or the
        importance-weighted bound of Burda et al. with ``iwae_samples`` draws per row,
        which is tighter; each step decodes ``iwae_samples`` draws per row instead of one.
        Whether it pays on your data is what held-out ``score_samples`` tells. With "iwae", ``beta`` (and the warm-up)
        weighs log p(z) - log q(z | x) inside each importance weight.

    iwae_samples : int, default=5
        Importance samples per row of the "iwae" objective (ignored with "elbo").

    learning_rate_init : float, default=1e-3
        Learning rate of Adam.

    batch_size : int, default=128
        Minibatch size (clipped to the number of training rows).

    max_iter : int, default=200
        Maximum number of epochs (passes over the training rows).

    tol : float, default=1e-4
        Smallest improvement, in nats per row, of the training loss (or of the validation
        ELBO with ``early_stopping``) that resets the no-improvement counter.

    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when the validation ELBO has not
        improved for ``n_iter_no_change`` epochs and keep the weights of its best epoch.

    validation_fraction : float, default=0.1
        Fraction of the rows held out for early stopping.

    n_iter_no_change : int, default=10
        Number of epochs without improvement after which training stops.

    n_importance_samples : int, default=100
        Number K of draws from q(z | x) in :meth:`score_samples` and :meth:`elbo_samples`.

    latent_density_components : int, default=10
        Components of the Gaussian mixture fitted to the codes of the training rows for
        ``sample(latent="fitted")`` (see ``latent_density_``).

    store_training_rows : bool, default=False
        Keep a uniform random sample of the training rows themselves (at most 100,000 rows
        and 2**23 values) for ``sample(latent="aggregated_posterior")`` and
        ``latent_density_``, encoded by the current encoder whenever they are used. False
        keeps only their codes (the mean and log-variance of q(z | x) from the encoder at the
        end of the ``fit`` / ``partial_fit`` call that trained on them), so the fitted model
        and its pickle hold no training row. True puts a verbatim copy of that sample of the
        training data into every pickle of the model: see Notes.

    warm_start : bool, default=False
        When True, ``fit`` continues from the weights of the previous fit instead of
        starting afresh (if the architecture parameters are unchanged).

    device : str or torch.device, default="auto"
        Where the computation runs: "auto" (CUDA when available, else CPU), "cpu", "cuda",
        "cuda:N" or a torch.device.

    dtype : {"float32", "float64"}, default="float32"
        Floating point type of the networks. Outputs follow the float type of the input.

    random_state : int, RandomState instance or None, default=None
        Seeds the initialization, the validation split, the shuffling and the noise of the
        training, the importance draws of :meth:`score_samples` and the default draws of
        :meth:`sample`. An int gives the same fitted model, bit for bit, on the CPU at the same
        number of torch threads.
        None draws a seed from numpy's global random state, as scikit-learn does.

    verbose : int, default=0
        With 1 or more, print one line per epoch: epoch, training loss, validation ELBO
        (with early stopping) and seconds.

    Attributes
    ----------
    module_ : torch.nn.Module
        The fitted encoder, decoder and likelihood.
    n_components_ : int
        Number of latent dimensions.
    n_iter_ : int
        Number of epochs run (counting every ``partial_fit`` and warm-started ``fit``).
    loss_curve_ : list of float
        Training loss per epoch: the negative objective (beta-ELBO or IWAE bound) per row at
        that epoch's KL weight.
    best_loss_ : float
        Smallest value of ``loss_curve_``.
    validation_scores_ : list of float or None
        Validation ELBO per row, per epoch (with ``early_stopping``), else None.
    best_validation_score_ : float or None
        Best of ``validation_scores_``, else None.
    kl_per_component_ : ndarray of shape (n_components,)
        Mean over the training rows of KL(q(z_j | x) || N(0, 1)) for each latent component,
        in nats: the information each carries. Near zero means the component collapsed onto
        the prior.
    latent_activity_ : ndarray of shape (n_components,)
        Variance over the training rows of each component's posterior mean.
    n_active_components_ : int
        Components with ``latent_activity_ > 0.01`` (active units, Burda et al. 2016).
    inverse_dispersion_ : ndarray of shape (n_features,) or None
        The NB inverse dispersion theta of each feature (Var = mu + mu^2 / theta; large
        theta is Poisson-like), None for ``likelihood="poisson"``.
    library_size_mean_ : float
        Mean training library size (row total): the l of :meth:`inverse_transform`.
    covariate_indices_ : ndarray of shape (n_covariates,) or None
        Indices of the covariate columns of X (in X's order), None without covariates.
    covariate_encoder_ : OneHotEncoder, StandardScaler or None
        The fitted encoding of the covariate columns (its ``categories_`` for one-hot),
        None without covariates.
    n_features_in_ : int
        Number of features seen during fit. Covariate columns included.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    GaussianVAE : The same model with a Gaussian decoder, for real-valued data.
    BernoulliVAE : The same model for binary or [0, 1] data.

    Notes
    -----
    Covariates (a conditional VAE, Sohn et al. 2015): with ``covariates``, X keeps its full
    layout everywhere (``n_features_in_`` counts the covariate columns, so the model works
    in a ``Pipeline`` and ``GridSearchCV`` with the covariates travelling in X). The model
    is z ~ N(0, I), x | z, c ~ p(x | f(z, c)) for the modeled columns x, and
    q(z | x, c); ``transform`` and the scores read c from X's covariate columns, which must
    be observed (NaN there is an error, even where NaN is accepted in modeled columns).
    Everything that returns rows (``sample``, ``inverse_transform``, ``interpolate``,
    ``apply_attribute``, ``impute``) returns X's full layout with the covariate columns
    holding the covariates used, so ``score_samples(sample(n, covariates=c))`` works.
    Conditioning on a batch column makes the codes forget the batch: the decoder adds
    its effect back. Covariate values are numbers (integer codes for categories: map
    string labels with e.g. ``pandas.factorize`` first).

    X must hold non-negative integers (in any numeric dtype), checked as given, before any
    cast; NaN and inf are rejected. float32 (the default ``dtype``) holds every integer
    exactly only up to 2**24 = 16777216: counts above it are refused unless the model
    computes in float64 (``dtype="float64"``, exact up to 2**53).

    An all-zero row (library size 0) has log p(x | l = 0) = 0 exactly, whatever z:
    ``score_samples`` returns 0 for it, ``elbo_samples`` the closed-form -KL(q(z | x) || p(z))
    and ``score_breakdown`` a reconstruction term of 0.

    ``score_samples`` is the importance-weighted estimate of log p(x | l), l = sum_j x_j, in
    nats: for each library size a normalized probability mass function over count rows, as
    scVI reports it. It does not price the library size itself; compare it with a model of
    all of x (e.g. a Gaussian on log1p(x)) only with that in mind (the README shows how).

    With no x at hand, :meth:`inverse_transform` (E[x | z]) uses the mean training library
    size, and :meth:`sample` draws the library size of each generated row from the training
    rows' totals (1024 quantiles of them, recorded by ``fit`` or the first ``partial_fit``).
    ``sample`` returns counts as float64 integers (``return_mean=True``: E[x | z], real).
    With ``covariates``, the library sizes of ``sample`` still come from all training rows,
    whatever the covariates given (no per-batch library prior as scVI can have), and
    ``inverse_transform`` uses the mean training library size; the covariates move the
    proportions rho.

    What a fitted model (and its pickle) holds of the training data: the network, the
    per-feature means and standard deviations of the standardization, the 1024 quantiles of
    the training rows' totals that ``sample`` draws library sizes from and, for
    ``sample(latent="aggregated_posterior")`` and ``latent_density_``, a uniform random
    sample of at most 100,000 training rows (and 2**23 values), kept as their codes: the
    mean and log-variance of q(z | x) of each row, 2 x ``n_components`` numbers, not the row.
    A code is not its row, but ``inverse_transform`` decodes it to the model's
    reconstruction of that row: share a model as you would share reconstructions of those
    rows. ``store_training_rows=True`` keeps the rows (and their covariates) instead, so a
    pickle then carries a verbatim copy of that sample of the training data. Rows of earlier
    ``partial_fit`` calls and warm starts keep the codes the encoder gave them at the end of
    their call (the rows are gone, so they cannot be encoded again): after the encoder has
    moved a lot (early calls of a long stream), draws of those codes follow the current
    model less well; with ``store_training_rows=True`` every stored row is encoded by the
    current encoder.

    The NB inverse dispersion is exp(log theta) with log theta clamped to [-8, 8]; at the top
    (theta ~ 3000) NB is practically Poisson for the counts it meets.

    References
    ----------
    R. Lopez, J. Regier, M. B. Cole, M. I. Jordan and N. Yosef, "Deep generative modeling for
    single-cell transcriptomics", Nature Methods 15, 2018 (scVI).

    D. P. Kingma and M. Welling, "Auto-encoding variational Bayes", ICLR 2014.

    K. Sohn, H. Lee and X. Yan, "Learning structured output representation using deep
    conditional generative models", NeurIPS 2015 (the conditional VAE).

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import CountVAE
    >>> X = np.random.RandomState(0).poisson(3.0, size=(200, 6))
    >>> model = CountVAE(n_components=2, hidden_layer_sizes=(16,), max_iter=5,
    ...                  device="cpu", random_state=0).fit(X)
    >>> model.transform(X).shape
    (200, 2)
    >>> S = model.sample(4, random_state=0)
    >>> bool(np.all(S == np.round(S)) and np.all(S >= 0))
    True
    >>> bool(np.all(model.score_samples(X) < 0))
    True
    """

    _parameter_constraints = {
        **BaseVAE._parameter_constraints,
        "likelihood": [StrOptions(set(_LIKELIHOODS))],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags

    def __init__(
        self,
        n_components=8,
        *,
        covariates=None,
        covariate_encoding="onehot",
        hidden_layer_sizes=(256, 128),
        activation="relu",
        likelihood="nb",
        beta=1.0,
        kl_warmup=0,
        objective="elbo",
        iwae_samples=5,
        learning_rate_init=1e-3,
        batch_size=128,
        max_iter=200,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        n_importance_samples=100,
        latent_density_components=10,
        store_training_rows=False,
        warm_start=False,
        device="auto",
        dtype="float32",
        random_state=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.covariates = covariates
        self.covariate_encoding = covariate_encoding
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.likelihood = likelihood
        self.beta = beta
        self.kl_warmup = kl_warmup
        self.objective = objective
        self.iwae_samples = iwae_samples
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.n_importance_samples = n_importance_samples
        self.latent_density_components = latent_density_components
        self.store_training_rows = store_training_rows
        self.warm_start = warm_start
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def _likelihood_spec(self):
        return {"kind": self.likelihood}

    def _make_likelihood(self, n_features, spec):
        return _LIKELIHOODS[spec["kind"]](n_features)

    def _nan_policy(self):
        # Missing counts would need the library size of the observed entries at every step
        # and an encoder fill in log1p units: not supported yet.
        return (
            "CountVAE does not accept missing values encoded as NaN yet. Drop the rows or "
            "features with missing counts, or impute them first (e.g. "
            "sklearn.impute.SimpleImputer(strategy='median') in a Pipeline)."
        )

    # What the warnings about rows far from the training data advise (skvae._base).
    _far_rows_hint = "Check that X holds raw counts on the scale of the training data"

    def _range_hint(self):
        """Counts cannot be rescaled: a wider dtype is the fix."""
        return "fit with dtype='float64'"

    def _check_float32_holds(self, X):
        """Nothing to do: ``_check_given`` refuses the counts float32 cannot hold."""

    def _check_given(self, X):
        """Raise unless the values of X as given (before the cast to ``dtype``) are counts
        the model's dtype holds exactly; NaN and infinity are left to ``_check_finite``."""
        if X.numel() == 0:
            return
        advice = ("Pass raw counts (e.g. UMIs per gene and cell, not normalized or "
                  "log-transformed values), or use GaussianVAE for real-valued data.")
        low, high = (float(v) for v in torch.aminmax(X))  # one pass, no n x d temporaries
        if not (math.isfinite(low) and math.isfinite(high)):
            X = X[torch.isfinite(X)][None, :]  # the finite values only (a rare, failing case)
            if X.numel() == 0:
                return
            low, high = (float(v) for v in torch.aminmax(X))
        if low < 0:
            raise ValueError(
                f"Negative values in data passed to CountVAE: X has "
                f"{int(torch.count_nonzero(X < 0))} negative entries (smallest {low:.4g}), but "
                f"CountVAE models counts. {advice}"
            )
        fractional, example = 0, None
        rows = max(1, 2**20 // max(1, X.shape[1]))
        for i in range(0, X.shape[0], rows):  # chunks: temporaries of 2**20 values at most
            chunk = X[i : i + rows]
            off = chunk != torch.round(chunk)
            fractional += int(torch.count_nonzero(off))
            if example is None and fractional:
                example = float(chunk[off][0])
        if fractional:
            raise ValueError(
                f"CountVAE models counts, but X has {fractional} non-integer entries (e.g. "
                f"{example!r}). {advice}"
            )
        if self._dtype == torch.float32 and high > _FLOAT32_EXACT:
            raise ValueError(
                f"X has {int(torch.count_nonzero(X > _FLOAT32_EXACT))} count(s) above 2**24 = "
                f"{_FLOAT32_EXACT} (largest {high:.0f}), the largest integers float32 holds "
                "exactly, and this CountVAE computes in float32: they would be rounded, so rows "
                "that differ by a few counts would score the same. Fit with dtype='float64', "
                "which holds counts exactly up to 2**53."
            )

    def _bounds(self, rows):
        """The bounds of :class:`BaseVAE`, exact for all-zero rows (library size 0).

        l = 0 forces every count to 0, so log p(x | z, l = 0) = 0 for every z: such a row
        has log p(x | l) = 0 exactly and, for the encoder's q, ELBO = -KL(q || p) in closed
        form (the KL of :meth:`score_breakdown`, from the same encoding of the same rows).
        """
        iw, lower = super()._bounds(rows)
        empty = to_numpy((rows.x == 0).all(dim=-1))
        if not empty.any():
            return iw, lower
        with torch.inference_mode():
            mean, logvar = encode_in_chunks(self.module_, rows.x, rows.has_nan, rows.c)
            kl = to_numpy(kl_standard_normal(mean, logvar), np.float64)
        return np.where(empty, 0.0, iw), np.where(empty, -kl, lower)

    def _after_fit(self):
        likelihood = self.module_.likelihood
        if isinstance(likelihood, NegativeBinomialLikelihood):
            theta = likelihood.inverse_dispersion().detach()
            self.inverse_dispersion_ = to_numpy(theta, np.float64)
        else:
            self.inverse_dispersion_ = None
        self.library_size_mean_ = float(likelihood.mean_library())

    def sample(self, n_samples=1, random_state=None, *, return_mean=False, latent="prior",
               covariates=None, library_size=None):
        """Generate count rows by ancestral sampling: z, a library size l, then x ~ p(x | z, l).

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows to generate.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws; None uses the estimator's ``random_state``.
        return_mean : bool, default=False
            Return the decoded mean E[x | z, l] instead of a draw of counts.
        latent : {"prior", "aggregated_posterior", "fitted"}, default="prior"
            Where z comes from, as in :meth:`GaussianVAE.sample`: the prior N(0, I), the
            aggregated posterior of a uniform sample of the training rows, or
            ``latent_density_``, a Gaussian mixture fitted to their posterior means.
        covariates : array-like, default=None
            Required when the model has covariates, else must be None: the values of the
            covariate columns to generate for, as in :meth:`GaussianVAE.sample`.
        library_size : float or array-like of shape (n_samples,), default=None
            The total count l of each generated row (one value for all rows, or one per
            row; positive). None draws each row's l from the training rows' totals (their
            mean with ``return_mean=True``), as scVI does without a library prior.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`)
            Generated counts (float64 integers; decoded means with ``return_mean``). With
            covariates, in X's layout, the covariate columns holding the given values.
        """
        if library_size is None:
            return self._sample(n_samples, random_state, return_mean, latent, covariates)
        library = host_array(library_size)  # a CUDA tensor too
        if library.ndim > 1 or library.size not in (1, n_samples) or not np.all(
                np.isfinite(library) & (library > 0)):
            raise ValueError(
                f"library_size must be one positive number or {n_samples} of them (one per "
                f"generated row); got {library_size!r}. None draws the library sizes from the "
                "training rows' totals."
            )

        def emit(params, generator, mean_only):
            likelihood = self.module_.likelihood
            l = torch.as_tensor(np.ascontiguousarray(library), dtype=params.dtype,
                                device=params.device)
            l = l.expand(params.shape[0]).unsqueeze(-1)
            if mean_only:  # E[x | z, l]: the mean at the average library, rescaled to l
                return likelihood.mean(params) * (l / likelihood.mean_library())
            return likelihood.sample_counts(l * likelihood.proportions(params), params, generator)

        return self._sample(n_samples, random_state, return_mean, latent, covariates, emit=emit)
