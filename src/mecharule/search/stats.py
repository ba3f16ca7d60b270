"""Exact binomial bounds used by the group-testing search (no torch, no approximation).

All bounds are one-sided Clopper–Pearson bounds on a flip rate ``p`` from ``k`` flips out of ``n``
prompts, at level ``alpha`` (the probability that the true rate lies beyond the bound is at most
``alpha``):

* upper ``U(k, n)``: ``Beta⁻¹(1 − α; k + 1, n − k)``, with the exact edge cases
  ``U(0, n) = 1 − α^{1/n}`` and ``U(n, n) = 1``;
* lower ``L(k, n)``: ``Beta⁻¹(α; k, n − k + 1)``, with ``L(0, n) = 0`` and ``L(n, n) = α^{1/n}``.

An empty slice (``n = 0``) carries no information: ``U = 1`` and ``L = 0``.

The contrastive test (:func:`contrast_lower_bound`) is the *Bonferroni box* bound on the difference
of two independent proportions, ``δ_covered − δ_unrelated ≥ L(k_c, n_c) − U(k_u, n_u)``. Each side
holds with probability ≥ 1 − α, so the difference bound holds with probability ≥ 1 − 2α: with the
reference's α_slice = 0.025 per slice it is a valid one-sided 95 % lower confidence bound on the
selectivity. It is exact (no normal approximation, valid at k = 0 and small n), conservative, and
monotone: it increases with ``k_c`` and decreases with ``k_u``. Newcombe's hybrid score interval
would be narrower but is approximate; we prefer a bound whose coverage is guaranteed at n = 64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import betaincinv

from mecharule.errors import ConfigError, DataError

__all__ = ["adjusted_epsilon", "contrast_lower_bound", "cp_lower", "cp_upper"]


def _check_alpha(alpha: float) -> None:
    """Reject a significance level outside the open interval (0, 1)."""
    if not (isinstance(alpha, int | float) and 0.0 < float(alpha) < 1.0):
        raise ConfigError(f"alpha must be a float in (0, 1); got {alpha!r}. Typical: 0.025 per slice.")


def _counts(k: ArrayLike, n: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Broadcast ``k`` and ``n`` to float arrays after checking they are counts with 0 ≤ k ≤ n."""
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    bad = ~np.isfinite(k_arr) | ~np.isfinite(n_arr) | (k_arr != np.round(k_arr)) | (n_arr != np.round(n_arr))
    bad |= (k_arr < 0) | (k_arr > n_arr)
    if np.any(bad):
        raise DataError(
            f"flip counts must be integers with 0 <= k <= n; got k={np.asarray(k).tolist()!r}, "
            f"n={np.asarray(n).tolist()!r}"
        )
    return k_arr, n_arr


def _result(values: NDArray[np.float64]) -> float | NDArray[np.float64]:
    """Return a Python float for scalar input and the array otherwise."""
    return float(values) if values.ndim == 0 else values


def cp_upper(k: ArrayLike, n: ArrayLike, alpha: float) -> float | NDArray[np.float64]:
    """One-sided Clopper–Pearson upper bound of a rate from ``k`` successes in ``n`` trials.

    Vectorised over ``k`` and ``n`` (broadcast). ``cp_upper(7, 64, 0.025) ≈ 0.2125``.
    """
    _check_alpha(alpha)
    k_arr, n_arr = _counts(k, n)
    interior = (k_arr < n_arr) & (n_arr > 0)
    safe_b = np.where(interior, n_arr - k_arr, 1.0)
    general = betaincinv(k_arr + 1.0, safe_b, 1.0 - alpha)
    with np.errstate(divide="ignore"):
        at_zero = 1.0 - np.power(alpha, 1.0 / np.where(n_arr > 0, n_arr, 1.0))
    out = np.where(k_arr == 0, at_zero, general)
    out = np.where(interior, out, 1.0)
    return _result(np.asarray(out, dtype=np.float64))


def cp_lower(k: ArrayLike, n: ArrayLike, alpha: float) -> float | NDArray[np.float64]:
    """One-sided Clopper–Pearson lower bound of a rate from ``k`` successes in ``n`` trials.

    Vectorised over ``k`` and ``n`` (broadcast). ``cp_lower(0, n, α) = 0``; ``cp_lower(n, n, α) = α^{1/n}``.
    """
    _check_alpha(alpha)
    k_arr, n_arr = _counts(k, n)
    interior = (k_arr > 0) & (n_arr > 0)
    safe_a = np.where(interior, k_arr, 1.0)
    general = betaincinv(safe_a, n_arr - k_arr + 1.0, alpha)
    at_full = np.power(alpha, 1.0 / np.where(n_arr > 0, n_arr, 1.0))
    out = np.where(k_arr == n_arr, at_full, general)
    out = np.where(interior, out, 0.0)
    return _result(np.asarray(out, dtype=np.float64))


def contrast_lower_bound(
    covered_flips: ArrayLike,
    covered_n: ArrayLike,
    unrelated_flips: ArrayLike,
    unrelated_n: ArrayLike,
    alpha: float,
) -> float | NDArray[np.float64]:
    """Lower confidence bound on ``rate_covered − rate_unrelated``: ``L(covered) − U(unrelated)``.

    Each bound is taken at ``alpha``, so the result holds with probability ≥ 1 − 2·alpha (see the
    module docstring). Vectorised; lies in [−1, 1].
    """
    lower = np.asarray(cp_lower(covered_flips, covered_n, alpha))
    upper = np.asarray(cp_upper(unrelated_flips, unrelated_n, alpha))
    return _result(np.asarray(lower - upper, dtype=np.float64))


def _max_k_at_or_below(epsilon: float, n: int, alpha: float) -> int:
    """Largest ``k`` with ``cp_upper(k, n, alpha) ≤ epsilon`` (−1 when even ``k = 0`` exceeds it)."""
    uppers = np.asarray(cp_upper(np.arange(n + 1), n, alpha))
    below = np.flatnonzero(uppers <= epsilon)
    return int(below[-1]) if below.size else -1


def adjusted_epsilon(
    epsilon: float, n: int | Iterable[int], *, n_ref: int = 64, alpha: float = 0.025
) -> float:
    """The reference's slice-size adjustment of the strength threshold τ (REFERENCE-METHOD §8.3).

    ``k_ref`` is the largest flip count whose upper bound at ``n_ref`` prompts stays ≤ ``epsilon``
    (6 of 64 for τ = 0.2, α = 0.025). For an actual slice of ``n`` prompts, the same share
    ``k = ceil(k_ref / n_ref · n)`` is taken and its upper bound ``cp_upper(k, n, alpha)`` replaces
    ``epsilon`` if larger. So a slice smaller than ``n_ref`` does not make a group "strong" on fewer
    flips than the reference share. The reference passes both slice sizes; we take the largest
    adjusted value over all given ``n`` (our reading). ``adjusted_epsilon(0.2, (64, 64)) == 0.2``.
    """
    _check_alpha(alpha)
    if not 0.0 < epsilon < 1.0:
        raise ConfigError(f"epsilon (tau) must lie in (0, 1); got {epsilon!r}")
    if n_ref < 1:
        raise ConfigError(f"n_ref must be a positive prompt count; got {n_ref!r}")
    sizes = [n] if isinstance(n, int) else list(n)
    k_ref = _max_k_at_or_below(epsilon, n_ref, alpha)
    result = float(epsilon)
    for size in sizes:
        if size <= 0 or k_ref < 0:
            continue
        k = min(size, math.ceil(k_ref / n_ref * size))
        result = max(result, float(cp_upper(k, size, alpha)))
    return result
