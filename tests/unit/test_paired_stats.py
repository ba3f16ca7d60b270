"""Known-answer tests of the paired statistics against scipy and brute-force enumeration."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from mecharule.paired_stats import (
    TEST_NAMES,
    bootstrap_mean_ci,
    holm,
    paired_tests,
    sign_flip_test,
    sign_test,
)


def _brute_force_sign_flip(d: np.ndarray) -> float:
    """Share of all 2^n sign assignments with |Σ ±d| ≥ |Σ d|, in exact rational arithmetic."""
    values = [Fraction(repr(float(v))) for v in d]  # 0.6 -> 3/5: ties are exact, not float-rounded
    observed = abs(sum(values))
    signs = itertools.product((-1, 1), repeat=len(values))
    hits = sum(abs(sum(s * v for s, v in zip(ss, values, strict=True))) >= observed for ss in signs)
    return hits / 2 ** len(values)


def test_sign_test_ignores_zeros_and_matches_binomtest() -> None:
    d = np.array([3, 1, 0, 2, -1, 0, 4, 5, 2, 1], dtype=float)  # 7 positive, 1 negative, 2 zeros
    assert sign_test(d) == pytest.approx(stats.binomtest(7, 8, 0.5).pvalue, rel=1e-12)
    assert sign_test(np.array([-2.0, -1.0, -3.0, 0.0])) == pytest.approx(stats.binomtest(0, 3).pvalue)
    assert sign_test(np.zeros(4)) == 1.0


@pytest.mark.parametrize(
    "d",
    [
        [0.1, 0.2, 0.3, -0.3, 0.5, 0.5, -0.1, 0.7],  # ties in magnitude
        [-0.6, 0.6, 0.3, 0.8, 0.2, 0.9, 0.4],  # other sums equal the observed one only up to float rounding
        [3.0, -1.0, 2.0, 2.0, -2.0, 1.0, 4.0, 0.0, 1.0],  # integer ties and a zero
        [1.0, -1.0, 1.0, -1.0],  # observed sum 0: p = 1
    ],
)
def test_exact_sign_flip_equals_brute_force(d: list[float]) -> None:
    p, exact = sign_flip_test(np.array(d), np.random.default_rng(0))
    assert exact
    assert p == pytest.approx(_brute_force_sign_flip(np.array(d)[np.array(d) != 0]), abs=1e-12)


def test_exact_sign_flip_at_22_equal_differences_is_two_over_2_to_the_m() -> None:
    p, exact = sign_flip_test(np.full(22, 0.7), np.random.default_rng(0))
    assert exact
    assert p == 2 / 2**22


def test_monte_carlo_sign_flip_with_equal_differences_gives_one_over_n_plus_one() -> None:
    p, exact = sign_flip_test(np.full(25, 1.5), np.random.default_rng(3), n_resamples=10_000)
    assert not exact
    assert p == pytest.approx(1 / 10_001)


def test_monte_carlo_sign_flip_agrees_with_exact_at_22() -> None:
    d = np.random.default_rng(11).normal(0.25, 1.0, size=22)
    p_exact, exact = sign_flip_test(d, np.random.default_rng(0))
    p_mc, mc_exact = sign_flip_test(d, np.random.default_rng(1), exact_max=21)
    assert exact and not mc_exact
    assert 0.02 < p_exact < 0.98  # a case where the comparison is informative
    assert p_mc == pytest.approx(p_exact, abs=0.01)


def test_holm_known_answer_and_cap() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.2, 0.5, 0.01, 0.9])
    assert adjusted == pytest.approx([0.6, 1.0, 0.04, 1.0])
    assert holm([]) == []
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, 1.5])


def test_holm_is_monotone_in_the_raw_p_values() -> None:
    p = np.random.default_rng(5).uniform(0, 0.2, size=12)
    adjusted = np.array(holm(list(p)))
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1.0)


def test_holm_matches_statsmodels() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = list(np.random.default_rng(2).uniform(0, 0.1, size=9))
    expected = multitest.multipletests(p, method="holm")[1]
    assert holm(p) == pytest.approx(list(expected))


def test_bootstrap_ci_matches_scipy_and_contains_the_mean() -> None:
    d = np.array([0.1, 0.9, 0.2, 3.5, -0.4, 0.3, 7.0, 0.05, 1.2, -0.6])  # skewed: BCa != percentile
    ci = bootstrap_mean_ci(d, np.random.default_rng(7), n_resamples=2_000)
    reference = stats.bootstrap(
        (d,), np.mean, n_resamples=2_000, confidence_level=0.95, method="BCa", rng=np.random.default_rng(7)
    ).confidence_interval
    assert ci == pytest.approx((reference.low, reference.high), rel=1e-12)
    assert ci is not None and ci[0] < d.mean() < ci[1]


def test_bootstrap_ci_edge_cases() -> None:
    rng = np.random.default_rng(0)
    assert bootstrap_mean_ci(np.array([1.0]), rng) is None
    assert bootstrap_mean_ci(np.array([]), rng) is None
    assert bootstrap_mean_ci(np.array([0.5, 0.5, 0.5]), rng) == (0.5, 0.5)


def test_paired_tests_drop_unknown_pairs_and_count_directions() -> None:
    x = [5.0, 3.0, None, 2.0, math.nan, 4.0, 1.0]
    y = [1.0, 3.0, 2.0, None, 1.0, 2.0, 2.0]
    (result,) = paired_tests("sweep search.tau", [("agonists: tau=0.2 vs baseline", x, y)])
    assert (result.n, result.n_greater, result.n_less) == (4, 2, 1)
    assert result.mean_x == pytest.approx(13 / 4) and result.mean_y == pytest.approx(8 / 4)
    assert result.mean_difference == pytest.approx(5 / 4)
    assert result.sign_p == pytest.approx(stats.binomtest(2, 3).pvalue)
    d = np.array([4.0, 2.0, -1.0])
    assert result.signflip_p == pytest.approx(_brute_force_sign_flip(d)) and result.signflip_exact


def test_paired_tests_reject_mismatched_lengths_naming_the_comparison() -> None:
    with pytest.raises(ValueError, match=r"tau=0\.5"):
        paired_tests("sweep", [("ok", [1.0], [2.0]), ("tau=0.5", [1.0, 2.0], [1.0])])


def _family() -> list[tuple[str, list[float | None], list[float | None]]]:
    rng = np.random.default_rng(4)
    base = rng.poisson(5, size=30).astype(float)
    return [
        (f"tau={tau}", list(base + rng.integers(-2, 3, size=30) + shift), list(base))
        for tau, shift in [(0.1, 0), (0.2, 1), (0.5, 2)]
    ]


def test_paired_tests_apply_holm_across_the_family() -> None:
    results = paired_tests("sweep search.tau", _family(), seed=1)
    assert [r.sign_p_holm for r in results] == pytest.approx(holm([r.sign_p for r in results]))
    assert [r.signflip_p_holm for r in results] == pytest.approx(holm([r.signflip_p for r in results]))
    assert any(r.sign_p_holm > r.sign_p for r in results)  # the adjustment did something


def test_paired_tests_are_reproducible_and_independent_of_the_others() -> None:
    family = _family()
    first = paired_tests("sweep", family, seed=3)
    assert paired_tests("sweep", family, seed=3) == first
    other = paired_tests("sweep", [family[0], ("other", [1.0, 2.0, 9.0], [0.0, 0.0, 0.0])], seed=3)
    assert (other[0].ci_low, other[0].ci_high) == (first[0].ci_low, first[0].ci_high)
    assert paired_tests("sweep", family, seed=4)[0].ci_low != first[0].ci_low
    twice = paired_tests("sweep", [family[1], family[1]], seed=3)
    assert twice[0].ci_low != twice[1].ci_low  # each comparison has its own stream


def test_as_row_is_flat_names_the_tests_and_rounds_p_values() -> None:
    (result,) = paired_tests("f", [("c", [1.0, 2.0, 3.0, 4.0, 6.0], [0.0, 0.0, 1.0, 5.0, 1.0])])
    row = result.as_row()
    assert row["tests"] == TEST_NAMES and "sign test" in TEST_NAMES and "Holm" in TEST_NAMES
    assert row["sign_p"] == float(f"{result.sign_p:.4g}") and row["name"] == "c"
    assert all(not isinstance(v, dict | list | tuple) for v in row.values())
