"""Covered and unrelated prompt slices for one (rule, regime).

Regime ``positive`` uses rows whose baseline label is True, ``negative`` rows whose label is False.
Covered = the rule fires AND the label matches the regime; unrelated = the rule does NOT fire AND
the label matches. A row is never moved from one side to the other to fill a short side (the
reference's balancing did, contaminating the contrast, REFERENCE-METHOD §13.1.14): a short side is
returned short, with a reason.

With a clustering (``Z``, ``centers``, ``assignment`` from :mod:`mecharule.sampling.spectral`) each side
is a stratified sample; without one, a seeded uniform sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mecharule.errors import ConfigError, DataError
from mecharule.sampling.spectral import stratified_sample

REGIME_LABEL = {"positive": True, "negative": False}


@dataclass(frozen=True)
class Clustering:
    """A spectral embedding and its k-center clusters (row indices refer to the same table)."""

    Z: np.ndarray
    centers: np.ndarray
    assignment: np.ndarray


@dataclass(frozen=True)
class SliceSelection:
    """Row indices of the two slices, how many rows were eligible, and why a side is short."""

    covered: np.ndarray
    unrelated: np.ndarray
    n_covered_available: int
    n_unrelated_available: int
    reason: str = ""


def covered_unrelated(
    rule_mask: np.ndarray,
    labels: np.ndarray,
    regime: str,
    n_covered: int,
    n_unrelated: int,
    seed: int | Sequence[int],
    clustering: Clustering | None = None,
) -> SliceSelection:
    """Covered and unrelated rows for the rule and regime (see the module docstring). ``seed``: an
    int or the entropy of the problem's stream (``[seed, salt, problem index]``); each side draws
    from it with the side (0 covered, 1 unrelated) appended."""
    mask = np.asarray(rule_mask, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    if mask.shape != labels.shape or mask.ndim != 1:
        raise DataError(f"rule mask {mask.shape} and labels {labels.shape} must be 1-D of the same length")
    if regime not in REGIME_LABEL:
        raise ConfigError(f"regime={regime!r}: allowed are {', '.join(REGIME_LABEL)}")
    eligible = labels == REGIME_LABEL[regime]
    pool_c, pool_u = np.flatnonzero(eligible & mask), np.flatnonzero(eligible & ~mask)
    covered = _sample(pool_c, n_covered, seed, 0, clustering)
    unrelated = _sample(pool_u, n_unrelated, seed, 1, clustering)
    short = []
    if len(covered) < n_covered:
        short.append(f"{len(pool_c)} covered rows (asked {n_covered})")
    if len(unrelated) < n_unrelated:
        short.append(f"{len(pool_u)} unrelated rows (asked {n_unrelated})")
    reason = ""
    if short:
        reason = f"only {' and '.join(short)} with baseline label {REGIME_LABEL[regime]}"
    return SliceSelection(covered, unrelated, len(pool_c), len(pool_u), reason)


def _sample(
    pool: np.ndarray, n: int, seed: int | Sequence[int], side: int, clustering: Clustering | None
) -> np.ndarray:
    if n < 0:
        raise ConfigError(f"slice size {n} is negative")
    entropy = [seed, side] if isinstance(seed, int) else [*seed, side]
    if clustering is not None:
        c = clustering
        return stratified_sample(c.Z, c.centers, c.assignment, pool, n, entropy)
    rng = np.random.default_rng(entropy)
    if len(pool) <= n:
        return rng.permutation(pool)
    return rng.choice(pool, size=n, replace=False)
