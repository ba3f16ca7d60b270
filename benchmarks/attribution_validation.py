"""Do attribution scores find the units whose ablation flips behaviour? AtP and EAP-IG versus a
brute-force sweep, on the bundled arithmetic organism.

Setup (one run, one seed):

* behaviour: greedy answers for a seeded sample of task prompts, labelled by the task's scorer;
* covered slice: ``--n-covered`` correct multiplications (positive regime), stratified over the
  spectral k-center clusters of the correct prompts;
* ablation value: the position-aligned mean over ``--n-reference`` random prompts with their greedy
  answers; ablated positions: decode (last prompt token + answer positions);
* ground truth: every unit mean-ablated alone through :class:`AblationEngine` → flip rate (share of
  covered prompts whose label changes);
* AtP: toward the mean, on the covered prompts; EAP-IG (``--ig-steps`` midpoint steps): clean =
  covered prompt, corrupted = the nearest (last-token state) correct non-multiplication prompt of
  the same token length.

Reported per unit kind and method: Spearman correlation with the flip rate over the units with any
effect, of −score (signed: negative = predicted to lower the answer's log-prob) and of |score|; the
recall of the brute-force top-10 (units with effect > 0, by flip rate) within the attribution top-M
(by |score| — the candidate selector — and by −score) for M in {5, 10, 20, 32}; chance = M / N.

    python benchmarks/attribution_validation.py [--n-covered 128] [--ig-steps 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from mecharule.attribution import atp_scores, eap_ig_scores, select_candidates
from mecharule.decoding.generation import generate_answers
from mecharule.interventions.engine import AblationEngine
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import ValueTable, mean_tables
from mecharule.models import ModelHandle, Site, load_model
from mecharule.models.sites import UnitKind
from mecharule.sampling import (
    Clustering,
    covered_unrelated,
    kcenter,
    last_token_states,
    length_matched_pairs,
    spectral_embedding,
)
from mecharule.tasks import make_task
from mecharule.tasks.base import Task

TOP_MS = (5, 10, 20, 32)
TOP_TRUE = 10


@dataclass(frozen=True)
class Slices:
    covered: pd.DataFrame
    clean: list[str]
    corrupted: list[str]
    clean_answers: list[str]
    reference: pd.DataFrame
    n_length_matched: int


def measure(n_prompts: int, n_covered: int, n_reference: int, seed: int) -> tuple[ModelHandle, Task, Slices]:
    handle = load_model("zoo:arithmetic")
    task = make_task("arithmetic")
    frame = task.prompts().sample(n_prompts, random_state=seed).reset_index(drop=True)
    frame["answer"] = generate_answers(handle, frame["prompt"].tolist(), task.max_new_tokens)
    frame["label"] = task.score(frame, frame["answer"].tolist())
    reference = frame.sample(n_reference, random_state=seed + 1)
    correct = np.flatnonzero(frame["label"].to_numpy(bool))
    states = last_token_states(handle, frame["prompt"].iloc[correct].tolist())
    z = spectral_embedding(states, dim=32, seed=seed)
    centers, assignment = kcenter(z, max(1, n_covered // 4), seed)
    is_mul = (frame["operator"] == "*").to_numpy()[correct]
    sel = covered_unrelated(
        is_mul,
        np.ones(len(correct), bool),
        "positive",
        n_covered,
        0,
        seed,
        Clustering(z, centers, assignment),
    )
    lengths = np.asarray([len(handle.tokenizer(p)["input_ids"]) for p in frame["prompt"].iloc[correct]])
    pairing = length_matched_pairs(sel.covered, np.flatnonzero(~is_mul), lengths, states)
    pairs = pairing.matched_pairs()
    rows = correct[sel.covered]
    covered = frame.iloc[rows].reset_index(drop=True)
    prompts, answers = frame["prompt"].tolist(), frame["answer"].tolist()
    slices = Slices(
        covered=covered,
        clean=[prompts[correct[c]] for c, _ in pairs],
        corrupted=[prompts[correct[r]] for _, r in pairs],
        clean_answers=[answers[correct[c]] for c, _ in pairs],
        reference=reference,
        n_length_matched=len(pairs),
    )
    print(
        f"organism: {len(frame)} prompts, accuracy {frame['label'].mean():.3f}, "
        f"{int(is_mul.sum())} correct multiplications; covered {len(covered)}, "
        f"length-matched pairs {len(pairs)} ({pairing.stats()['n_unique_corrupted']} distinct corrupted)"
    )
    return handle, task, slices


def brute_force(
    handle: ModelHandle, task: Task, slices: Slices, tables: dict[SiteKey, ValueTable], kind: UnitKind
) -> tuple[np.ndarray, float]:
    """Flip rate ``# [n_layers, width]`` of every unit ablated alone, and the wall seconds."""
    started = time.perf_counter()
    engine = AblationEngine(handle, slices.covered, task.score, tables, task.max_new_tokens)
    units = [
        Site(layer, kind, i) for layer in range(handle.arch.n_layers) for i in range(handle.arch.width(kind))
    ]
    flips = engine.run([[u] for u in units]).flips(engine.baseline_labels).mean(1)
    return flips.reshape(handle.arch.n_layers, -1), time.perf_counter() - started


def recall(order: list[Site], truth: list[Site], m: int) -> float:
    return len(set(order[:m]) & set(truth)) / max(1, len(truth))


def evaluate(name: str, scores: torch.Tensor, flips: np.ndarray, kind: UnitKind, seconds: float) -> dict:
    s = scores.double().numpy()
    effect = flips > 0
    width = flips.shape[1]
    truth_order = np.argsort(-flips.ravel(), kind="stable")
    truth = [
        Site(int(i) // width, kind, int(i) % width) for i in truth_order[:TOP_TRUE] if flips.ravel()[i] > 0
    ]
    by_abs = select_candidates(scores, kind, max(TOP_MS), include_zeros=True)
    neg_order = np.argsort(s.ravel(), kind="stable")
    by_neg = [Site(int(i) // width, kind, int(i) % width) for i in neg_order]
    row = {
        "kind": kind,
        "method": name,
        "seconds": seconds,
        "units_with_effect": int(effect.sum()),
        "rho(-score)": spearmanr(-s[effect], flips[effect]).statistic if effect.sum() > 2 else float("nan"),
        "rho(|score|)": spearmanr(np.abs(s[effect]), flips[effect]).statistic
        if effect.sum() > 2
        else float("nan"),
    }
    for m in TOP_MS:
        row[f"R@{m} |s|"] = recall(by_abs, truth, m)
        row[f"R@{m} -s"] = recall(by_neg, truth, m)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=6000)
    parser.add_argument("--n-covered", type=int, default=128)
    parser.add_argument("--n-reference", type=int, default=256)
    parser.add_argument("--ig-steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    handle, task, slices = measure(args.n_prompts, args.n_covered, args.n_reference, args.seed)
    rows = []
    for kind in ("mlp", "mlp_out"):
        keys: list[SiteKey] = [(layer, kind) for layer in range(handle.arch.n_layers)]
        tables = mean_tables(
            handle, keys, slices.reference["prompt"].tolist(), slices.reference["answer"].tolist()
        )
        flips, bf_seconds = brute_force(handle, task, slices, tables, kind)
        top = np.sort(flips.ravel())[::-1]
        print(
            f"\n{kind}: {flips.size} units; brute force {bf_seconds:.2f} s; flip rates of the top 10: "
            + ", ".join(f"{v:.2f}" for v in top[:10])
        )
        started = time.perf_counter()
        atp = atp_scores(
            handle, slices.covered["prompt"].tolist(), slices.covered["answer"].tolist(), tables, kind
        )
        rows.append(evaluate("AtP", atp, flips, kind, time.perf_counter() - started))
        started = time.perf_counter()
        ig = eap_ig_scores(
            handle, slices.clean, slices.corrupted, slices.clean_answers, kind, steps=args.ig_steps
        )
        rows.append(evaluate(f"EAP-IG m={args.ig_steps}", ig, flips, kind, time.perf_counter() - started))
        rows.append({"kind": kind, "method": "brute force", "seconds": bf_seconds})
        rows.append({"kind": kind, "method": "chance", **{f"R@{m} |s|": m / flips.size for m in TOP_MS}})
    table = pd.DataFrame(rows).set_index(["kind", "method"])
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format
    ):
        print("\n" + table.to_string(na_rep="-"))


if __name__ == "__main__":
    main()
