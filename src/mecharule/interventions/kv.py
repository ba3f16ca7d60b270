"""KV-cache helpers: build a prefix cache once, hand out row-selected copies of it."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from mecharule.models.loading import ModelHandle


def cache_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer ``(keys, values)`` ``# [batch, heads, pos, head_dim]``."""
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr,misc]


def select_cache(
    handle: ModelHandle, tensors: list[tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor
) -> DynamicCache:
    """A fresh cache whose batch row ``i`` is the prefix of prompt ``rows[i]``."""
    cache = DynamicCache(config=handle.model.config)
    for layer_idx, (keys, values) in enumerate(tensors):
        cache.update(keys.index_select(0, rows), values.index_select(0, rows), layer_idx)
    return cache
