"""The slow reference path: one hooked greedy generation per unit group.

Kept deliberately simple; the fast engine must reproduce its answers and labels exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mecharule.behaviour.generation import DecodeState, decode_answers, encode_prompts, greedy_generate
from mecharule.interventions.hooks import Patch, SiteKey, patched
from mecharule.interventions.values import PositionMode, ValueTable, position_gate
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import Site


def group_masks(handle: ModelHandle, group: Sequence[Site]) -> dict[SiteKey, torch.Tensor]:
    """Per site key, a bool unit mask ``# [width]`` of the units in the group."""
    masks: dict[SiteKey, torch.Tensor] = {}
    for site in group:
        key = (site.layer, site.kind)
        if key not in masks:
            masks[key] = torch.zeros(handle.arch.width(site.kind), dtype=torch.bool, device=handle.device)
        masks[key][site.index] = True
    return masks


def ablation_patch(
    state: DecodeState, table: ValueTable, unit_mask: torch.Tensor, positions: PositionMode
) -> Patch:
    """Replace masked units at gated positions with the aligned table values.

    ``unit_mask`` is ``# [width]`` (same group for every row) or ``# [batch, width]`` (one group per row).
    """

    def fn(x: torch.Tensor) -> torch.Tensor:  # [batch, pos, width]
        rel = state.rel_positions
        gate = position_gate(rel, positions)  # [batch, pos]
        mask = unit_mask[None, None, :] if unit_mask.dim() == 1 else unit_mask[:, None, :]
        full = gate[:, :, None] & mask  # [batch, pos, width]
        return torch.where(full, table.lookup(rel).to(x.dtype), x)

    return fn


def ablated_answers(
    handle: ModelHandle,
    prompts: Sequence[str],
    group: Sequence[Site],
    tables: Mapping[SiteKey, ValueTable],
    positions: PositionMode,
    max_new_tokens: int,
    batch_size: int = 256,
) -> list[str]:
    """Greedy answers of every prompt with the group ablated (one hooked generation per batch)."""
    state = DecodeState()
    patches = {
        key: ablation_patch(state, tables[key], mask, positions)
        for key, mask in group_masks(handle, group).items()
    }
    answers: list[str] = []
    with patched(handle, patches):
        for start in range(0, len(prompts), batch_size):
            ids, mask = encode_prompts(handle, prompts[start : start + batch_size])
            tokens = greedy_generate(handle, ids, mask, max_new_tokens, state=state)
            answers.extend(decode_answers(handle, tokens))
    return answers
