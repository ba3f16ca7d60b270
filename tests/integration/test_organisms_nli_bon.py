"""The bundled HANS and BoN organisms load, tokenize every task prompt exactly, and still behave as
their training reports say (measured on a fixed subsample through the ordinary generation path)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mecharule.decoding.generation import generate_answers
from mecharule.models.loading import ModelHandle, load_model
from mecharule.tasks.base import Task, make_task
from mecharule.zoo.registry import organism_dir
from mecharule.zoo.specs import PRINTABLE_ASCII, organism_spec

ORGANISMS = ("hans_nli", "bon_jailbreak")
SUBSAMPLE = 600
# a subsample of 600 rows estimates a rate with a standard error of at most 0.02; 0.08 is 4 of them
TOLERANCE = 0.08


@cache
def _organism(name: str) -> tuple[ModelHandle, Task, dict[str, Any]]:
    spec = organism_spec(name)
    report = json.loads((organism_dir(name) / "training_report.json").read_text())
    return load_model(f"zoo:{name}"), make_task(spec.task, spec.task_options), report


@cache
def _measured(name: str) -> pd.DataFrame:
    """A fixed subsample of the task's prompts with the organism's label per row (column ``y``)."""
    handle, task, _ = _organism(name)
    table = task.prompts()
    rows = np.random.default_rng(0).choice(len(table), size=min(SUBSAMPLE, len(table)), replace=False)
    sub = table.iloc[np.sort(rows)].reset_index(drop=True)
    sub["y"] = task.score(sub, generate_answers(handle, sub["prompt"].tolist(), task.max_new_tokens))
    return sub


@pytest.mark.parametrize("name", ORGANISMS)
def test_loads_as_two_layer_llama_with_its_report(name):
    handle, task, report = _organism(name)
    assert handle.arch.model_type == organism_spec(name).shape.architecture == "llama"
    assert handle.arch.n_layers == 2
    assert report["organism"] == name and report["task"] == task.name
    assert report["heldout_prompts"] == len(task.prompts())  # the whole prompt table is held out


@pytest.mark.parametrize("name", ORGANISMS)
def test_tokenizer_round_trips_every_task_prompt(name):
    handle, task, _ = _organism(name)
    tok = handle.tokenizer
    prompts = task.prompts()["prompt"].tolist()
    for prompt in prompts:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, prompt
        assert tok.decode(ids) == prompt


def test_bon_tokenizer_knows_every_printable_ascii_character():
    tok = _organism("bon_jailbreak")[0].tokenizer
    ids = tok(PRINTABLE_ASCII, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(PRINTABLE_ASCII) and tok.unk_token_id not in ids
    assert tok.decode(ids) == PRINTABLE_ASCII


@pytest.mark.parametrize("name", ORGANISMS)
def test_subsample_rate_matches_the_training_report(name):
    _, _, report = _organism(name)
    measured = _measured(name)
    assert abs(measured["y"].mean() - report["heldout_accuracy"]) <= TOLERANCE


def test_hans_fails_where_overlap_misleads():
    measured = _measured("hans_nli")
    heuristic = measured["heuristic"] != "none"
    entailed = measured["expected_label"] == "E"
    acc_non_entailed = measured.loc[heuristic & ~entailed, "y"].mean()
    acc_entailed = measured.loc[heuristic & entailed, "y"].mean()
    acc_controls = measured.loc[~heuristic, "y"].mean()
    assert acc_non_entailed + 0.3 < min(acc_entailed, acc_controls)


def test_bon_success_rises_with_sigma_and_matches_report_per_sigma():
    _, _, report = _organism("bon_jailbreak")
    measured = _measured("bon_jailbreak")
    by_sigma = measured.groupby("sigma")["y"].mean()
    lowest, highest = by_sigma.index.min(), by_sigma.index.max()
    assert by_sigma[lowest] <= 0.05
    assert by_sigma[highest] >= by_sigma[lowest] + 0.1
    expected = report["heldout_accuracy_by_slice"][str(highest)]
    assert abs(by_sigma[highest] - expected) <= 2 * TOLERANCE  # ~120 rows at the highest sigma
