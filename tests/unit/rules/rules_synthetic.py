"""Synthetic feature tables with planted rules, shared by the rule tests and benchmarks/rules.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

PLANTED_FEATURES = {"op_is_mul", "a", "b"}


def planted_table(
    n: int = 4000, n_distractors: int = 20, noise: float = 0.05, seed: int = 0, test_fraction: float = 0.25
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Features, noisy label, clean label and is_test for ``(op == '*' AND a >= 50) OR b == 0``.

    ``op`` is one-hot encoded (op_is_add/sub/mul); a, b are integers 0..99; distractors alternate
    between integers 0..9 and standard normals; ``noise`` of the labels are flipped.
    """
    rng = np.random.default_rng(seed)
    op = rng.choice(np.array(["+", "-", "*"]), size=n)
    a = rng.integers(0, 100, n)
    b = rng.integers(0, 100, n)
    columns: dict[str, np.ndarray] = {
        "op_is_add": (op == "+").astype(float),
        "op_is_sub": (op == "-").astype(float),
        "op_is_mul": (op == "*").astype(float),
        "a": a.astype(float),
        "b": b.astype(float),
    }
    for j in range(n_distractors):
        columns[f"d{j}"] = rng.normal(size=n) if j % 2 else rng.integers(0, 10, n).astype(float)
    clean = ((op == "*") & (a >= 50)) | (b == 0)
    noisy = np.where(rng.random(n) < noise, ~clean, clean)
    is_test = rng.random(n) < test_fraction
    return pd.DataFrame(columns), noisy, clean, is_test


FEATURE_DEFS = {
    "op_is_add": ("operator is +", "binary"),
    "op_is_sub": ("operator is -", "binary"),
    "op_is_mul": ("operator is *", "binary"),
    "a": ("first operand", "count"),
    "b": ("second operand", "count"),
}


def write_run_dir(path: Path, n: int = 1500, seed: int = 0) -> None:
    """A minimal run directory: behaviour.parquet (label = True when correct), features.*."""
    X, noisy_fail, _, is_test = planted_table(n=n, n_distractors=6, seed=seed)
    behaviour = pd.DataFrame(
        {
            "prompt": [f"prompt {i}" for i in range(n)],
            "answer": ["42"] * n,
            "label": ~noisy_fail,
            "split": np.where(is_test, "test", "train"),
            "op": "+",
        }
    )
    behaviour.to_parquet(path / "behaviour.parquet")
    X.to_parquet(path / "features.parquet")
    defs = [
        {
            "name": name,
            "description": FEATURE_DEFS.get(name, (name, "numeric"))[0],
            "kind": FEATURE_DEFS.get(name, (name, "numeric"))[1],
            "not_applicable": "",
            "origin": "seed",
        }
        for name in X.columns
    ]
    (path / "features.json").write_text(json.dumps({"schema_version": 1, "features": defs}))
