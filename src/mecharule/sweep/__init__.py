"""``mecharule sweep RUN_DIR --vary KEY=V1,V2``: re-run a finished run under other settings, reusing
every stage whose inputs do not change, and test how the results move (see :mod:`.plan`,
:mod:`.runner`, :mod:`.analysis`, :mod:`.output`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mecharule.config import RunConfig
from mecharule.estimates import Notify
from mecharule.progress import ProgressFactory, silent
from mecharule.sweep.plan import MAX_SETTINGS, Factor, Setting, base_config, parse_vary, plan_settings
from mecharule.sweep.runner import SweepRun, SweepRunner


def run_sweep(
    base: Path,
    out: Path,
    factors: Sequence[Factor],
    pipeline_of: Callable[[RunConfig, Path], Any],
    *,
    grid: bool = False,
    max_settings: int = MAX_SETTINGS,
    notify: Notify = print,
    progress: ProgressFactory = silent,
) -> dict[str, pd.DataFrame]:
    """Run every setting, then write ``out/`` (see :mod:`.output`); returns the tables."""
    from mecharule.sweep.analysis import settings_table, sweep_tests, tests_table
    from mecharule.sweep.output import write_sweep

    config = base_config(base)
    settings = plan_settings(config, factors, grid, max_settings)
    runs = SweepRunner(base, out, pipeline_of, notify, progress).run(config, settings)
    family = "sweep " + ", ".join(f.key for f in factors)
    tables = {"settings": settings_table(runs), "tests": tests_table(sweep_tests(runs, family, config.seed))}
    write_sweep(out, runs, factors, tables)
    return tables


__all__ = ["Factor", "Setting", "SweepRun", "parse_vary", "run_sweep"]
