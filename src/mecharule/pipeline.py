"""Stage functions and ``run(config)``: every stage is skipped when its config hash and outputs are
already in the run directory, so a killed run resumes without losing finished work.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mecharule._version import __version__
from mecharule.config import RunConfig
from mecharule.context import StageContext, is_organism, run_task, task_options
from mecharule.errors import MecharuleError, RunDirError
from mecharule.estimates import Notify
from mecharule.io.journal import Journal
from mecharule.io.rundir import RunDir, config_hash, read_json, read_parquet, run_stage, write_json
from mecharule.models.loading import ModelHandle, load_model, resolve_model_path
from mecharule.progress import ProgressFactory, silent
from mecharule.random_streams import describe as describe_streams
from mecharule.sizing import Sizing, resolve_sizing
from mecharule.tasks.base import Task

log = logging.getLogger(__name__)
STAGES = ["measure", "rules", "attribute", "localize", "validate", "recompose", "anchor", "report"]


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
                self.handle, cfg.task.max_prompts, cfg.executor.batch_size, cfg.executor.memory_budget_mb
            )
        return self._sizing

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = run_task(self.config)
        return self._task

    def task_options(self) -> dict[str, Any]:
        """The configured task options, with the real-model prompt format where it applies."""
        return task_options(self.config)

    def context(self, journal: Journal | None = None) -> StageContext:
        """The stage context over this pipeline's model, task, config and run directory."""
        return StageContext(
            self.config,
            self.rundir,
            lambda: self.handle,
            lambda: self.task,
            lambda: self.sizing,
            progress=self.progress,
            notify=self.notify,
            journal=journal,
            model_in_memory="in_memory" in (self._fingerprint or {}),
        )

    def check_options(self) -> None:
        """Fail before any stage on options a later stage would reject (the rule extractor's)."""
        from mecharule.attribution.method import ATTRIBUTORS
        from mecharule.rules.scoring import make_extractor

        for method in self.config.attribution.methods:
            ATTRIBUTORS.get(method)  # an unknown name lists the registered ones and the closest
        rules, anchor = self.config.rules, self.config.anchor
        make_extractor(rules.extractor, self.config.seed, rules.options)
        make_extractor(rules.extractor, self.config.seed, dict(rules.options) | dict(anchor.rule_options))

    def describe(self) -> list[str]:
        """What this run will do, for the terminal: model size and device, sizing, task options."""
        options = ", ".join(f"{k}={v}" for k, v in self.task.options().items())
        return [
            f"model {self.config.model.name}: {self.sizing.describe()}",
            f"task {self.config.task.name}: {options}",
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
        self,
        stage: str,
        body: Callable[[StageContext], list[str]],
        folder: str | None = None,
        journal: bool = False,
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
            outputs = body(self.context(self._journal))
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
            random_streams=describe_streams(self.config.seed),
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

    # -- stages: each body is its stage module's run function on the stage context -----------------
    def measure(self) -> bool:
        from mecharule.behaviour.stage import run_measure

        self.rundir.ensure_writable()
        key = self.stage_hash("measure")
        if not self.rundir.stage_is_done("measure", key):
            _ = self.task, self.handle  # fail fast on a bad task or model, before any bar starts
        return self._stage("measure", lambda ctx: run_measure(ctx, partial=f".partial/measure-{key}"))

    def rules(self) -> bool:
        def body(ctx: StageContext) -> list[str]:
            from mecharule.rules import extract_behaviour_rules
            from mecharule.rules.stage import STEPS

            cfg = ctx.config.rules
            with ctx.progress("rules (inputs, rules + control, files)", STEPS) as tick:
                extract_behaviour_rules(
                    ctx.path,
                    seed=ctx.seed,
                    extractor=cfg.extractor,
                    options=dict(cfg.options),
                    target=cfg.target,
                    progress=tick,
                )
            return ["rules.json"]

        return self._stage("rules", body)

    def attribute(self) -> bool:
        from mecharule.attribution.stage import run_attribute

        return self._stage("attribute", run_attribute, folder="attribution", journal=True)

    def localize(self) -> bool:
        from mecharule.localization.runner import run_localize

        return self._stage("localize", run_localize, folder="localization", journal=True)

    def validate(self) -> bool:
        from mecharule.localization.runner import run_validate

        return self._stage("validate", run_validate, journal=True)

    def recompose(self) -> bool:
        from mecharule.recomposition.stage import run_recompose

        return self._stage("recompose", run_recompose, journal=True)

    def anchor(self) -> bool:
        def body(ctx: StageContext) -> list[str]:
            from mecharule.anchoring.stage import anchor

            anchor(ctx)
            return ["flips.parquet", "neuron_rules.json", "agonist_cards.json"]

        return self._stage("anchor", body, journal=True)

    def report(self, force: bool = False) -> bool:
        self.rundir.require("behaviour.parquet", stage="measure")

        def body(_ctx: StageContext | None = None) -> list[str]:
            from mecharule.report import render_report

            self.write_summary()
            with self.progress("report", 1) as tick:
                render_report(self.rundir.path)
                tick(1)
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

    def behaviour_summary(self) -> dict[str, Any]:
        from mecharule.behaviour.measure import accuracy_summary

        table = read_parquet(self.rundir.file("behaviour.parquet"))
        return accuracy_summary(table, self.task.group_column)


def default_stages(config: RunConfig) -> list[str]:
    """The stages ``mecharule run`` executes, in order."""
    stages = ["measure", "rules", "attribute", "localize"]
    if config.validation.brute_force:
        stages.append("validate")
    if config.recompose.enabled:
        stages.append("recompose")
    return [*stages, "anchor", "report"]


def run_stages(pipeline: Pipeline, stages: list[str]) -> dict[str, bool]:
    """Run the named stages in order; returns {stage: ran (False = skipped, already done)}."""
    ran: dict[str, bool] = {}
    for stage in stages:
        method: Callable[[], bool] = getattr(pipeline, stage)
        ran[stage] = method()
    return ran


__all__ = ["STAGES", "Pipeline", "is_organism", "read_json", "run_stages"]
