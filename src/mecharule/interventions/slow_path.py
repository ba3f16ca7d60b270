"""The slow reference path: one hooked greedy generation per unit group.

Kept deliberately simple; the fast engine must reproduce its answers and labels exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mecharule.decoding.generation import DecodeState, decode_answers, encode_prompts, greedy_generate
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


def _offsets(table: ValueTable, rel: torch.Tensor) -> torch.Tensor:
    """Row of ``table.values`` for each relative position (same clamping as ``ValueTable.lookup``)."""
    return (rel - table.min_offset).clamp(0, table.values.shape[0] - 1)


def ablation_patch(
    state: DecodeState, table: ValueTable, unit_mask: torch.Tensor, positions: PositionMode
) -> Patch:
    """Replace masked units at gated positions with the aligned table values.

    ``unit_mask`` is ``# [width]`` (same group for every row) or ``# [batch, width]`` (one group per row).
    Only the masked (row, unit) columns are read and written — a group holds a few units of a wide
    site — in place, unless autograd tracks the activation.
    """
    if unit_mask.dim() == 1:
        units = unit_mask.nonzero().flatten()  # [n_units]
        unit_values = table.values.index_select(1, units)  # [n_offsets, n_units]

        def shared(x: torch.Tensor) -> torch.Tensor:  # [batch, pos, width]
            rel = state.rel_positions
            gate = position_gate(rel, positions)[:, :, None]  # [batch, pos, 1]
            new = unit_values[_offsets(table, rel)].to(x.dtype)  # [batch, pos, n_units]
            out = x.clone() if x.requires_grad else x
            out[:, :, units] = torch.where(gate, new, x[:, :, units])
            return out

        return shared
    rows, cols = unit_mask.nonzero(as_tuple=True)  # [n_pairs]: row rows[i] ablates unit cols[i]

    def per_row(x: torch.Tensor) -> torch.Tensor:  # [batch, pos, width]
        rel = state.rel_positions.index_select(0, rows)  # [n_pairs, pos]
        gate = position_gate(rel, positions)
        new = table.values[_offsets(table, rel), cols[:, None]].to(x.dtype)  # [n_pairs, pos]
        out = x.clone() if x.requires_grad else x
        out[rows, :, cols] = torch.where(gate, new, x[rows, :, cols])
        return out

    return per_row


def ablated_answers(
    handle: ModelHandle,
    prompts: Sequence[str],
    group: Sequence[Site],
    tables: Mapping[SiteKey, ValueTable],
    positions: PositionMode,
    max_new_tokens: int,
    batch_size: int = 256,
    stop_strings: Sequence[str] = (),
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
            tokens = greedy_generate(
                handle, ids, mask, max_new_tokens, state=state, stop_strings=stop_strings
            )
            answers.extend(decode_answers(handle, tokens, stop_strings))
    return answers
