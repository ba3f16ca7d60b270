"""mecharule on a real model: the measure path vs HF ``generate``, CHA group evaluations, stage times.

Model: ``--model`` (anything :func:`mecharule.models.load_model` takes; default ``smollm2-135m``)
on ``--device`` in ``--dtype``. Task: arithmetic, few-shot (5 solved lines drawn with ``--seed``
and removed from the pool, operands 0–20, ``+ - *``), which ends answers at a newline (the task's
stop string) within ``max_new_tokens`` 8. Prompts are a seeded sample of the pool left after the
shots, formatted with :mod:`mecharule.tasks.formats` exactly as the measure stage does.

(a) Measure path. The same ``--n-prompts`` prompts through

    * ours: :func:`mecharule.decoding.generation.generate_answers` with the task's stop strings
      (prompts sorted by token length, batches of ``--batch-size``, the shared few-shot prefix
      prefilled once per batch);
    * HF: ``model.generate`` on exactly those batches (the tokenizer's left padding), greedy
      (``do_sample=False``, one beam), the same ``max_new_tokens``, the model's EOS ids and
      ``stop_strings`` (with ``tokenizer=``); the decoded text (special tokens skipped) is cut before
      the first stop string, as ours is.

  Both timings include tokenization and decoding; one small warm-up call of each runs first (HF and
  we both cache the stop-string token tables). The two alternate ``--repeats`` times in one process
  (the machine is shared: only ratios measured side by side mean anything); the median of the
  per-repeat ratios (HF time / our time) is reported. The labels (``task.score``) of the two must be
  identical; answers may differ only where the two paths' different padding layouts round a near-tie
  differently, and the count of differing answers is printed.

(b) CHA group evaluations. An :class:`AblationEngine` (decode-position mean ablation, the task's
  stop strings, the dtype's tie margin) over ``--n-engine-prompts`` prompts (64: localization uses
  32 covered + 32 unrelated). Mean tables for every layer's ``mlp`` units come from
  ``--n-reference`` other prompts and their greedy answers (position-aligned, as
  ``benchmarks/engine.py`` and the pipeline build them). Timed: the engine's construction (baseline
  generation, prefix cache) once, then ``engine.run`` on ``--n-singles`` random single units (random
  layer and unit) and on ``--n-blocks`` random blocks of ``--block-size`` units of one random layer
  (what CHA's first levels evaluate), alternated with the slow path
  (:func:`mecharule.interventions.slow_path.ablated_answers`, one hooked generation of all prompts
  per group) on the first ``--n-slow`` groups of each kind. Reported: seconds per group evaluation
  and interventions/s of each, their ratio, and whether the slow path's labels and answers equal
  the engine's for those groups (they must).

(c) Pipeline. Unless ``--skip-pipeline``: ``--config`` (default ``examples/smollm2-arithmetic.yaml``)
  is run with every default stage, with the model, device and dtype of (a) and (b) (overriding the
  file's), into ``--out`` (a temporary directory if not given); the per-stage wall seconds are read
  back from its ``run.json``. If that config file does not exist,
  the stage times of an existing ``--run-dir`` (``run.json``, else ``summary.json``) are printed
  instead.

    python benchmarks/real_model.py [--model smollm2-135m] [--n-prompts 256] [--repeats 3]
        [--device cpu] [--dtype float32] [--skip-pipeline] [--run-dir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mecharule.decoding.generation import cut_at_stop, eos_ids, generate_answers
from mecharule.interventions.engine import AblationEngine
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.slow_path import ablated_answers
from mecharule.interventions.values import ValueTable, mean_tables
from mecharule.models import ModelHandle, Site, load_model
from mecharule.tasks import make_task
from mecharule.tasks.base import Task, stop_strings_of
from mecharule.tasks.formats import draw_shots, format_task_prompts

N_SHOTS = 5
TASK_OPTIONS = {"prompt_format": "fewshot", "n_shots": N_SHOTS, "max_operand": 20}
Answerer = Callable[[ModelHandle, Task, Sequence[str], int], list[str]]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(device)
    started = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - started, out


def formatted_pool(handle: ModelHandle, task: Task, seed: int) -> pd.DataFrame:
    """The task's prompts after drawing the shots, formatted as the measure stage formats them."""
    shots, pool = draw_shots(task.prompts(), N_SHOTS, seed)
    return format_task_prompts(task, pool, handle.tokenizer, shots)


def sample(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    if n > len(pool):
        raise SystemExit(f"asked for {n} prompts; the task's pool holds {len(pool)}")
    return pool.iloc[rng.choice(len(pool), n, replace=False)].reset_index(drop=True)


# -- (a) measure path vs HF generate ---------------------------------------------------------------
def ours(handle: ModelHandle, task: Task, prompts: Sequence[str], batch_size: int) -> list[str]:
    return generate_answers(
        handle, prompts, task.max_new_tokens, batch_size, stop_strings=stop_strings_of(task)
    )


def hf_generate(handle: ModelHandle, task: Task, prompts: Sequence[str], batch_size: int) -> list[str]:
    """HF ``generate`` over the same length-sorted batches as :func:`generate_answers` (order kept)."""
    tok, stops = handle.tokenizer, list(stop_strings_of(task))
    lengths = [len(ids) for ids in tok(list(prompts), add_special_tokens=True)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    answers = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = tok([prompts[i] for i in chunk], padding=True, return_tensors="pt").to(handle.device)
        with torch.inference_mode():
            out = handle.model.generate(
                **encoded,
                max_new_tokens=task.max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tok.pad_token_id,
                eos_token_id=list(eos_ids(handle)),
                stop_strings=stops or None,
                tokenizer=tok if stops else None,
            )
        texts = tok.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(chunk, texts, strict=True):
            answers[i] = cut_at_stop(text, stops)
    return answers


def compare_measure(
    handle: ModelHandle, task: Task, table: pd.DataFrame, batch_size: int, repeats: int
) -> dict[str, Any]:
    prompts = table["prompt"].tolist()
    paths: dict[str, Answerer] = {"ours": ours, "hf": hf_generate}
    for fn in paths.values():  # warm-up: stop-string tables, first-call allocations
        fn(handle, task, prompts[:2], batch_size)
    seconds: dict[str, list[float]] = {"ours": [], "hf": []}
    answers: dict[str, list[str]] = {}
    for rep in range(repeats):
        for name in list(paths) if rep % 2 == 0 else list(paths)[::-1]:
            took, answers[name] = timed(
                handle.device, lambda f=paths[name]: f(handle, task, prompts, batch_size)
            )
            seconds[name].append(took)
        n = len(prompts)
        print(
            f"  repeat {rep}: ours {n / seconds['ours'][-1]:7.2f} prompts/s   "
            f"HF generate {n / seconds['hf'][-1]:7.2f} prompts/s   "
            f"ratio {seconds['hf'][-1] / seconds['ours'][-1]:5.2f}x"
        )
    labels = {name: np.asarray(task.score(table, a), dtype=bool) for name, a in answers.items()}
    differ = [i for i, (a, b) in enumerate(zip(answers["ours"], answers["hf"], strict=True)) if a != b]
    for i in differ[:5]:
        print(
            f"    answers differ on {table['question'].iloc[i]!r}: "
            f"ours {answers['ours'][i]!r}, HF {answers['hf'][i]!r}"
        )
    return {
        "n_prompts": len(prompts),
        "batch_size": batch_size,
        "max_new_tokens": task.max_new_tokens,
        "ours_prompts_per_s": len(prompts) / statistics.median(seconds["ours"]),
        "hf_prompts_per_s": len(prompts) / statistics.median(seconds["hf"]),
        "ratio_hf_time_over_ours": statistics.median(
            h / o for h, o in zip(seconds["hf"], seconds["ours"], strict=True)
        ),
        "accuracy": float(labels["ours"].mean()),
        "answers_differing": len(differ),
        "labels_differing": int((labels["ours"] != labels["hf"]).sum()),
        "answers_with_newline": sum("\n" in a for a in answers["ours"]),
    }


# -- (b) CHA group evaluations: engine vs slow path -------------------------------------------------
def random_singles(handle: ModelHandle, n: int, rng: np.random.Generator) -> list[list[Site]]:
    width, layers = handle.arch.width("mlp"), handle.arch.n_layers
    return [[Site(int(rng.integers(layers)), "mlp", int(rng.integers(width)))] for _ in range(n)]


def random_blocks(handle: ModelHandle, n: int, size: int, rng: np.random.Generator) -> list[list[Site]]:
    """``n`` groups of ``size`` distinct units of one random layer each (like CHA's first splits)."""
    width, layers = handle.arch.width("mlp"), handle.arch.n_layers
    blocks = []
    for _ in range(n):
        layer = int(rng.integers(layers))
        blocks.append([Site(layer, "mlp", int(u)) for u in rng.choice(width, size, replace=False)])
    return blocks


def slow_path(
    handle: ModelHandle,
    task: Task,
    prompts: pd.DataFrame,
    tables: Mapping[SiteKey, ValueTable],
    groups: Sequence[Sequence[Site]],
) -> tuple[list[list[str]], np.ndarray]:
    texts, stops = prompts["prompt"].tolist(), stop_strings_of(task)
    answers = [
        ablated_answers(handle, texts, g, tables, "decode", task.max_new_tokens, len(texts), stops)
        for g in groups
    ]
    return answers, np.stack([task.score(prompts, a) for a in answers])


def engine_answers(
    engine: AblationEngine, groups: Sequence[Sequence[Site]]
) -> tuple[list[list[str]], np.ndarray]:
    outcome = engine.run(groups)
    answers = [
        [outcome.changed_answers.get((g, p), engine.baseline_answers[p]) for p in range(engine.n_prompts)]
        for g in range(len(groups))
    ]
    return answers, outcome.labels


def compare_groups(
    handle: ModelHandle, task: Task, table: pd.DataFrame, args: argparse.Namespace
) -> dict[str, Any]:
    prompts = table.iloc[: args.n_engine_prompts].reset_index(drop=True)
    ref = table.iloc[args.n_engine_prompts :]["prompt"].tolist()
    keys: list[SiteKey] = [(layer, "mlp") for layer in range(handle.arch.n_layers)]
    tables_s, tables = timed(
        handle.device, lambda: mean_tables(handle, keys, ref, ours(handle, task, ref, args.batch_size))
    )
    build_s, engine = timed(
        handle.device,
        lambda: AblationEngine(
            handle,
            prompts,
            task.score,
            tables,
            task.max_new_tokens,
            positions="decode",
            memory_budget_mb=args.memory_budget_mb,
            stop_strings=stop_strings_of(task),
        ),
    )
    print(
        f"  mean tables from {len(ref)} prompts {tables_s:.1f} s; engine built in {build_s:.1f} s on "
        f"{engine.n_prompts} prompts (memory budget {engine.budget_bytes // 2**20} MB, tie margin "
        f"{engine.tie_margin:g}, baseline accuracy "
        f"{engine.baseline_labels.mean():.3f})"
    )
    rng = np.random.default_rng(args.seed + 1)
    workloads = {
        "single": random_singles(handle, args.n_singles, rng),
        f"block{args.block_size}": random_blocks(handle, args.n_blocks, args.block_size, rng),
    }
    results: dict[str, Any] = {
        "memory_budget_mb": engine.budget_bytes // 2**20,
        "engine_build_s": build_s,
        "mean_tables_s": tables_s,
        "n_prompts": engine.n_prompts,
    }
    for kind, groups in workloads.items():
        results[kind] = compare_group_kind(handle, task, engine, tables, groups, args.n_slow, args.repeats)
    return results


def compare_group_kind(
    handle: ModelHandle,
    task: Task,
    engine: AblationEngine,
    tables: Mapping[SiteKey, ValueTable],
    groups: list[list[Site]],
    n_slow: int,
    repeats: int,
) -> dict[str, Any]:
    n_slow = min(n_slow, len(groups))
    engine_s, slow_s = [], []
    for rep in range(repeats):
        for name in ("engine", "slow") if rep % 2 == 0 else ("slow", "engine"):
            if name == "engine":
                took, (fast_answers, fast_labels) = timed(
                    handle.device, lambda: engine_answers(engine, groups)
                )
                engine_s.append(took / len(groups))
            else:
                took, (slow_answers, slow_labels) = timed(
                    handle.device, lambda: slow_path(handle, task, engine.prompts, tables, groups[:n_slow])
                )
                slow_s.append(took / n_slow)
    same_answers = fast_answers[:n_slow] == slow_answers
    same_labels = bool(np.array_equal(fast_labels[:n_slow], slow_labels))
    flips = int((fast_labels != engine.baseline_labels[None, :]).sum())
    result = {
        "n_groups": len(groups),
        "group_size": len(groups[0]),
        "engine_s_per_group": statistics.median(engine_s),
        "engine_interventions_per_s": 1 / statistics.median(engine_s),
        "slow_s_per_group": statistics.median(slow_s),
        "slow_groups": n_slow,
        "ratio_slow_over_engine": statistics.median(s / e for s, e in zip(slow_s, engine_s, strict=True)),
        "flipped_rows": flips,
        "slow_equals_engine_answers": same_answers,
        "slow_equals_engine_labels": same_labels,
    }
    print(
        f"  {len(groups)} groups of {len(groups[0])} unit(s): engine "
        f"{result['engine_s_per_group']:.3f} s/group ({result['engine_interventions_per_s']:.2f} "
        f"interventions/s), slow path {result['slow_s_per_group']:.3f} s/group on {n_slow}; "
        f"ratio {result['ratio_slow_over_engine']:.2f}x; {flips} flipped (group, prompt) rows; "
        f"slow == engine: answers {same_answers}, labels {same_labels}"
    )
    return result


# -- (c) pipeline stage times ------------------------------------------------------------------------
def stage_seconds(run_dir: Path) -> dict[str, float | None]:
    """Per-stage wall seconds of a run directory: ``run.json``'s stages, else ``summary.json``'s
    (empty when it holds neither)."""
    manifest, summary = run_dir / "run.json", run_dir / "summary.json"
    if manifest.exists():
        stages = json.loads(manifest.read_text()).get("stages", {})
        return {name: record.get("wall_seconds") for name, record in stages.items()}
    if summary.exists():
        return dict(json.loads(summary.read_text()).get("wall_seconds", {}))
    print(f"  {run_dir} holds neither run.json nor summary.json: no stage times")
    return {}


def pipeline_stages(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.skip_pipeline:
        return None
    if args.config.exists():
        from mecharule.config import load_config
        from mecharule.pipeline import Pipeline, default_stages, run_stages

        out = args.out or Path(tempfile.mkdtemp(prefix="mecharule-bench-"))
        overrides = {"model.name": args.model, "model.device": args.device, "model.dtype": args.dtype}
        config = load_config(args.config, overrides)
        print(f"\n(c) pipeline: {args.config} -> {out}")
        started = time.perf_counter()
        run_stages(Pipeline(config, out), default_stages(config))
        total = time.perf_counter() - started
        return {
            "source": str(args.config),
            "run_dir": str(out),
            "total_s": total,
            "stages": stage_seconds(out),
        }
    if args.run_dir is None:
        print(f"\n(c) pipeline: {args.config} does not exist and no --run-dir was given; skipped")
        return None
    print(f"\n(c) pipeline: {args.config} does not exist; stage times of the run in {args.run_dir}")
    return {"source": str(args.run_dir), "run_dir": str(args.run_dir), "stages": stage_seconds(args.run_dir)}


# -- report ------------------------------------------------------------------------------------------
def print_table(results: dict[str, Any]) -> None:
    m, g = results["measure"], results["groups"]
    print(
        f"\n{results['model']} ({results['dtype']} on {results['device']}, "
        f"torch threads {results['threads']})"
    )
    print(f"{'figure':<46} {'value':>14}")
    rows = [
        ("measure: ours prompts/s", f"{m['ours_prompts_per_s']:.2f}"),
        ("measure: HF generate prompts/s", f"{m['hf_prompts_per_s']:.2f}"),
        ("measure: median ratio (HF time / ours)", f"{m['ratio_hf_time_over_ours']:.2f}x"),
        ("measure: accuracy / answers differing", f"{m['accuracy']:.3f} / {m['answers_differing']}"),
        ("measure: labels differing", f"{m['labels_differing']}"),
        ("engine: build s (baseline + prefix)", f"{g['engine_build_s']:.1f}"),
    ]
    for kind in (k for k in g if isinstance(g[k], dict)):
        r = g[kind]
        rows += [
            (f"engine: s per {kind} group evaluation", f"{r['engine_s_per_group']:.3f}"),
            (f"engine: {kind} interventions/s", f"{r['engine_interventions_per_s']:.2f}"),
            (f"slow path / engine time, {kind}", f"{r['ratio_slow_over_engine']:.2f}x"),
        ]
    for stage, seconds in ((results.get("pipeline") or {}).get("stages") or {}).items():
        rows.append((f"pipeline: {stage} wall s", "n/a" if seconds is None else f"{seconds:.1f}"))
    for name, value in rows:
        print(f"{name:<46} {value:>14}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="anything load_model takes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--n-prompts", type=int, default=256, help="prompts of the measure comparison")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-engine-prompts", type=int, default=64)
    parser.add_argument("--n-reference", type=int, default=128, help="prompts the mean tables average")
    parser.add_argument("--n-singles", type=int, default=64)
    parser.add_argument("--n-blocks", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--n-slow", type=int, default=2, help="groups of each kind run on the slow path")
    parser.add_argument(
        "--memory-budget-mb", default="auto", help="engine row budget in MB, or 'auto' (as localize sizes it)"
    )
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--config", type=Path, default=Path("examples/smollm2-arithmetic.yaml"))
    parser.add_argument("--out", type=Path, default=None, help="run directory of the pipeline run")
    parser.add_argument("--run-dir", type=Path, default=None, help="existing run, when --config is absent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.memory_budget_mb != "auto" and not args.memory_budget_mb.isdigit():
        parser.error(f"--memory-budget-mb {args.memory_budget_mb!r}: give a whole number of MB or 'auto'")
    if args.memory_budget_mb != "auto":
        args.memory_budget_mb = int(args.memory_budget_mb)

    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    task = make_task("arithmetic", TASK_OPTIONS)
    pool, rng = formatted_pool(handle, task, args.seed), np.random.default_rng(args.seed)
    measure_table = sample(pool, args.n_prompts, rng)
    group_table = sample(pool, args.n_engine_prompts + args.n_reference, rng)
    print(f"{args.model}: {handle.arch.n_layers} layers, d_mlp {handle.arch.d_mlp}; task {task.options()}")
    print(f"(a) measure path vs HF generate: {args.n_prompts} prompts, batch {args.batch_size}")
    results: dict[str, Any] = {
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "task_options": task.options(),
        "measure": compare_measure(handle, task, measure_table, args.batch_size, args.repeats),
    }
    print(f"(b) CHA group evaluations: {args.n_engine_prompts} prompts, mean tables over {args.n_reference}")
    results["groups"] = compare_groups(handle, task, group_table, args)
    del handle  # the pipeline loads its own copy
    results["pipeline"] = pipeline_stages(args)
    print_table(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    failures = []
    if results["measure"]["labels_differing"]:
        failures.append(
            f"{results['measure']['labels_differing']} labels differ between ours and HF generate"
        )
    for kind, r in results["groups"].items():
        if isinstance(r, dict) and not (r["slow_equals_engine_answers"] and r["slow_equals_engine_labels"]):
            failures.append(f"the slow path and the engine disagree on {kind} groups")
    if failures:
        raise SystemExit("; ".join(failures))


if __name__ == "__main__":
    main()
