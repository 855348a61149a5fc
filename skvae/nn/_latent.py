"""Paths and densities in the latent space, on tensors: interpolation and mixture sampling."""

import torch

# Below this sine of the angle between two codes, slerp's weights lose their precision (the
# codes are (anti)parallel or one is zero) and the straight line is used instead.
_MIN_SINE = 1e-6


def interpolation_path(z_a, z_b, n_steps, method="slerp"):
    """``n_steps`` codes from ``z_a`` to ``z_b`` (both included), shape (n_steps, k).

    ``method="linear"`` gives (1 - t) z_a + t z_b at t = 0, 1 / (n_steps - 1), ..., 1.
    ``method="slerp"`` is the spherical interpolation recommended for Gaussian latent spaces by
    White (2016, "Sampling generative networks"):

        slerp(t) = sin((1 - t) w) / sin(w) z_a + sin(t w) / sin(w) z_b,

    with w the angle between z_a and z_b. It follows the great circle between the two
    directions, so when the endpoints have equal norms every step has that norm (a straight
    line would pass closer to the origin, where little prior mass lies in high dimensions).
    When sin(w) is (nearly) zero, i.e. the codes are parallel, opposite or one is zero, the
    direction is undefined and the straight line is returned.
    """
    if z_a.ndim != 1 or z_a.shape != z_b.shape:
        raise ValueError(f"expected two codes of shape (k,), got {tuple(z_a.shape)} and "
                         f"{tuple(z_b.shape)}")
    dtype = z_a.dtype
    # The angle in float64: its sine is what decides between the formulas.
    a, b = z_a.to(torch.float64), z_b.to(torch.float64)
    t = torch.linspace(0.0, 1.0, n_steps, dtype=torch.float64, device=z_a.device)[:, None]
    linear = (1.0 - t) * a + t * b
    if method == "linear":
        path = linear
    elif method == "slerp":
        norms = torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)
        if float(norms) == 0.0:
            path = linear
        else:
            cosine = torch.clamp(torch.dot(a, b) / norms, -1.0, 1.0)
            angle = torch.arccos(cosine)
            sine = torch.sin(angle)
            if float(sine) < _MIN_SINE:
                path = linear
            else:
                path = (torch.sin((1.0 - t) * angle) * a + torch.sin(t * angle) * b) / sine
    else:
        raise ValueError(f"method={method!r} must be 'slerp' or 'linear'")
    # The endpoints exactly, whatever the rounding of the weights.
    path[0], path[-1] = a, b
    return path.to(dtype)


def sample_gaussian_mixture(weights, means, cholesky, eps, generator):
    """Draws from sum_c weights[c] N(means[c], L_c L_c^T), one per row of ``eps``.

    ``weights`` (m,), ``means`` (m, k), ``cholesky`` (m, k, k) lower triangular factors of the
    covariances, ``eps`` (n, k) standard normal noise; ``generator`` picks the components.
    Returns (n, k) in the dtype of ``eps``.
    """
    component = torch.multinomial(weights, eps.shape[0], replacement=True, generator=generator)
    L = cholesky.index_select(0, component)
    z = means.index_select(0, component) + (L @ eps.to(L.dtype)[:, :, None])[:, :, 0]
    return z.to(eps.dtype)
