"""Run a sweep's settings: each in its own run directory, started as a copy of the base run so that
every stage whose key is unchanged is reused as it stands and only the rest runs.

``OUT/<setting>/`` is a whole run directory (its report included). A setting whose config is the
base run's is the base run itself (nothing copied, nothing run). The record of what each setting
ran and reused, with the stage times, is ``OUT/sweep.json``, rewritten after every setting; a
killed sweep re-run with the same command keeps the settings already done (their stages stand
recorded) and resumes the one in flight from its stage journals.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mecharule.config import RunConfig
from mecharule.errors import RunDirError
from mecharule.estimates import Notify
from mecharule.io.rundir import RunDir, write_json
from mecharule.progress import ProgressFactory, silent
from mecharule.sweep.plan import Setting

NOT_COPIED = (".partial", "run.lock", "report", "summary.json")  # journals, the lock, what is re-made


@dataclass(frozen=True)
class SweepRun:
    """One setting as run: its directory and, per stage, whether it ran and how long it took."""

    setting: Setting | None  # None: the base run
    path: Path
    stages: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "setting": "base" if self.setting is None else self.setting.name,
            "changes": {} if self.setting is None else dict(self.setting.changes),
            "path": str(self.path),
            "stages": self.stages,
        }


def stage_plan(base: Path, pipe: Any) -> dict[str, bool]:
    """{stage: reused} for the setting whose pipeline is ``pipe`` against the finished ``base`` run:
    reused when the stage's key is the one the base run recorded (with its outputs intact)."""
    from mecharule.pipeline import default_stages

    rundir = RunDir(base)
    return {
        stage: rundir.stage_is_done(stage, pipe.stage_hash(stage))
        for stage in default_stages(pipe.config)
        if stage != "report"
    }


def seed_directory(base: Path, target: Path) -> None:
    """Copy the base run's files into ``target``, stage records included, so the stages the setting
    shares with the base are found done. Never links: nothing a setting writes can reach the base
    run. The copy is made beside ``target`` and renamed into place, so a killed copy leaves no
    half-filled setting behind (the next sweep starts it again)."""
    staging = target.with_name(target.name + ".copying")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for item in base.iterdir():
        if item.name in NOT_COPIED or item.name.startswith(".write-probe"):
            continue
        destination = staging / item.name
        if item.is_dir():
            shutil.copytree(item, destination)
        else:
            shutil.copy2(item, destination)
    shutil.rmtree(target, ignore_errors=True)  # a folder without run.json: nothing to keep
    staging.rename(target)


@dataclass
class SweepRunner:
    """Runs settings against a finished base run into ``out``; ``progress``/``notify`` as a run's."""

    base: Path
    out: Path
    pipeline_of: Callable[[RunConfig, Path], Any]  # (config, run dir) -> Pipeline
    notify: Notify
    progress: ProgressFactory = silent

    def run(self, base_config: RunConfig, settings: Sequence[Setting]) -> list[SweepRun]:
        if self.out.resolve() == self.base.resolve() or self.base.resolve() in self.out.resolve().parents:
            raise RunDirError(f"--out {self.out} must not be inside the base run {self.base}")
        self.out.mkdir(parents=True, exist_ok=True)
        runs = [SweepRun(None, self.base, {})]
        for index, setting in enumerate(settings, 1):
            self.notify(f"== setting {index}/{len(settings)}: {setting.name}")
            runs.append(self._one(base_config, setting))
            self._record(runs)
        return runs

    def _one(self, base_config: RunConfig, setting: Setting) -> SweepRun:
        if setting.config == base_config:
            self.notify(f"{setting.name}: the base run's own setting; its run is used as it is")
            return SweepRun(setting, self.base, {"all": {"ran": False, "note": "the base run"}})
        target = self.out / setting.folder
        pipe = self.pipeline_of(setting.config, target)  # touches nothing on disk until a stage runs
        plan = stage_plan(self.base, pipe)
        reused = [s for s, done in plan.items() if done]
        runs = [s for s, done in plan.items() if not done]
        self.notify(
            f"{setting.name}: reuses {', '.join(reused) or 'no stage'}; runs {', '.join([*runs, 'report'])}"
        )
        if not (target / "run.json").exists():
            seed_directory(self.base, target)
        return SweepRun(setting, target, self._stages(pipe))

    def _stages(self, pipe: Any) -> dict[str, dict[str, Any]]:
        from mecharule.pipeline import default_stages

        pipe.check_options()
        stages: dict[str, dict[str, Any]] = {}
        with pipe.rundir.locked("mecharule sweep"):
            self._warm_anchor(pipe)
            for stage in default_stages(pipe.config):
                started = time.perf_counter()
                ran = bool(getattr(pipe, stage)())
                stages[stage] = {"ran": ran, "seconds": round(time.perf_counter() - started, 2)}
                self.notify(f"[{stage}] {'done' if ran else 'reused'} in {stages[stage]['seconds']:.1f}s")
            pipe.write_summary()
        return stages

    def _warm_anchor(self, pipe: Any) -> None:
        """Offer the base run's anchored units to the setting's anchor stage when every anchoring
        input but localization is the base run's (see :mod:`mecharule.anchoring.warm`)."""
        from mecharule.anchoring.warm import warm_journal
        from mecharule.stage_inputs import read_fields

        base = RunDir(self.base)
        record, measure = base.stage_record("anchor"), base.stage_record("measure")
        anchor_key = pipe.stage_hash("anchor")
        if record is None or measure is None or pipe.rundir.stage_is_done("anchor", anchor_key):
            return
        inputs = record.get("inputs", {}).get("config")
        if inputs != read_fields(pipe.config, "anchor") or measure.get("config_hash") != pipe.stage_hash(
            "measure"
        ):
            return
        added = warm_journal(self.base, pipe.rundir.file(f".partial/anchor-{anchor_key}"))
        if added:
            self.notify(
                f"anchor: {added} flip columns and anchored rules offered from the base run (same inputs)"
            )

    def _record(self, runs: Sequence[SweepRun]) -> None:
        write_json(
            self.out / "sweep.json",
            {"base": str(self.base), "runs": [r.as_dict() for r in runs], "analysis": None},
        )


__all__ = ["NOT_COPIED", "SweepRun", "SweepRunner", "seed_directory", "stage_plan"]
