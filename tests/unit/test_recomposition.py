"""Recomposition on a synthetic oracle with planted structure; every expected value derived by hand.

Prompts: 40 covered (0–39) then 20 unrelated (40–59). Planted rules, whose contributions are unioned:

* ``a`` or ``b`` flips covered 0–9 (redundant: each alone, or both, flips the same ten);
* ``c`` and ``d`` together flip covered 10–19 (synergistic: neither alone flips anything);
* ``e`` flips covered 20–24 (independent of the others);
* ``f`` flips unrelated 40–49 only;
* ``g`` flips covered 25–34 unless ``h`` is ablated with it (cancelling: ``h`` alone flips nothing,
  and ablating both undoes ``g``'s flips).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.models.sites import Site
from mecharule.recomposition import (
    NO_JOINT_EFFECT,
    SIGN_TEST,
    RecompositionSettings,
    overlap_matrix,
    recompose,
    recompose_problem,
    shared_agonists,
)
from mecharule.recomposition.measure import holm

A, B, C, D, E, F, G, H = (Site(0, "mlp", i) for i in range(8))
NAME = {unit: str(unit) for unit in (A, B, C, D, E, F, G, H)}  # "L0.mlp[0]" ... "L0.mlp[5]"
COVERED = np.array([True] * 40 + [False] * 20)
P_TEN = 2 / 1024  # two-sided sign test, 10 of 10 in one direction


class PlantedOracle:
    """Flips as a deterministic function of the set of units in a group; counts what it is asked."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # groups per call
        self.groups: list[frozenset[Site]] = []

    def flips(self, key: str, groups: Sequence[Sequence[Site]]) -> np.ndarray:
        self.calls.append(len(groups))
        rows = np.zeros((len(groups), COVERED.size), dtype=bool)  # [groups, prompts]
        for row, group in zip(rows, groups, strict=True):
            units = frozenset(group)
            self.groups.append(units)
            row[0:10] = bool(units & {A, B})
            row[10:20] = {C, D} <= units
            row[20:25] = E in units
            row[40:50] = F in units
            row[25:35] = G in units and H not in units
        return rows

    @property
    def evaluated(self) -> int:
        return sum(self.calls)


def _run(agonists: Sequence[Site], **settings: object) -> tuple[dict, PlantedOracle]:
    oracle = PlantedOracle()
    result = recompose_problem(oracle, "r0/correct", COVERED, agonists, RecompositionSettings(**settings))
    return result, oracle


def _pair(result: dict, x: Site, y: Site) -> dict:
    return next(row for row in result["pairs"] if set(row["units"]) == {NAME[x], NAME[y]})


def test_planted_pairs_are_classified_with_holm():
    result, _ = _run([A, B, C, D, E])
    assert len(result["pairs"]) == 10
    ab, cd, ae = _pair(result, A, B), _pair(result, C, D), _pair(result, A, E)
    assert (ab["kind"], ab["interaction"], ab["joint"], ab["alone"]) == (
        "redundant",
        -0.25,
        0.25,
        [0.25, 0.25],
    )
    assert (cd["kind"], cd["interaction"], cd["joint"], cd["alone"]) == (
        "synergistic",
        0.25,
        0.25,
        [0.0, 0.0],
    )
    assert (ae["kind"], ae["interaction"], ae["sign_p"]) == ("additive", 0.0, 1.0)
    assert ab["sign_p"] == pytest.approx(P_TEN)
    assert ab["sign_p_holm"] == pytest.approx(10 * P_TEN)  # Holm over the 10 pairs of the problem
    assert cd["sign_p_holm"] == pytest.approx(10 * P_TEN)
    assert [row["units"] for row in result["pairs"][:2]] == [[NAME[A], NAME[B]], [NAME[C], NAME[D]]]
    assert all(row["interaction"] == 0.0 for row in result["pairs"][2:])


def test_planted_whole_set_summary_and_mixed_composition():
    result, _ = _run([A, B, C, D, E])
    assert [row["unit"] for row in result["agonists"]] == [NAME[A], NAME[B], NAME[E], NAME[C], NAME[D]]
    assert [row["alone"] for row in result["agonists"]] == [0.25, 0.25, 0.125, 0.0, 0.0]
    assert result["joint"] == {"covered": 0.625, "unrelated": 0.0}
    assert (result["sum_alone"], result["union_alone"]) == (0.625, 0.375)
    # 10 prompts at -1 (a, b redundant) and 10 at +1 (c, d synergistic) cancel: not significant.
    assert result["composition"] == {
        "kind": "additive",
        "sign_p": 1.0,
        "cancel_p": 1.0,
        "joint_only": 10,
        "alone_only": 0,
        "test": SIGN_TEST,
    }


def test_redundant_and_synergistic_whole_sets():
    redundant, _ = _run([A, B, E])
    assert (redundant["joint"]["covered"], redundant["sum_alone"]) == (0.375, 0.625)
    assert redundant["composition"]["kind"] == "redundant"
    assert redundant["composition"]["sign_p"] == pytest.approx(P_TEN)
    synergistic, _ = _run([C, D])
    assert (synergistic["joint"]["covered"], synergistic["sum_alone"]) == (0.25, 0.0)
    assert synergistic["composition"]["kind"] == "synergistic"
    assert synergistic["composition"]["joint_only"] == 10
    assert synergistic["pairs"][0]["kind"] == "synergistic"  # one pair: Holm leaves p unchanged
    assert synergistic["pairs"][0]["sign_p_holm"] == pytest.approx(P_TEN)


def test_greedy_curve_misses_the_synergistic_pair_until_one_member_is_in():
    result, _ = _run([A, B, C, D, E])
    curve = [(p["size"], p["added"], p["effect"], p["share"]) for p in result["greedy"]["curve"]]
    # a beats b on name; e adds most next; then nothing adds, so b wins the tie on alone effect, then
    # c on name; only with c in does d complete the synergistic pair. The true minimum for 0.8
    # ({a, c, d}, 3 units) is missed: a known limitation of greedy, the pairs section shows (c, d).
    assert curve == [
        (1, NAME[A], 0.25, 0.4),
        (2, NAME[E], 0.375, 0.6),
        (3, NAME[B], 0.375, 0.6),
        (4, NAME[C], 0.375, 0.6),
        (5, NAME[D], 0.625, 1.0),
    ]
    assert result["smallest_set"] == {"0.5": 2, "0.8": 5, "0.9": 5}
    assert result["greedy"]["candidates"] == 5


def test_greedy_stops_at_the_largest_share_and_respects_max_units():
    redundant, _ = _run([A, B, E])
    assert [p["added"] for p in redundant["greedy"]["curve"]] == [NAME[A], NAME[E]]
    assert redundant["smallest_set"] == {"0.5": 1, "0.8": 2, "0.9": 2}
    limited, _ = _run([A, B, C, D, E], max_units=2, pair_units=2)
    assert [p["added"] for p in limited["greedy"]["curve"]] == [NAME[A], NAME[B]]
    assert limited["smallest_set"] == {"0.5": None, "0.8": None, "0.9": None}
    assert [row["units"] for row in limited["pairs"]] == [[NAME[A], NAME[B]]]


def test_evaluations_are_batched_and_never_repeated():
    result, oracle = _run([A, B, C, D, E])
    # 5 singles + joint; 10 pairs; greedy: step 1 from singles, step 2 = pairs already measured,
    # step 3 three triples, step 4 two quadruples, step 5 = the joint set already measured.
    assert oracle.calls == [6, 10, 3, 2]
    assert result["evaluations"] == oracle.evaluated == 21
    assert len(set(oracle.groups)) == len(oracle.groups)


def test_single_agonist():
    result, oracle = _run([A])
    assert result["composition"] == {"kind": "single"}
    assert result["pairs"] == []
    assert [p["share"] for p in result["greedy"]["curve"]] == [1.0]
    assert result["evaluations"] == oracle.evaluated == 1


def test_zero_joint_effect_gives_an_empty_greedy_curve_with_a_note():
    result, _ = _run([C, F])
    assert result["joint"] == {"covered": 0.0, "unrelated": 0.5}
    assert {row["unit"]: row["alone_unrelated"] for row in result["agonists"]} == {NAME[C]: 0.0, NAME[F]: 0.5}
    assert result["greedy"]["curve"] == []
    assert result["greedy"]["note"] == NO_JOINT_EFFECT
    assert result["smallest_set"] == {"0.5": None, "0.8": None, "0.9": None}
    assert result["composition"]["kind"] == "additive"


def test_shared_agonists_and_overlap():
    problems = {"r0/correct": ["u1", "u2", "u3"], "r1/correct": ["u2", "u3"], "r2/wrong": ["u3", "u4"]}
    assert shared_agonists(problems) == [
        {"unit": "u3", "problems": ["r0/correct", "r1/correct", "r2/wrong"], "n_problems": 3},
        {"unit": "u2", "problems": ["r0/correct", "r1/correct"], "n_problems": 2},
    ]
    assert overlap_matrix(problems) == {
        "problems": 3,
        "pairs": [
            {"a": "r0/correct", "b": "r1/correct", "shared": 2, "jaccard": round(2 / 3, 4)},
            {"a": "r0/correct", "b": "r2/wrong", "shared": 1, "jaccard": 0.25},
            {"a": "r1/correct", "b": "r2/wrong", "shared": 1, "jaccard": round(1 / 3, 4)},
        ],
    }


def test_recompose_all_problems_counts_progress_and_round_trips_json():
    oracle, ticks = PlantedOracle(), []
    problems = [("p/mixed", COVERED, [A, B, C, D, E]), ("p/syn", COVERED, [C, D]), ("p/none", COVERED, [])]
    result = recompose(oracle, problems, RecompositionSettings(), ticks.append)
    assert result["problems"]["p/none"] == {"skipped": "no agonists"}
    assert result["evaluations"] == sum(ticks) == oracle.evaluated == 21 + 3
    assert result["shared_agonists"] == [
        {"unit": NAME[C], "problems": ["p/mixed", "p/syn"], "n_problems": 2},
        {"unit": NAME[D], "problems": ["p/mixed", "p/syn"], "n_problems": 2},
    ]
    assert result["overlap"]["pairs"] == [{"a": "p/mixed", "b": "p/syn", "shared": 2, "jaccard": 0.4}]
    assert result["settings"] == {"pair_units": 8, "shares": [0.5, 0.8, 0.9], "max_units": 16, "alpha": 0.05}
    assert json.loads(json.dumps(result)) == result


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_invalid_inputs_are_rejected():
    with pytest.raises(ConfigError, match="shares"):
        RecompositionSettings(shares=(0.5, 1.5))
    with pytest.raises(ConfigError, match="alpha"):
        RecompositionSettings(alpha=0.0)
    with pytest.raises(DataError, match="is_covered"):
        recompose_problem(PlantedOracle(), "k", COVERED.astype(int), [A])
    with pytest.raises(DataError, match="shape"):
        recompose_problem(PlantedOracle(), "k", COVERED[:10], [A])
    with pytest.raises(ConfigError, match="unique"):
        recompose(PlantedOracle(), [("k", COVERED, [A]), ("k", COVERED, [B])])


def test_planted_cancelling_pair_and_set():
    """g alone flips covered 25–34; with h ablated too it flips nothing: joint below the union of
    the members' flips alone, so the pair and the whole set are cancelling, not merely redundant."""
    result, oracle = _run([G, H, A])
    gh = _pair(result, G, H)
    assert (gh["joint"], gh["alone"], gh["interaction"]) == (0.0, [0.25, 0.0], -0.25)
    assert gh["cancel_p"] == P_TEN and gh["kind"] == "cancelling"
    ag = _pair(result, A, G)
    assert (ag["interaction"], ag["kind"], ag["cancel_p"]) == (0.0, "additive", 1.0)
    composition = result["composition"]
    assert (composition["kind"], composition["alone_only"], composition["joint_only"]) == (
        "cancelling",
        10,
        0,
    )
    assert composition["cancel_p"] == P_TEN
    assert result["joint"]["covered"] == 0.25 and result["sum_alone"] == 0.5
    assert result["evaluations"] == oracle.evaluated


def test_the_kind_follows_the_direction_the_sign_test_measures():
    """Ten prompts one way by 1 and two the other way by 8: the sum says one thing, the signs
    (what the exact sign test counts) another; the kind follows the signs."""
    from mecharule.recomposition.measure import kind_of

    diff = np.array([1] * 10 + [-8] * 2)
    assert diff.sum() < 0
    assert kind_of(diff, 0.04, 0.05) == "synergistic"
    assert kind_of(-diff, 0.04, 0.05) == "redundant"
    assert kind_of(diff, 0.2, 0.05) == "additive"


def test_one_terminal_line_per_problem_says_what_the_numbers_mean():
    from mecharule.recomposition.text import problem_line, shared_line

    result, _ = _run([A, B, E])
    assert problem_line("R1/positive", result) == (
        "R1/positive: 3 agonists; joint 0.375 vs Σ alone 0.625 (redundant, sign test p=0.002); "
        "90% of the joint effect with 2 units (greedy); pairs: 1 redundant, 2 additive of 3"
    )
    nothing, _ = _run([C, F])
    assert problem_line("R2", nothing).endswith("ablated together they flip nothing on covered prompts")
    assert problem_line("R3", {"skipped": "no agonists"}) == "R3: skipped (no agonists)"
    shared = {"shared_agonists": [{"unit": "L0.mlp[1]", "n_problems": 2}]}
    assert shared_line(shared) == "1 agonists shared by two or more rules: L0.mlp[1] (2)"
    assert shared_line({}) == "no agonist is shared by two rules"
