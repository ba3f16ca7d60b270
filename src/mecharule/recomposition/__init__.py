"""Recomposition: how a problem's agonist units work together (pairs, the whole set, greedy sets).

``analysis`` (alone, joint, pairwise and greedy effects of one problem; all problems), ``measure``
(the oracle protocol, a meter that evaluates each set once, the sign test and Holm), ``overlap``
(agonists shared across problems). Torch-free: everything runs against a :class:`FlipOracle` (the
engine oracle of :mod:`mecharule.localization` satisfies it), so it tests on synthetic oracles in
milliseconds.
"""

from __future__ import annotations

from mecharule.recomposition.analysis import (
    NO_JOINT_EFFECT,
    SCHEMA_VERSION,
    SIGN_TEST,
    RecompositionSettings,
    recompose,
    recompose_problem,
)
from mecharule.recomposition.measure import FlipOracle
from mecharule.recomposition.overlap import overlap_matrix, shared_agonists

__all__ = [
    "NO_JOINT_EFFECT",
    "SCHEMA_VERSION",
    "SIGN_TEST",
    "FlipOracle",
    "RecompositionSettings",
    "overlap_matrix",
    "recompose",
    "recompose_problem",
    "shared_agonists",
]
