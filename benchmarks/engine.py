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
It is divided by the machine's dense matmul FLOP/s, same thread count, same process, same device
and dtype as the model (``--device``, ``--dtype``): back-to-back ``torch.matmul`` of n×n squares
(n = the fastest of 256…2048 on a CPU, 1024…8192 on a GPU, in a burst test; 2n³ FLOP each) until
as many FLOP as the engine's forwards are done, right after each repeat's engine run (the shared
machine's speed drifts, so the reference is measured over a comparable window; on a GPU every timed
block ends with ``torch.cuda.synchronize``). The burst best (a single product) is printed too; it is
higher and less representative under load.

Models (``--models``):
  * ``organism`` — the bundled arithmetic organism;
  * ``wide`` — a randomly initialised Qwen2 with the organism's vocabulary and tokenizer, d_model 256,
    4 layers, d_mlp 1024;
  * ``qwen2-0.5b`` / ``qwen2-1.5b`` — randomly initialised Qwen2 with the real widths and depths of
    Qwen2-0.5B (d_model 896, 24 layers, d_mlp 4864, 14 heads, 2 KV heads) and Qwen2-1.5B (d_model
    1536, 28 layers, d_mlp 8960, 12 heads, 2 KV heads), but the organism's small vocabulary and
    tokenizer (so the LM head is tiny and the model fits).
The random models' answers are mostly wrong: they measure throughput, not behaviour.

    python benchmarks/engine.py [--n-groups 256] [--n-prompts 128] [--repeats 3] [--kind mlp]
        [--models organism wide qwen2-0.5b qwen2-1.5b] [--device cpu|cuda] [--dtype float32|bfloat16|float16]
        [--memory-budget-mb 512|auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from mecharule.decoding.generation import generate_answers
from mecharule.interventions.engine import AblationEngine
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.slow_path import ablated_answers
from mecharule.interventions.values import ValueTable, mean_tables
from mecharule.models import ModelHandle, Site, handle_from_model, load_model
from mecharule.models.sites import UnitKind
from mecharule.sizing import budget_mb
from mecharule.tasks import make_task
from mecharule.tasks.base import Task

#: Random Qwen2 shapes: (d_model, layers, d_mlp, heads, KV heads); the vocabulary is the organism's.
QWEN2_SHAPES: dict[str, tuple[int, int, int, int, int]] = {
    "wide": (256, 4, 1024, 4, 4),
    "qwen2-0.5b": (896, 24, 4864, 14, 2),
    "qwen2-1.5b": (1536, 28, 8960, 12, 2),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def random_qwen2(organism: ModelHandle, shape: str, seed: int, dtype: torch.dtype) -> ModelHandle:
    """A randomly initialised Qwen2 of one of :data:`QWEN2_SHAPES` on the organism's tokenizer."""
    d_model, n_layers, d_mlp, n_heads, n_kv = QWEN2_SHAPES[shape]
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=int(organism.model.config.vocab_size),
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=organism.tokenizer.pad_token_id,
        eos_token_id=organism.tokenizer.eos_token_id,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(organism.device).eval()
    return handle_from_model(model, organism.tokenizer, name=f"qwen2-random-d{d_model}-L{n_layers}")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer read after it measures the work (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_params(handle: ModelHandle) -> int:
    """Parameters a token passes through as matmul operands (decoder layers + LM head)."""
    model = handle.model
    embedding = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embedding.numel()
    head = model.get_output_embeddings().weight
    return body + (head.numel() if head is embedding else 0)


def square_sizes(device: torch.device) -> tuple[int, ...]:
    return (1024, 2048, 4096, 8192) if device.type == "cuda" else (256, 512, 1024, 2048)


def best_square_size(device: torch.device, dtype: torch.dtype, repeats: int = 3) -> tuple[int, float]:
    """The square size with the best burst matmul FLOP/s (2n³ FLOP per product) in ``dtype`` on
    ``device``, and that rate."""
    sizes = square_sizes(device)
    best = (sizes[0], 0.0)
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        torch.matmul(a, b)  # warm-up
        for _ in range(repeats):
            synchronize(device)
            started = time.perf_counter()
            torch.matmul(a, b)
            synchronize(device)
            best = max(best, (n, 2 * n**3 / (time.perf_counter() - started)), key=lambda x: x[1])
    return best


def sustained_matmul_flops(flop: float, n: int, device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of back-to-back n×n products until ``flop`` FLOP are done (a window as long as the
    engine's work would take at matmul speed)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    synchronize(device)
    done, started = 0.0, time.perf_counter()
    while done < flop:
        torch.matmul(a, b)
        done += 2 * n**3
    synchronize(device)
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
    return Workload(handle, task, prompts, tables, groups, budget_mb(handle, args.memory_budget_mb))


def compare(w: Workload, repeats: int, square: int) -> dict[str, float]:
    params = matmul_params(w.handle)
    device, dtype = w.handle.device, w.handle.model.dtype
    slow_s, fast_s, ratios, shares, peaks = [], [], [], [], []
    for rep in range(repeats):
        order = ("slow", "engine") if rep % 2 == 0 else ("engine", "slow")
        for name in order:
            synchronize(device)
            started = time.perf_counter()
            if name == "slow":
                s_labels, s_answers = slow_labels(w)
                synchronize(device)
                slow_s.append(time.perf_counter() - started)
            else:
                with token_counter(w.handle) as tokens:
                    f_labels, f_answers, engine = engine_labels(w)
                synchronize(device)
                fast_s.append(time.perf_counter() - started)
        assert f_answers == s_answers, "engine answers differ from the slow path"
        assert np.array_equal(f_labels, s_labels), "engine labels differ from the slow path"
        ratios.append(slow_s[-1] / fast_s[-1])
        # right after the engine run
        peaks.append(sustained_matmul_flops(2 * params * tokens[0], square, device, dtype))
        shares.append(2 * params * tokens[0] / fast_s[-1] / peaks[-1])
    n = len(w.groups)
    flips = int((f_labels != engine.baseline_labels[None, :]).sum())
    st = engine.stats
    print(
        f"  {w.handle.name}: {params / 1e6:.3f} M matmul params, {n} groups x {len(w.prompts)} prompts, "
        f"memory budget {w.budget_mb} MB, "
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
    parser.add_argument(
        "--memory-budget-mb", default="512", help="engine row budget in MB, or 'auto' (sized like localize)"
    )
    parser.add_argument(
        "--models", nargs="+", choices=["organism", *QWEN2_SHAPES], default=["organism", "wide"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.memory_budget_mb != "auto" and not args.memory_budget_mb.isdigit():
        parser.error(f"--memory-budget-mb {args.memory_budget_mb!r}: give a whole number of MB or 'auto'")

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    task = make_task("arithmetic")
    organism = load_model("zoo:arithmetic", device=args.device, dtype=dtype)
    square, burst = best_square_size(device, dtype)
    print(
        f"matmul reference: {square}x{square} {args.dtype} squares on {device} "
        f"(burst best {burst / 1e9:.1f} GFLOP/s)"
    )
    results = {}
    for name in args.models:  # built one at a time: the large random models are only built when asked
        handle = organism if name == "organism" else random_qwen2(organism, name, args.seed, dtype)
        results[name] = compare(workload(handle, task, args), args.repeats, square)
        del handle
    print(
        f"\n{args.dtype} on {device}, torch threads {torch.get_num_threads()}; "
        f"medians over {args.repeats} alternated repeats"
    )
    print(f"{'model':<11} {'slow /s':>9} {'engine /s':>10} {'ratio':>7} {'% matmul':>9}")
    for name, r in results.items():
        print(f"{name:<11} {r['slow']:9.1f} {r['engine']:10.1f} {r['ratio']:6.2f}x {100 * r['share']:8.1f}%")


if __name__ == "__main__":
    main()
