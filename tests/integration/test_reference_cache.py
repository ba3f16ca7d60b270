"""The reference value tables and the spectral pool are computed once per run and shared by
attribute, localize, validate and anchor (and by a resumed stage)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mecharule.config import load_config
from mecharule.pipeline import Pipeline

from .small_run import SMALL_RUN


@pytest.fixture
def counted(monkeypatch):
    """Counts of the real computations behind the cache."""
    import mecharule.localization.problems as problems
    import mecharule.reference_cache as cache

    calls = {"tables": 0, "pool": 0}
    real_tables, real_pool = cache.reference_tables, problems.spectral_pool

    def tables(*args, **kwargs):
        calls["tables"] += 1
        return real_tables(*args, **kwargs)

    def pool(*args, **kwargs):
        calls["pool"] += 1
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(cache, "reference_tables", tables)
    monkeypatch.setattr(problems, "spectral_pool", pool)
    return calls


def test_every_stage_shares_one_computation_of_the_tables_and_the_pool(tmp_path, counted):
    config = load_config(None, {**SMALL_RUN, "validation.brute_force": True})
    pipe = Pipeline(config, tmp_path)
    for stage in ("measure", "rules", "attribute", "localize", "validate", "anchor"):
        getattr(pipe, stage)()
    assert counted == {"tables": 1, "pool": 1}  # attribute, localize, validate and anchor share them
    assert len(list((tmp_path / "reference").glob("tables-*.safetensors"))) == 1
    assert len(list((tmp_path / "reference").glob("pool-*.npz"))) == 1


def test_stored_tables_equal_computed_ones_and_a_damaged_entry_is_recomputed(tmp_path, counted):
    from mecharule import reference_cache
    from mecharule.interventions.values import reference_tables

    pipe = Pipeline(load_config(None, SMALL_RUN), tmp_path)
    pipe.measure()
    behaviour = pd.read_parquet(tmp_path / "behaviour.parquet")
    args = (pipe.handle, behaviour, "mlp", "mean", 32, 0)
    first = reference_cache.value_tables(tmp_path, *args)
    again = reference_cache.value_tables(tmp_path, *args)
    direct = reference_tables(*args)
    assert counted["tables"] == 1  # the second call read the stored entry back
    for key, table in direct.items():
        torch.testing.assert_close(first[key].values, table.values, rtol=0, atol=0)
        torch.testing.assert_close(again[key].values, table.values, rtol=0, atol=0)
        assert again[key].min_offset == table.min_offset
    (entry,) = (tmp_path / "reference").glob("tables-*.safetensors")
    entry.write_bytes(b"damaged")
    reference_cache.value_tables(tmp_path, *args)
    assert counted["tables"] == 2  # recomputed, not trusted


def test_a_new_measure_drops_the_stored_references(tmp_path):
    pipe = Pipeline(load_config(None, SMALL_RUN), tmp_path)
    for stage in ("measure", "rules", "attribute"):
        getattr(pipe, stage)()
    assert any((tmp_path / "reference").iterdir())
    Pipeline(load_config(None, {**SMALL_RUN, "task.max_prompts": 1400}), tmp_path).measure()
    assert not (tmp_path / "reference").exists()
