"""Test helpers shared by every test file: ``from helpers import assert_close, directional_gradcheck``.

(``tests/conftest.py`` puts this directory on ``sys.path`` and also provides the ``rng`` fixture.)

Tolerances, keyed by dtype, are relative to the scale of the expected values (their largest magnitude):

* float64: ``1e-10``. Two correct float64 computations of a sum of K products differ by about
  ``sqrt(K) * 1e-16`` of the scale (different summation orders); 1e-10 leaves a million-fold margin
  and still catches any indexing mistake, which is an O(1) error.
* float32: ``1e-4``. float32 carries ~7 digits (eps 1.2e-7); comparing a float32 result with a float64
  reference adds the rounding of the inputs, so errors of ~sqrt(K) * 1e-7 are normal for our small K.
"""
import numpy as np

TOLERANCES = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def assert_close(actual, expected, dtype):
    """Assert ``max|actual - expected| <= TOLERANCES[dtype] * max|expected|`` and equal shapes.

    ``actual`` must also *have* dtype ``dtype`` (kernels compute in their input's dtype); ``expected``
    may be float64 (e.g. a PyTorch fixture) when ``actual`` is float32.
    """
    dtype = np.dtype(dtype)
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == dtype, f"result has dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    scale = float(np.max(np.abs(expected), initial=0.0))
    error = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    tolerance = TOLERANCES[dtype] * scale
    assert error <= tolerance, (f"max abs error {error:.3g} > {TOLERANCES[dtype]:g} x scale {scale:.3g} "
                                f"({dtype}, shape {actual.shape})")


def directional_gradcheck(f, x, grad, eps=1e-6, rng=None):
    """Compare an analytic gradient with central differences along one random direction.

    Parameters
    ----------
    f : callable, float64 array of ``x``'s shape -> scalar (e.g. ``lambda x: np.vdot(g, conv(x))``)
    x : float64 array, the point
    grad : the analytic gradient df/dx at ``x`` (same shape)
    eps : step
    rng : numpy Generator for the direction (default: seeded, so the check is reproducible)

    Returns
    -------
    (analytic, numeric) : ``vdot(grad, v)`` and ``(f(x + eps v) - f(x - eps v)) / (2 eps)`` for a
    standard-normal direction ``v``. Assert they agree to ~1e-6 relative; the central difference is
    exact for linear functions (convolutions), up to rounding of order ``1e-16 * |f| / eps``.
    """
    rng = np.random.default_rng(12345) if rng is None else rng
    x = np.asarray(x, dtype=np.float64)
    v = rng.standard_normal(x.shape)
    analytic = float(np.vdot(np.asarray(grad, dtype=np.float64), v))
    numeric = float((f(x + eps * v) - f(x - eps * v)) / (2 * eps))
    return analytic, numeric
