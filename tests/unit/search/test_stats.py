"""Exact binomial bounds: agreement with scipy's beta quantiles, edge cases, reference values, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import beta, binom

from mecharule.errors import ConfigError, DataError
from mecharule.search.stats import adjusted_epsilon, contrast_lower_bound, cp_lower, cp_upper

ALPHA = 0.025


@pytest.mark.parametrize("n", [1, 2, 10, 64, 200])
def test_cp_bounds_match_scipy_beta_quantiles(n: int) -> None:
    k = np.arange(1, n)  # interior counts; edges are checked separately
    np.testing.assert_allclose(cp_upper(k, n, ALPHA), beta.ppf(1 - ALPHA, k + 1, n - k), rtol=1e-10)
    np.testing.assert_allclose(cp_lower(k, n, ALPHA), beta.ppf(ALPHA, k, n - k + 1), rtol=1e-10)


@pytest.mark.parametrize("n", [1, 7, 64, 1000])
def test_cp_edge_cases_are_exact(n: int) -> None:
    assert cp_upper(0, n, ALPHA) == 1.0 - ALPHA ** (1.0 / n)
    assert cp_upper(n, n, ALPHA) == 1.0
    assert cp_lower(0, n, ALPHA) == 0.0
    assert cp_lower(n, n, ALPHA) == ALPHA ** (1.0 / n)


def test_empty_slice_carries_no_information() -> None:
    assert cp_upper(0, 0, ALPHA) == 1.0
    assert cp_lower(0, 0, ALPHA) == 0.0


@pytest.mark.parametrize(("k", "expected"), [(0, 0.056), (6, 0.193), (7, 0.2125), (8, 0.23), (13, 0.32)])
def test_reference_values_for_64_prompts(k: int, expected: float) -> None:
    assert cp_upper(k, 64, ALPHA) == pytest.approx(expected, abs=2.5e-3)


def test_seven_of_64_is_the_reference_strength_threshold() -> None:
    uppers = np.asarray(cp_upper(np.arange(65), 64, ALPHA))
    assert int(np.argmax(uppers >= 0.2)) == 7


def test_vectorised_broadcast_and_scalar_return_types() -> None:
    out = cp_upper(np.array([[0, 1], [2, 3]]), np.array([4, 5]), ALPHA)
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)
    assert isinstance(cp_upper(3, 10, ALPHA), float)
    assert isinstance(cp_lower(np.int64(3), np.int64(10), ALPHA), float)


@given(st.integers(0, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_bounds_bracket_the_point_estimate_and_grow_with_k(kn: tuple[int, int]) -> None:
    k, n = kn
    rate = k / n if n else 0.0
    lo, hi = cp_lower(k, n, ALPHA), cp_upper(k, n, ALPHA)
    assert 0.0 <= lo <= rate <= hi <= 1.0
    if k < n:
        assert cp_upper(k + 1, n, ALPHA) > hi and cp_lower(k + 1, n, ALPHA) > lo


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2, 0.5, 0.9])
def test_one_sided_coverage_is_at_least_1_minus_alpha(p: float) -> None:
    n = 40
    k = np.arange(n + 1)
    pmf = binom.pmf(k, n, p)
    assert pmf[np.asarray(cp_upper(k, n, ALPHA)) < p].sum() <= ALPHA + 1e-12
    assert pmf[np.asarray(cp_lower(k, n, ALPHA)) > p].sum() <= ALPHA + 1e-12


def test_invalid_inputs_raise_errors_that_name_the_problem() -> None:
    with pytest.raises(DataError, match="0 <= k <= n"):
        cp_upper(5, 4, ALPHA)
    with pytest.raises(DataError):
        cp_lower(-1, 4, ALPHA)
    with pytest.raises(DataError):
        cp_upper(1.5, 4, ALPHA)
    with pytest.raises(ConfigError, match="alpha"):
        cp_upper(1, 4, 1.5)
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        cp_lower(1, 4, 0.0)


def test_adjusted_epsilon_is_a_no_op_at_64_prompts() -> None:
    assert adjusted_epsilon(0.2, 64) == 0.2
    assert adjusted_epsilon(0.2, (64, 64)) == 0.2


def test_adjusted_epsilon_raises_tau_for_small_slices() -> None:
    # k_ref = 6 of 64; at n = 32 the same share is ceil(3.0) = 3 flips, whose upper bound exceeds 0.2.
    assert adjusted_epsilon(0.2, 32) == pytest.approx(float(cp_upper(3, 32, ALPHA)))
    assert adjusted_epsilon(0.2, 32) > 0.2
    assert adjusted_epsilon(0.2, (64, 32)) == adjusted_epsilon(0.2, 32)  # max over the slice sizes
    assert adjusted_epsilon(0.2, 256) == 0.2  # larger slices never lower tau


def test_adjusted_epsilon_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        adjusted_epsilon(1.2, 64)
    with pytest.raises(ConfigError):
        adjusted_epsilon(0.2, 64, n_ref=0)


def test_contrast_bound_is_lower_minus_upper_and_monotone() -> None:
    value = contrast_lower_bound(30, 64, 2, 64, ALPHA)
    assert value == pytest.approx(float(cp_lower(30, 64, ALPHA)) - float(cp_upper(2, 64, ALPHA)))
    assert contrast_lower_bound(31, 64, 2, 64, ALPHA) > value > contrast_lower_bound(30, 64, 3, 64, ALPHA)


def test_contrast_bound_is_negative_when_both_slices_flip_equally() -> None:
    for k in (7, 20, 40, 64):
        assert contrast_lower_bound(k, 64, k, 64, ALPHA) < 0.0


@pytest.mark.parametrize(("p_cov", "p_unr"), [(0.3, 0.1), (0.5, 0.5), (0.2, 0.0), (0.9, 0.6)])
def test_contrast_bound_covers_the_true_difference_with_probability_1_minus_2alpha(
    p_cov: float, p_unr: float
) -> None:
    n = 30
    k = np.arange(n + 1)
    joint = np.outer(binom.pmf(k, n, p_cov), binom.pmf(k, n, p_unr))
    bounds = np.asarray(contrast_lower_bound(k[:, None], n, k[None, :], n, ALPHA))
    assert joint[bounds > p_cov - p_unr].sum() <= 2 * ALPHA + 1e-12
