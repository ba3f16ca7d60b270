"""Spectral embedding, k-center and stratified sampling on synthetic points (no model)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.sampling import cover_radius, kcenter, spectral_embedding, stratified_sample


def blobs(n_per: int = 40, k: int = 6, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=10.0, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return means[labels] + rng.normal(scale=0.3, size=(k * n_per, dim)), labels


def test_spectral_embedding_has_unit_rows_and_requested_dim():
    x, _ = blobs(dim=40)
    z = spectral_embedding(x, dim=32, seed=0)
    assert z.shape == (len(x), 32)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-9)
    assert spectral_embedding(x[:5], dim=32).shape == (5, 5)  # capped at n rows


def test_spectral_embedding_rejects_bad_input():
    with pytest.raises(DataError):
        spectral_embedding(np.zeros((1, 4)))
    with pytest.raises(ConfigError):
        spectral_embedding(np.zeros((4, 4)), dim=0)


def test_kcenter_radius_decreases_with_k_and_centres_are_distinct():
    x, _ = blobs()
    radii = []
    for k in (1, 2, 4, 6, 12, 24):
        centers, assignment = kcenter(x, k, seed=3)
        assert len(centers) == k
        assert len(set(centers.tolist())) == k
        # assignment = nearest centre
        d = np.linalg.norm(x[:, None] - x[centers][None], axis=2)
        np.testing.assert_array_equal(assignment, d.argmin(1))
        radii.append(cover_radius(x, centers))
    assert all(a >= b for a, b in itertools.pairwise(radii))
    assert radii[-1] < radii[0] / 5


def test_kcenter_finds_one_centre_per_blob():
    x, labels = blobs(k=6)
    centers, assignment = kcenter(x, 6, seed=0)
    assert sorted(labels[centers].tolist()) == list(range(6))
    for c in range(6):  # each cluster = exactly one blob
        assert len(set(labels[assignment == c].tolist())) == 1


def test_kcenter_is_deterministic_per_seed_and_stops_on_duplicates():
    x, _ = blobs()
    a1, b1 = kcenter(x, 8, seed=5)
    a2, b2 = kcenter(x, 8, seed=5)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    dup = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    centers, _ = kcenter(dup, 3, seed=0)
    assert len(centers) == 2  # only two distinct points
    with pytest.raises(ConfigError):
        kcenter(x, 0, seed=0)


def test_stratified_sample_takes_medoids_first_then_spans_clusters():
    x, _labels = blobs(k=6)
    centers, assignment = kcenter(x, 6, seed=0)
    candidates = np.arange(len(x))
    picked = stratified_sample(x, centers, assignment, candidates, 6, seed=0)
    # the first six are the per-cluster members nearest their centre: here the centres themselves
    assert sorted(picked.tolist()) == sorted(centers.tolist())
    picked = stratified_sample(x, centers, assignment, candidates, 30, seed=0)
    counts = np.bincount(assignment[picked], minlength=6)
    assert counts.tolist() == [5] * 6  # round-robin: equal allocation
    assert len(set(picked.tolist())) == 30


def test_stratified_sample_respects_candidates_and_small_clusters():
    x, _labels = blobs(k=4, n_per=30)
    centers, assignment = kcenter(x, 4, seed=1)
    # candidates: 20 rows of blob 0's cluster, 2 of every other
    cand = np.concatenate([np.flatnonzero(assignment == c)[: 20 if c == 0 else 2] for c in range(4)])
    picked = stratified_sample(x, centers, assignment, cand, 12, seed=0)
    assert set(picked.tolist()) <= set(cand.tolist())
    counts = np.bincount(assignment[picked], minlength=4)
    assert counts.tolist() == [6, 2, 2, 2]  # small clusters exhausted, the rest from the big one
    # medoid of the big cluster (nearest its centre among candidates) comes first
    big = cand[assignment[cand] == 0]
    medoid = big[np.argmin(np.linalg.norm(x[big] - x[centers[0]], axis=1))]
    assert picked[0] == medoid
    assert len(stratified_sample(x, centers, assignment, cand, 100, seed=0)) == len(cand)
    assert len(stratified_sample(x, centers, assignment, cand[:0], 5, seed=0)) == 0


def test_stratified_sample_is_seeded():
    x, _ = blobs()
    centers, assignment = kcenter(x, 4, seed=0)
    cand = np.arange(len(x))
    a = stratified_sample(x, centers, assignment, cand, 50, seed=1)
    b = stratified_sample(x, centers, assignment, cand, 50, seed=1)
    c = stratified_sample(x, centers, assignment, cand, 50, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a[:4], c[:4])  # medoids do not depend on the seed
