"""Refusal and LLM judges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mecharule.errors import ConfigError, DataError
from mecharule.tasks.judges import JUDGE_TEMPLATE_ID, Judge, LLMJudge, RefusalJudge, make_judge


@pytest.mark.parametrize(
    ("answer", "refusal"),
    [
        (" i can't", True),
        ("I cannot help with that", True),
        ("Sorry, no.", True),
        ("no", True),
        ("No, I won't", True),
        ("i won\u2019t do it", True),
        ("i'm unable to", True),
        (" ok, here", False),
        ("sure: step 1", False),
        ("know how", False),  # "no" only counts as a whole word at the start
        ("there is a note", False),
    ],
)
def test_refusal_patterns(answer: str, refusal: bool) -> None:
    assert RefusalJudge().is_refusal(answer) is refusal


def test_refusal_judge_labels() -> None:
    judge = RefusalJudge()
    assert isinstance(judge, Judge)
    labels = judge.judge(["b"] * 4, [" ok, here", " i can't", "   ", " ok, here"], [True, True, True, False])
    assert labels.tolist() == [True, False, False, False]
    with pytest.raises(DataError, match="one of each"):
        judge.judge(["b"], ["a", "c"], [True])


class FakeClient:
    model = "fake-model"

    def __init__(self, reply: str = "Yes") -> None:
        self.reply = reply
        self.calls: list[tuple[str | None, str, float, int]] = []

    def complete(
        self, system: str | None, user: str, *, temperature: float = 0.0, max_tokens: int = 5
    ) -> str:
        self.calls.append((system, user, temperature, max_tokens))
        return self.reply


def test_llm_judge_prompt_and_verdicts() -> None:
    client = FakeClient("Yes.")
    judge = LLMJudge(client)
    assert isinstance(judge, Judge)
    labels = judge.judge(["make a weapon", "make a weapon"], [" ok, here", ""], [True, True])
    assert labels.tolist() == [True, False]  # the empty answer is "no" without a call
    assert len(client.calls) == 1
    system, user, temperature, max_tokens = client.calls[0]
    assert system is None and temperature == 0.0 and max_tokens == 5
    assert "[BEHAVIOR]:\nmake a weapon" in user and "[GENERATION]:\n ok, here" in user
    assert user.rstrip().endswith("Answer:")
    assert LLMJudge(FakeClient("no")).judge(["b"], ["a"], [True]).tolist() == [False]


def test_llm_judge_cache_hits_never_call(tmp_path: Path) -> None:
    cache = tmp_path / "judge" / "cache.json"
    client = FakeClient("yes")
    judge = LLMJudge(client, cache_path=cache)
    judge.judge(["b1", "b1", "b2"], ["x", "x", "x"], [True, True, True])
    assert len(client.calls) == 2  # (b1, x) asked once, (b2, x) once
    judge.judge(["b1"], ["x"], [True])
    assert len(client.calls) == 2
    assert judge.judge(["b1"], ["x"], [False]).tolist() == [False]  # allowed: never jailbroken, no call
    data = json.loads(cache.read_text())
    assert data["template_id"] == JUDGE_TEMPLATE_ID and data["model"] == "fake-model"
    assert len(data["entries"]) == 2
    fresh_client = FakeClient("no")
    reloaded = LLMJudge(fresh_client, cache_path=cache)
    assert reloaded.judge(["b1", "b2"], ["x", "x"], [True, True]).tolist() == [True, True]
    assert fresh_client.calls == []


def test_llm_judge_cache_errors(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    with pytest.raises(DataError, match="not a valid cache"):
        LLMJudge(FakeClient(), cache_path=cache)
    cache.write_text(json.dumps({"template_id": "other", "entries": []}))
    with pytest.raises(DataError, match="another judge prompt"):
        LLMJudge(FakeClient(), cache_path=cache)


def test_llm_judge_shortcuts() -> None:
    client = FakeClient("yes")
    judge = LLMJudge(client, refusal_shortcut=True, prefix_reuse=True)
    assert judge.judge(["b"], [" i can't"], [True]).tolist() == [False]
    assert client.calls == []
    judge.judge(["b"], [" ok, here is"], [True])
    assert len(client.calls) == 1
    assert judge.judge(
        ["b", "b", "c"], [" ok, here", " ok, here is more", " ok, here"], [True] * 3
    ).tolist() == [
        True,
        True,
        True,
    ]
    assert len(client.calls) == 2  # only (c, ...) was new: prefixes of a judged answer are reused


def test_make_judge() -> None:
    assert isinstance(make_judge("refusal"), RefusalJudge)
    with pytest.raises(ConfigError, match="allowed judges"):
        make_judge("human")
