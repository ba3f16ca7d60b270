"""Train a bundled model organism from scratch (no download): a tiny real-HF-architecture model,
char tokenizer, teacher-forced loss on answer tokens only. Deterministic for a given seed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from mecharule.io.rundir import write_json
from mecharule.models.loading import handle_from_model
from mecharule.tasks.base import make_task
from mecharule.zoo.char_tokenizer import build_char_tokenizer
from mecharule.zoo.specs import ModelShape, OrganismSpec, organism_spec

log = logging.getLogger(__name__)
Progress = Callable[[int, int, float], None]


def build_model(shape: ModelShape, vocab_size: int, max_len: int, seed: int) -> Any:
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        shape.architecture,
        vocab_size=vocab_size,
        hidden_size=shape.d_model,
        intermediate_size=shape.d_mlp,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_heads,
        max_position_embeddings=max_len,
        tie_word_embeddings=True,
        **_architecture_options(shape),
    )
    return AutoModelForCausalLM.from_config(config)


def _architecture_options(shape: ModelShape) -> dict[str, Any]:
    """Config keys whose name differs by architecture (GPT-2 calls the MLP width ``n_inner``)."""
    if shape.architecture == "gpt2":
        return {
            "n_inner": shape.d_mlp,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "bos_token_id": None,
            "eos_token_id": None,
        }
    return {}


def _encode_pairs(tok: Any, prompts: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``ids`` and a loss mask covering answer tokens + EOS ``# [n, pos]``."""
    rows, masks = [], []
    for p, a in zip(prompts, answers, strict=True):
        pi = tok(p, add_special_tokens=False)["input_ids"]
        ai = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(pi + ai)
        masks.append([0] * len(pi) + [1] * len(ai))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        loss_mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids, loss_mask


def _lr(step: int, spec: OrganismSpec) -> float:
    sched = spec.schedule
    if step < sched.warmup:
        return sched.lr * (step + 1) / sched.warmup
    progress = (step - sched.warmup) / max(1, sched.steps - sched.warmup)
    return sched.lr * 0.5 * (1 + math.cos(math.pi * progress))


def fit(
    model: torch.nn.Module,
    ids: torch.Tensor,
    loss_mask: torch.Tensor,
    weights: np.ndarray,
    spec: OrganismSpec,
    seed: int,
    progress: Progress | None = None,
) -> float:
    """Teacher-forced training on answer tokens; returns the final smoothed loss."""
    gen = torch.Generator().manual_seed(seed)
    probs = torch.as_tensor(weights, dtype=torch.float64)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.schedule.lr, weight_decay=spec.schedule.weight_decay)
    model.train()
    smooth = float("nan")
    for step in range(spec.schedule.steps):
        batch = torch.multinomial(probs, spec.schedule.batch_size, replacement=True, generator=gen)
        x, m = ids[batch], loss_mask[batch]
        logits = model(input_ids=x).logits[:, :-1]
        target, tmask = x[:, 1:], m[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[tmask], target[tmask])
        for group in opt.param_groups:
            group["lr"] = _lr(step, spec)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if math.isnan(smooth) else 0.98 * smooth + 0.02 * loss.item()
        if progress is not None and step % 50 == 0:
            progress(step, spec.schedule.steps, smooth)
    model.eval()
    return smooth


def train_organism(
    name: str,
    seed: int,
    out_dir: Path,
    steps: int | None = None,
    progress: Progress | None = None,
    sweep: bool = True,
) -> dict[str, Any]:
    """Train, evaluate on held-out prompts, sweep for agonists, save weights + report to ``out_dir``.

    Training runs on one thread so that the same seed gives the same weights on a given machine.
    """
    spec = organism_spec(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed thread count makes the float reductions, hence training, reproducible
    try:
        return _train(spec, name, seed, out_dir, steps, progress, sweep)
    finally:
        torch.set_num_threads(threads)


def _train(
    spec: OrganismSpec,
    name: str,
    seed: int,
    out_dir: Path,
    steps: int | None,
    progress: Progress | None,
    sweep: bool,
) -> dict[str, Any]:
    from dataclasses import replace

    from mecharule.zoo.evaluation import evaluate_organism

    if steps is not None:
        spec = replace(spec, schedule=replace(spec.schedule, steps=steps))
    torch.manual_seed(seed)
    task = make_task(spec.task, spec.task_options)
    table = task.prompts()
    rng = np.random.default_rng(seed)
    heldout = rng.random(len(table)) < spec.heldout_fraction
    train_table = table[~heldout].reset_index(drop=True)
    prompts, answers, weights = spec.training_pairs(train_table, seed)
    tok = build_char_tokenizer(table["prompt"].tolist() + prompts + answers + [spec.extra_chars])
    ids, loss_mask = _encode_pairs(tok, prompts, answers)
    model = build_model(spec.shape, len(tok), max_len=ids.shape[1] + task.max_new_tokens + 8, seed=seed)
    started = time.perf_counter()
    final_loss = fit(model, ids, loss_mask, weights, spec, seed, progress)
    train_seconds = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # type: ignore[operator]
    tok.save_pretrained(out_dir)
    handle = handle_from_model(model, tok, name=f"zoo:{name}")
    report: dict[str, Any] = {
        "organism": name,
        "seed": seed,
        "task": spec.task,
        "task_options": spec.task_options,
        "shape": asdict(spec.shape),
        "schedule": asdict(spec.schedule),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "train_prompts": len(prompts),
        "heldout_prompts": int(heldout.sum()),
        "train_seconds": round(train_seconds, 1),
        "final_loss": round(final_loss, 4),
        "torch_version": torch.__version__,
    }
    report.update(
        evaluate_organism(handle, task, table[heldout].reset_index(drop=True), spec, seed, sweep=sweep)
    )
    write_json(out_dir / "training_report.json", report)
    return report
