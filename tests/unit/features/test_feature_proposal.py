"""Contrastive proposal: prompt building, lenient parsing of messy answers, the bounded round loop."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.features.proposal import (
    DEFAULT_SYSTEM_PROMPT,
    ExampleGroups,
    LabelledPrompts,
    ProposalBrief,
    ProposalSettings,
    build_proposal_prompt,
    parse_feature_list,
    propose_features,
)

GOOD = "def my_feature(prompt: str, info: dict):\n    return len(prompt)\n"


def item(label: str, src: str = GOOD, description: str = "d") -> dict[str, str]:
    return {"label": label, "description": description, "python_src": src}


class FakeClient:
    """Answers from a list (then ``default``) and records every call."""

    def __init__(self, answers: list[str], default: str = "no json here") -> None:
        self.answers = list(answers)
        self.default = default
        self.calls: list[dict] = []

    def complete(self, system, user, *, temperature=0.0, max_tokens=None, seed=None) -> str:
        self.calls.append({"system": system, "user": user, "temperature": temperature, "seed": seed})
        return self.answers.pop(0) if self.answers else self.default


PROMPTS = pd.DataFrame(
    {
        "prompt": [f"{a}{op}{b}=" for a, op, b in zip(range(20), "+*" * 10, range(5, 25), strict=True)],
        "operator": list("+*" * 10),
    }
)
LABELS = PROMPTS["operator"].eq("+").to_numpy()
EXAMPLES = LabelledPrompts(PROMPTS, LABELS)


# -- parsing -------------------------------------------------------------------------------------


def test_parse_plain_list():
    items, problems = parse_feature_list(json.dumps([item("a"), item("b")]))
    assert [i["label"] for i in items] == ["a", "b"] and problems == []


def test_parse_fenced_json_with_prose_and_trailing_commas():
    text = (
        "Sure! Here are the features you asked for:\n```json\n[\n"
        '  {"label": "len", "description": "length", "python_src": "def my_feature(prompt, info):\\n    '
        'return len(prompt)\\n",},\n'
        "]\n```\nLet me know if you need more [or fewer] features."
    )
    items, _ = parse_feature_list(text)
    assert [i["label"] for i in items] == ["len"]
    assert items[0]["python_src"] == GOOD.replace(": str", "").replace(": dict", "")


def test_parse_prose_around_bare_json_and_raw_newlines_in_strings():
    src_with_raw_newlines = 'def my_feature(prompt, info):\n    return prompt.count("*")'
    text = (
        'Here you go: [{"label": "stars", "python_src": "'
        + src_with_raw_newlines.replace('"', '\\"')
        + '"}] thanks'
    )
    items, _ = parse_feature_list(text)
    assert items[0]["label"] == "stars" and items[0]["description"] == ""
    assert items[0]["python_src"].endswith('prompt.count("*")\n')


def test_parse_single_object_and_features_wrapper():
    assert [i["label"] for i in parse_feature_list(json.dumps(item("solo")))[0]] == ["solo"]
    wrapped = json.dumps({"features": [item("w1"), item("w2")]})
    assert [i["label"] for i in parse_feature_list(wrapped)[0]] == ["w1", "w2"]


def test_parse_truncated_answer_salvages_complete_objects():
    full = json.dumps([item("one"), item("two"), item("three")])
    items, problems = parse_feature_list(full[: full.index('"three"') + 20])
    assert [i["label"] for i in items] == ["one", "two"]
    assert any("salvaged 2" in p for p in problems)


def test_parse_skips_bad_items_and_reports_them():
    text = json.dumps(
        [
            item("fine"),
            "not an object",
            {"description": "no label", "python_src": GOOD},
            {"label": "no code"},
            {"label": "lines", "python_src": ["def my_feature(prompt, info):", "    return 1"]},
            {"name": "alias", "code": "```python\ndef my_feature(prompt, info):\n    return 2\n```"},
        ]
    )
    items, problems = parse_feature_list(text)
    assert [i["label"] for i in items] == ["fine", "lines", "alias"]
    assert items[1]["python_src"] == "def my_feature(prompt, info):\n    return 1\n"
    assert items[2]["python_src"] == "def my_feature(prompt, info):\n    return 2\n"  # inner fence removed
    assert len(problems) == 3 and problems[0].startswith("item 1: not an object")


@pytest.mark.parametrize(
    "junk", ["", "I cannot help with that.", "[1, 2", "{'label': 'single quotes'}", "42"]
)
def test_parse_junk_gives_nothing_and_never_raises(junk):
    items, problems = parse_feature_list(junk)
    assert items == [] and problems


# -- prompt --------------------------------------------------------------------------------------


def test_user_prompt_has_groups_features_info_keys_and_rules():
    long_prompt = "x" * 1000
    text = build_proposal_prompt(
        ExampleGroups(["1+1=", long_prompt], ["2*3=\nnext line"]),
        [("seed_len", "prompt length")],
        ["operator", "a"],
        16,
        "correct",
    )
    assert "Group A: the model's behaviour was 'correct'" in text
    assert "Group B: the model's behaviour was NOT 'correct'" in text
    assert '- "1+1="' in text and '- "2*3=\\nnext line"' in text  # JSON-quoted, newlines visible
    assert "x" * 400 + " [...]" in text and "x" * 401 not in text
    assert "- seed_len: prompt length" in text and "DO NOT REPEAT" in text
    assert "'operator', 'a'" in text and "Now propose 16 new features" in text
    assert "def my_feature(prompt: str, info: dict)" in text and "No imports" in text
    assert "At most 25 lines" in text and text.endswith("Return ONLY the JSON list.")


# -- the round loop ------------------------------------------------------------------------------


def test_rounds_send_the_full_system_prompt_and_keep_valid_distinct_features():
    system = "SYSTEM PROMPT line one\nline two " + "y" * 3000
    client = FakeClient(
        [
            json.dumps(
                [
                    item("Length"),
                    item("bad import", "import os\ndef my_feature(prompt, info):\n    return 1\n"),
                ]
            ),
            "garbage answer",  # round 1, attempt 1: nothing usable -> retried
            json.dumps(
                [
                    item("length"),
                    item("seed len"),
                    item("star count", "def my_feature(prompt, info):\n    return prompt.count('*')\n"),
                ]
            ),
        ]
    )
    features = propose_features(
        client,
        EXAMPLES,
        brief=ProposalBrief(system_prompt=system, existing=[("seed_len", "seed: prompt length")]),
        settings=ProposalSettings(n_rounds=2, n_examples=3, seed=1),
    )
    assert [(f.label, f.round) for f in features] == [("Length", 0), ("star count", 1)]
    assert len(client.calls) == 3
    assert all(call["system"] == system for call in client.calls)
    assert all(call["temperature"] == 0.3 for call in client.calls)
    last_user = client.calls[-1]["user"]
    assert "- Length: d" in last_user and "- seed_len: seed: prompt length" in last_user
    assert last_user.count('\n- "') == 6  # 3 positive + 3 negative examples


def test_examples_come_from_the_right_groups_and_are_seeded():
    client = FakeClient([], default=json.dumps([item("x")]))
    propose_features(client, EXAMPLES, settings=ProposalSettings(n_rounds=1, n_examples=4, seed=7))
    user = client.calls[0]["user"]
    group_a, group_b = user.split("### Group B")
    assert group_a.count("+") >= 4 and "*" not in group_a.split("### Group A")[1]
    assert group_b.split("###")[0].count("*") == 4
    again = FakeClient([], default=json.dumps([item("x")]))
    propose_features(again, EXAMPLES, settings=ProposalSettings(n_rounds=1, n_examples=4, seed=7))
    assert again.calls == client.calls  # same seed, same prompts and LLM seeds
    other = FakeClient([], default=json.dumps([item("x")]))
    propose_features(other, EXAMPLES, settings=ProposalSettings(n_rounds=1, n_examples=4, seed=8))
    assert other.calls[0]["user"] != user


def test_useless_answers_end_after_bounded_attempts():
    client = FakeClient([], default="still nothing")
    assert propose_features(client, EXAMPLES, settings=ProposalSettings(n_rounds=4, max_attempts=2)) == []
    assert len(client.calls) == 8


def test_default_system_prompt_and_input_checks():
    client = FakeClient([json.dumps([item("a")])])
    propose_features(client, EXAMPLES, settings=ProposalSettings(n_rounds=1))
    assert client.calls[0]["system"] == DEFAULT_SYSTEM_PROMPT
    with pytest.raises(DataError, match="both groups"):
        propose_features(client, LabelledPrompts(PROMPTS, np.ones(len(PROMPTS), dtype=bool)))
    with pytest.raises(DataError, match="one per prompt"):
        propose_features(client, LabelledPrompts(PROMPTS, LABELS[:3]))
    with pytest.raises(ConfigError, match="max_attempts"):
        propose_features(client, EXAMPLES, settings=ProposalSettings(max_attempts=0))


def test_every_skipped_item_reaches_on_skip_with_its_reason():
    bad_src = "def my_feature(prompt, info):\n    return eval(prompt)\n"
    answer = json.dumps([item("Length"), item("length!"), item("evil", bad_src), {"python_src": GOOD}])
    skipped: list = []
    features = propose_features(
        FakeClient([answer]),
        EXAMPLES,
        brief=ProposalBrief(existing=[("seed_x", "")]),
        settings=ProposalSettings(n_rounds=1),
        on_skip=skipped.append,
    )
    assert [f.label for f in features] == ["Length"]
    assert [(s.round, s.label, s.stage) for s in skipped] == [
        (0, None, "parse"),
        (0, "length!", "duplicate"),
        (0, "evil", "validation"),
    ]
    assert skipped[0].reason == "item 3: missing a string 'label'" and skipped[0].python_src == ""
    assert "'length'" in skipped[1].reason and "'eval'" in skipped[2].reason
    assert skipped[2].python_src == bad_src  # kept for the log, never run
