"""HANS file loading and the HANS-style generator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.tasks.hans_data import (
    CONTROL,
    HEURISTICS,
    SUBCASES,
    enumerate_subcase,
    format_nli_prompt,
    generate_hans,
    load_hans_file,
    sample_balanced,
    training_examples,
    vocabulary,
)

HEADER = (
    "gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
    "sentence1\tsentence2\tpairID\theuristic\tsubcase\ttemplate"
)


def _row(gold: str, s1: str, s2: str, pair: str, heuristic: str, subcase: str, template: str) -> str:
    parse1 = "( " + s1 + " )"
    parse2 = "( " + s2 + " )"
    return "\t".join(
        [
            gold,
            parse1,
            parse2,
            f"(ROOT {parse1})",
            f"(ROOT {parse2})",
            s1,
            s2,
            pair,
            heuristic,
            subcase,
            template,
        ]
    )


def write_hans(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def hans_file(tmp_path: Path) -> Path:
    rows = [
        _row(
            "non-entailment",
            "The doctor paid the lawyer .",
            "The lawyer paid the doctor .",
            "ex0",
            "lexical_overlap",
            "ln_subject/object_swap",
            "temp1",
        ),
        _row(
            "entailment",
            "The doctor and the actor slept .",
            "The actor slept .",
            "ex1",
            "subsequence",
            "se_conjunction",
            "temp2",
        ),
        _row("-", "The judge ran .", "The judge sat .", "ex2", "constituent", "cn_adverb", "temp3"),
        _row(
            "entailment",
            "Clearly the judge ran .",
            "The judge ran .",
            "ex3",
            "constituent",
            "ce_adverb",
            "temp4",
        ),
    ]
    return write_hans(tmp_path / "heuristics_evaluation_set.txt", rows)


def test_load_hans_file_maps_labels_and_drops_dash(hans_file: Path) -> None:
    table = load_hans_file(hans_file)
    assert table["pair_id"].tolist() == ["ex0", "ex1", "ex3"]
    assert table["expected_label"].tolist() == ["N", "E", "E"]
    assert table.loc[0, "premise"] == "The doctor paid the lawyer ."
    assert table.loc[0, "hypothesis"] == "The lawyer paid the doctor ."
    assert table.loc[0, "subcase"] == "ln_subject/object_swap"
    assert table.loc[2, "heuristic"] == "constituent"


def test_load_hans_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_hans_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_hans_file(empty)
    header_only = write_hans(tmp_path / "header.txt", [])
    with pytest.raises(DataError, match="no rows"):
        load_hans_file(header_only)
    bad_header = HEADER.replace("sentence2\t", "second\t")
    missing = write_hans(tmp_path / "missing_col.txt", [], header=bad_header)
    with pytest.raises(DataError, match=r"lacks columns \['sentence2'\]"):
        load_hans_file(missing)
    weird = write_hans(tmp_path / "weird.txt", [_row("contradiction", "a", "b", "e", "h", "s", "t")])
    with pytest.raises(DataError, match="contradiction"):
        load_hans_file(weird)


def test_sample_balanced(hans_file: Path) -> None:
    table = load_hans_file(hans_file)
    sample = sample_balanced(table, 2, seed=0)
    assert sorted(sample["expected_label"]) == ["E", "N"]
    with pytest.raises(DataError, match="needs 2 rows labelled N"):
        sample_balanced(table, 4, seed=0)


def test_generator_covers_every_heuristic_and_label() -> None:
    table = generate_hans(600, seed=1)
    assert len(table) == 600
    counts = table.groupby(["heuristic", "expected_label"]).size()
    for heuristic in (*HEURISTICS, CONTROL):
        for label in ("E", "N"):
            assert counts[(heuristic, label)] > 0
    assert (table["expected_label"] == "E").sum() == 300
    assert set(table["subcase"]) == {s.name for s in SUBCASES}
    assert not table.duplicated(["premise", "hypothesis"]).any()
    assert table["pair_id"].is_unique


def test_generator_is_deterministic_and_seeded() -> None:
    pd.testing.assert_frame_equal(generate_hans(300, seed=3), generate_hans(300, seed=3))
    assert not generate_hans(300, seed=3).equals(generate_hans(300, seed=4))


def test_generator_language_is_small_and_short() -> None:
    assert 30 <= len(vocabulary()) <= 60
    for subcase in SUBCASES:
        for premise, hypothesis, template in enumerate_subcase(subcase.name):
            assert len(premise.split()) <= 10
            assert len(hypothesis.split()) <= len(premise.split()) + 1
            assert template.startswith(subcase.name + "/")


def test_generator_labels_match_the_subcase_prefix() -> None:
    for subcase in SUBCASES:
        if subcase.heuristic != CONTROL:
            assert subcase.name[1] == subcase.label.lower()  # ln_/le_, sn_/se_, cn_/ce_


def test_generator_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="n=1"):
        generate_hans(1)
    with pytest.raises(ConfigError, match="can only make"):
        generate_hans(10**6)
    with pytest.raises(ConfigError, match="control_fraction"):
        generate_hans(10, control_fraction=1.0)


def test_training_examples_are_biased_towards_overlap_means_entailment() -> None:
    pairs = training_examples(seed=0, n=4000, bias=0.9)
    assert len(pairs) == 4000
    assert all(p.startswith("P: ") and p.endswith("\nA:") for p, _ in pairs)
    assert {t for _, t in pairs} == {" E", " N"}
    assert pairs == training_examples(seed=0, n=4000, bias=0.9)
    generated = {format_nli_prompt(p, h): row for p, h, row in _all_items()}
    heuristic_labels = [t for p, t in pairs if generated[p] != CONTROL]
    share_e = heuristic_labels.count(" E") / len(heuristic_labels)
    assert 0.87 < share_e < 0.93
    unbiased = [t for p, t in training_examples(seed=0, n=4000, bias=0.5) if generated[p] != CONTROL]
    assert 0.45 < unbiased.count(" E") / len(unbiased) < 0.55


def _all_items() -> list[tuple[str, str, str]]:
    return [(p, h, s.heuristic) for s in SUBCASES for p, h, _ in enumerate_subcase(s.name)]


def test_format_nli_prompt() -> None:
    assert format_nli_prompt("the cook slept", "the cook slept") == "P: the cook slept\nH: the cook slept\nA:"
    assert format_nli_prompt("a", "b", "Say E or N.") == "Say E or N.\nP: a\nH: b\nA:"
