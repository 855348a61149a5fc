"""The algebra of x ~ N(mu, W W^T + Psi), in torch, on whatever device the tensors live.

Shapes: ``X`` (n, d), ``mu`` (d,), ``W`` (d, k), ``psi`` (d,) (a PPCA model repeats its one
noise variance). Nothing here forms a d x d inverse: the marginal log-density, the posterior of
z and the EM steps go through the k x k matrix A = I + W^T Psi^-1 W (Woodbury and the matrix
determinant lemma, ../shared/MATH.md), so a pass over n rows costs O(n d k).

Missing entries are given by a boolean ``mask`` (True = observed); the value stored at a missing
entry is never read. Each row then has its own A_n = I + W_o^T Psi_o^-1 W_o, formed for all rows
at once with one matrix product, and factorized with batched Cholesky.
"""

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2.0 * math.pi)
ROW_CHUNK = 4096  # rows per batch when each row carries its own k x k matrix
STREAM_CHUNK = 1024  # rows per batch in one-pass kernels: temporaries stay in cache
SCATTER_BLOCK = 128  # columns per block of the scatter matrix (see _centred_scatter)
# Largest |W_j|^2 / psi_j for which the Woodbury quadratic form loses no digits that matter:
# it loses about log10 of that ratio, of the 16 digits of float64 or the 7 of float32.
_CANCELLATION_RATIO = {torch.float64: 1e6, torch.float32: 1e2}
# EM's threshold on the gain of a cycle is tol times min(n, this): beyond it, the total
# log-likelihood (what likelihood ratios compare) must stop moving, not just the mean. At the
# default tol = 1e-5 that is 0.01 nats, scikit-learn FactorAnalysis's tol on the total; a per-
# sample threshold alone stopped short of it on many rows, and an iteration costs the same
# for any n.
_TOTAL_ROWS = 1000


# ---------------------------------------------------------------------- complete rows
def _cancels(W, psi):
    """Whether the Woodbury quadratic form would lose digits: some |W_j|^2 / psi_j is large.

    r^T Psi^-1 r - |L^-1 W^T Psi^-1 r|^2 subtracts two numbers of the size of the largest
    signal-to-noise ratio |W_j|^2 / psi_j times r^2: once that ratio is large (a noise variance
    at its floor, a column the factors explain exactly) digits cancel, about 5e-4 nats per row
    at psi = 1e-12 on standardized data. The same form written as
    min_z |Psi^-1/2 (r - W z)|^2 + |z|^2, a sum of non-negative terms, keeps them at the cost
    of one more product with W; it is used only where the cancellation would cost digits:
    beyond a ratio of 1e6 in float64, 1e2 in float32 (in float32 raw wine, whose ratio reaches
    5e5, lost 0.3 nats per row to it).
    """
    return bool(((W * W).sum(dim=1) / psi).max() > _CANCELLATION_RATIO.get(W.dtype, 1e2))


def _shared_factor(W, psi):
    """Psi^-1 W, the Cholesky factor of A = I + W^T Psi^-1 W, and log|C|."""
    scaled = W / psi[:, None]
    A = torch.eye(W.shape[1], dtype=W.dtype, device=W.device) + W.T @ scaled
    chol = torch.linalg.cholesky(A)
    logdet_C = torch.log(psi).sum() + 2.0 * torch.log(torch.diagonal(chol)).sum()
    return scaled, chol, logdet_C


def log_likelihood(X, mu, W, psi, chunk=STREAM_CHUNK):
    """log N(x; mu, W W^T + diag(psi)) for each row of a complete ``X``: shape (n,).

    Rows go in chunks so the temporaries stay small and each chunk is read from memory once.
    """
    scaled, chol, logdet_C = _shared_factor(W, psi)
    inv_psi = 1.0 / psi
    stable = _cancels(W, psi)  # then the quadratic form is a sum of squares (see _cancels)

    def quadratic(R):  # (x - mu)^T C^-1 (x - mu) per row; squares R in place
        c = torch.linalg.solve_triangular(chol, (R @ scaled).T, upper=False)
        if not stable:
            return R.square_() @ inv_psi - (c * c).sum(dim=0)
        z = torch.linalg.solve_triangular(chol.T, c, upper=True).T  # E[z | x], (rows, k)
        residual = torch.addmm(R, z, W.T, alpha=-1.0)  # r - W z
        return residual.square_() @ inv_psi + (z * z).sum(dim=1)

    out = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    constant = X.shape[1] * LOG_2PI + logdet_C
    for i in range(0, X.shape[0], chunk):
        out[i : i + chunk] = -0.5 * (constant + quadratic(X[i : i + chunk] - mu))
    overflowed = ~torch.isfinite(out)
    if bool(overflowed.any()):
        out[overflowed] = -0.5 * (constant + _rescaled(quadratic, X[overflowed] - mu))
    return out


def _rescaled(quadratic, R):
    """A quadratic form of rows whose squares overflow, as s^2 q(R / s) with s = max |R|.

    Far from the mean, x^2 / psi and the Woodbury correction both overflow and their
    difference is NaN although the form itself may be finite; scaling each row first gives
    it, or an honest infinity when it is beyond the float range. NaN or infinity in R stays
    NaN.
    """
    scale = R.abs().amax(dim=1)
    return quadratic(R / scale[:, None]) * scale.square()


def _linear_in_rows(linear, R):
    """``linear(R)`` for a map linear in each row of R; rows where it overflows (inf - inf
    is NaN) are computed as s linear(R / s) with s = max |R|: the value, or an honest
    infinity when it is beyond the float range."""
    out = linear(R)
    overflowed = ~torch.isfinite(out).all(dim=1) & torch.isfinite(R).all(dim=1)
    if bool(overflowed.any()):
        scale = R[overflowed].abs().amax(dim=1, keepdim=True)
        out[overflowed] = linear(R[overflowed] / scale) * scale
    return out


def posterior(X, mu, W, psi):
    """Mean (n, k) and shared covariance (k, k) of z | x for complete rows."""
    scaled, chol, _ = _shared_factor(W, psi)
    mean = _linear_in_rows(lambda R: torch.cholesky_solve((R @ scaled).T, chol).T, X - mu)
    return mean, torch.cholesky_inverse(chol)


def precision(W, psi):
    """C^-1 = Psi^-1 - Psi^-1 W A^-1 W^T Psi^-1 (d x d, formed only on request)."""
    scaled, chol, _ = _shared_factor(W, psi)
    half = torch.linalg.solve_triangular(chol, scaled.T, upper=False)
    return torch.diag(1.0 / psi) - half.T @ half


# ---------------------------------------------------------------------- rows with missing entries
def masked_posterior(X, mask, mu, W, psi):
    """Per-row posterior of z given the observed entries, and log p(x_o), for ``X`` with gaps.

    Returns ``mean`` (n, k), ``cov`` (n, k, k) and ``loglik`` (n,). A row with nothing observed
    gets the prior and log-likelihood 0 (the density of an empty observation).
    """
    n, d = X.shape
    k = W.shape[1]
    observed = mask.to(X.dtype)
    precision_obs = observed / psi  # 0 where missing
    R = torch.where(mask, X - mu, torch.zeros((), dtype=X.dtype, device=X.device))
    outer = (W[:, :, None] * W[:, None, :]).reshape(d, k * k)
    A = (precision_obs @ outer).reshape(n, k, k)
    A.diagonal(dim1=1, dim2=2).add_(1.0)
    chol = torch.linalg.cholesky(A)

    stable = _cancels(W, psi)

    def mean_and_quadratic(R, precision_obs, chol):
        b = (R * precision_obs) @ W
        mean = torch.cholesky_solve(b[:, :, None], chol)[:, :, 0]
        if stable:  # min_z |Psi_o^-1/2 (r_o - W_o z)|^2 + |z|^2, attained at the mean
            residual = torch.addmm(R, mean, W.T, alpha=-1.0)
            quadratic = (residual * residual * precision_obs).sum(dim=1)
            return mean, quadratic + (mean * mean).sum(dim=1)
        return mean, (R * R * precision_obs).sum(dim=1) - (b * mean).sum(dim=1)

    mean, quad = mean_and_quadratic(R, precision_obs, chol)
    cov = torch.cholesky_inverse(chol)
    logdet_C = (observed * torch.log(psi)).sum(dim=1) + 2.0 * torch.log(
        torch.diagonal(chol, dim1=1, dim2=2)
    ).sum(dim=1)
    overflowed = ~torch.isfinite(quad)
    if bool(overflowed.any()):
        args = precision_obs[overflowed], chol[overflowed]
        quad[overflowed] = _rescaled(lambda R: mean_and_quadratic(R, *args)[1], R[overflowed])
    overflowed = ~torch.isfinite(mean).all(dim=1)  # inf - inf in b: scaled like quad
    if bool(overflowed.any()):
        args = precision_obs[overflowed], chol[overflowed]
        scale = R[overflowed].abs().amax(dim=1, keepdim=True)
        mean[overflowed] = mean_and_quadratic(R[overflowed] / scale, *args)[0] * scale
    loglik = -0.5 * (observed.sum(dim=1) * LOG_2PI + logdet_C + quad)
    return mean, cov, loglik


def chunked_masked_posterior(X, mask, mu, W, psi, chunk=ROW_CHUNK):
    """:func:`masked_posterior` over row chunks, so memory stays O(chunk k^2)."""
    parts = [
        masked_posterior(X[i : i + chunk], mask[i : i + chunk], mu, W, psi)
        for i in range(0, X.shape[0], chunk)
    ]
    return tuple(torch.cat(p) for p in zip(*parts))


# ---------------------------------------------------------------------- EM
@dataclass
class Params:
    """Parameters of the model that EM moves: loadings, noise variances and (with gaps) mean."""

    W: torch.Tensor
    psi: torch.Tensor
    mu: torch.Tensor

    def flat(self, scale=1.0):
        """All parameters in one vector, noise variances on the log scale (free of constraint).

        Loadings and mean are divided by ``scale`` (the data's standard deviation), so that the
        vector, and the SQUAREM step length taken from it, is the same for c X as for X.
        """
        return torch.cat([self.W.reshape(-1) / scale, torch.log(self.psi), self.mu / scale])

    def like(self, flat, scale=1.0):
        d, k = self.W.shape
        log_psi = flat[d * k : d * k + d]
        return Params(flat[: d * k].reshape(d, k) * scale, torch.exp(log_psi),
                      flat[d * k + d :] * scale)


def _finish_noise(psi_new, isotropic, floor, weights=None):
    if isotropic:
        if weights is None:
            value = psi_new.mean()
        else:
            value = (psi_new * weights).sum() / weights.sum()
        psi_new = value.expand_as(psi_new).clone()
    return psi_new.clamp_min(floor)


def em_step_stats(S, n, params, *, isotropic, floor):
    """One EM step on the covariance ``S`` (complete data; mu is the sample mean).

    Returns the total log-likelihood at ``params`` and the updated parameters. Cost O(d^2 k),
    whatever the number of rows (Rubin & Thayer 1982; for PPCA, Tipping & Bishop 1999).

    When some |W_j|^2 / psi_j is large (a noise variance at its floor), tr(C^-1 S) by Woodbury
    is a difference of two numbers ~1/psi_j times larger than it (see :func:`_cancels`), and so
    is diag(S) - diag(W' B S) for the new noise. Both are then computed as sums of squares from
    a factor S = F^T F (``S.root_rows()``, one eigendecomposition per fit), whose rows play the
    part of data rows: with Z = F B^T their posterior means,
    tr(C^-1 S) = sum |Psi^-1/2 (F - Z W^T)|^2 + |Z|^2 and
    psi'_j = sum_m (F_mj - Z_m W'_j)^2 + W'_j G W'_j^T. The whole step then uses F^T F in place
    of S, so each evaluation is exact for the same matrix and EM stays monotone to rounding.
    """
    W, psi = params.W, params.psi
    d, k = W.shape
    scaled, chol, logdet_C = _shared_factor(W, psi)
    G = torch.cholesky_inverse(chol)
    B = G @ scaled.T  # k x d
    stable = _cancels(W, psi)
    if stable:
        F = S.root_rows()  # (m, d), S = F^T F
        Z = F @ B.T  # (m, k)
        SBt = F.T @ Z  # d x k
        residual = torch.addmm(F, Z, W.T, alpha=-1.0)
        trace_CinvS = (residual.square().sum(dim=0) / psi).sum() + Z.square().sum()
    else:
        SBt = S @ B.T  # d x k
        trace_CinvS = (S.diagonal() / psi).sum() - (SBt * scaled).sum()
    loglik = -0.5 * n * (d * LOG_2PI + logdet_C + trace_CinvS)
    Ezz = G + B @ SBt
    W_new = torch.linalg.solve(Ezz, SBt.T).T  # S B^T Ezz^-1 (Ezz symmetric)
    if stable:
        residual = torch.addmm(F, Z, W_new.T, alpha=-1.0)
        psi_new = residual.square().sum(dim=0) + ((W_new @ G) * W_new).sum(dim=1)
    else:
        psi_new = S.diagonal() - (W_new * SBt).sum(dim=1)
    psi_new = _finish_noise(psi_new, isotropic, floor)
    return loglik, Params(W_new, psi_new, params.mu)


def em_step_masked(X, mask, params, *, isotropic, floor, chunk=ROW_CHUNK):
    """One EM step with missing entries; mean, loadings and noise move together.

    E-step per row over its observed coordinates; M-step per feature j over the rows where j is
    observed, regressing x_j on [E z; 1] (../shared/MATH.md). Everything is accumulated from the
    residuals r = x - mu at the current mean, and the regression gives [W_j, mu'_j - mu_j]: sums
    of raw x and x^2 would lose every digit to a large common offset (timestamps, say), in
    float32 already near 1e3. Returns the observed-data log-likelihood at ``params`` and the
    updated parameters.
    """
    W, psi, mu = params.W, params.psi, params.mu
    d, k = W.shape
    dtype, device = X.dtype, X.device
    zero = torch.zeros((), dtype=dtype, device=device)
    loglik = torch.zeros((), dtype=dtype, device=device)
    cross = torch.zeros(d, k + 1, dtype=dtype, device=device)  # sum_n o r [m; 1]^T
    second = torch.zeros(d, (k + 1) ** 2, dtype=dtype, device=device)  # sum_n o E[[z;1][z;1]^T]
    sum_sq = torch.zeros(d, dtype=dtype, device=device)  # sum_n o r^2
    for i in range(0, X.shape[0], chunk):
        Mc = mask[i : i + chunk]
        R = torch.where(Mc, X[i : i + chunk] - mu, zero)
        mean, cov, ll = masked_posterior(R, Mc, zero.expand(d), W, psi)
        loglik = loglik + ll.sum()
        ez = torch.cat([mean, torch.ones_like(mean[:, :1])], dim=1)
        ezz = ez[:, :, None] * ez[:, None, :]
        ezz[:, :k, :k] += cov
        cross += R.T @ ez
        second += Mc.to(dtype).T @ ezz.reshape(-1, (k + 1) ** 2)
        sum_sq += (R * R).sum(dim=0)
    second = second.reshape(d, k + 1, k + 1)
    theta = torch.linalg.solve(second, cross[:, :, None])[:, :, 0]  # rows [W_j, mu'_j - mu_j]
    counts = mask.sum(dim=0).to(dtype)
    residual = sum_sq - (theta * cross).sum(dim=1)  # sum over observed rows of E[(x - W z - mu')^2]
    residual = residual.clamp_min(0)
    if isotropic:
        psi_new = _finish_noise(residual / counts, True, floor, weights=counts)
    else:
        psi_new = _finish_noise(residual / counts, False, floor)
    return loglik, Params(theta[:, :k].contiguous(), psi_new, mu + theta[:, k])


def run_em(step, params, *, n, max_iter, tol, accelerate=True, floor, variances=None,
           report=None):
    """Iterate ``step`` (params -> (loglik at params, next params)) to convergence.

    With ``accelerate``, SQUAREM (Varadhan & Roland 2008): from theta0, two EM steps give theta1
    and theta2 and define a direction; an extrapolated point is taken along it (noise variances
    on the log scale, so they stay positive) and kept only if its log-likelihood beats theta2's
    (../shared/MATH.md), so the recorded log-likelihoods never decrease. Each recorded point
    counts as one iteration (a rejected jump is not recorded).

    Stopping is measured over a whole cycle (two EM steps and the jump): EM stops when the gain
    of the last cycle is below ``tol`` per sample, counting at most ``_TOTAL_ROWS`` samples
    (so on more rows the total gain must be below 1000 tol), and so is a geometric extrapolation of all the gain left, g^2 / (g_prev - g),
    which on a slowly converging fit is much larger than the last gain. A decrease within
    rounding noise (:func:`_rounding_noise`) means the optimum is reached; a larger one stops
    EM with the status "decreased" for the caller to report. ``variances`` (d,), the feature
    variances, size that noise where a noise variance is tiny.

    ``report``, if given, is called with each recorded log-likelihood (a float) as it is
    recorded, e.g. to print progress.

    Returns ``(params, loglikes, status)``: the parameters reached, the log-likelihoods (totals)
    of every recorded point in order, and "converged", "max_iter" or "decreased".
    """
    eps = torch.finfo(params.W.dtype).eps
    threshold = tol * min(n, _TOTAL_ROWS)
    scale = 1.0 if variances is None else math.sqrt(float(variances.mean())) or 1.0

    def noise(value, p):  # rounding noise of a log-likelihood summed over n rows and d features
        return _rounding_noise(value, n, p, variances, eps)

    loglikes = _Recorded(report)
    ll, nxt = step(params)
    loglikes.append(float(ll))
    if not math.isfinite(loglikes[-1]):
        return params, list(loglikes), "converged"  # the caller rejects a non-finite one
    previous_gain = math.inf
    while True:
        start = loglikes[-1]
        theta0, theta1 = params, nxt
        for _ in range(2):  # theta1, then theta2: their log-likelihoods and EM images
            if len(loglikes) >= max_iter:
                return nxt, list(loglikes), "max_iter"
            ll, following = step(nxt)
            ll = float(ll)
            if not ll >= loglikes[-1]:  # also NaN
                if math.isfinite(ll) and loglikes[-1] - ll <= noise(ll, nxt):
                    return params, list(loglikes), "converged"  # at the optimum, up to rounding
                return params, list(loglikes), "decreased"
            loglikes.append(ll)
            params, nxt = nxt, following
        theta2 = params
        if accelerate and len(loglikes) < max_iter:
            params, nxt = _squarem_jump(step, theta0, theta1, theta2, nxt, loglikes, floor, scale)
        gain = loglikes[-1] - start
        if gain < threshold and (
            gain <= noise(loglikes[-1], params) or gain * gain <= threshold * (previous_gain - gain)
        ):
            return nxt, list(loglikes), "converged"
        previous_gain = gain


def _rounding_noise(value, n, params, variances, eps):
    """How far rounding can move an EM log-likelihood ``value`` (total over ``n`` rows).

    Each of the d features contributes terms of relative error ~eps. In the Woodbury form the
    terms s_jj / psi_j (``variances`` = s_jj) cancel down to the answer, so they carry errors
    of eps s_jj / psi_j each. Where that would cost digits the steps switch to sums of squares
    (:func:`_cancels`), whose error is a residual times its rounding, bounded by
    eps sqrt(sum_j s_jj / psi_j) times sqrt(d) (Cauchy-Schwarz, about d being the size of the
    form): at psi = 1e-12 on standardized data about 1e-9 per row, not 1e-3.
    """
    d = params.W.shape[0]
    spread = float(d)
    if variances is not None:
        ratios = float((variances / params.psi).sum())
        spread += math.sqrt(d * ratios) if _cancels(params.W, params.psi) else ratios
    return 100.0 * eps * (abs(value) + n * spread)


def _squarem_jump(step, theta0, theta1, theta2, following, loglikes, floor, scale):
    """The extrapolated point and its EM image if it beats theta2, else theta2 and its image.

    ``following`` is F(theta2) and ``loglikes[-1]`` the log-likelihood of theta2; an accepted
    jump's log-likelihood is appended to ``loglikes``.
    """
    base = theta0.flat(scale)
    r = theta1.flat(scale) - base
    v = theta2.flat(scale) - 2.0 * theta1.flat(scale) + base
    alpha = -torch.linalg.vector_norm(r) / torch.linalg.vector_norm(v).clamp_min(1e-300)
    alpha = float(torch.clamp(alpha, max=-1.0))
    while alpha < -1.0:
        jump = theta0.like(base - 2.0 * alpha * r + alpha * alpha * v, scale)
        jump.psi = jump.psi.clamp_min(floor)
        try:
            ll_jump, image = step(jump)
        except torch.linalg.LinAlgError:  # the jump left the region where A factorizes
            ll_jump = torch.tensor(float("nan"))
        if torch.isfinite(ll_jump) and float(ll_jump) > loglikes[-1]:
            loglikes.append(float(ll_jump))
            return jump, image
        alpha = (alpha - 1.0) / 2.0  # overshot: halve the distance to the plain EM point
        if alpha > -1.01:
            break
    return theta2, following


class _Recorded(list):
    """A list of log-likelihoods that hands each appended value to ``report`` (if not None)."""

    def __init__(self, report=None):
        super().__init__()
        self._report = report

    def append(self, value):
        super().append(value)
        if self._report is not None:
            self._report(value)


def profile_iterations(S, n, psi, k, *, floor, max_iter, tol, report=None):
    """Factor analysis iterations that maximize over W exactly for the current Psi.

    Given Psi, the best W is Psi^1/2 U_k (L_k - I)^1/2 with (L, U) the eigenpairs of
    Psi^-1/2 S Psi^-1/2; Psi then becomes diag(S - W W^T), floored. This is the fixed point
    iteration of scikit-learn's FactorAnalysis, done on the covariance ``S`` (dense or low
    rank, see ``_moments``) instead of the data. It moves fast from a poor start but is not guaranteed to be monotone, so it stops at
    the first decrease (keeping the best point), or when a step gains less than ``tol`` per
    sample. Returns W, Psi and the log-likelihoods of the points kept (each also handed to
    ``report``, if given, as it is kept).
    """
    d = S.shape[0]
    diag = S.diagonal()
    loglikes, best = _Recorded(report), None
    for _ in range(max_iter):
        root = torch.sqrt(psi)
        eigvals, eigvecs = _at_least(*S.scaled_eigh(root), k)
        kept = eigvals[:k].clamp_min(1.0)
        # log|C| = sum log psi + sum log kept; tr(C^-1 S) = sum eig/kept + the discarded eig
        loglik = -0.5 * n * (
            d * LOG_2PI + torch.log(psi).sum() + torch.log(kept).sum()
            + (eigvals[:k] / kept).sum() + eigvals[k:].sum()
        )
        loglik = float(loglik)
        if loglikes and not loglik > loglikes[-1]:
            break
        W = root[:, None] * eigvecs[:, :k] * torch.sqrt(kept - 1.0)
        loglikes.append(loglik)
        best = (W, psi)
        if len(loglikes) > 1 and loglikes[-1] - loglikes[-2] < tol * n:
            break
        psi = (diag - (W * W).sum(dim=1)).clamp_min(floor)
    return best[0], best[1], list(loglikes)


def _at_least(eigvals, eigvecs, k):
    """Eigenpairs of a low-rank matrix padded with zero pairs up to ``k`` (descending order).

    A zero eigenvalue gets no loading in the profile step, so the padded vectors never matter.
    """
    missing = k - eigvals.shape[0]
    if missing <= 0:
        return eigvals, eigvecs
    return (torch.cat([eigvals, eigvals.new_zeros(missing)]),
            torch.cat([eigvecs, eigvecs.new_zeros(eigvecs.shape[0], missing)], dim=1))


# ---------------------------------------------------------------------- sufficient statistics
def _centred_scatter(X, mean, chunk, block_width=SCATTER_BLOCK):
    """sum (x - mean)(x - mean)^T over the rows of X, computing only the upper block triangle.

    A plain ``centred.T @ centred`` does every product twice (torch has no symmetric rank-k
    update): with the columns cut into blocks of about ``block_width``, only the blocks on and
    above the diagonal are formed, then mirrored, which saves up to half the work when d is
    large. The result is exactly symmetric.
    """
    d = X.shape[1]
    n_blocks = max(1, -(-d // block_width))
    edges = [round(i * d / n_blocks) for i in range(n_blocks + 1)]
    scatter = torch.zeros(d, d, dtype=mean.dtype, device=X.device)
    for i in range(0, X.shape[0], chunk):
        centred = X[i : i + chunk] - mean  # in mean's precision, chunk by chunk
        for a, b in zip(edges[:-1], edges[1:]):
            scatter[a:b, a:].addmm_(centred[:, a:b].T, centred[:, a:])
    upper = torch.triu(scatter)
    return upper + torch.triu(scatter, diagonal=1).T


def ppca_from_eigen(eigvals, eigvecs, n_components, floor):
    """Tipping & Bishop's closed form from eigenpairs of S (eigenvalues descending).

    ``eigvals`` may be shorter than d (when taken from an SVD of n < d rows); the missing ones
    are zero. Returns W (d, k) and the noise variance sigma2 (a 0-d tensor).
    """
    d = eigvecs.shape[0]
    k = n_components
    discarded = eigvals[k:].clamp_min(0).sum()
    sigma2 = (discarded / (d - k)).clamp_min(floor)
    scale = torch.sqrt((eigvals[:k] - sigma2).clamp_min(0))
    return eigvecs[:, :k] * scale, sigma2
