"""Stage functions and ``run(config)``: every stage is skipped when its config hash and outputs are
already in the run directory, so a killed run resumes without losing finished work.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mecharule._version import __version__
from mecharule.config import LocalizeConfig, RunConfig
from mecharule.errors import MecharuleError, RunDirError
from mecharule.estimates import Notify, calibrating_tick
from mecharule.io.journal import Journal
from mecharule.io.rundir import (
    RunDir,
    config_hash,
    read_json,
    read_parquet,
    run_stage,
    write_json,
    write_parquet,
)
from mecharule.models.loading import ZOO_PREFIX, ModelHandle, load_model, resolve_model_path
from mecharule.progress import ProgressFactory, silent
from mecharule.sizing import Sizing, resolve_sizing
from mecharule.tasks.base import Task, make_task

log = logging.getLogger(__name__)
PROBLEM_FILES = ("trace.jsonl", "agonists.csv")  # per problem folder under localization/
STAGES = ["measure", "rules", "attribute", "localize", "validate", "anchor", "report"]


class Pipeline:
    """One run: a config, a run directory, a lazily loaded model shared by every stage.

    ``model``: a model already in memory, used instead of loading ``config.model.name`` (which still
    names it in the records and decides the task's prompt format); the measure stage's key then
    holds a fingerprint of its weights as they are now (``tensor_fingerprint``), so a run made
    with other weights is not taken for this one.
    """

    def __init__(
        self,
        config: RunConfig,
        out: Path,
        progress: ProgressFactory = silent,
        notify: Notify | None = None,
        config_source: str | None = None,
        model: ModelHandle | None = None,
    ) -> None:
        self.config = config
        self.config_source = config_source  # the --config file, named in messages
        self.notify: Notify = notify or log.info
        self.rundir = RunDir(out)
        self.progress = progress
        self._handle: ModelHandle | None = model
        self._task: Task | None = None
        self._sizing: Sizing | None = None
        self._keys: dict[str, str] = {}
        self._fingerprint: dict[str, Any] | None = None
        if model is not None:
            from mecharule.models.fingerprint import tensor_fingerprint

            self._fingerprint = {"in_memory": tensor_fingerprint(model.model)}
        self._journal: Journal | None = None

    @property
    def handle(self) -> ModelHandle:
        """The model in memory given to the pipeline, else ``config.model.name`` loaded on first use."""
        if self._handle is None:
            cfg = self.config.model
            self._handle = load_model(cfg.name, device=cfg.device, dtype=cfg.dtype)
        return self._handle

    @property
    def sizing(self) -> Sizing:
        """The ``auto`` settings resolved for this model on this device."""
        if self._sizing is None:
            cfg = self.config
            self._sizing = resolve_sizing(
                self.handle, cfg.measure.max_prompts, cfg.measure.batch_size, cfg.localize.memory_budget_mb
            )
        return self._sizing

    @property
    def localize_config(self) -> LocalizeConfig:
        """``config.localize`` with the memory budget resolved (the stage hash keeps ``auto``)."""
        cfg = self.config.localize
        if cfg.memory_budget_mb != "auto":
            return cfg
        return cfg.model_copy(update={"memory_budget_mb": self.sizing.memory_budget_mb})

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = make_task(self.config.measure.task, self.task_options())
        return self._task

    def task_options(self) -> dict[str, Any]:
        """The configured task options; a real (non-organism) model gets the task's real-model prompt
        format (``REAL_MODEL_FORMATS``) unless ``prompt_format`` is set."""
        from mecharule.tasks.formats import REAL_MODEL_FORMATS

        options = dict(self.config.measure.task_options)
        real_format = REAL_MODEL_FORMATS.get(self.config.measure.task)
        if "prompt_format" not in options and real_format and not is_organism(self.config.model.name):
            options["prompt_format"] = real_format
        return options

    def check_options(self) -> None:
        """Fail before any stage on options a later stage would reject (the rule extractor's)."""
        from mecharule.rules.scoring import make_extractor

        rules, anchor = self.config.rules, self.config.anchor
        make_extractor(rules.extractor, self.config.seed, rules.options)
        make_extractor(rules.extractor, self.config.seed, dict(rules.options) | dict(anchor.rule_options))

    def describe(self) -> list[str]:
        """What this run will do, for the terminal: model size and device, sizing, task options."""
        options = ", ".join(f"{k}={v}" for k, v in self.task.options().items())
        return [
            f"model {self.config.model.name}: {self.sizing.describe()}",
            f"task {self.config.measure.task}: {options}",
        ]

    # -- keys: each stage hashes the config fields it reads and its upstream keys (stage_inputs) ---
    def stage_hash(self, stage: str) -> str:
        from mecharule.stage_inputs import STAGE_INPUTS, read_fields

        if stage not in self._keys:
            parts: dict[str, Any] = {"config": read_fields(self.config, stage)}
            parts["upstream"] = {up: self.stage_hash(up) for up in STAGE_INPUTS[stage].upstream}
            if stage == "measure":
                parts["weights"] = self.weights_fingerprint
            self._keys[stage] = config_hash(parts)
        return self._keys[stage]

    @property
    def weights_fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            from mecharule.models.fingerprint import weights_fingerprint

            self._fingerprint = weights_fingerprint(self.config.model.name)
        return self._fingerprint

    def require_upstream(self, stage: str) -> None:
        """Refuse to run ``stage`` on outputs of stages made under another config (or damaged)."""
        from mecharule.stage_inputs import COMMANDS, STAGE_INPUTS

        for up in STAGE_INPUTS[stage].upstream:
            reason = self.rundir.why_not_done(up, self.stage_hash(up))
            if reason is None:
                continue
            command = COMMANDS[up].format(dir=self.rundir.path)
            if self.config_source:
                command += f" --config {self.config_source}"
            raise RunDirError(
                f"{stage} reads what {up} wrote, but {reason}; run `{command}` first "
                f"(or `mecharule run --out {self.rundir.path}`, which runs every stage in order)"
            )

    def _stage(
        self, stage: str, body: Callable[[], list[str]], folder: str | None = None, journal: bool = False
    ) -> bool:
        """Run one stage unless it is done: upstream checked, later records forgotten first, files of
        an earlier config in its ``folder`` removed after, its journal discarded once it is recorded."""
        from mecharule.stage_inputs import STAGE_INPUTS, downstream, read_fields

        key = self.stage_hash(stage)
        self.require_upstream(stage)  # also when done: its inputs must still stand
        if self.rundir.stage_is_done(stage, key):
            return False
        self._journal = Journal(self.rundir.file(f".partial/{stage}-{key}")) if journal else None
        if self._journal is not None and len(self._journal):
            self.notify(
                f"{stage}: resuming: {len(self._journal):,} finished pieces of work kept from an earlier try"
            )

        def recorded_body() -> list[str]:
            outputs = body()
            if folder is not None:
                keep = set(outputs)
                self.rundir.remove([f for f in self.rundir.files_under(folder) if f not in keep])
            return outputs

        self._record_run()
        ran = run_stage(
            self.rundir,
            stage,
            key,
            recorded_body,
            later=downstream(stage),
            inputs={"config": read_fields(self.config, stage), "upstream": [*STAGE_INPUTS[stage].upstream]},
        )
        if self._journal is not None:
            if self._journal.replayed:
                self.notify(
                    f"{stage}: {self._journal.replayed:,} pieces replayed from the earlier try, "
                    f"{self._journal.recorded:,} computed now"
                )
            self._journal.discard()
            self._journal = None
        return ran

    def _record_run(self) -> None:
        self.rundir.update_manifest(
            config=self.config.model_dump(mode="json"),
            seed=self.config.seed,
            package_version=__version__,
            python=platform.python_version(),
            model={
                "name": self.config.model.name,
                "path": self._model_path(),
                "weights": self.weights_fingerprint,
            },
        )

    def _model_path(self) -> str:
        try:
            return resolve_model_path(self.config.model.name)
        except MecharuleError:
            return self.config.model.name

    # -- stages ----------------------------------------------------------------------------------
    def measure(self) -> bool:
        self.rundir.ensure_writable()
        stage_hash = self.stage_hash("measure")
        if not self.rundir.stage_is_done("measure", stage_hash):
            _ = self.task, self.handle  # fail fast on a bad task or model, before any bar starts

        def body() -> list[str]:
            from mecharule.behaviour.measure import measure_behaviour
            from mecharule.features.base import compute_feature_table
            from mecharule.reference_cache import FOLDER
            from mecharule.tasks.formats import draw_shots, format_task_prompts

            self.rundir.remove([FOLDER])  # reference tables and pools of the previous measure
            task = self.task
            prompts = task.prompts()
            shots = prompts.iloc[:0]
            if getattr(task, "prompt_format", "raw") == "fewshot":
                shots, prompts = draw_shots(prompts, int(task.n_shots), self.config.seed)  # type: ignore[attr-defined]
            max_prompts = self.sizing.max_prompts
            if max_prompts is not None and max_prompts < len(prompts):
                rng = np.random.default_rng(self.config.seed)
                keep = np.sort(rng.choice(len(prompts), size=max_prompts, replace=False))
                prompts = prompts.iloc[keep].reset_index(drop=True)
            features = list(task.seed_features())
            feature_table = compute_feature_table(features, prompts)
            prompts = format_task_prompts(task, prompts, self.handle.tokenizer, shots)
            batch = self.sizing.batch_size
            label = f"measure ({len(prompts):,} prompts, batches of {batch})"
            with self.progress(label, len(prompts)) as bar:
                tick = calibrating_tick(bar, len(prompts), "measure", self.notify)
                table = measure_behaviour(
                    self.handle,
                    task,
                    prompts,
                    batch_size=self.sizing.batch_size,
                    test_fraction=self.config.measure.test_fraction,
                    seed=self.config.seed,
                    partial_dir=self.rundir.file(f".partial/measure-{stage_hash}"),
                    progress=tick,
                )
            provenance = {
                "task": task.name,
                "task_options": task.options(),
                "model": self.config.model.name,
                "shots": shots["prompt"].astype(str).tolist(),
            }
            definitions = [f.definition() for f in features]
            proposal_log: dict[str, Any] = {}
            if self.config.measure.propose_features.enabled:
                _, extra_table, proposal_log, extra_defs = self._proposed(prompts, table, features)
                feature_table = pd.concat([feature_table, extra_table], axis=1)
                definitions += extra_defs
            write_parquet(self.rundir.file("features.parquet"), feature_table, provenance)
            write_json(
                self.rundir.file("features.json"),
                {"features": definitions, "proposal": proposal_log, **provenance},
            )
            write_parquet(
                self.rundir.file("behaviour.parquet"),
                table,
                {**provenance, "positive_label": task.positive_label},
            )
            return ["behaviour.parquet", "features.parquet", "features.json"]

        return self._stage("measure", body)

    def rules(self) -> bool:
        cfg = self.config.rules

        def body() -> list[str]:
            from mecharule.rules import extract_behaviour_rules

            with self.progress("rules", None):
                extract_behaviour_rules(
                    self.rundir.path,
                    seed=self.config.seed,
                    extractor=cfg.extractor,
                    options=dict(cfg.options),
                    target=cfg.target,
                )
            return ["rules.json"]

        return self._stage("rules", body)

    def attribute(self) -> bool:
        def body() -> list[str]:
            from mecharule.attribution.stage import attribute_rules
            from mecharule.localization.problems import behaviour_rules, rule_mask

            cfg = self.config
            features = read_parquet(self.rundir.file("features.parquet"))
            disjuncts = behaviour_rules(
                read_json(self.rundir.file("rules.json")), cfg.rules.max_rules, cfg.rules.min_coverage
            )
            rules = [
                {"id": d["id"], "mask": rule_mask(d, features), "text": d.get("readable", "")}
                for d in disjuncts
            ]
            att = cfg.attribution
            with self.progress("attribute", None):
                attribute_rules(
                    self.handle,
                    self.task,
                    self.rundir,
                    rules=rules,
                    methods=att.methods,
                    kind=att.unit_kind,
                    n_pairs=att.n_pairs,
                    ig_steps=att.ig_steps,
                    seed=cfg.seed,
                    positions=cfg.localize.positions,
                    n_reference=cfg.localize.n_reference,
                    journal=self._journal,
                    ablation=cfg.localize.ablation,
                )
            return [f"attribution/rule_{r['id']}.{ext}" for r in rules for ext in ("safetensors", "json")]

        return self._stage("attribute", body, folder="attribution", journal=True)

    def localize(self) -> bool:
        return self._search_stage("localize", "localization/summary.json", "localize (group evaluations)")

    def validate(self) -> bool:
        return self._search_stage("validate", "validation.json", "validate (CHA + brute force)")

    def _search_stage(self, stage: str, output: str, label: str) -> bool:
        """localize (CHA) and validate (CHA beside brute force) take the same inputs."""

        def body() -> list[str]:
            from mecharule.localization.stage import localize, prepare
            from mecharule.localization.validate import validate

            cfg, att = self.config, self.config.attribution
            setup = prepare(
                self.handle,
                self.task,
                self.rundir.path,
                self.localize_config,
                kind=att.unit_kind,
                top_m=att.top_m,
                method=att.methods[0],
                max_rules=cfg.rules.max_rules,
                min_coverage=cfg.rules.min_coverage,
                seed=cfg.seed,
            )
            self.notify(f"{stage}: " + self._calibrate_search(setup))
            with self.progress(label, None) as tick:
                if stage == "localize":
                    summary = localize(
                        self.handle,
                        self.task,
                        self.rundir.path,
                        self.localize_config,
                        setup,
                        seed=cfg.seed,
                        tick=_cumulative(tick),
                        journal=self._journal,
                    )
                else:
                    validate(
                        self.rundir.path,
                        self.localize_config,
                        setup,
                        seed=cfg.seed,
                        tick=_cumulative(tick),
                        journal=self._journal,
                    )
            if stage == "validate":
                return [output]
            folders = [p["key"].replace("/", "_") for p in summary["problems"] if not p["skipped"]]
            return [output] + [f"localization/{f}/{name}" for f in folders for name in PROBLEM_FILES]

        return self._stage(stage, body, folder="localization" if stage == "localize" else None, journal=True)

    def _calibrate_search(self, setup: Any) -> str:
        """Time one single-unit group evaluation on the first problem; extrapolate the stage."""
        import time

        from mecharule.estimates import group_testing_estimate

        sizes = [len(p.candidates) for p in setup.search_problems]
        if not setup.problems or not setup.search_problems or not sizes[0]:
            reasons = "; ".join(f"{spec.key}: {spec.skipped}" for spec in setup.specs if spec.skipped)
            return "nothing to search" + (f" ({reasons})" if reasons else "")
        engine = next(iter(setup.problems.values())).engine
        started = time.perf_counter()
        engine.run([[setup.search_problems[0].candidates[0]]])
        roots = [
            [sum(u.layer == layer for u in p.candidates) for layer in sorted({u.layer for u in p.candidates})]
            for p in setup.search_problems
        ]
        seconds = time.perf_counter() - started
        return group_testing_estimate(roots, seconds, audit=self.config.localize.audit)

    def anchor(self) -> bool:
        def body() -> list[str]:
            from mecharule.anchoring.stage import anchor

            cfg = self.config
            with self.progress("anchor", None):
                anchor(
                    self.handle,
                    self.task,
                    self.rundir.path,
                    cfg.anchor,
                    self.localize_config,
                    cfg.rules,
                    kind=cfg.attribution.unit_kind,
                    seed=cfg.seed,
                    journal=self._journal,
                )
            return ["flips.parquet", "neuron_rules.json"]

        return self._stage("anchor", body, journal=True)

    def report(self, force: bool = False) -> bool:
        self.rundir.require("behaviour.parquet", stage="measure")

        def body() -> list[str]:
            from mecharule.report import render_report

            self.write_summary()
            with self.progress("report", None):
                render_report(self.rundir.path)
            return ["report/index.html", "summary.json"]

        # the report reflects the stages that stand recorded, so its key covers theirs
        done = self.rundir.manifest().get("stages", {})
        intact = self.rundir.intact_stages() or set()
        upstream = {k: v.get("config_hash") for k, v in done.items() if k != "report" and k in intact}
        if force:
            self.rundir.mark_stage_done("report", "forced", body(), 0.0)
            return True
        return run_stage(self.rundir, "report", config_hash(upstream), body)

    def write_summary(self) -> dict[str, Any]:
        from mecharule.summary import build_summary

        summary = build_summary(self.rundir)
        write_json(self.rundir.file("summary.json"), summary)
        return summary

    def _proposed(
        self, prompts: Any, table: Any, seed_features: list[Any]
    ) -> tuple[Any, Any, dict[str, Any], list[Any]]:
        from mecharule.features.sandbox import SandboxLimits
        from mecharule.features.stage import proposal_source, proposed_features

        cfg = self.config.measure.propose_features
        with self.progress("propose features (LLM + sandbox)", None):
            extra, extra_table, log = proposed_features(
                self.task,
                prompts,
                table["label"].to_numpy(bool),
                (table["split"] == "train").to_numpy(),
                seed_features,
                cache_dir=self.rundir.file(".llm_cache"),
                n_rounds=cfg.rounds,
                n_features=cfg.n_features,
                n_examples=cfg.n_examples,
                seed=self.config.seed,
                limits=SandboxLimits(wall_seconds=cfg.feature_seconds, round_seconds=cfg.round_seconds),
            )
        return extra, extra_table, log, [proposal_source(f) for f in extra]

    def behaviour_summary(self) -> dict[str, Any]:
        from mecharule.behaviour.measure import accuracy_summary

        table = read_parquet(self.rundir.file("behaviour.parquet"))
        return accuracy_summary(table, self.task.group_column)


def is_organism(model_name: str) -> bool:
    """A model organism (``zoo:NAME``, a bundled organism's directory, or one ``mecharule zoo train``
    wrote, which holds its ``training_report.json``): the tasks' raw formats are its language."""
    if model_name.startswith(ZOO_PREFIX):
        return True
    from mecharule.zoo.registry import ORGANISMS_DIR

    try:
        path = Path(model_name).expanduser().resolve()
        return path.is_relative_to(ORGANISMS_DIR.resolve()) or _is_trained_organism(path)
    except (OSError, ValueError):
        return False


def _is_trained_organism(path: Path) -> bool:
    import json

    report = path / "training_report.json"
    if not report.is_file():
        return False
    try:
        return "organism" in json.loads(report.read_text())
    except (OSError, ValueError):
        return False


def _cumulative(tick: Callable[[int], None]) -> Callable[[int, int], None]:
    """Adapt a bar's ``update(delta)`` to a ``(done_so_far, open)`` callback."""
    seen = [0]

    def callback(done: int, _open: int) -> None:
        tick(done - seen[0])
        seen[0] = done

    return callback


def default_stages(config: RunConfig) -> list[str]:
    """The stages ``mecharule run`` executes, in order."""
    stages = ["measure", "rules", "attribute", "localize"]
    if config.validate_brute_force:
        stages.append("validate")
    return [*stages, "anchor", "report"]


def run_stages(pipeline: Pipeline, stages: list[str]) -> dict[str, bool]:
    """Run the named stages in order; returns {stage: ran (False = skipped, already done)}."""
    ran: dict[str, bool] = {}
    for stage in stages:
        method: Callable[[], bool] = getattr(pipeline, stage)
        ran[stage] = method()
    return ran


__all__ = ["STAGES", "Pipeline", "read_json", "run_stages"]
