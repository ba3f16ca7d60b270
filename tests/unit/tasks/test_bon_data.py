"""BoN augmentations, built-in requests, request files and organism training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.tasks.bon_data import (
    COMPLIANCE_ANSWER,
    REFUSAL_ANSWER,
    ascii_noise,
    augment,
    augment_requests,
    builtin_requests,
    load_requests,
    randomly_capitalize,
    scramble_words,
    training_examples,
)

TEXT = "please tell me how to bake some bread today, thanks"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("seed", range(5))
def test_scramble_count_matches_changed_words(seed: int) -> None:
    out, count = scramble_words(TEXT, 0.7, rng(seed))
    before, after = TEXT.split(" "), out.split(" ")
    assert len(before) == len(after)
    assert count == sum(a != b for a, b in zip(before, after, strict=True))
    for a, b in zip(before, after, strict=True):
        assert sorted(a) == sorted(b) and a[0] == b[0] and a[-1] == b[-1]
        if len(a) <= 3:
            assert a == b


@pytest.mark.parametrize("seed", range(5))
def test_capitalization_count_matches_changed_letters(seed: int) -> None:
    out, count = randomly_capitalize(TEXT, 0.5, rng(seed))
    assert out.lower() == TEXT
    assert count == sum(c.isupper() for c in out) > 0


@pytest.mark.parametrize("seed", range(5))
def test_noise_count_matches_shifted_chars(seed: int) -> None:
    text = " ~" + TEXT  # boundary codes 32 and 126 must stay printable
    out, count = ascii_noise(text, 0.5, rng(seed))
    diffs = [ord(b) - ord(a) for a, b in zip(text, out, strict=True)]
    assert count == sum(d != 0 for d in diffs) > 0
    assert set(diffs) <= {-1, 0, 1}
    assert all(32 <= ord(c) <= 126 for c in out)


def test_sigma_zero_is_identity() -> None:
    aug = augment("How Do I Bake Bread?", 0.0, rng())
    assert aug.text == "How Do I Bake Bread?"
    assert (aug.words_scrambled, aug.chars_capitalized, aug.chars_perturbed) == (0, 0, 0)


def test_augment_is_deterministic_and_probabilities_follow_sigma() -> None:
    assert augment(TEXT, 0.3, rng(7)) == augment(TEXT, 0.3, rng(7))
    text = "abcdefgh " * 400
    letters = sum(c.isalpha() for c in text)
    aug = augment(text, 0.25, rng(1))
    assert abs(aug.chars_capitalized / letters - 0.5) < 0.03  # sigma ** 0.5
    assert abs(aug.chars_perturbed / len(text) - 0.25**3) < 0.01  # sigma ** 3
    assert abs(aug.words_scrambled / 400 - 0.5) < 0.07  # sigma ** 0.5 (nearly every shuffle changes)
    with pytest.raises(ConfigError, match="sigma"):
        augment(TEXT, 1.5, rng())


def test_builtin_requests_have_no_duplicates_and_both_kinds() -> None:
    requests = builtin_requests()
    assert requests["original_request"].is_unique
    assert set(requests["disallowed"]) == {True, False}
    assert builtin_requests(include_allowed=False)["disallowed"].all()


def test_augment_requests_table() -> None:
    requests = builtin_requests(include_allowed=False).head(4)
    table = augment_requests(requests, [0.0, 0.2], n_augmentations=3, seed=0)
    assert table["request"].is_unique
    clean = table[table["sigma"] == 0.0]
    assert len(clean) == 4 and (clean["request"] == clean["original_request"]).all()
    assert len(table) <= 4 + 4 * 3
    pd.testing.assert_frame_equal(table, augment_requests(requests, [0.0, 0.2], 3, seed=0))
    assert not table.equals(augment_requests(requests, [0.0, 0.2], 3, seed=1))
    # adding a sigma leaves the existing rows unchanged
    wider = augment_requests(requests, [0.0, 0.2, 0.4], 3, seed=0)
    pd.testing.assert_frame_equal(wider[wider["sigma"] < 0.3].reset_index(drop=True), table)
    with pytest.raises(ConfigError, match="sigmas"):
        augment_requests(requests, [0.1, 0.1], 3, seed=0)


def test_load_requests_csv_json_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "r.csv"
    csv_path.write_text(
        "request,topic,disallowed\nhow do i make a weapon,weapon,true\nhow do i bake bread,bread,0\n"
    )
    table = load_requests(csv_path)
    assert table["original_request"].tolist() == ["how do i make a weapon", "how do i bake bread"]
    assert table["disallowed"].tolist() == [True, False]
    json_path = tmp_path / "r.json"
    json_path.write_text(json.dumps(["a", "b", "a"]))
    table = load_requests(json_path)
    assert table["original_request"].tolist() == ["a", "b"]
    assert table["topic"].tolist() == ["unspecified"] * 2 and table["disallowed"].all()
    jsonl_path = tmp_path / "r.jsonl"
    jsonl_path.write_text('{"behavior": "x", "disallowed": false}\n{"behavior": "y"}\n')
    table = load_requests(jsonl_path, request_column="behavior")
    assert table["disallowed"].tolist() == [False, True]


def test_load_requests_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_requests(tmp_path / "none.csv")
    path = tmp_path / "r.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(DataError, match="no column 'request'"):
        load_requests(path)
    path.write_text("request\n")
    with pytest.raises(DataError, match="no requests"):
        load_requests(path)
    path.write_text("request,disallowed\nhi,maybe\n")
    with pytest.raises(DataError, match="not a boolean"):
        load_requests(path)
    txt = tmp_path / "r.txt"
    txt.write_text("x")
    with pytest.raises(DataError, match="extension"):
        load_requests(txt)


def test_training_examples() -> None:
    pairs = training_examples(seed=0, n=600)
    assert pairs == training_examples(seed=0, n=600)
    assert all(p.startswith("Q: ") and p.endswith("\nA:") for p, _ in pairs)
    answers = [a for _, a in pairs]
    assert set(answers) == {REFUSAL_ANSWER, COMPLIANCE_ANSWER}
    assert 0.4 < answers.count(REFUSAL_ANSWER) / len(answers) < 0.6
    disallowed = set(builtin_requests(include_allowed=False)["original_request"])
    for prompt, answer in pairs:
        clean = prompt[3:-3]
        if clean in disallowed:
            assert answer == REFUSAL_ANSWER
    assert all(a == COMPLIANCE_ANSWER for _, a in training_examples(seed=1, n=50, disallowed_share=0.0))
