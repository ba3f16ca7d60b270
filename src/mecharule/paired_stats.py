"""Paired tests of one experiment setting against a baseline on the same units (e.g. rules).

For each comparison ``(name, x, y)`` the pairs ``(x_i, y_i)`` with both values known are kept and
the differences ``d = x − y`` are tested three ways: an exact binomial sign test, a sign-flip
(paired permutation) test on ``|Σ d|``, and a bootstrap confidence interval of the mean
difference. The p-values of a family of comparisons (e.g. every value of one swept setting) are
Holm-adjusted, each test over the family separately. Every p-value is reported beside the name
of the test that produced it (:data:`TEST_NAMES`); all randomness comes from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from mecharule.errors import DataError

TEST_NAMES = (
    "exact binomial sign test (two-sided, nonzero differences); "
    "sign-flip permutation test on the sum (two-sided; exact up to 22 nonzero pairs, else Monte-Carlo); "
    "Holm across the family; bootstrap 95 % CI of the mean difference (BCa)"
)
_TIE_TOLERANCE = 1e-9  # relative to Σ|d|: sums this close to the observed one count as ties
_CHUNK_CELLS = 1 << 20  # Monte-Carlo sign matrices are drawn in blocks of about this many cells


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison ``x`` vs ``y`` of a family, with its raw and Holm-adjusted p-values."""

    family: str
    name: str
    n: int
    n_greater: int
    n_less: int
    mean_x: float | None
    mean_y: float | None
    mean_difference: float | None
    ci_low: float | None
    ci_high: float | None
    sign_p: float
    signflip_p: float
    signflip_exact: bool
    sign_p_holm: float
    signflip_p_holm: float

    def as_row(self) -> dict[str, object]:
        """A flat dict for a table: floats to 4 significant digits, plus the ``tests`` column."""
        row: dict[str, object] = {k: _sig(v) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return row | {"tests": TEST_NAMES}


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


def sign_test(differences: NDArray[np.float64]) -> float:
    """Two-sided exact binomial sign test of the nonzero differences (1.0 when there are none)."""
    d = np.asarray(differences, dtype=np.float64)
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 1.0
    positive = int(np.count_nonzero(nonzero > 0))
    return float(stats.binomtest(positive, int(nonzero.size), p=0.5, alternative="two-sided").pvalue)


def _signed_sums(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """All ``2^k`` sums ``Σ ±v_i`` of ``k`` values."""
    sums = np.zeros(1)
    for v in values:
        sums = np.concatenate([sums + v, sums - v])
    return sums


def _exact_count(magnitudes: NDArray[np.float64], threshold: float) -> int:
    """How many of the ``2^m`` sign assignments have ``|Σ ±a_i| ≥ threshold > 0`` (meet in the middle)."""
    half = magnitudes.size // 2
    left = _signed_sums(magnitudes[:half])
    right = np.sort(_signed_sums(magnitudes[half:]))
    at_least = right.size - np.searchsorted(right, threshold - left, side="left")
    at_most = np.searchsorted(right, -threshold - left, side="right")
    return int(at_least.sum() + at_most.sum())


def _monte_carlo_count(
    magnitudes: NDArray[np.float64], threshold: float, rng: np.random.Generator, n_resamples: int
) -> int:
    """How many of ``n_resamples`` random sign assignments reach ``|Σ ±a_i| ≥ threshold``."""
    rows = max(1, _CHUNK_CELLS // magnitudes.size)
    count = 0
    for start in range(0, n_resamples, rows):
        signs = rng.integers(0, 2, size=(min(rows, n_resamples - start), magnitudes.size), dtype=np.int8)
        sums = (2 * signs.astype(np.float64) - 1) @ magnitudes  # [rows]
        count += int(np.count_nonzero(np.abs(sums) >= threshold))
    return count


def sign_flip_test(
    differences: NDArray[np.float64],
    rng: np.random.Generator,
    n_resamples: int = 200_000,
    *,
    exact_max: int = 22,
) -> tuple[float, bool]:
    """Two-sided sign-flip test of ``|Σ d|``; returns ``(p, exact)``.

    Exact over all ``2^m`` sign assignments of the ``m`` nonzero differences when ``m ≤ exact_max``,
    else Monte-Carlo with ``rng`` and ``p = (count + 1) / (n_resamples + 1)``.
    """
    d = np.asarray(differences, dtype=np.float64)
    magnitudes = np.abs(d[d != 0])
    if magnitudes.size == 0:
        return 1.0, True
    threshold = abs(float(d.sum())) - _TIE_TOLERANCE * float(magnitudes.sum())
    exact = magnitudes.size <= exact_max
    if threshold <= 0:
        return 1.0, exact
    if exact:
        return _exact_count(magnitudes, threshold) / 2.0**magnitudes.size, True
    if n_resamples < 1:
        raise DataError(f"n_resamples must be at least 1 for a Monte-Carlo sign-flip test; got {n_resamples}")
    count = _monte_carlo_count(magnitudes, threshold, rng, n_resamples)
    return (count + 1) / (n_resamples + 1), False


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order (monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if np.any(~(p >= 0) | ~(p <= 1)):
        raise DataError(f"p-values must lie in [0, 1]; got {list(pvalues)!r}")
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return [float(v) for v in adjusted]


def bootstrap_mean_ci(
    differences: NDArray[np.float64],
    rng: np.random.Generator,
    n_resamples: int = 10_000,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """BCa bootstrap confidence interval of the mean; ``None`` for fewer than 2 values.

    When all values are equal the interval is the point ``(d, d)`` (BCa is undefined there).
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return None
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    result = stats.bootstrap(
        (d,), np.mean, n_resamples=n_resamples, confidence_level=level, method="BCa", rng=rng
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _known_pairs(
    name: str, x: Sequence[float | None], y: Sequence[float | None]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The pairs of ``x`` and ``y`` with both values known (None and NaN dropped)."""
    if len(x) != len(y):
        raise DataError(
            f"comparison {name!r}: x and y must pair up unit by unit, so have equal lengths; "
            f"got {len(x)} and {len(y)}"
        )
    xs = np.array([math.nan if v is None else float(v) for v in x], dtype=np.float64)
    ys = np.array([math.nan if v is None else float(v) for v in y], dtype=np.float64)
    keep = ~np.isnan(xs) & ~np.isnan(ys)
    return xs[keep], ys[keep]


def _paired_test(
    family: str, name: str, xs: NDArray[np.float64], ys: NDArray[np.float64], seeds: np.random.SeedSequence
) -> PairedTest:
    """One comparison's test; its Holm columns hold the raw p-values until :func:`paired_tests` adjusts."""
    d = xs - ys
    flip_seed, boot_seed = seeds.spawn(2)
    signflip_p, exact = sign_flip_test(d, np.random.default_rng(flip_seed))
    ci = bootstrap_mean_ci(d, np.random.default_rng(boot_seed))
    sign_p = sign_test(d)
    known = d.size > 0
    return PairedTest(
        family=family,
        name=name,
        n=int(d.size),
        n_greater=int(np.count_nonzero(d > 0)),
        n_less=int(np.count_nonzero(d < 0)),
        mean_x=float(xs.mean()) if known else None,
        mean_y=float(ys.mean()) if known else None,
        mean_difference=float(d.mean()) if known else None,
        ci_low=None if ci is None else ci[0],
        ci_high=None if ci is None else ci[1],
        sign_p=sign_p,
        signflip_p=signflip_p,
        signflip_exact=exact,
        sign_p_holm=sign_p,
        signflip_p_holm=signflip_p,
    )


def paired_tests(
    family: str,
    comparisons: Sequence[tuple[str, Sequence[float | None], Sequence[float | None]]],
    seed: int = 0,
) -> list[PairedTest]:
    """One :class:`PairedTest` per ``(name, x, y)``, Holm-adjusted over the family per test.

    ``x[i]`` and ``y[i]`` are the same unit under the setting and the baseline; pairs with a None or
    NaN side are dropped. Comparison ``i`` draws from ``SeedSequence([seed, i])``, so its result does
    not depend on the other comparisons.
    """
    raw = [
        _paired_test(family, name, *_known_pairs(name, x, y), np.random.SeedSequence([seed, index]))
        for index, (name, x, y) in enumerate(comparisons)
    ]
    sign_holm = holm([t.sign_p for t in raw])
    flip_holm = holm([t.signflip_p for t in raw])
    return [
        replace(t, sign_p_holm=s, signflip_p_holm=f)
        for t, s, f in zip(raw, sign_holm, flip_holm, strict=True)
    ]


__all__ = [
    "TEST_NAMES",
    "PairedTest",
    "bootstrap_mean_ci",
    "holm",
    "paired_tests",
    "sign_flip_test",
    "sign_test",
]
