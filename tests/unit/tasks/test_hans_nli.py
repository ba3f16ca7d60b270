"""The hans_nli task: protocol, prompts, scoring and seed features."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.features.base import compute_feature_table
from mecharule.tasks.base import TASKS, Task
from mecharule.tasks.builtin.hans_nli import (
    HansNLITask,
    is_contiguous,
    is_subsequence,
    lexical_overlap_ratio,
    nli_features,
    parse_nli_answer,
)
from mecharule.tasks.hans_data import REFERENCE_INSTRUCTION

HEADER = (
    "gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
    "sentence1\tsentence2\tpairID\theuristic\tsubcase\ttemplate"
)


def test_protocol_and_registration() -> None:
    task = HansNLITask(n_examples=40)
    assert isinstance(task, Task)
    assert TASKS.get("hans_nli") is HansNLITask
    rebuilt = TASKS.get("hans_nli")(**task.options())
    pd.testing.assert_frame_equal(rebuilt.prompts(), task.prompts())
    assert task.positive_label == "correct"
    assert task.max_new_tokens == 3
    assert task.group_column in task.metadata_columns


def test_prompts_table() -> None:
    table = HansNLITask(n_examples=100, seed=2).prompts()
    assert list(table.columns) == ["prompt", *HansNLITask.metadata_columns]
    assert table["prompt"].is_unique
    row = table.iloc[0]
    assert row["prompt"] == f"P: {row['premise']}\nH: {row['hypothesis']}\nA:"
    assert (table["expected_label"] == "E").sum() == 50


def test_instruction_option() -> None:
    prompt = HansNLITask(n_examples=10, instruction=True).prompts()["prompt"].iloc[0]
    assert prompt.startswith(REFERENCE_INSTRUCTION + "\nP: ")
    custom = HansNLITask(n_examples=10, instruction="E or N?").prompts()["prompt"].iloc[0]
    assert custom.startswith("E or N?\nP: ")


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="n_examples"):
        HansNLITask(n_examples=1)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        HansNLITask(max_new_tokens=0)


def test_task_reads_a_hans_file(tmp_path: Path) -> None:
    parses = "\tx" * 4
    rows = [
        f"non-entailment{parses}\tThe cook paid the poet .\tThe poet paid the cook .\tex0\tlexical_overlap"
        "\ts1\tt1",
        f"entailment{parses}\tThe cook and the poet slept .\tThe poet slept .\tex1\tsubsequence\ts2\tt2",
        f"-{parses}\tThe cook ran .\tThe cook sat .\tex2\tconstituent\ts3\tt3",
        f"entailment{parses}\tThe cook and the poet slept .\tThe poet slept .\tex3\tsubsequence\ts2\tt2",
    ]
    path = tmp_path / "hans.txt"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    task = HansNLITask(path=str(path))
    table = task.prompts()
    assert table["pair_id"].tolist() == ["ex0", "ex1"]  # '-' dropped, duplicate prompt dropped
    assert task.score(table, [" N", " N"]).tolist() == [True, False]
    with pytest.raises(DataError, match="does not exist"):
        HansNLITask(path=str(tmp_path / "nope.txt")).prompts()


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("E", "E"),
        (" N", "N"),
        ("entailment", "E"),
        ("non-entailment", "N"),
        ("Non entailment.", "N"),
        ("nonentailment", "N"),
        (" e", "E"),
        ("n.", "N"),
        ("E or N", "N"),  # the last standalone letter wins
        ("garbage", None),
        ("", None),
        ("en", None),
    ],
)
def test_parse_nli_answer(answer: str, label: str | None) -> None:
    assert parse_nli_answer(answer) == label


def test_score() -> None:
    task = HansNLITask(n_examples=10)
    prompts = pd.DataFrame({"expected_label": ["E", "N", "E", "N", "E", "N"]})
    answers = ["E", "non-entailment", " n", "entailment", "xyz", " N\n"]
    assert task.score(prompts, answers).tolist() == [True, True, False, False, False, True]
    assert task.score(prompts, answers).dtype == bool
    with pytest.raises(DataError, match="answers"):
        task.score(prompts, answers[:2])


def test_pair_statistics_on_hand_examples() -> None:
    assert lexical_overlap_ratio("The doctor paid the lawyer", "the lawyer paid the doctor") == 1.0
    assert lexical_overlap_ratio("the cook paid the poet", "someone paid the poet") == pytest.approx(2 / 3)
    assert lexical_overlap_ratio("the cook slept", "the poet waited") == 0.0
    assert math.isnan(lexical_overlap_ratio("the cook slept", "the"))
    assert is_subsequence("the old cook paid the poet", "the cook paid the poet")
    assert not is_subsequence("the cook paid the poet", "the poet paid the cook")
    assert is_contiguous("the cook near the poet slept", "the poet slept")
    assert not is_contiguous("the old cook paid the poet", "the cook paid the poet")


def test_seed_features_on_hand_rows() -> None:
    rows = pd.DataFrame(
        {
            "premise": ["the old cook paid the poet", "the cook never slept", "the cook slept"],
            "hypothesis": ["the cook paid the poet", "the cook slept", "the"],
            "expected_label": ["E", "N", "N"],
            "heuristic": ["subsequence", "none", "constituent"],
            "subcase": ["se_adjective", "ctrl_never_in_premise", "x/y"],
        }
    )
    table = compute_feature_table(nli_features(["se_adjective", "x/y"]), rows)
    assert table["lexical_overlap_ratio"].iloc[:2].tolist() == [1.0, 1.0]
    assert np.isnan(table["lexical_overlap_ratio"].iloc[2])
    assert np.isnan(table["full_lexical_overlap"].iloc[2])
    assert table["hypothesis_is_subsequence"].tolist() == [1.0, 1.0, 1.0]
    assert table["hypothesis_is_contiguous"].tolist() == [0.0, 0.0, 1.0]
    assert table["premise_length"].tolist() == [6.0, 4.0, 3.0]
    assert table["length_difference"].tolist() == [1.0, 1.0, 2.0]
    assert table["premise_has_negation"].tolist() == [0.0, 1.0, 0.0]
    assert table["hypothesis_has_negation"].tolist() == [0.0, 0.0, 0.0]
    assert table["heuristic_subsequence"].tolist() == [1.0, 0.0, 0.0]
    assert table["heuristic_none"].tolist() == [0.0, 1.0, 0.0]
    assert table["expected_entailment"].tolist() == [1.0, 0.0, 0.0]
    assert table["subcase_x_y"].tolist() == [0.0, 0.0, 1.0]
    assert all(t.dtype == np.float64 for _, t in table.items())


def test_seed_features_on_the_task_table() -> None:
    task = HansNLITask(n_examples=200)
    features = task.seed_features()
    names = [f.name for f in features]
    assert len(names) == len(set(names))
    assert all(f.kind in ("binary", "count", "numeric") for f in features)
    table = compute_feature_table(features, task.prompts())
    assert table.shape == (200, len(features))
    no_subcases = HansNLITask(n_examples=200, subcase_features=False).seed_features()
    assert not any(f.name.startswith("subcase_") for f in no_subcases)
