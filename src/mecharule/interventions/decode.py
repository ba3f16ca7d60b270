"""Exact greedy generation of selected (group, prompt) rows from the engine's prefix cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

from mecharule.behaviour.generation import DecodeState, decode_loop
from mecharule.behaviour.prefill import select_cache, with_cache
from mecharule.interventions.hooks import SiteKey, patched
from mecharule.interventions.slow_path import ablation_patch

if TYPE_CHECKING:
    from mecharule.interventions.engine import AblationEngine


@torch.inference_mode()
def decode_from_prefix(
    engine: AblationEngine, prompt_of_row: torch.Tensor, row_masks: dict[SiteKey, torch.Tensor]
) -> torch.Tensor:
    """Greedy tokens ``# [rows, max_new_tokens]`` with each row's own unit mask applied."""
    handle, cut, width = engine.handle, engine.cut, engine.prompt_width
    state = DecodeState()
    patches = {k: ablation_patch(state, engine.tables[k], m, engine.positions) for k, m in row_masks.items()}
    mask = engine.prompt_mask.index_select(0, prompt_of_row)
    pos = engine.prompt_pos.index_select(0, prompt_of_row)
    with patched(handle, patches):
        if engine.prefix is not None:
            cache = select_cache(handle, engine.prefix, prompt_of_row)
        else:
            cache = DynamicCache(config=handle.model.config)
        if cut < width:
            state.rel_positions = engine.prompt_rel.index_select(0, prompt_of_row)[:, cut:]
            out = handle.model(
                input_ids=engine.prompt_ids.index_select(0, prompt_of_row)[:, cut:],
                attention_mask=mask,
                position_ids=pos[:, cut:],
                **with_cache(handle.model, cache),
                use_cache=True,
                logits_to_keep=1,
            )
            engine.stats.forwards += 1
            last = out.logits[:, -1, :]
        else:
            assert engine.prefix_last_logits is not None  # internal invariant: cut == width sets it
            last = engine.prefix_last_logits.index_select(0, prompt_of_row)
        return decode_loop(
            handle, last, cache, mask, pos[:, -1:] + 1, engine.max_new_tokens, state, engine.stop_strings
        )
