"""Tiny random models of every architecture row, built from a config (no download)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

COMMON: dict[str, Any] = {
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}

EXTRA: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": 16, "n_layer": 2, "n_head": 2, "n_inner": 24, "n_positions": 64},
    "gptj": {"n_embd": 16, "n_layer": 2, "n_head": 2, "n_inner": 24, "n_positions": 64, "rotary_dim": 4},
    "gemma": {"head_dim": 8},
    "gemma2": {"head_dim": 8, "query_pre_attn_scalar": 8},
    "gemma3_text": {"head_dim": 8, "query_pre_attn_scalar": 8},
    "phi": {},
    "gpt_neox": {"rotary_pct": 0.5},
}


def tiny_model(model_type: str, vocab_size: int, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A random model of ``model_type``; ``overrides`` are extra config fields (``initializer_range``)."""
    torch.manual_seed(seed)
    kwargs = {**COMMON, **EXTRA.get(model_type, {}), "vocab_size": vocab_size, **overrides}
    config = AutoConfig.for_model(model_type, **kwargs)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if hasattr(config, name):
            setattr(config, name, 1)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model


def expected_widths(model_type: str) -> tuple[int, int]:
    """(d_model, d_mlp) of :func:`tiny_model`."""
    return 16, 24
