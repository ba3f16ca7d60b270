"""What the report's card of each anchored agonist shows beyond its numbers (``agonist_cards.json``).

Per agonist:

* ``examples``: prompts whose label flips when the unit is ablated alone, both ways (the model was
  right and no longer is; it was wrong and now is right), with the answer before and after;
* ``activations``: histograms of the unit's activation at the last prompt token on prompts its rule
  covers and on unrelated prompts (the rule: that of the problem where its effect was largest), all
  units read in one pass over one seeded sample of TRAIN prompts;
* ``promoted_tokens``: the tokens its output direction raises and lowers most through the
  unembedding (the direct logit effect; the final norm is left out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from mecharule.context import StageContext
from mecharule.decoding.generation import encode_prompts
from mecharule.interventions.hooks import recording
from mecharule.localization.oracle import EngineInputs
from mecharule.localization.problems import rule_mask
from mecharule.models.architectures import down_proj_module
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import Site

EXAMPLES_PER_DIRECTION = 3
ACTIVATION_PROMPTS = 512
BINS = 24
TOP_TOKENS = 8


def agonist_cards(
    ctx: StageContext,
    inputs: EngineInputs,
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    agonists: Sequence[Site],
    rules: Mapping[Site, Mapping[str, Any]],
) -> dict[str, Any]:
    """``data``: the behaviour table, the features and the flip table; ``rules``: each agonist's
    behaviour rule (a disjunct of rules.json)."""
    behaviour, features, flips = data
    examples = flip_examples(inputs, behaviour, flips, agonists)
    rows = activation_rows(ctx, behaviour)
    activations = last_token_activations(ctx.handle, behaviour["prompt"].iloc[rows].tolist(), agonists)
    cards = {}
    for unit in agonists:
        rule = rules.get(unit)
        covered = rule_mask(rule, features)[rows] if rule is not None else np.zeros(len(rows), bool)
        cards[str(unit)] = {
            "rule_id": None if rule is None else rule["id"],
            "examples": examples.get(str(unit), []),
            "activations": histograms(activations[unit], covered),
            "promoted_tokens": promoted_tokens(ctx.handle, unit),
        }
    return {"agonists": cards}


def flip_examples(
    inputs: EngineInputs, behaviour: pd.DataFrame, flips: pd.DataFrame, agonists: Sequence[Site]
) -> dict[str, list[dict[str, Any]]]:
    """Up to :data:`EXAMPLES_PER_DIRECTION` flipped prompts per direction and agonist, with the answer
    the model gives with the unit ablated (one engine over every example row, one group per unit)."""
    picked: dict[str, list[tuple[int, str]]] = {}
    baseline = flips["baseline"].to_numpy(bool)
    for unit in agonists:
        ablated = flips[str(unit)].to_numpy(bool)
        chosen = []
        for direction, hit in (
            ("right_to_wrong", baseline & ~ablated),
            ("wrong_to_right", ~baseline & ablated),
        ):
            chosen += [(int(r), direction) for r in flips["row"].to_numpy()[hit][:EXAMPLES_PER_DIRECTION]]
        picked[str(unit)] = chosen
    rows = sorted({r for chosen in picked.values() for r, _ in chosen})
    if not rows:
        return {}
    engine = inputs.engine(behaviour.iloc[rows], stored_labels=behaviour["label"].to_numpy(bool)[rows])
    dropped = set(engine.dropped.tolist())
    kept = [r for i, r in enumerate(rows) if i not in dropped]
    outcome = engine.run([[unit] for unit in agonists])
    position = {r: p for p, r in enumerate(kept)}
    examples: dict[str, list[dict[str, Any]]] = {}
    for g, unit in enumerate(agonists):
        examples[str(unit)] = [
            {
                "row": r,
                "direction": direction,
                "prompt": str(behaviour["prompt"].iloc[r]),
                "answer": engine.baseline_answers[position[r]],
                "ablated_answer": outcome.changed_answers.get((g, position[r]), ""),
            }
            for r, direction in picked[str(unit)]
            if r in position
        ]
    return examples


def activation_rows(ctx: StageContext, behaviour: pd.DataFrame) -> np.ndarray:
    """Up to :data:`ACTIVATION_PROMPTS` TRAIN rows (seeded) on which every card's activations are read."""
    train = np.flatnonzero((behaviour["split"] == "train").to_numpy())
    rng = ctx.rng("anchor.cards")
    return np.sort(rng.choice(train, size=min(ACTIVATION_PROMPTS, len(train)), replace=False))


def histograms(values: np.ndarray, covered: np.ndarray) -> dict[str, Any]:
    """Histograms (shared bin edges) of the activations on covered and on unrelated prompts."""
    if not len(values):
        return {}
    edges = np.histogram_bin_edges(values, bins=BINS)
    sides = {"covered": values[covered], "unrelated": values[~covered]}
    return {
        "edges": [round(float(e), 5) for e in edges],
        **{side: np.histogram(v, bins=edges)[0].tolist() for side, v in sides.items()},
        **{f"{side}_mean": round(float(np.mean(v)), 5) if len(v) else None for side, v in sides.items()},
    }


@torch.inference_mode()
def last_token_activations(
    handle: ModelHandle, prompts: Sequence[str], units: Sequence[Site], batch: int = 64
) -> dict[Site, np.ndarray]:
    """Each unit's activation at each prompt's last token (the prompts are left-padded), all units
    read in one pass over the prompts."""
    keys = sorted({(u.layer, u.kind) for u in units})
    out: dict[Site, list[float]] = {u: [] for u in units}
    for start in range(0, len(prompts), batch):
        ids, mask = encode_prompts(handle, prompts[start : start + batch])
        with recording(handle, keys) as store:  # type: ignore[arg-type]
            handle.model(input_ids=ids, attention_mask=mask)
        for unit in units:
            out[unit] += store[(unit.layer, unit.kind)][0][:, -1, unit.index].float().cpu().tolist()
    return {u: np.asarray(v) for u, v in out.items()}


@torch.inference_mode()
def promoted_tokens(handle: ModelHandle, unit: Site) -> dict[str, list[list[Any]]]:
    """The tokens whose logits the unit's output direction raises (``up``) and lowers (``down``) most,
    with the logit change per unit of activation."""
    direction = output_direction(handle, unit)
    unembedding = handle.model.get_output_embeddings().weight  # [vocab, d_model]
    logits = (unembedding.float() @ direction.float()).cpu()
    tokenizer = handle.tokenizer

    def top(values: torch.Tensor, ids: torch.Tensor) -> list[list[Any]]:
        return [[tokenizer.decode([int(i)]), round(float(v), 4)] for v, i in zip(values, ids, strict=True)]

    up = torch.topk(logits, min(TOP_TOKENS, len(logits)))
    down = torch.topk(-logits, min(TOP_TOKENS, len(logits)))
    return {"up": top(up.values, up.indices), "down": top(-down.values, down.indices)}


def output_direction(handle: ModelHandle, unit: Site) -> torch.Tensor:
    """``# [d_model]``: what one unit of the unit's activation adds to the residual stream."""
    if unit.kind == "mlp_out":
        direction = torch.zeros(handle.arch.d_model)
        direction[unit.index] = 1.0
        return direction
    module = down_proj_module(handle.model, handle.arch.row, unit.layer)
    weight: torch.Tensor = module.weight.detach()  # type: ignore[operator]
    if isinstance(module, torch.nn.Linear):  # [d_model, d_mlp]
        return weight[:, unit.index]
    return weight[unit.index, :]  # GPT-2's Conv1D: [d_mlp, d_model]


__all__ = [
    "agonist_cards",
    "flip_examples",
    "histograms",
    "last_token_activations",
    "output_direction",
    "promoted_tokens",
]
