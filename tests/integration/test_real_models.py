"""Known real models, loaded by short name from the cache; skipped when not fetched
(`mecharule models fetch NAME`; `bash scripts/test` fetches smollm2-135m)."""

from __future__ import annotations

import pytest
import torch

from mecharule.models.known import KNOWN_MODELS, fetched_dir, is_fetched
from mecharule.models.loading import load_model

# A prompt each model completes correctly under greedy decoding (checked when the row was added).
GREEDY = {
    "smollm2-135m": ("The capital of France is", " Paris"),
    "gemma3-270m": ("12+5=", "17"),
}


@pytest.mark.parametrize(
    "name",
    ["smollm2-135m", pytest.param("gemma3-270m", marks=pytest.mark.slow)],  # gemma: ~15 s on CPU
)
def test_known_model_loads_with_its_table_shape_and_answers(name):
    if not is_fetched(name):
        pytest.skip(f"{name} is not in the cache ({fetched_dir(name)}); mecharule models fetch {name}")
    row = KNOWN_MODELS[name]
    handle = load_model(name)
    assert handle.path == str(fetched_dir(name))
    assert (handle.arch.model_type, handle.arch.n_layers, handle.arch.d_mlp) == (
        row.model_type,
        row.n_layers,
        row.d_mlp,
    )
    prompt, expected = GREEDY[name]
    enc = handle.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        out = handle.model.generate(**enc, max_new_tokens=4, do_sample=False)
    answer = handle.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.startswith(expected), answer
