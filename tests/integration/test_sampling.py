"""Spectral sampling on real models: last-token states are post-final-norm, batch-invariant, and
the organism's k-center clusters separate operators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mecharule.errors import DataError
from mecharule.models import handle_from_model
from mecharule.sampling import kcenter, last_token_states, spectral_embedding, stratified_sample

from .tiny_models import tiny_model

PROMPTS = ["12+34=", "7*8=", "99-5=", "3*41=", "1+1=", "60*2="]


@pytest.fixture(scope="module")
def tiny(char_tokenizer):
    return handle_from_model(tiny_model("qwen2", vocab_size=len(char_tokenizer), seed=2), char_tokenizer)


def test_states_are_the_final_norm_output_of_the_last_token(tiny):
    states = last_token_states(tiny, PROMPTS)
    assert states.shape == (len(PROMPTS), tiny.arch.d_model)
    base = tiny.model.model
    for i, prompt in enumerate(PROMPTS):  # one prompt at a time: no padding
        ids = tiny.tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            last = base(input_ids=ids).last_hidden_state[0, -1]
        np.testing.assert_allclose(states[i], last.numpy(), rtol=1e-5, atol=1e-6)
    # post-norm: divided by the RMSNorm weight, every row has unit RMS (up to the norm's epsilon; the
    # tiny model's pre-norm residual has RMS ~0.02, so a pre-norm state would fail by far)
    unscaled = states / base.norm.weight.detach().numpy()
    np.testing.assert_allclose(np.sqrt((unscaled**2).mean(1)), 1.0, rtol=5e-3)


def test_states_do_not_depend_on_batching_or_padding(tiny):
    together = last_token_states(tiny, PROMPTS, batch_size=256)
    apart = last_token_states(tiny, PROMPTS, batch_size=1)
    np.testing.assert_allclose(together, apart, rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError):
        last_token_states(tiny, [])


def test_organism_clusters_separate_operators():
    from mecharule.models import load_model
    from mecharule.tasks import make_task

    handle = load_model("zoo:arithmetic")
    prompts = make_task("arithmetic").prompts().sample(600, random_state=0).reset_index(drop=True)
    z = spectral_embedding(last_token_states(handle, prompts["prompt"].tolist()), dim=32, seed=0)
    centers, assignment = kcenter(z, 12, seed=0)
    ops = prompts["operator"].to_numpy()
    # most clusters are dominated by one operator (the last-token state knows the operator)
    purity = [
        np.unique(ops[assignment == c], return_counts=True)[1].max() / (assignment == c).sum()
        for c in range(len(centers))
    ]
    weights = np.bincount(assignment) / len(assignment)
    assert float(np.dot(purity, weights)) > 0.6
    picked = stratified_sample(z, centers, assignment, np.arange(len(z)), 24, seed=0)
    assert len(set(assignment[picked].tolist())) == 12
