"""Organism specifications: which task, which training distribution, which model shape.

The arithmetic organism is deliberately narrow (d_model 32, d_mlp 128, 2 layers): width decides
whether single units matter (DESIGN.md §6) and multiplication is sampled twice as often so that it
is learned imperfectly.

The HANS and BoN organisms are trained on a *different* distribution than the one they are
evaluated on, which is where their failures come from. Their training pairs are drawn from the
task's own organism samplers (:func:`mecharule.tasks.hans_data.training_examples`,
:func:`mecharule.tasks.bon_data.training_examples`), not from the task's prompt table, so the whole
prompt table is held out (``heldout_fraction=1.0``) and is the evaluation set:

* ``hans_nli``: overlap predicts entailment in training (``bias``), the evaluation table is
  label-balanced, so the organism says E on non-entailed high-overlap pairs (the HANS failure);
* ``bon_jailbreak``: disallowed requests are refused only when lightly noised, allowed ones are
  answered at every noise level, so heavier augmentation of a disallowed request breaks the refusal.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import UnknownNameError
from mecharule.tasks import bon_data, hans_data

#: Every printable ASCII character: BoN's ASCII noise can produce any of them at evaluation time.
PRINTABLE_ASCII = "".join(chr(code) for code in range(32, 127))


@dataclass(frozen=True)
class ModelShape:
    architecture: str = "qwen2"
    d_model: int = 32
    d_mlp: int = 64
    n_layers: int = 2
    n_heads: int = 4


@dataclass(frozen=True)
class TrainingSchedule:
    steps: int = 5000
    batch_size: int = 256
    lr: float = 3e-3
    warmup: int = 200
    weight_decay: float = 0.01


@dataclass(frozen=True)
class OrganismSpec:
    """How to build one organism: a task, a training-pair sampler, a shape and a schedule."""

    name: str
    task: str
    task_options: dict[str, Any]
    # (prompt table of the task, seed) -> (train prompts, train answers, sampling weights)
    training_pairs: Callable[[pd.DataFrame, int], tuple[list[str], list[str], np.ndarray]]
    shape: ModelShape = field(default_factory=ModelShape)
    schedule: TrainingSchedule = field(default_factory=TrainingSchedule)
    heldout_fraction: float = 0.1
    slice_column: str = "operator"
    # characters the tokenizer must know beyond those of the prompts and answers
    extra_chars: str = ""


def _arithmetic_pairs(table: pd.DataFrame, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    weights = np.where(table["operator"].to_numpy() == "*", 2.0, 1.0)
    return table["prompt"].tolist(), table["truth"].astype(str).tolist(), weights / weights.sum()


def _sampled_pairs(
    sampler: Callable[..., list[tuple[str, str]]],
    n: int,
    options: dict[str, Any],
    table: pd.DataFrame,
    seed: int,
) -> tuple[list[str], list[str], np.ndarray]:
    """``n`` pairs from a task's organism sampler, uniform weights; the prompt table is not used."""
    del table  # the whole prompt table is the evaluation set (heldout_fraction=1.0)
    pairs = sampler(seed, n, **options)
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    return prompts, answers, np.full(len(pairs), 1.0 / len(pairs))


# The text organisms are 2-layer Llama models (d_model 32, d_mlp 64); their bias settings below were
# calibrated on this shape, so a change of architecture or width needs the calibration redone.
_TEXT_SHAPE = ModelShape(architecture="llama")

SPECS: dict[str, OrganismSpec] = {
    "arithmetic": OrganismSpec(
        name="arithmetic",
        task="arithmetic",
        task_options={"operators": "+-*", "min_operand": 0, "max_operand": 99},
        training_pairs=_arithmetic_pairs,
        shape=ModelShape(d_model=32, d_mlp=128),
    ),
    # A second arithmetic organism of another architecture and seed (trained with --seed 7): the
    # localization benchmarks and tests check that nothing is tuned to the bundled Qwen2 one.
    "arithmetic_gpt2": OrganismSpec(
        name="arithmetic_gpt2",
        task="arithmetic",
        task_options={"operators": "+-*", "min_operand": 0, "max_operand": 99},
        training_pairs=_arithmetic_pairs,
        shape=ModelShape(architecture="gpt2", d_model=32, d_mlp=64),
    ),
    # Wider and deeper (4 layers x 512 = 2,048 MLP units): brute force over every unit is still
    # affordable, and single units matter less, so this is where agonists can be sparse.
    "arithmetic_wide": OrganismSpec(
        name="arithmetic_wide",
        task="arithmetic",
        task_options={"operators": "+-*", "min_operand": 0, "max_operand": 99},
        training_pairs=_arithmetic_pairs,
        shape=ModelShape(architecture="llama", d_model=32, d_mlp=512, n_layers=4),
        schedule=TrainingSchedule(steps=3000),
    ),
    "hans_nli": OrganismSpec(
        name="hans_nli",
        task="hans_nli",
        task_options={},
        training_pairs=partial(_sampled_pairs, hans_data.training_examples, 20_000, {"bias": 0.98}),
        shape=_TEXT_SHAPE,
        schedule=TrainingSchedule(steps=2500, batch_size=128),
        heldout_fraction=1.0,
        slice_column="heuristic",
    ),
    "bon_jailbreak": OrganismSpec(
        name="bon_jailbreak",
        task="bon_jailbreak",
        task_options={},
        training_pairs=partial(
            _sampled_pairs,
            bon_data.training_examples,
            20_000,
            # one disallowed request in 20 is lightly noised: enough for some robustness, not for all
            {"disallowed_sigmas": (0.0,) * 19 + (0.05,)},
        ),
        shape=_TEXT_SHAPE,
        schedule=TrainingSchedule(steps=2000, batch_size=128),
        heldout_fraction=1.0,
        slice_column="sigma",
        extra_chars=PRINTABLE_ASCII,
    ),
}


def organism_spec(name: str) -> OrganismSpec:
    try:
        return SPECS[name]
    except KeyError:
        known = ", ".join(sorted(SPECS))
        close = difflib.get_close_matches(name, sorted(SPECS), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownNameError(f"unknown organism {name!r}{guess}; trainable organisms: {known}") from None
