"""Feature proposal end to end over HTTP: local OpenAI-compatible server → parse → sandbox → features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mecharule.features.proposal import LabelledPrompts, ProposalBrief, ProposalSettings, propose_features
from mecharule.features.sandbox import FeatureColumns, SandboxLimits, score_proposed_features
from mecharule.llm import ChatClient

SYSTEM = "You design features for the ARITHMETIC task.\nKeep them short.\n" + "z" * 1500 + "\nTHE END"
PROMPTS = pd.DataFrame(
    {
        "prompt": ["12+3=", "7*8=", "10+1=", "9*9=", "40+2=", "3*3="],
        "operator": ["+", "*", "+", "*", "+", "*"],
    }
)
LABELS = np.array([True, False, True, False, True, False])

ROUND_0 = """Here are my features.
```json
[
  {"label": "is addition", "description": "operator is +",
   "python_src": "def my_feature(prompt: str, info: dict):\\n    return info['operator'] == '+'\\n",},
  {"label": "sneaky", "description": "imports os",
   "python_src": "import os\\ndef my_feature(prompt, info):\\n    return os.getpid()\\n"},
]
```
Hope this helps!"""
ROUND_1_MALFORMED = '[{"label": "broken", "python_src": "def my_feature(prompt, info):\\n    return 1\\n"'
ROUND_1_SINGLE = json.dumps(
    {
        "label": "prompt length",
        "description": "characters in the prompt",
        "python_src": "def my_feature(prompt, info):\n    return len(prompt)\n",
    }
)


def run(server, cache_dir) -> tuple[list, ChatClient]:
    client = ChatClient(server.url, "feature-llm", "sk-x", cache_dir=cache_dir, backoff=0.0)
    client._sleep = lambda _: None
    proposals = propose_features(
        client,
        LabelledPrompts(PROMPTS, LABELS),
        brief=ProposalBrief(system_prompt=SYSTEM, positive_label="correct", info_keys=["operator"]),
        settings=ProposalSettings(n_rounds=2, n_examples=2, max_attempts=3, seed=3),
    )
    return proposals, client


def test_proposals_over_http_with_messy_answers_retries_and_cache(chat_server, tmp_path):
    chat_server.queue(
        ROUND_0,
        chat_server.reply(content=ROUND_1_MALFORMED),
        chat_server.reply(status=429, body=b'{"error": "rate limited"}', headers={"Retry-After": "0"}),
        ROUND_1_SINGLE,
    )
    proposals, _ = run(chat_server, tmp_path / "cache")
    # "sneaky" fails the AST check; the truncated answer yields nothing, so round 1 is retried
    assert [(p.label, p.round) for p in proposals] == [("is addition", 0), ("prompt length", 1)]
    assert chat_server.n_calls == 4  # round 0, round 1 (malformed), 429, success
    for request in chat_server.requests:
        system, user = request["body"]["messages"]
        assert system == {"role": "system", "content": SYSTEM}  # the whole system prompt, every time
        assert user["role"] == "user" and "Group A: the model's behaviour was 'correct'" in user["content"]
        assert request["body"]["temperature"] == 0.3 and isinstance(request["body"]["seed"], int)

    again, client = run(chat_server, tmp_path / "cache")  # same seed: every answer comes from the cache
    assert again == proposals
    assert chat_server.n_calls == 4 and client.n_requests == 0

    features, rejected = score_proposed_features(
        proposals, PROMPTS, FeatureColumns(info_columns=["operator"]), limits=SandboxLimits(wall_seconds=5.0)
    )
    assert rejected == []
    assert [f.name for f in features] == ["is_addition", "prompt_length"]
    np.testing.assert_array_equal(features[0].compute(PROMPTS), LABELS.astype(float))
    np.testing.assert_array_equal(features[1].compute(PROMPTS), [5, 4, 5, 4, 5, 4])
