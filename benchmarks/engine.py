"""The batched ablation engine versus the reference-style slow path, and its share of matmul FLOP/s.

Workload (seeded): ``--n-groups`` random groups of 1–5 units of one kind (``mlp`` by default), each
mean-ablated (position-aligned means over ``--n-reference`` prompts with their greedy answers) at the
decode positions, on the same ``--n-prompts`` task prompts, through

(a) the slow path — :func:`mecharule.interventions.slow_path.ablated_answers`, one hooked greedy
    generation of all prompts per group, then the task's scorer;
(b) :class:`AblationEngine` — construction (baseline generation, prefix KV cache) plus ``run``.

Both are timed in the same process, alternated ``--repeats`` times (the machine is shared: only
ratios measured side by side mean anything); the median ratio is reported. The labels (and answers)
of the two must be identical (asserted).

Achieved model FLOP/s of the engine = 2 · P · T / engine seconds, where
  * P = the parameters of every matrix a token passes through: all decoder-layer weights (attention
    and MLP projections, biases, norms) plus the LM head (vocab × d_model, counted even when tied to
    the embedding); the embedding lookup is not a matmul and is not counted;
  * T = tokens actually pushed through the model by the engine: the sum of ``input_ids.numel()``
    over every forward call it makes (baseline generation, prefix, screening forwards, generation of
    diverging rows), padding included — counted by a forward pre-hook on the model that lives only
    inside the timed engine run;
  * attention score/value products (∝ context length, tiny at these lengths) are not counted.
It is divided by the machine's dense matmul FLOP/s, same thread count, same process: back-to-back
``torch.matmul`` of float32 n×n squares (n = the fastest of 256…2048 in a burst test, 2n³ FLOP each)
until as many FLOP as the engine's forwards are done, right after each repeat's engine run (the
shared machine's speed drifts, so the reference is measured over a comparable window). The burst
best (a single product) is printed too; it is higher and less representative under load.

Run on the bundled organism and on a randomly initialised Qwen2 with the organism's vocabulary and
tokenizer, d_model 256, 4 layers, d_mlp 1024 (its answers are mostly wrong: it measures throughput).

    python benchmarks/engine.py [--n-groups 256] [--n-prompts 128] [--repeats 3] [--kind mlp]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from mecharule.behaviour.generation import generate_answers
from mecharule.interventions.engine import AblationEngine
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.slow_path import ablated_answers
from mecharule.interventions.values import ValueTable, mean_tables
from mecharule.models import ModelHandle, Site, handle_from_model, load_model
from mecharule.models.sites import UnitKind
from mecharule.tasks import make_task
from mecharule.tasks.base import Task


def wide_qwen2(organism: ModelHandle, seed: int) -> ModelHandle:
    """A randomly initialised Qwen2 (d_model 256, 4 layers, d_mlp 1024) on the organism's tokenizer."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=int(organism.model.config.vocab_size),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=organism.tokenizer.pad_token_id,
        eos_token_id=organism.tokenizer.eos_token_id,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    return handle_from_model(model, organism.tokenizer, name="qwen2-random-d256-L4")


def matmul_params(handle: ModelHandle) -> int:
    """Parameters a token passes through as matmul operands (decoder layers + LM head)."""
    model = handle.model
    embedding = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embedding.numel()
    head = model.get_output_embeddings().weight
    return body + (head.numel() if head is embedding else 0)


def best_square_size(sizes: Sequence[int] = (256, 512, 1024, 2048), repeats: int = 3) -> tuple[int, float]:
    """The square size with the best burst float32 matmul FLOP/s (2n³ FLOP per product), and that rate."""
    best = (sizes[0], 0.0)
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.matmul(a, b)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            torch.matmul(a, b)
            best = max(best, (n, 2 * n**3 / (time.perf_counter() - started)), key=lambda x: x[1])
    return best


def sustained_matmul_flops(flop: float, n: int) -> float:
    """FLOP/s of back-to-back n×n float32 products until ``flop`` FLOP are done (a window as long as
    the engine's work would take at matmul speed)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    done, started = 0.0, time.perf_counter()
    while done < flop:
        torch.matmul(a, b)
        done += 2 * n**3
    return done / (time.perf_counter() - started)


@contextmanager
def token_counter(handle: ModelHandle) -> Iterator[list[int]]:
    """Count ``input_ids`` elements of every forward call of the model inside the block."""
    count = [0]

    def pre_hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        count[0] += int(kwargs["input_ids"].numel())

    hook = handle.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield count
    finally:
        hook.remove()


def random_groups(handle: ModelHandle, kind: UnitKind, n_groups: int, seed: int) -> list[list[Site]]:
    rng = np.random.default_rng(seed)
    width = handle.arch.width(kind)
    groups = []
    for _ in range(n_groups):
        size = int(rng.integers(1, 6))
        layers = rng.integers(handle.arch.n_layers, size=size)
        units = rng.choice(width, size, replace=False)
        groups.append([Site(int(layer), kind, int(i)) for layer, i in zip(layers, units, strict=True)])
    return groups


@dataclass(frozen=True)
class Workload:
    handle: ModelHandle
    task: Task
    prompts: pd.DataFrame
    tables: Mapping[SiteKey, ValueTable]
    groups: list[list[Site]]
    budget_mb: int


def slow_labels(w: Workload) -> tuple[np.ndarray, list[list[str]]]:
    texts = w.prompts["prompt"].tolist()
    answers = [
        ablated_answers(w.handle, texts, group, w.tables, "decode", w.task.max_new_tokens, len(texts))
        for group in w.groups
    ]
    return np.stack([w.task.score(w.prompts, a) for a in answers]), answers


def engine_labels(w: Workload) -> tuple[np.ndarray, list[list[str]], AblationEngine]:
    engine = AblationEngine(
        w.handle,
        w.prompts,
        w.task.score,
        w.tables,
        w.task.max_new_tokens,
        positions="decode",
        memory_budget_mb=w.budget_mb,
    )
    outcome = engine.run(w.groups)
    answers = [
        [outcome.changed_answers.get((g, p), engine.baseline_answers[p]) for p in range(engine.n_prompts)]
        for g in range(len(w.groups))
    ]
    return outcome.labels, answers, engine


def workload(handle: ModelHandle, task: Task, args: argparse.Namespace) -> Workload:
    table = task.prompts()
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(table), args.n_prompts + args.n_reference, replace=False)
    prompts = table.iloc[picks[: args.n_prompts]].reset_index(drop=True)
    ref = table.iloc[picks[args.n_prompts :]]["prompt"].tolist()
    keys: list[SiteKey] = [(layer, args.kind) for layer in range(handle.arch.n_layers)]
    tables = mean_tables(handle, keys, ref, generate_answers(handle, ref, task.max_new_tokens))
    groups = random_groups(handle, args.kind, args.n_groups, args.seed + 1)
    return Workload(handle, task, prompts, tables, groups, args.memory_budget_mb)


def compare(w: Workload, repeats: int, square: int) -> dict[str, float]:
    params = matmul_params(w.handle)
    slow_s, fast_s, ratios, shares, peaks = [], [], [], [], []
    for rep in range(repeats):
        order = ("slow", "engine") if rep % 2 == 0 else ("engine", "slow")
        for name in order:
            started = time.perf_counter()
            if name == "slow":
                s_labels, s_answers = slow_labels(w)
                slow_s.append(time.perf_counter() - started)
            else:
                with token_counter(w.handle) as tokens:
                    f_labels, f_answers, engine = engine_labels(w)
                fast_s.append(time.perf_counter() - started)
        assert f_answers == s_answers, "engine answers differ from the slow path"
        assert np.array_equal(f_labels, s_labels), "engine labels differ from the slow path"
        ratios.append(slow_s[-1] / fast_s[-1])
        peaks.append(sustained_matmul_flops(2 * params * tokens[0], square))  # right after the engine
        shares.append(2 * params * tokens[0] / fast_s[-1] / peaks[-1])
    n = len(w.groups)
    flips = int((f_labels != engine.baseline_labels[None, :]).sum())
    st = engine.stats
    print(
        f"  {w.handle.name}: {params / 1e6:.3f} M matmul params, {n} groups x {len(w.prompts)} prompts, "
        f"{flips} flipped (group, prompt) rows; engine: {st.forwards} forwards, "
        f"{st.screened_rows} screened rows, {st.generated_rows} generated rows, {tokens[0]} tokens"
    )
    for rep in range(repeats):
        print(
            f"    repeat {rep}: slow {n / slow_s[rep]:8.1f} interventions/s   engine "
            f"{n / fast_s[rep]:8.1f} interventions/s   ratio {ratios[rep]:6.2f}x   "
            f"engine {shares[rep] * peaks[rep] / 1e9:6.2f} GFLOP/s = {100 * shares[rep]:5.1f}% of "
            f"matmul {peaks[rep] / 1e9:5.1f} GFLOP/s"
        )
    result = {
        "slow": n / statistics.median(slow_s),
        "engine": n / statistics.median(fast_s),
        "ratio": statistics.median(ratios),
        "share": statistics.median(shares),
    }
    print(
        f"    median: slow {result['slow']:.1f} /s, engine {result['engine']:.1f} /s, "
        f"ratio {result['ratio']:.2f}x, engine at {100 * result['share']:.1f}% of matmul FLOP/s; "
        "labels and answers identical"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-groups", type=int, default=256)
    parser.add_argument("--n-prompts", type=int, default=128)
    parser.add_argument("--n-reference", type=int, default=256)
    parser.add_argument("--kind", choices=["mlp", "mlp_out"], default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-budget-mb", type=int, default=512)
    parser.add_argument("--models", nargs="+", choices=["organism", "wide"], default=["organism", "wide"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    task = make_task("arithmetic")
    organism = load_model("zoo:arithmetic")
    handles = {"organism": organism, "wide": wide_qwen2(organism, args.seed)}
    square, burst = best_square_size()
    print(f"matmul reference: {square}x{square} float32 squares (burst best {burst / 1e9:.1f} GFLOP/s)")
    results = {}
    for name in args.models:
        results[name] = compare(workload(handles[name], task, args), args.repeats, square)
    print(f"\ntorch threads {torch.get_num_threads()}; medians over {args.repeats} alternated repeats")
    print(f"{'model':<10} {'slow /s':>9} {'engine /s':>10} {'ratio':>7} {'% matmul':>9}")
    for name, r in results.items():
        print(f"{name:<10} {r['slow']:9.1f} {r['engine']:10.1f} {r['ratio']:6.2f}x {100 * r['share']:8.1f}%")


if __name__ == "__main__":
    main()
