"""SmolLM2-135M-Instruct, a real 30-layer Llama, through every prompt format and the ablation paths.

Runs only where ``load_model("smollm2-135m")`` works (a fetched copy: ``mecharule models fetch
smollm2-135m``, or the hub model in the local Hugging Face cache); skipped otherwise. Few prompts
each, so that the module stays under a minute on a 2-core CPU.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from mecharule.behaviour.measure import MeasureSettings, measure_behaviour
from mecharule.decoding.generation import generate_answers
from mecharule.errors import ModelLoadError
from mecharule.interventions.engine import AblationEngine
from mecharule.interventions.slow_path import ablated_answers
from mecharule.interventions.values import mean_tables
from mecharule.models import Site, load_model
from mecharule.models.loading import ModelHandle
from mecharule.tasks import make_task
from mecharule.tasks.base import Task, stop_strings_of
from mecharule.tasks.formats import draw_shots, format_task_prompts

MODEL = "smollm2-135m"
ARITHMETIC = {"max_operand": 20, "n_shots": 5}


@pytest.fixture(scope="module")
def smol() -> ModelHandle:
    try:
        return load_model(MODEL)
    except ModelLoadError as exc:
        pytest.skip(f"{MODEL} is not available on this machine ({exc})")


def _formatted(handle: ModelHandle, task: Task, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` seeded prompts of the task, formatted as the measure stage formats them."""
    pool, shots = task.prompts(), None
    if task.options()["prompt_format"] == "fewshot":
        shots, pool = draw_shots(pool, int(task.options()["n_shots"]), seed)
    rng = np.random.default_rng(seed)
    picked = pool.iloc[rng.choice(len(pool), n, replace=False)].reset_index(drop=True)
    return format_task_prompts(task, picked, handle.tokenizer, shots)


def _measure(handle: ModelHandle, task: Task, prompts: pd.DataFrame, tmp_path) -> pd.DataFrame:
    settings = MeasureSettings(
        batch_size=len(prompts), test_fraction=0.25, seed=0, partial_dir=tmp_path / ".partial" / "measure"
    )
    return measure_behaviour(handle, task, prompts, settings)


def _assert_parse_columns_consistent(table: pd.DataFrame) -> None:
    assert all(isinstance(a, str) for a in table["answer"])
    assert table["parsed_ok"].tolist() == table["parsed"].notna().tolist()
    assert not (table["label"] & ~table["parsed_ok"]).any()  # a correct answer was parsed


@pytest.mark.parametrize("prompt_format", ["raw", "fewshot", "chat"])
def test_arithmetic_answers_in_every_format(smol, prompt_format, tmp_path):
    # chat answers run long ("18-4 is 18 + 4 = 22."): 12 new tokens instead of 24 keep the test short
    options = {"max_new_tokens": 12} if prompt_format == "chat" else {}
    task = make_task("arithmetic", {**ARITHMETIC, **options, "prompt_format": prompt_format})
    table = _measure(smol, task, _formatted(smol, task, 24), tmp_path)
    _assert_parse_columns_consistent(table)
    assert (table["answer"].str.len() > 0).all()
    parsed = table[table["parsed_ok"]]
    assert all(re.fullmatch(r"-?\d+", p) for p in parsed["parsed"])
    assert (parsed["parsed"] == parsed["truth"].astype(str)).tolist() == parsed["label"].tolist()
    if prompt_format != "raw":  # the newline stop string ends every answer line
        assert not table["answer"].str.contains("\n").any()
        assert table["question"].str.fullmatch(r"\d+[-+*]\d+=").all()
        assert (table["prompt"] != table["question"]).all()
    if prompt_format == "fewshot":
        assert table["label"].mean() > 0
        assert table["parsed_ok"].mean() >= 0.75


@pytest.mark.parametrize("prompt_format", ["fewshot", "chat"])
def test_hans_answers_are_mostly_parsable(smol, prompt_format, tmp_path):
    task = make_task("hans_nli", {"prompt_format": prompt_format, "n_examples": 40, "n_shots": 2})
    table = _measure(smol, task, _formatted(smol, task, 6), tmp_path)
    _assert_parse_columns_consistent(table)
    assert set(table["parsed"].dropna()) <= {"E", "N"}
    assert table["parsed_ok"].mean() >= 0.75
    assert not table["answer"].str.contains("\n").any()


def test_engine_equals_slow_path_on_fewshot_prompts(smol):
    task = make_task("arithmetic", {**ARITHMETIC, "prompt_format": "fewshot"})
    stops = stop_strings_of(task)
    formatted = _formatted(smol, task, 32, seed=1)
    prompts, ref = formatted.iloc[:16].reset_index(drop=True), formatted["prompt"].iloc[16:].tolist()
    rng = np.random.default_rng(6)  # a seed whose block changes answers (most 50-unit blocks change none)
    groups = [  # one unit; 50 units of the last layer (blocks of early layers change no answer here)
        [Site(20, "mlp", int(rng.integers(smol.arch.d_mlp)))],
        [Site(29, "mlp", int(u)) for u in rng.choice(smol.arch.d_mlp, 50, replace=False)],
    ]
    keys = sorted({(site.layer, site.kind) for group in groups for site in group})
    tables = mean_tables(
        smol, keys, ref, generate_answers(smol, ref, task.max_new_tokens, stop_strings=stops)
    )
    engine = AblationEngine(smol, prompts, task.score, tables, task.max_new_tokens, stop_strings=stops)
    assert engine.n_prompts == len(prompts)
    outcome = engine.run(groups)
    for g, group in enumerate(groups):
        slow = ablated_answers(
            smol, prompts["prompt"].tolist(), group, tables, "decode", task.max_new_tokens, stop_strings=stops
        )
        fast = [outcome.changed_answers.get((g, p), engine.baseline_answers[p]) for p in range(len(prompts))]
        assert fast == slow, f"group {g}"
        assert outcome.labels[g].tolist() == task.score(prompts, slow).tolist()
    assert engine.stats.generated_rows < engine.stats.screened_rows
    assert outcome.changed_answers  # the block changes an answer: the comparison is not vacuous
