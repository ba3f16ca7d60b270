"""``mecharule run --seeds 0,1,2``: the spread of every headline figure across seeds.

Each seed is a whole run (its own split, samples, shuffles and controls) in ``OUT/seed-N``; the
spread table gives per figure its value under each seed, mean, standard deviation (n - 1), min and
max, plus the mean Jaccard overlap of the seeds' agonist sets, so a user sees what is stable.
Written to ``OUT/seeds.{md,csv}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mecharule.compare import overlap_rows, run_row
from mecharule.errors import ConfigError

FIGURES = (
    "accuracy",
    "rules test MCC",
    "control test MCC",
    "agonists",
    "agonists / candidates",
    "group evaluations",
    "HQ rules",
    "HQ, permuted control",
    "wall seconds",
)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; distinct non-negative integers, at least two."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers such as 0,1,2; got {text!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds needs at least two distinct non-negative seeds; got {text!r}")
    return seeds


def seed_spread(dirs: Sequence[Path], out: Path) -> pd.DataFrame:
    """The spread table of the runs in ``dirs`` (one per seed), also written to ``out``."""
    from mecharule.report.tables import write_tables

    rows = [run_row(d) for d in dirs]
    table = []
    for figure in FIGURES:
        values = np.array([np.nan if r.get(figure) is None else float(r[figure]) for r in rows])
        table.append(_spread_row(figure, values, [d.name for d in dirs]))
    jaccards = np.array([o["Jaccard"] for o in overlap_rows(list(dirs), rows) if o["Jaccard"] is not None])
    table.append(
        {"figure": "agonist overlap between seeds (mean Jaccard)", "mean": _r(np.mean(jaccards))}
        if len(jaccards)
        else {"figure": "agonist overlap between seeds (mean Jaccard)"}
    )
    frame = pd.DataFrame(table)
    write_tables({"seeds": frame}, out)
    return frame


def _spread_row(figure: str, values: np.ndarray, names: list[str]) -> dict[str, object]:
    row: dict[str, object] = {"figure": figure, **{n: _r(v) for n, v in zip(names, values, strict=True)}}
    known = values[~np.isnan(values)]
    if len(known):
        row |= {
            "mean": _r(known.mean()),
            "sd": _r(known.std(ddof=1)) if len(known) > 1 else None,
            "min": _r(known.min()),
            "max": _r(known.max()),
        }
    return row


def _r(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


__all__ = ["FIGURES", "parse_seeds", "seed_spread"]
