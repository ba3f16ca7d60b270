"""The measure stage's LLM-proposed features: proposals come over the OpenAI wire format, run in the
sandbox, and are filtered on TRAIN rows; a re-run hits the cache and makes no call."""

from __future__ import annotations

import json

import numpy as np

from mecharule.config import FeatureProposalConfig
from mecharule.features.stage import ProposalInputs, proposal_source, proposed_features
from mecharule.llm.client import ChatClient
from mecharule.tasks import make_task

PROPOSALS = [
    {
        "label": "Is multiplication",
        "description": "the operator is *",
        "python_src": (
            "def my_feature(prompt: str, info: dict):\n    return 1.0 if info['operator'] == '*' else 0.0\n"
        ),
    },
    {
        "label": "Always one",
        "description": "constant",
        "python_src": "def my_feature(prompt: str, info: dict):\n    return 1.0\n",
    },
    {
        "label": "Escape",
        "description": "hostile",
        "python_src": "def my_feature(prompt: str, info: dict):\n    return ().__class__.__bases__[0]\n",
    },
]


def test_proposed_features_are_sandboxed_filtered_and_cached(chat_server, tmp_path):
    task = make_task("arithmetic", {"max_operand": 19})
    prompts = task.prompts()
    labels = (prompts["operator"] != "*").to_numpy()  # the model "fails" on multiplication
    is_train = np.random.default_rng(0).random(len(prompts)) < 0.8
    chat_server.default = chat_server.reply(content=json.dumps(PROPOSALS))
    client = ChatClient(chat_server.url, "test-model", cache_dir=tmp_path / "cache")
    inputs = ProposalInputs(prompts, labels, is_train, list(task.seed_features()))
    config = FeatureProposalConfig(rounds=2, n_features=3, n_examples=8)
    kept, table, log = proposed_features(task, inputs, config, client=client, seed=0)

    assert [f.name for f in kept] == log["kept"] and len(kept) == 1
    assert table.iloc[:, 0].tolist() == (prompts["operator"] == "*").astype(float).tolist()
    assert log["n_proposed"] == 2  # the dunder escape never passed the AST allow-list
    assert any(d["filter"] == "constant" for d in log["filtered"])
    assert "def my_feature" in proposal_source(kept[0])["python_src"]
    system = chat_server.requests[0]["body"]["messages"][0]
    assert system["role"] == "system" and len(system["content"]) > 100  # the full system prompt

    calls = chat_server.n_calls
    client2 = ChatClient(chat_server.url, "test-model", cache_dir=tmp_path / "cache")
    again, _, _ = proposed_features(task, inputs, config, client=client2, seed=0)
    assert chat_server.n_calls == calls and [f.name for f in again] == [f.name for f in kept]


def src(body: str) -> str:
    return f"def my_feature(prompt: str, info: dict):\n    {body}\n"


EVERY_FATE = [
    *PROPOSALS,
    {"label": "is multiplication!", "description": "same label again", "python_src": src("return 1.0")},
    {"label": "Crashes", "description": "no such key", "python_src": src("return info['missing']")},
    {"label": "Not a number", "description": "NaN", "python_src": src("return math.nan")},
    {"description": "an item without a label", "python_src": src("return 1.0")},
]


def test_the_log_records_every_proposal_with_its_fate(chat_server, tmp_path):
    task = make_task("arithmetic", {"max_operand": 19})
    prompts = task.prompts()
    labels = (prompts["operator"] != "*").to_numpy()
    is_train = np.random.default_rng(0).random(len(prompts)) < 0.8
    chat_server.default = chat_server.reply(content=json.dumps(EVERY_FATE))
    client = ChatClient(chat_server.url, "test-model", cache_dir=tmp_path / "cache")
    # the sandbox limits: 10 s per feature, 90 s per round
    config = FeatureProposalConfig(
        rounds=1, n_features=7, n_examples=8, feature_seconds=10.0, round_seconds=90.0
    )
    inputs = ProposalInputs(prompts, labels, is_train, list(task.seed_features()))
    kept, _, log = proposed_features(task, inputs, config, client=client, seed=0)

    fates = {r["label"]: (r["status"], r["stage"]) for r in log["proposals"]}
    assert fates == {
        "Is multiplication": ("kept", None),
        "Always one": ("rejected", "filter"),
        "Escape": ("rejected", "validation"),  # refused by the AST check, never run
        "is multiplication!": ("rejected", "duplicate"),
        "Crashes": ("rejected", "execution"),
        "Not a number": ("rejected", "execution"),
    }
    reasons = {r["label"]: r["reason"] for r in log["proposals"]}
    assert "starts with '_'" in reasons["Escape"] and "constant" in reasons["Always one"]
    assert reasons["Crashes"].startswith("raised on") and "KeyError" in reasons["Crashes"]
    assert "returned non-finite values on" in reasons["Not a number"]
    assert all(r["round"] == 0 and "def my_feature" in r["python_src"] for r in log["proposals"])
    assert [r["name"] for r in log["proposals"] if r["status"] == "kept"] == log["kept"] == [kept[0].name]
    # the keys other code reads keep their meaning; rejections now include the AST and duplicate ones
    assert log["n_proposed"] == 4 and log["n_answered"] == 6
    assert {r["label"]: r["stage"] for r in log["rejected"]} == {
        "Escape": "validation", "is multiplication!": "duplicate", "Crashes": "execution",
        "Not a number": "execution",
    }  # fmt: skip
    assert [d["name"] for d in log["filtered"]] == ["always_one"]
    assert log["parse_problems"] == [{"round": 0, "reason": "item 6: missing a string 'label'"}]
    assert log["round_seconds"] == 90.0
    assert log["sandbox"]["protections"]["own_session"] is True
    assert set(log["sandbox"]["active"]) <= set(log["sandbox"]["protections"])
    json.dumps(log, allow_nan=False)  # features.json can hold it as it is
