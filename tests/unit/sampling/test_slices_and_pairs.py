"""Covered/unrelated slices and length-matched pairs on synthetic tables (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mecharule.errors import ConfigError, DataError
from mecharule.sampling import Clustering, covered_unrelated, kcenter, length_matched_pairs


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 200),
    p_rule=st.floats(0.0, 1.0),
    p_label=st.floats(0.0, 1.0),
    n_cov=st.integers(0, 80),
    n_unr=st.integers(0, 80),
    regime=st.sampled_from(["positive", "negative"]),
    seed=st.integers(0, 5),
)
def test_slices_never_overlap_and_respect_labels(n, p_rule, p_label, n_cov, n_unr, regime, seed):
    rng = np.random.default_rng(seed)
    mask, labels = rng.random(n) < p_rule, rng.random(n) < p_label
    sel = covered_unrelated(mask, labels, regime, n_cov, n_unr, seed)
    want = regime == "positive"
    assert not set(sel.covered.tolist()) & set(sel.unrelated.tolist())
    assert mask[sel.covered].all() and not mask[sel.unrelated].any()
    assert (labels[sel.covered] == want).all() and (labels[sel.unrelated] == want).all()
    assert len(sel.covered) == min(n_cov, int((mask & (labels == want)).sum()))
    assert len(sel.unrelated) == min(n_unr, int((~mask & (labels == want)).sum()))
    assert len(set(sel.covered.tolist())) == len(sel.covered)
    short = len(sel.covered) < n_cov or len(sel.unrelated) < n_unr
    assert bool(sel.reason) == short


def test_short_side_is_reported_not_filled_from_the_other_side():
    mask = np.array([True] * 3 + [False] * 50)
    labels = np.ones(53, dtype=bool)
    sel = covered_unrelated(mask, labels, "positive", 10, 10, seed=0)
    assert sorted(sel.covered.tolist()) == [0, 1, 2]
    assert len(sel.unrelated) == 10
    assert "3 covered rows (asked 10)" in sel.reason
    assert sel.n_covered_available == 3 and sel.n_unrelated_available == 50


def test_slices_with_clustering_span_the_clusters():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(loc=c * 10, size=(50, 3)) for c in range(4)])
    centers, assignment = kcenter(z, 4, seed=0)
    mask = np.arange(200) % 2 == 0
    sel = covered_unrelated(mask, np.ones(200, bool), "positive", 8, 8, 0, Clustering(z, centers, assignment))
    assert np.bincount(assignment[sel.covered], minlength=4).tolist() == [2, 2, 2, 2]
    assert np.bincount(assignment[sel.unrelated], minlength=4).tolist() == [2, 2, 2, 2]


def test_slices_reject_bad_input():
    with pytest.raises(ConfigError):
        covered_unrelated(np.ones(3, bool), np.ones(3, bool), "both", 1, 1, 0)
    with pytest.raises(DataError):
        covered_unrelated(np.ones(3, bool), np.ones(4, bool), "positive", 1, 1, 0)


def test_pairs_have_equal_length_and_are_nearest_among_equal_length():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(60, 5))
    lengths = rng.integers(3, 6, size=60)
    covered, uncovered = np.arange(0, 20), np.arange(20, 60)
    pairing = length_matched_pairs(covered, uncovered, lengths, states)
    assert [c for c, _ in pairing.pairs] == covered.tolist()
    for (c, r), ok, d in zip(pairing.pairs, pairing.length_matched, pairing.distances, strict=True):
        assert ok and lengths[c] == lengths[r] and r in uncovered
        same = uncovered[lengths[uncovered] == lengths[c]]
        best = np.linalg.norm(states[same] - states[c], axis=1).min()
        assert d == pytest.approx(best)
    stats = pairing.stats()
    assert stats["n_pairs"] == 20 and stats["n_length_matched"] == 20
    assert 1 <= stats["n_unique_corrupted"] <= 20


def test_pairs_fall_back_to_nearest_overall_and_flag_it():
    states = np.array([[0.0], [10.0], [1.0], [9.0]])
    lengths = np.array([4, 5, 6, 5])
    pairing = length_matched_pairs(np.array([0, 1]), np.array([2, 3]), lengths, states)
    assert pairing.pairs == [(0, 2), (1, 3)]
    assert pairing.length_matched.tolist() == [False, True]
    assert pairing.matched_pairs() == [(1, 3)]


def test_pairs_reject_overlap_and_empty_side():
    with pytest.raises(DataError):
        length_matched_pairs(np.array([0, 1]), np.array([1, 2]), np.ones(3), np.zeros((3, 2)))
    with pytest.raises(DataError):
        length_matched_pairs(np.array([0]), np.array([], dtype=int), np.ones(3), np.zeros((3, 2)))


def test_problem_slices_of_one_seed_are_not_those_of_another(monkeypatch):
    """Slices are drawn from the ``search.slices`` stream of [seed, salt, problem index]: problem 1 of
    seed 0 and problem 0 of seed 1 draw differently (with ``seed + index`` they drew the same)."""
    import pandas as pd

    from mecharule.config import SearchSettings
    from mecharule.localization import problems

    n = 400
    behaviour = pd.DataFrame({"label": np.ones(n, bool), "split": ["train"] * n})
    mask = np.arange(n) % 3 == 0
    monkeypatch.setattr(problems, "rule_mask", lambda disjunct, features: mask)
    settings = SearchSettings(regimes=("positive",), n_covered=16, n_unrelated=16)
    rules = [{"id": "A"}, {"id": "B"}]  # the same mask twice: only the stream tells them apart

    def slices(seed: int, index: int) -> tuple[list[int], list[int]]:
        spec = problems.problem_specs(rules, behaviour, pd.DataFrame(index=range(n)), settings, seed)[index]
        return spec.covered_rows.tolist(), spec.unrelated_rows.tolist()

    assert slices(0, 1) != slices(1, 0)
    assert slices(0, 0) != slices(0, 1)
    assert slices(3, 1) == slices(3, 1)  # seeded
