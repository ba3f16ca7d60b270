"""Configuration by concept: the sections, the legacy layout read as the current one, the registries
that validate method and predicate names, and the named random streams."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml

from mecharule.config import LEGACY_KEYS, RunConfig, config_keys, current_key, load_config, migrate_legacy
from mecharule.errors import ConfigError
from mecharule.random_streams import STREAMS, describe, stream

LEGACY_FILE = """
seed: 3
measure:
  task: hans_nli
  task_options: {n_per_subcase: 4}
  max_prompts: 200
  batch_size: 8
attribution:
  methods: [atp]
  unit_kind: mlp_out
localize:
  ablation: zero
  positions: all
  n_reference: 32
  tau: 0.3
  memory_budget_mb: 64
  validate_exhaustive_max: 10
validate_brute_force: true
"""

CURRENT = {
    "seed": 3,
    "task.name": "hans_nli",
    "task.options": {"n_per_subcase": 4},
    "task.max_prompts": 200,
    "executor.batch_size": 8,
    "attribution.methods": ["atp"],
    "units.kind": "mlp_out",
    "ablation.value": "zero",
    "ablation.positions": "all",
    "ablation.n_reference": 32,
    "search.tau": 0.3,
    "executor.memory_budget_mb": 64,
    "validation.exhaustive_max": 10,
    "validation.brute_force": True,
}


def test_the_sections_are_the_concepts():
    assert list(RunConfig.model_fields) == [
        "seed",
        "model",
        "task",
        "units",
        "ablation",
        "rules",
        "attribution",
        "search",
        "validation",
        "anchor",
        "recompose",
        "executor",
    ]


def test_a_legacy_file_reads_as_the_current_layout_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.yaml"
    path.write_text(LEGACY_FILE)
    with caplog.at_level(logging.WARNING, logger="mecharule.config"):
        old = load_config(path)
    assert old == load_config(None, CURRENT)
    warning = caplog.text
    assert "legacy config layout" in warning and "localize.tau -> search.tau" in warning
    assert "measure.batch_size -> executor.batch_size" in warning


def test_legacy_dotted_keys_are_read_as_their_current_keys(caplog):
    with caplog.at_level(logging.WARNING, logger="mecharule.config"):
        config = load_config(None, {"localize.tau": 0.4}, assignments={"attribution.unit_kind": "mlp_out"})
    assert config.search.tau == 0.4 and config.units.kind == "mlp_out"
    assert "localize.tau is now search.tau" in caplog.text
    assert current_key("measure.propose_features.rounds") == "task.propose_features.rounds"
    assert current_key("localize.n_covered") == "search.n_covered"
    assert current_key("search.tau") == "search.tau"


def test_every_legacy_key_names_a_current_field():
    keys = set(config_keys())
    for new in LEGACY_KEYS.values():
        assert new in keys or any(k.startswith(new + ".") for k in keys), new


def test_a_current_mapping_passes_through_unchanged():
    dumped = RunConfig().model_dump(mode="json")
    migrated, moved = migrate_legacy(dumped)
    assert moved == [] and migrated == dumped


def test_a_misspelt_legacy_key_is_reported_under_its_current_section(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("localize:\n  tua: 0.3\n")
    with pytest.raises(ConfigError, match=r"search\.tua.*did you mean 'search\.tau'"):
        load_config(path)


def test_a_saved_legacy_config_of_a_run_directory_is_read(tmp_path):
    from mecharule.io.rundir import RunDir
    from mecharule.results import Run

    legacy = yaml.safe_load(LEGACY_FILE)
    RunDir(tmp_path).update_manifest(config=legacy)
    assert Run(tmp_path).config == load_config(None, CURRENT)
    assert load_config(None, base=legacy) == load_config(None, CURRENT)


def test_methods_and_predicates_are_checked_against_their_registries():
    with pytest.raises(ConfigError, match=r"unknown attribution method 'eap_gi' \(did you mean 'eap_ig'\?\)"):
        load_config(None, {"attribution.methods": ["atp", "eap_gi"]})
    with pytest.raises(ConfigError, match=r"unknown predicate 'obsrved' \(did you mean 'observed'\?\)"):
        load_config(None, {"search.predicate": "obsrved"})


def test_a_predicate_is_added_in_one_place_and_the_search_uses_it():
    """A predicate registered once (here: accept nothing, split everything) is accepted by the config
    and decides the search, with no other file touched."""
    from mecharule.search.cha import search
    from mecharule.search.predicates import Slices
    from mecharule.search.types import PREDICATES, SearchConfig, SearchProblem

    from .search.planted import PlantedOracle, layer_units

    @PREDICATES.register("never_accept")
    def never_accept(slices: Slices) -> tuple[bool, bool]:
        return True, False

    try:
        assert load_config(None, {"search.predicate": "never_accept"}).search.predicate == "never_accept"
        units = layer_units(8)
        oracle = PlantedOracle({"p": {units[0]: (1.0, 0.0)}})
        result = search(
            [SearchProblem("p", units)],
            oracle,
            SearchConfig(predicate="never_accept", audit=0, expand_dense=False),
        )
        assert not result.agonists and result.group_evaluations == 15  # every node of the tree
        planted = search([SearchProblem("p", units)], oracle, SearchConfig(predicate="ucb", audit=0))
        assert [str(a.unit) for a in planted.agonists] == [str(units[0])]
    finally:
        PREDICATES._items.pop("never_accept")


def test_every_attribution_method_module_registers_itself():
    import pkgutil

    import mecharule.attribution.methods as methods
    from mecharule.attribution.method import ATTRIBUTORS

    modules = {m.name for m in pkgutil.iter_modules(methods.__path__)}
    assert modules == {"atp", "atp_graddrop", "eap_ig"}
    assert set(ATTRIBUTORS.names()) == {"atp", "atp_gd", "eap_ig"}
    assert {ATTRIBUTORS.get(n).inputs for n in ("atp", "atp_gd")} == {"tables"}
    assert ATTRIBUTORS.get("eap_ig").inputs == "pairs"


def test_named_streams_are_distinct_and_recorded():
    entropies = [tuple(v["entropy"]) for v in describe(5).values()]
    collide = {e for e in entropies if entropies.count(e) > 1}
    shared = sorted(name for name, s in STREAMS.items() if (5, *s.salt) in collide)
    # measure.split, measure.subsample and ablation.resample are the plain seed (as before streams had
    # names); validation.outside always adds a problem index, so it never meets anchor.controls
    assert shared == [
        "ablation.resample",
        "anchor.controls",
        "measure.split",
        "measure.subsample",
        "validation.outside",
    ]
    a, b = stream(5, "anchor.rows").random(3), stream(5, "anchor.controls").random(3)
    assert not np.allclose(a, b)
    assert np.allclose(
        stream(5, "validation.outside", 2).random(3), np.random.default_rng([5, 17, 2]).random(3)
    )
    with pytest.raises(ConfigError, match="unknown random stream"):
        stream(5, "nope")
