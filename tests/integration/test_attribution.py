"""Attribution: AtP and EAP-IG against finite differences on a tiny float64 model, candidate
selection, and the stage on the bundled arithmetic organism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mecharule.attribution import (
    ATTRIBUTORS,
    AttributionRequest,
    atp_scores,
    eap_ig_scores,
    select_candidates,
)
from mecharule.attribution.gradients import answer_logprob, input_embeddings, teacher_forced_block
from mecharule.attribution.stage import attribute_rules
from mecharule.config import load_config
from mecharule.context import StageContext
from mecharule.errors import ConfigError, DataError, UnknownNameError
from mecharule.interventions.hooks import count_hooks, patched
from mecharule.interventions.values import mean_tables, position_gate
from mecharule.models import Site, handle_from_model

from .tiny_models import tiny_model

PROMPTS = ["12+34=", "7*8=", "99-5=", "3*41="]
ANSWERS = ["46", "56", "94", "123"]
REF_PROMPTS = ["1+1=", "20*3=", "45-12=", "8*8=", "70+29=", "5-9="]
REF_ANSWERS = ["2", "60", "33", "64", "99", "-4"]
# Central-difference step (a fraction of the way to the ablation value). Qwen2's RMSNorm computes in
# float32 even in a float64 model, so much smaller steps drown in rounding; the central difference
# cancels the second-order term, and the tiny random model is smooth at this scale.
STEP = 0.25


@pytest.fixture(scope="module")
def tiny(char_tokenizer):
    model = tiny_model("qwen2", vocab_size=len(char_tokenizer), seed=1).double()
    return handle_from_model(model, char_tokenizer, name="tiny-qwen2")


def metric_with_unit_moved(handle, block, key, unit, direction, eps, positions="decode", embeds=None):
    """M after moving unit ``unit`` of site ``key`` by ``eps * direction`` at the gated positions."""
    gate = position_gate(block.rel, positions)

    def fn(x):
        y = x.clone()
        y[..., unit] = x[..., unit] + eps * gate * direction[..., unit]
        return y

    with torch.no_grad(), patched(handle, {key: fn}):
        kwargs = {"input_ids": block.ids} if embeds is None else {"inputs_embeds": embeds}
        out = handle.model(**kwargs, attention_mask=block.mask, position_ids=block.position_ids)
    return float(answer_logprob(out.logits, block))


def activations(handle, block, key):
    store = {}

    def fn(x):
        store["a"] = x.detach()
        return x

    with torch.no_grad(), patched(handle, {key: fn}):
        handle.model(input_ids=block.ids, attention_mask=block.mask, position_ids=block.position_ids)
    return store["a"]


@pytest.mark.parametrize("kind", ["mlp", "mlp_out"])
@pytest.mark.parametrize("positions", ["decode", "all"])
def test_atp_equals_first_order_taylor_estimate(tiny, kind, positions):
    keys = [(layer, kind) for layer in range(tiny.arch.n_layers)]
    tables = mean_tables(tiny, keys, REF_PROMPTS, REF_ANSWERS)
    scores = atp_scores(tiny, PROMPTS, ANSWERS, tables, kind, positions=positions, batch_size=3)
    assert scores.shape == (2, tiny.arch.width(kind))
    block = teacher_forced_block(tiny, PROMPTS, ANSWERS)
    eps = STEP
    for layer, unit in [(0, 0), (0, 5), (1, 3), (1, 11)]:
        key = (layer, kind)
        direction = tables[key].lookup(block.rel) - activations(tiny, block, key)  # toward the ablation value
        up = metric_with_unit_moved(tiny, block, key, unit, direction, eps, positions)
        down = metric_with_unit_moved(tiny, block, key, unit, direction, -eps, positions)
        taylor = (up - down) / (2 * eps) / len(PROMPTS)
        assert scores[layer, unit].item() == pytest.approx(taylor, rel=1e-3, abs=1e-6)
    assert scores.abs().sum() > 0
    assert count_hooks(tiny) == 0


@pytest.mark.parametrize("model_type", ["qwen2", "gpt2"])
def test_graddrop_keeps_last_layer_atp_and_drops_one_path_per_block(char_tokenizer, model_type):
    """Last-layer units: GradDrop = plain AtP (every dropped block lies upstream). A layer-0 unit of a
    3-layer model: the mean of |AtP| with block 1 dropped and with block 2 dropped, computed here
    from gradients taken by hand; inside ``gradient_dropped(l)`` block l's own units get no gradient."""
    from mecharule.attribution.gradients import activations_and_gradients
    from mecharule.attribution.methods.atp_graddrop import atp_graddrop_scores, gradient_dropped
    from mecharule.models.architectures import decoder_layers

    model = tiny_model(model_type, vocab_size=len(char_tokenizer), seed=2, num_hidden_layers=3).double()
    handle = handle_from_model(model, char_tokenizer, name=f"tiny-{model_type}")
    keys = [(layer, "mlp") for layer in range(3)]
    tables = mean_tables(handle, keys, REF_PROMPTS, REF_ANSWERS)
    plain = atp_scores(handle, PROMPTS, ANSWERS, tables, "mlp", batch_size=len(PROMPTS))
    graddrop = atp_graddrop_scores(handle, PROMPTS, ANSWERS, tables, "mlp", batch_size=len(PROMPTS))
    assert torch.allclose(graddrop[2], plain[2], rtol=1e-6, atol=1e-12)
    block = teacher_forced_block(handle, PROMPTS, ANSWERS)
    gate = position_gate(block.rel, "decode")[..., None]
    per_drop = []
    for dropped in (1, 2):
        with gradient_dropped(handle, dropped):
            acts, grads, _ = activations_and_gradients(handle, block, keys)
        assert grads[(dropped, "mlp")].abs().max() == 0  # its own units reach the metric only through it
        delta = tables[(0, "mlp")].lookup(block.rel) - acts[(0, "mlp")]
        per_drop.append((delta * grads[(0, "mlp")] * gate).sum((0, 1)) / len(PROMPTS))
    expected = (per_drop[0].abs() + per_drop[1].abs()) / 2
    assert torch.allclose(graddrop[0].abs().double(), expected, rtol=1e-5, atol=1e-10)
    assert not torch.allclose(graddrop[0], plain[0])  # dropping a path changes the layer-0 estimate
    assert ((graddrop < 0) == (plain < 0)).all()  # the sign is plain AtP's
    layers = decoder_layers(handle.model, handle.arch.row)
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in layers)


def test_atp_gradient_is_not_zero_at_the_clean_point(tiny):
    """The metric is a log-prob, not a KL to the clean distribution: clean-point gradients exist."""
    keys = [(layer, "mlp") for layer in range(2)]
    tables = mean_tables(tiny, keys, REF_PROMPTS, REF_ANSWERS)
    scores = atp_scores(tiny, PROMPTS, ANSWERS, tables, "mlp")
    assert (scores != 0).float().mean() > 0.9


def test_atp_rejects_missing_tables_and_mismatched_inputs(tiny):
    tables = mean_tables(tiny, [(0, "mlp")], REF_PROMPTS, REF_ANSWERS)
    with pytest.raises(DataError, match="no ablation values"):
        atp_scores(tiny, PROMPTS, ANSWERS, tables, "mlp")
    tables |= mean_tables(tiny, [(1, "mlp")], REF_PROMPTS, REF_ANSWERS)
    with pytest.raises(DataError, match="answers"):
        atp_scores(tiny, PROMPTS, ANSWERS[:2], tables, "mlp")


CLEAN = ["12+34=", "7*8=", "3*41="]
CORRUPT = ["52-30=", "7+9=", "8-11="]


@pytest.mark.parametrize("kind", ["mlp", "mlp_out"])
def test_eap_ig_one_step_is_the_midpoint_directional_derivative(tiny, kind):
    """m = 1: score_u = Σ_t Δ_u(t) ∂M/∂a_u(t) at the embedding midpoint, checked by finite differences."""
    answers = ANSWERS[:2] + ANSWERS[3:]
    scores = eap_ig_scores(tiny, CLEAN, CORRUPT, answers, kind, steps=1, batch_size=2)
    clean = teacher_forced_block(tiny, CLEAN, answers)
    corrupt = teacher_forced_block(tiny, CORRUPT, answers)
    mid = 0.5 * (input_embeddings(tiny, clean.ids) + input_embeddings(tiny, corrupt.ids))
    eps = STEP
    for layer, unit in [(0, 1), (1, 7)]:
        key = (layer, kind)
        delta = activations(tiny, corrupt, key) - activations(tiny, clean, key)
        up = metric_with_unit_moved(tiny, clean, key, unit, delta, eps, embeds=mid)
        down = metric_with_unit_moved(tiny, clean, key, unit, delta, -eps, embeds=mid)
        expected = (up - down) / (2 * eps) / len(CLEAN)
        assert scores[layer, unit].item() == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_eap_ig_zero_for_identical_pairs_and_converges_with_steps(tiny):
    answers = ANSWERS[:2] + ANSWERS[3:]
    same = eap_ig_scores(tiny, CLEAN, CLEAN, answers, "mlp", steps=2)
    assert same.abs().max() == 0
    fine = eap_ig_scores(tiny, CLEAN, CORRUPT, answers, "mlp", steps=32)
    mid = eap_ig_scores(tiny, CLEAN, CORRUPT, answers, "mlp", steps=8)
    coarse = eap_ig_scores(tiny, CLEAN, CORRUPT, answers, "mlp", steps=1)
    assert (mid - fine).norm() < (coarse - fine).norm()
    assert (mid - fine).norm() < 0.05 * fine.norm()


def test_eap_ig_rejects_unequal_token_lengths(tiny):
    with pytest.raises(DataError, match="equal token"):
        eap_ig_scores(tiny, ["12+34="], ["1+3="], ["46"], "mlp")
    with pytest.raises(ConfigError):
        eap_ig_scores(tiny, CLEAN, CORRUPT, ["1", "2", "3"], "mlp", steps=0)


def test_registry_dispatches_and_names_missing_inputs(tiny):
    assert ATTRIBUTORS.names() == ["atp", "atp_gd", "eap_ig"]
    request = AttributionRequest(prompts=CLEAN, answers=["46", "56", "123"], kind="mlp", ig_steps=2)
    with pytest.raises(ConfigError, match="corrupted"):
        ATTRIBUTORS.get("eap_ig")(tiny, request)
    with pytest.raises(ConfigError, match="tables"):
        ATTRIBUTORS.get("atp")(tiny, request)
    with pytest.raises(ConfigError, match="tables"):
        ATTRIBUTORS.get("atp_gd")(tiny, request)
    with pytest.raises(UnknownNameError, match="atp, atp_gd, eap_ig"):
        ATTRIBUTORS.get("eap")
    direct = eap_ig_scores(tiny, CLEAN, CORRUPT, ["46", "56", "123"], "mlp", steps=2)
    via = ATTRIBUTORS.get("eap_ig")(
        tiny, AttributionRequest(CLEAN, ["46", "56", "123"], "mlp", corrupted_prompts=CORRUPT, ig_steps=2)
    )
    torch.testing.assert_close(direct, via)


# -- candidate selection ---------------------------------------------------------------------------
def test_select_candidates_count_fraction_zeros_and_ties():
    scores = torch.tensor([[0.0, -3.0, 1.0, 0.5], [2.0, 0.0, -1.0, 0.1]])
    top = select_candidates(scores, "mlp", 3)
    assert [str(s) for s in top] == ["L0.mlp[1]", "L1.mlp[0]", "L0.mlp[2]"]
    # |1.0| tie between L0[2] and L1[2]: (layer, index) order
    assert select_candidates(scores, "mlp", 4)[3] == Site(1, "mlp", 2)
    assert len(select_candidates(scores, "mlp", "25%")) == 2  # 25 % of 8 units
    assert len(select_candidates(scores, "mlp", "30%")) == 3  # rounded up
    assert len(select_candidates(scores, "mlp", "100%")) == 8  # every unit, zeros included
    assert len(select_candidates(scores, "mlp", 100)) == 6  # zeros excluded
    assert len(select_candidates(scores, "mlp", 100, include_zeros=True)) == 8
    assert select_candidates(scores, "mlp_out", 1) == [Site(0, "mlp_out", 1)]


@pytest.mark.parametrize("bad", [0, -1, 2.5, 0.5, 1.0, float("nan"), "0%", "120%", "half", "50", True])
def test_select_candidates_rejects_bad_top_m(bad):
    with pytest.raises(ConfigError, match="top_m"):
        select_candidates(torch.ones(2, 3), "mlp", bad)


def test_select_candidates_rejects_nan_scores():
    with pytest.raises(ConfigError, match="NaN"):
        select_candidates(torch.tensor([[1.0, float("nan")]]), "mlp", 1)


# -- on the organism -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def organism():
    from mecharule.decoding.generation import generate_answers
    from mecharule.models import load_model
    from mecharule.tasks import make_task

    handle = load_model("zoo:arithmetic")
    task = make_task("arithmetic")
    prompts = task.prompts().sample(900, random_state=0).reset_index(drop=True)
    answers = generate_answers(handle, prompts["prompt"].tolist(), task.max_new_tokens)
    behaviour = prompts.assign(
        answer=answers,
        label=task.score(prompts, answers),
        split=np.where(np.arange(len(prompts)) % 5 == 0, "test", "train"),
    )
    return handle, task, behaviour


def test_stage_writes_scores_and_records(organism, tmp_path):
    handle, _task, behaviour = organism
    rules = [
        {"id": "mul", "mask": (behaviour["operator"] == "*").to_numpy(), "text": "operator == '*'"},
        {"id": "big_a", "mask": lambda frame: (frame["a"] >= 50).to_numpy()},
        {"id": "none", "mask": np.zeros(len(behaviour), dtype=bool)},
    ]
    settings = {
        "attribution.methods": ["atp", "eap_ig"],
        "attribution.n_pairs": 32,
        "attribution.ig_steps": 2,
    }
    results = attribute_rules(_ctx(organism, tmp_path, **settings), rules, behaviour=behaviour)
    assert [r.rule_id for r in results] == ["mul", "big_a", "none"]
    assert results[2].skipped and not (tmp_path / "attribution" / "rule_none.safetensors").exists()
    saved = load_file(str(tmp_path / "attribution" / "rule_mul.safetensors"))
    assert set(saved) == {"atp", "eap_ig"}
    assert saved["atp"].shape == (handle.arch.n_layers, handle.arch.d_mlp)
    torch.testing.assert_close(saved["atp"], results[0].scores["atp"])
    record = json.loads((tmp_path / "attribution" / "rule_mul.json").read_text())
    assert record["schema_version"] >= 1 and record["status"] == "ok"
    assert record["pairing"]["n_pairs"] == 32 and record["n_pairs"] <= 32
    assert len(record["methods"]["atp"]["top_units"]) == 20
    top = record["methods"]["atp"]["top_units"]
    assert abs(top[0]["score"]) >= abs(top[-1]["score"])
    # covered rows: TRAIN, correct, multiplication; corrupted rows: TRAIN, correct, not multiplication
    covered, corrupted = record["covered_rows"], record["corrupted_rows"]
    assert (behaviour.loc[covered, "operator"] == "*").all() and behaviour.loc[covered, "label"].all()
    assert (behaviour.loc[covered, "split"] == "train").all()
    assert (behaviour.loc[corrupted, "operator"] != "*").all() and behaviour.loc[corrupted, "label"].all()
    lengths = behaviour["prompt"].str.len()
    clean_rows = record["clean_rows_of_pairs"]
    assert (lengths[clean_rows].to_numpy() == lengths[corrupted].to_numpy()).all()
    assert json.loads((tmp_path / "attribution" / "rule_none.json").read_text())["status"] == "skipped"


def test_stage_rejects_bad_rules(organism, tmp_path):
    _handle, _task, behaviour = organism
    ctx = _ctx(organism, tmp_path)
    with pytest.raises(ConfigError, match="rule id"):
        attribute_rules(ctx, [{"id": "a/b", "mask": None}], behaviour=behaviour)
    with pytest.raises(DataError, match="boolean"):
        attribute_rules(ctx, [{"id": "x", "mask": np.ones(3, bool)}], behaviour=behaviour)
    with pytest.raises(ConfigError, match="did you mean 'eap_ig'"):  # the config names a method
        _ctx(organism, tmp_path, **{"attribution.methods": ["eap_gi"]})


def test_atp_ranks_units_that_flip_multiplications(organism):
    """AtP's top units include real agonists: ablating the top-|score| unit flips some prompts."""
    from mecharule.interventions.engine import AblationEngine

    handle, task, behaviour = organism
    mul = behaviour[(behaviour["operator"] == "*") & behaviour["label"]].head(32).reset_index(drop=True)
    ref = behaviour.head(128)
    keys = [(layer, "mlp") for layer in range(2)]
    tables = mean_tables(handle, keys, ref["prompt"].tolist(), ref["answer"].tolist())
    scores = atp_scores(handle, mul["prompt"].tolist(), mul["answer"].tolist(), tables, "mlp")
    top = select_candidates(scores, "mlp", 5)
    engine = AblationEngine(handle, mul, task.score, tables, task.max_new_tokens)
    flips = engine.run([[s] for s in top]).flips(engine.baseline_labels).mean(1)
    assert flips.max() > 0.1


def test_a_rule_covering_no_row_of_the_regime_is_ranked_on_the_other_regime(organism, tmp_path):
    """Real models fail whole slices (SmolLM2 and Gemma 3 get no negative result right): such a rule
    has no covered positive row, and without scores localization would search every unit."""
    _handle, _task, behaviour = organism
    wrong = ~behaviour["label"].to_numpy(bool)
    only_failures = wrong & (behaviour["operator"] == "*").to_numpy()
    ctx = _ctx(organism, tmp_path, **{"attribution.n_pairs": 16})
    results = attribute_rules(ctx, [{"id": "fails", "mask": only_failures}], behaviour=behaviour)
    assert not results[0].skipped
    record = json.loads((tmp_path / "attribution" / "rule_fails.json").read_text())
    assert record["regime"] == "negative" and "no eligible positive" in record["regime_fallback"]
    assert not behaviour.loc[record["covered_rows"], "label"].any()
    assert (tmp_path / "attribution" / "rule_fails.safetensors").exists()

    assert not results[0].skipped
    record = json.loads((tmp_path / "attribution" / "rule_fails.json").read_text())
    assert record["regime"] == "negative" and "no eligible positive" in record["regime_fallback"]
    assert not behaviour.loc[record["covered_rows"], "label"].any()
    assert (tmp_path / "attribution" / "rule_fails.safetensors").exists()


def test_atp_patches_towards_the_configured_ablation(organism, tmp_path, monkeypatch):
    """Zero ablation is attributed towards zero, not the mean (AtP used the mean whatever the config)."""
    import mecharule.reference_cache as stage

    _handle, _task, behaviour = organism
    asked: list[str] = []
    real = stage.reference_tables

    def recording(handle, behaviour, kind, ablation, n_reference, seed):
        asked.append(ablation)
        return real(handle, behaviour, kind, ablation, n_reference, seed)

    monkeypatch.setattr(stage, "reference_tables", recording)
    rules = [{"id": "mul", "mask": (behaviour["operator"] == "*").to_numpy()}]
    scores = {}
    for value in ("zero", "mean", "resample"):
        settings = {"attribution.n_pairs": 16, "ablation.n_reference": 32, "ablation.value": value}
        ctx = _ctx(organism, tmp_path / value, **settings)
        scores[value] = attribute_rules(ctx, rules, behaviour=behaviour)[0].scores["atp"]
    zero, mean, resample = scores["zero"], scores["mean"], scores["resample"]
    assert asked == ["zero", "mean", "mean"]  # a resample is attributed at its expectation, the mean
    assert not torch.allclose(zero, mean)
    torch.testing.assert_close(resample, mean)


def _ctx(organism, path, **settings):
    """A stage context over the organism fixture's model and task with ``settings`` (dotted keys)."""
    handle, task, _ = organism
    return StageContext.of(handle, task, path, load_config(None, settings))
