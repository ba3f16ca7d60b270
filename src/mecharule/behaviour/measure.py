"""Behaviour measurement: greedy answers, labels, a seeded stratified split.

Work is checkpointed in chunks under ``<out>/.partial/measure-<hash>/`` so an interrupted run
resumes where it stopped; the final ``behaviour.parquet`` is written atomically.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mecharule.behaviour.generation import generate_answers
from mecharule.errors import DataError
from mecharule.io.rundir import atomic_path
from mecharule.models.loading import ModelHandle
from mecharule.tasks.base import Task, stop_strings_of

CHUNK = 4096


def stratified_split(strata: pd.Series, test_fraction: float, seed: int) -> np.ndarray:
    """'train'/'test' per row: in every stratum a seeded ``test_fraction`` share goes to test."""
    rng = np.random.default_rng(seed)
    split = np.full(len(strata), "train", dtype=object)
    for _, idx in sorted(strata.groupby(strata, sort=True).indices.items(), key=lambda kv: str(kv[0])):
        n_test = round(test_fraction * len(idx))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        split[rng.permutation(idx)[:n_test]] = "test"
    return split


def _answer_chunks(
    handle: ModelHandle,
    task: Task,
    prompts: list[str],
    batch_size: int,
    partial: Path,
    progress: Callable[[int], None] | None,
) -> list[str]:
    partial.mkdir(parents=True, exist_ok=True)
    answers: list[str] = []
    for start in range(0, len(prompts), CHUNK):
        path = partial / f"chunk-{start:09d}.parquet"
        if path.exists():
            done = pd.read_parquet(path)["answer"].tolist()
            if progress is not None:
                progress(len(done))
        else:
            done = generate_answers(
                handle,
                prompts[start : start + CHUNK],
                task.max_new_tokens,
                batch_size,
                progress,
                stop_strings_of(task),
            )
            with atomic_path(path) as tmp:
                pd.DataFrame({"answer": done}).to_parquet(tmp)
        answers.extend(done)
    return answers


def measure_behaviour(
    handle: ModelHandle,
    task: Task,
    prompts: pd.DataFrame,
    *,
    batch_size: int,
    test_fraction: float,
    seed: int,
    partial_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """``prompt, answer, parsed, parsed_ok, label, split`` + ``question`` (the unformatted prompt, when
    the table has it) + the task's metadata columns, one row per prompt. ``answer`` is the raw
    decoded text; ``parsed`` the value the task read from it (None when it read none)."""
    if len(prompts) == 0:
        raise DataError(f"task {task.name!r} produced no prompts; check its options")
    texts = prompts["prompt"].tolist()
    answers = _answer_chunks(handle, task, texts, batch_size, partial_dir, progress)
    labels = np.asarray(task.score(prompts, answers), dtype=bool)
    parsed = parsed_answers(task, answers)
    table = pd.DataFrame(
        {
            "prompt": texts,
            "answer": answers,
            "parsed": pd.Series(parsed, dtype="string"),
            "parsed_ok": np.array([p is not None for p in parsed], dtype=bool),
            "label": labels,
        }
    )
    if "question" in prompts.columns:
        table["question"] = prompts["question"].astype(str).to_numpy()
    for column in task.metadata_columns:
        table[column] = prompts[column].to_numpy()
    strata = table["label"].astype(str)
    if task.group_column:
        strata = table[task.group_column].astype(str) + "|" + strata
    table["split"] = stratified_split(strata, test_fraction, seed)
    shutil.rmtree(partial_dir, ignore_errors=True)
    if partial_dir.parent.name == ".partial" and not any(partial_dir.parent.iterdir()):
        partial_dir.parent.rmdir()
    return table


def parsed_answers(task: Task, answers: list[str]) -> list[str | None]:
    """What the task read from each answer; tasks without ``parse_answers`` read the answer itself."""
    parse = getattr(task, "parse_answers", None)
    if parse is None:
        return [a.strip() for a in answers]
    return list(parse(answers))


def accuracy_summary(table: pd.DataFrame, group_column: str | None) -> dict[str, object]:
    summary: dict[str, object] = {
        "n_prompts": len(table),
        "positive_rate": round(float(table["label"].mean()), 4),
    }
    if "parsed_ok" in table.columns:
        summary["unparsed"] = int((~table["parsed_ok"].astype(bool)).sum())
    if group_column:
        summary["positive_rate_by_group"] = {
            str(k): round(float(v), 4) for k, v in table.groupby(group_column)["label"].mean().items()
        }
    return summary
