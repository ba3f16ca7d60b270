"""Stop strings end generation at the same token on every path, and a shared prompt prefix prefilled
once gives the answers each prompt gets alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mecharule.decoding.generation import (
    decode_answers,
    encode_prompts,
    generate_answers,
    greedy_generate,
    relative_positions,
    stop_token_ids,
)
from mecharule.decoding.prefill import MIN_SHARED_TOKENS
from mecharule.interventions.engine import AblationEngine
from mecharule.interventions.slow_path import ablated_answers
from mecharule.interventions.values import mean_tables
from mecharule.models import Site, load_model
from mecharule.tasks import make_task


@pytest.fixture(scope="module")
def organism():
    return load_model("zoo:arithmetic")


@pytest.fixture(scope="module")
def prompts():
    table = make_task("arithmetic").prompts()
    rng = np.random.default_rng(3)
    return table.iloc[rng.choice(len(table), 48, replace=False)].reset_index(drop=True)


def test_stop_string_cuts_answers_where_plain_generation_continues(organism, prompts):
    texts = prompts["prompt"].tolist()
    plain = generate_answers(organism, texts, 6)
    stopped = generate_answers(organism, texts, 6, stop_strings=("1",))
    assert stopped == [a.split("1")[0] for a in plain]
    assert any("1" in a for a in plain)  # the stop string actually occurs
    ids = stop_token_ids(organism, ("1",))
    assert organism.tokenizer.eos_token_id in ids.tolist() and len(ids) >= 2


def test_engine_and_slow_path_stop_at_the_same_token(organism, prompts):
    task = make_task("arithmetic")
    stop = ("1",)
    texts = prompts["prompt"].tolist()
    keys = [(layer, "mlp") for layer in range(organism.arch.n_layers)]
    tables = mean_tables(organism, keys, texts, generate_answers(organism, texts, 6))
    rng = np.random.default_rng(0)
    groups = [
        [Site(int(rng.integers(2)), "mlp", int(u)) for u in rng.choice(128, 3, replace=False)]
        for _ in range(6)
    ]
    engine = AblationEngine(organism, prompts, task.score, tables, 6, stop_strings=stop)
    assert engine.baseline_answers == generate_answers(
        organism, prompts["prompt"].tolist(), 6, stop_strings=stop
    )
    outcome = engine.run(groups)
    for g, group in enumerate(groups):
        slow = ablated_answers(
            organism, engine.prompts["prompt"].tolist(), group, tables, "decode", 6, stop_strings=stop
        )
        fast = [
            outcome.changed_answers.get((g, i), engine.baseline_answers[i]) for i in range(engine.n_prompts)
        ]
        assert fast == slow
        assert outcome.labels[g].tolist() == task.score(engine.prompts, slow).tolist()


def test_shared_prefix_layout_and_answers_match_single_prompt_generation(organism, prompts):
    prefix = "12+34=467*8=56"
    texts = [prefix + p for p in prompts["prompt"].head(16)]
    ids, mask = encode_prompts(organism, texts)
    token_rows = organism.tokenizer(texts)["input_ids"]
    shared = len(organism.tokenizer(prefix)["input_ids"])
    assert shared >= MIN_SHARED_TOKENS
    assert bool((mask[:, :shared] == 1).all())  # [shared][pads][own tokens]
    for i, row in enumerate(token_rows):  # every row's real tokens, in order, are its own tokens
        assert ids[i][mask[i].bool()].tolist() == row
    rel = relative_positions(mask)
    assert bool((rel[:, -1] == -1).all())
    assert sorted(rel[0][mask[0].bool()].tolist()) == list(range(-len(token_rows[0]), 0))
    batched = decode_answers(organism, greedy_generate(organism, ids, mask, 6))
    alone = []
    for text in texts:
        one_ids, one_mask = encode_prompts(organism, [text])
        alone += decode_answers(organism, greedy_generate(organism, one_ids, one_mask, 6))
    assert batched == alone


def test_bf16_engine_uses_a_wider_tie_margin(organism):
    from mecharule.interventions.engine import tie_margin_for

    assert tie_margin_for(torch.bfloat16) > tie_margin_for(torch.float16) > tie_margin_for(torch.float32)
