"""The fast engine gives exactly the slow path's answers and labels (property test on random groups),
for the bundled organism and tiny random models of other architecture rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mecharule.decoding.generation import generate_answers
from mecharule.interventions.engine import AblationEngine, tie_margin_for
from mecharule.interventions.hooks import count_hooks, patched
from mecharule.interventions.slow_path import ablated_answers
from mecharule.interventions.values import mean_tables, zero_tables
from mecharule.models import Site, handle_from_model, load_model
from mecharule.tasks import make_task

from .tiny_models import tiny_model


@pytest.fixture(scope="module")
def organism():
    return load_model("zoo:arithmetic")


@pytest.fixture(scope="module")
def task():
    return make_task("arithmetic")


def _prompts(task, n, seed):
    table = task.prompts()
    rng = np.random.default_rng(seed)
    return table.iloc[rng.choice(len(table), n, replace=False)].reset_index(drop=True)


def _random_groups(handle, kind, n_groups, seed, max_size=5):
    rng = np.random.default_rng(seed)
    width = handle.arch.width(kind)
    groups = []
    for _ in range(n_groups):
        size = int(rng.integers(1, max_size + 1))
        groups.append(
            [
                Site(int(rng.integers(handle.arch.n_layers)), kind, int(i))
                for i in rng.choice(width, size, replace=False)
            ]
        )
    return groups


def _assert_fast_equals_slow(handle, task, prompts, tables, groups, positions, budget_mb=512):
    engine = AblationEngine(
        handle,
        prompts,
        task.score,
        tables,
        task.max_new_tokens,
        positions=positions,
        memory_budget_mb=budget_mb,
    )
    outcome = engine.run(groups)
    for g, group in enumerate(groups):
        slow = ablated_answers(
            handle, prompts["prompt"].tolist(), group, tables, positions, task.max_new_tokens
        )
        fast = [outcome.changed_answers.get((g, p), engine.baseline_answers[p]) for p in range(len(prompts))]
        assert fast == slow, f"group {g}"
        assert outcome.labels[g].tolist() == task.score(prompts, slow).tolist()
    return engine, outcome


@pytest.mark.parametrize("kind", ["mlp", "mlp_out"])
@pytest.mark.parametrize(
    "positions",
    [
        "decode",
        pytest.param("generated", marks=pytest.mark.slow),
        pytest.param("all", marks=pytest.mark.slow),
    ],
)
def test_fast_path_equals_slow_path_on_organism(organism, task, kind, positions):
    prompts = _prompts(task, 32, seed=1)
    ref = _prompts(task, 64, seed=2)
    keys = [(layer, kind) for layer in range(organism.arch.n_layers)]
    tables = mean_tables(
        organism, keys, ref["prompt"].tolist(), generate_answers(organism, ref["prompt"].tolist(), 6)
    )
    engine, outcome = _assert_fast_equals_slow(
        organism, task, prompts, tables, _random_groups(organism, kind, 8, 3), positions
    )
    assert engine.stats.generated_rows < engine.stats.screened_rows  # screening spared some generations
    assert outcome.flips(engine.baseline_labels).any()  # the test is not vacuous


def test_prompt_chunking_under_a_tiny_memory_budget(organism, task):
    prompts = _prompts(task, 40, seed=4)
    keys = [(0, "mlp"), (1, "mlp")]
    tables = zero_tables(organism, keys)
    engine, _ = _assert_fast_equals_slow(
        organism, task, prompts, tables, _random_groups(organism, "mlp", 4, 5), "decode", budget_mb=0
    )
    assert engine.stats.forwards > 4  # several chunks per group


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox"])
def test_fast_path_equals_slow_path_on_other_architectures(model_type, char_tokenizer, task):
    model = tiny_model(model_type, vocab_size=len(char_tokenizer), seed=3)
    handle = handle_from_model(model, char_tokenizer, name=model_type)
    prompts = _prompts(task, 24, seed=6)
    ref = _prompts(task, 32, seed=7)
    for kind in ("mlp", "mlp_out"):
        keys = [(layer, kind) for layer in range(handle.arch.n_layers)]
        tables = mean_tables(
            handle, keys, ref["prompt"].tolist(), generate_answers(handle, ref["prompt"].tolist(), 4)
        )
        _assert_fast_equals_slow(handle, task, prompts, tables, _random_groups(handle, kind, 6, 8), "decode")


def test_prompts_whose_stored_label_does_not_reproduce_are_dropped(organism, task):
    prompts = _prompts(task, 20, seed=9)
    answers = generate_answers(organism, prompts["prompt"].tolist(), task.max_new_tokens)
    labels = task.score(prompts, answers)
    stored = labels.copy()
    stored[[0, 3]] = ~stored[[0, 3]]
    engine = AblationEngine(
        organism, prompts, task.score, zero_tables(organism, [(0, "mlp")]), 6, stored_labels=stored
    )
    assert engine.dropped.tolist() == [0, 3]
    assert engine.n_prompts == 18
    assert engine.baseline_labels.tolist() == np.delete(labels, [0, 3]).tolist()


def test_no_hook_survives_an_exception(organism, task):
    prompts = _prompts(task, 8, seed=10)
    engine = AblationEngine(organism, prompts, task.score, zero_tables(organism, [(0, "mlp")]), 6)

    def bad_scorer(table: pd.DataFrame, answers):
        raise RuntimeError("scorer failed")

    engine.scorer = bad_scorer
    with pytest.raises(RuntimeError, match="scorer failed"):
        engine.run([[Site(0, "mlp", i) for i in range(64)]])
    assert count_hooks(organism) == 0
    with pytest.raises(KeyError), patched(organism, {(0, "mlp"): lambda x: x * 0}):
        raise KeyError("inside")
    assert count_hooks(organism) == 0
    assert torch.is_grad_enabled()


# -- bfloat16 ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def organism_bf16():
    return load_model("zoo:arithmetic", dtype="bfloat16")


def test_tie_margin_is_wider_for_bfloat16_and_the_engine_picks_it(organism_bf16, task):
    assert tie_margin_for(torch.bfloat16) > tie_margin_for(torch.float32)
    assert organism_bf16.model.dtype == torch.bfloat16
    prompts = _prompts(task, 8, seed=11)
    tables = zero_tables(organism_bf16, [(0, "mlp")])
    engine = AblationEngine(organism_bf16, prompts, task.score, tables, task.max_new_tokens)
    assert engine.tie_margin == tie_margin_for(torch.bfloat16)
    assert AblationEngine(organism_bf16, prompts, task.score, tables, 6, tie_margin=0.0).tie_margin == 0.0


def test_fast_path_equals_slow_path_in_bfloat16_on_organism(organism_bf16, task):
    prompts = _prompts(task, 32, seed=12)
    ref = _prompts(task, 64, seed=13)
    keys = [(layer, "mlp") for layer in range(organism_bf16.arch.n_layers)]
    ref_texts = ref["prompt"].tolist()
    tables = mean_tables(organism_bf16, keys, ref_texts, generate_answers(organism_bf16, ref_texts, 6))
    groups = _random_groups(organism_bf16, "mlp", 8, 14)
    engine, outcome = _assert_fast_equals_slow(organism_bf16, task, prompts, tables, groups, "decode")
    assert engine.stats.generated_rows < engine.stats.screened_rows  # screening spared some generations
    assert outcome.flips(engine.baseline_labels).any()  # the test is not vacuous


def test_fast_path_equals_slow_path_in_bfloat16_on_llama(char_tokenizer, task):
    # weights 10x the default scale, so that answers vary and ablations change them
    model = tiny_model("llama", len(char_tokenizer), seed=15, initializer_range=0.2).to(torch.bfloat16)
    handle = handle_from_model(model, char_tokenizer, name="llama-bf16")
    prompts = _prompts(task, 24, seed=16)
    ref = _prompts(task, 32, seed=17)
    keys = [(layer, "mlp") for layer in range(handle.arch.n_layers)]
    ref_texts = ref["prompt"].tolist()
    tables = mean_tables(handle, keys, ref_texts, generate_answers(handle, ref_texts, 4))
    engine, outcome = _assert_fast_equals_slow(
        handle, task, prompts, tables, _random_groups(handle, "mlp", 6, 18, max_size=16), "decode"
    )
    assert engine.tie_margin == tie_margin_for(torch.bfloat16)
    assert len(outcome.changed_answers) > 10  # ablations change answers: the comparison is not vacuous


def test_out_of_memory_halves_the_batch_and_gives_the_same_labels(organism, task, monkeypatch, caplog):
    """A forward that runs out of memory (here: any of more than 64 rows) halves the memory budget
    and runs the groups again, with the labels of an unconstrained run."""
    import torch

    prompts = _prompts(task, 48, seed=6)
    tables = zero_tables(organism, [(0, "mlp"), (1, "mlp")])
    groups = _random_groups(organism, "mlp", 12, 7)

    def engine():
        return AblationEngine(
            organism, prompts, task.score, tables, task.max_new_tokens, memory_budget_mb=512
        )

    expected = engine().run(groups).labels
    constrained = engine()
    screen = constrained._screen_batch

    def screen_or_fail(groups_, offset, chunk):
        if len(groups_) * len(chunk) > 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return screen(groups_, offset, chunk)

    monkeypatch.setattr(constrained, "_screen_batch", screen_or_fail)
    before = constrained.rows_per_forward
    with caplog.at_level("WARNING", logger="mecharule.interventions.engine"):
        labels = constrained.run(groups).labels
    assert np.array_equal(labels, expected)
    assert constrained.rows_per_forward <= 64 < before and "out of memory" in caplog.text


def test_an_error_that_is_not_out_of_memory_is_not_retried(organism, task, monkeypatch):
    prompts = _prompts(task, 8, seed=8)
    engine = AblationEngine(
        organism, prompts, task.score, zero_tables(organism, [(0, "mlp")]), task.max_new_tokens
    )

    def broken(*args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(engine, "_screen_batch", broken)
    before = engine.rows_per_forward
    with pytest.raises(RuntimeError, match="shape mismatch"):
        engine.run([[Site(0, "mlp", 1)]])
    assert engine.rows_per_forward == before
