"""Prefill with a shared prefix computed once.

Few-shot and chat prompts start with the same tokens (the solved examples, the template's system
turn). :func:`encode_prompts` puts that common token prefix in the first columns of every row and
left-pads the rest after it (``[shared][pads][own tokens]``; positions follow the attention mask, so
the model sees each prompt exactly as if it were unpadded). :func:`prefill` then runs the shared
columns once with batch 1 and hands every row a copy of that cache, instead of recomputing the same
keys and values for every prompt: on a 5-shot arithmetic prompt (~45 tokens, ~38 shared) this is
most of the prefill work.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch
from transformers import DynamicCache

from mecharule.models.loading import ModelHandle

#: Shared prefixes shorter than this are not worth a separate forward.
MIN_SHARED_TOKENS = 8


@lru_cache(maxsize=64)
def _cache_parameter(module_class: Any) -> str:
    params = inspect.signature(module_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def with_cache(module: Any, cache: Any) -> dict[str, Any]:
    """The forward keyword of ``module`` (a model or its base model) for a KV cache: ``cache``
    (transformers >= 5.2x, where ``past_key_values`` is deprecated) or ``past_key_values``."""
    module_class: Any = type(module)
    return {_cache_parameter(module_class): cache}


def cache_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer ``(keys, values)`` ``# [batch, heads, pos, head_dim]``."""
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr,misc]


def select_cache(
    handle: ModelHandle, tensors: list[tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor
) -> DynamicCache:
    """A fresh cache whose batch row ``i`` is the cached row ``rows[i]`` (copies, never views)."""
    cache = DynamicCache(config=handle.model.config)
    for layer_idx, (keys, values) in enumerate(tensors):
        cache.update(keys.index_select(0, rows), values.index_select(0, rows), layer_idx)
    return cache


def common_prefix_length(token_ids: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    if len(token_ids) < 2:
        return 0
    first, limit = token_ids[0], min(len(row) for row in token_ids) - 1
    n = 0
    while n < limit and all(row[n] == first[n] for row in token_ids):
        n += 1
    return n if n >= MIN_SHARED_TOKENS else 0


def shared_columns(ids: torch.Tensor, mask: torch.Tensor) -> int:
    """Leading columns that are real and identical in every row (at most ``width - 1``)."""
    if ids.shape[0] < 2:
        return 0
    same = mask.bool().all(0) & (ids == ids[:1]).all(0)
    n = int(same.long().cumprod(0).sum())
    n = min(n, ids.shape[1] - 1)
    return n if n >= MIN_SHARED_TOKENS else 0


def prefill(
    handle: ModelHandle,
    ids: torch.Tensor,
    mask: torch.Tensor,
    position_ids: torch.Tensor,
    rel_positions: torch.Tensor | None = None,
    state: Any = None,
    final_hidden: bool = False,
) -> tuple[DynamicCache, torch.Tensor]:
    """Run a prompt block; return its cache and the last position's logits ``# [batch, vocab]`` (or,
    with ``final_hidden``, its hidden state after the final norm ``# [batch, d_model]``, from the
    base model without the LM head).

    ``state`` (a :class:`~mecharule.decoding.generation.DecodeState`, when hooks read positions)
    gets the relative positions of each forward's own rows and columns.
    """
    shared = shared_columns(ids, mask)
    cache = DynamicCache(config=handle.model.config)
    if shared:
        if state is not None and rel_positions is not None:
            state.rel_positions = rel_positions[:1, :shared]
        handle.model(
            input_ids=ids[:1, :shared],
            attention_mask=mask[:1, :shared],
            position_ids=position_ids[:1, :shared],
            **with_cache(handle.model, cache),
            use_cache=True,
            logits_to_keep=1,
        )
        every_row_is_row_0 = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        cache = select_cache(handle, cache_tensors(cache), every_row_is_row_0)
    if state is not None and rel_positions is not None:
        state.rel_positions = rel_positions[:, shared:]
    inputs = {
        "input_ids": ids[:, shared:],
        "attention_mask": mask,
        "position_ids": position_ids[:, shared:],
        "use_cache": True,
    }
    if final_hidden:
        base = handle.model.base_model
        return cache, base(**inputs, **with_cache(base, cache)).last_hidden_state[:, -1, :]
    out = handle.model(**inputs, **with_cache(handle.model, cache), logits_to_keep=1)
    return cache, out.logits[:, -1, :]
