"""Every architecture row resolves on a tiny random model, hooks see the right shapes, and
zeroing one unit changes the logits, for both unit kinds."""

from __future__ import annotations

import pytest
import torch

from mecharule.errors import UnsupportedArchitectureError
from mecharule.interventions.hooks import count_hooks, patched, recording
from mecharule.models import ARCHITECTURES, handle_from_model
from mecharule.models.architectures import resolve

from .tiny_models import expected_widths, tiny_model


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def handle(request, char_tokenizer):
    model = tiny_model(request.param, vocab_size=len(char_tokenizer))
    return handle_from_model(model, char_tokenizer, name=request.param)


def _inputs(handle):
    enc = handle.tokenizer(["12+34=", "7*8="], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_row_resolves_with_expected_widths(handle):
    d_model, d_mlp = expected_widths(handle.arch.model_type)
    assert handle.arch.n_layers == 2
    assert (handle.arch.d_model, handle.arch.d_mlp) == (d_model, d_mlp)


@pytest.mark.parametrize("kind", ["mlp", "mlp_out"])
def test_hook_sees_shape_and_zeroing_one_unit_changes_logits(handle, kind):
    ids, mask = _inputs(handle)
    width = handle.arch.width(kind)
    with recording(handle, [(1, kind)]) as store:
        clean = handle.model(input_ids=ids, attention_mask=mask).logits
    assert store[(1, kind)][0].shape == (ids.shape[0], ids.shape[1], width)

    def zero_unit(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[..., 3] = 0.0
        return x

    with patched(handle, {(0, kind): zero_unit}):
        ablated = handle.model(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(clean, ablated)
    assert count_hooks(handle) == 0


def test_hooks_removed_after_exception(handle):
    ids, mask = _inputs(handle)

    def boom(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("inside hook")

    with pytest.raises(RuntimeError, match="inside hook"), patched(handle, {(0, "mlp"): boom}):
        handle.model(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="user error"), patched(handle, {(0, "mlp_out"): lambda x: x}):
        raise ValueError("user error")
    assert count_hooks(handle) == 0


def test_unknown_architecture_names_the_table(char_tokenizer):
    model = tiny_model("qwen2", vocab_size=len(char_tokenizer))
    with pytest.raises(UnsupportedArchitectureError, match="ARCHITECTURES") as info:
        resolve(model, "my_new_arch")
    assert "add a row" in str(info.value)


def test_required_rows_present():
    required = {
        "qwen2",
        "qwen3",
        "llama",
        "mistral",
        "gemma",
        "gemma2",
        "gpt2",
        "gptj",
        "gpt_neox",
        "phi3",
        "olmo2",
    }
    assert required <= set(ARCHITECTURES)
