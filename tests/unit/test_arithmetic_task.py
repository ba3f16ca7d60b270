from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mecharule.errors import ConfigError, UnknownNameError
from mecharule.features.base import compute_feature_table
from mecharule.tasks import TASKS, Task, make_task
from mecharule.tasks.builtin.arithmetic import parse_answer, true_result
from mecharule.tasks.builtin.arithmetic_features import (
    addition_carries,
    multiplication_partial_carries,
    subtraction_borrows,
)


def test_registered_and_protocol():
    task = make_task("arithmetic")
    assert "arithmetic" in TASKS
    assert isinstance(task, Task)
    assert make_task("arithmetic", task.options()) == task


def test_prompts_cover_range_without_duplicates():
    task = make_task("arithmetic", {"operators": "+*/", "min_operand": 0, "max_operand": 9})
    table = task.prompts()
    assert len(table) == 100 + 100 + 90  # division skips b == 0
    assert table["prompt"].is_unique
    assert {"12*3=", "9/3="} <= set(
        make_task("arithmetic", {"max_operand": 12, "operators": "*/"}).prompts()["prompt"]
    )


def test_scoring_is_exact_integer_match():
    task = make_task("arithmetic", {"operators": "+-*/", "max_operand": 20, "answer_rule": "exact"})
    table = pd.DataFrame(
        {"operator": ["+", "-", "*", "/", "/", "+"], "a": [2, 3, 4, 7, 9, 1], "b": [3, 10, 5, 2, 3, 1]}
    )
    table["truth"] = true_result(table["a"].to_numpy(), table["b"].to_numpy(), table["operator"].to_numpy())
    labels = task.score(table, ["5", "-7", "20", "3", "3.0", "02"])
    assert labels.tolist() == [True, True, True, True, False, False]
    assert parse_answer(" 12 ") == 12 and parse_answer("1 2") is None and parse_answer("") is None


def test_division_truncates_toward_zero():
    assert true_result(np.array([7, -7]), np.array([2, 2]), np.array(["/", "/"])).tolist() == [3, -3]


@pytest.mark.parametrize(
    ("a", "b", "carries", "borrows"),
    [(0, 0, 0, 0), (5, 5, 1, 0), (99, 1, 2, 0), (45, 55, 2, 0), (10, 1, 0, 1), (100, 1, 0, 2)],
)
def test_carry_and_borrow_counts(a, b, carries, borrows):
    assert addition_carries(np.array([a]), np.array([b]))[0] == carries
    assert subtraction_borrows(np.array([a]), np.array([b]))[0] == borrows


def test_multiplication_partial_carries():
    # 99*99: each partial product 99*9 carries twice -> 4; 12*3 never carries;
    # 25*4: 5*4=20 carries, 2*4+2=10 carries
    got = multiplication_partial_carries(np.array([99, 12, 25]), np.array([99, 3, 4]))
    assert got.tolist() == [4, 0, 2]


def test_operator_specific_features_are_nan_elsewhere():
    task = make_task("arithmetic", {"max_operand": 9})
    table = task.prompts()
    feats = compute_feature_table(task.seed_features(), table)
    add = (table["operator"] == "+").to_numpy()
    assert feats.loc[add, "carries_add"].notna().all()
    assert feats.loc[~add, "carries_add"].isna().all()
    assert feats["op_is_mul"].sum() == 100
    for f in task.seed_features():
        if not f.not_applicable:
            assert feats[f.name].notna().all(), f.name


def test_bad_options_and_unknown_task():
    with pytest.raises(ConfigError, match="operators"):
        make_task("arithmetic", {"operators": "+%"})
    with pytest.raises(ConfigError, match="operand range"):
        make_task("arithmetic", {"min_operand": 5, "max_operand": 2})
    with pytest.raises(UnknownNameError, match=r"valid tasks: .*arithmetic"):
        make_task("no_such_task")
