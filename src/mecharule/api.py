"""The Python API: run the whole analysis, or one stage, on a run directory and get typed results.

Every function takes what the command line takes (a config, a run directory) and a model already
in memory when you have one; each stage function returns the stage's result as read back from the
files it wrote, so a result in Python and the files on disk never disagree::

    import mecharule

    run = mecharule.run({"task": {"max_prompts": 3000}}, "runs/arithmetic")
    print(run.rules)          # the behaviour rules, scored on held-out rows
    print(run.agonists[0])    # L1.mlp[46]: covered 0.81 (52/64), unrelated 0.05 (3/64), ...

A config is a :class:`~mecharule.config.RunConfig`, a mapping (nested sections, or dotted keys such
as ``"search.tau"``) or the path of a YAML/JSON file. A model is a ``ModelHandle``
(:func:`mecharule.load_model`) or a ``(model, tokenizer)`` pair of Hugging Face objects; it is
used instead of loading ``config.model.name``, and the run's cache keys then hold a fingerprint of
its weights as they are at the call (change a weight and ``measure`` runs again).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from mecharule.errors import ConfigError, RunDirError
from mecharule.results import (
    Anchoring,
    Attribution,
    Behaviour,
    Localization,
    Recomposition,
    RuleSetResult,
    Run,
    Validation,
    load_run,
)

if TYPE_CHECKING:
    from mecharule.config import RunConfig
    from mecharule.models.loading import ModelHandle

ConfigLike: TypeAlias = "RunConfig | Mapping[str, Any] | str | os.PathLike[str] | None"
ModelLike: TypeAlias = "ModelHandle | tuple[Any, Any] | None"
RunLike: TypeAlias = "Run | str | os.PathLike[str]"

#: The Python name of each pipeline stage, named in the lock file and in messages.
VERBS = {
    "measure": "measure",
    "rules": "extract_rules",
    "attribute": "attribute",
    "localize": "localize",
    "validate": "validate",
    "recompose": "recompose",
    "anchor": "anchor",
    "report": "render_report",
}


def run(
    config: ConfigLike, out: str | os.PathLike[str], *, model: ModelLike = None, progress: bool = False
) -> Run:
    """Run every stage (``validate`` only when ``config.validation.brute_force``) into ``out``;
    stages already done under the same config and weights are skipped, so calling it again resumes.

    ``progress=True`` shows a progress bar per stage (tqdm). Returns the :class:`Run`.
    """
    from mecharule.pipeline import default_stages

    cfg, handle = _config_and_model(config, model)
    pipe = _pipeline(cfg, Path(out), handle, progress)
    pipe.check_options()
    with pipe.rundir.locked("mecharule.run() (Python)"):
        for stage in default_stages(cfg):
            getattr(pipe, stage)()
        pipe.write_summary()
    return Run(Path(out))


def measure(
    run: RunLike, config: ConfigLike = None, *, model: ModelLike = None, progress: bool = False
) -> Behaviour:
    """Generate and score the model's answers to the task's prompts; compute the features.

    ``run`` may be a new directory: the config is ``config``, else the run's saved one, else the
    defaults."""
    return Behaviour.load(_run_stage("measure", run, config, model, progress))


def extract_rules(
    run: RunLike, config: ConfigLike = None, *, model: ModelLike = None, progress: bool = False
) -> RuleSetResult:
    """Fit the behaviour rules on the train rows and score them on the test rows (``rules.json``)."""
    return RuleSetResult.load(_run_stage("rules", run, config, model, progress))


def attribute(
    run: RunLike, config: ConfigLike = None, *, model: ModelLike = None, progress: bool = False
) -> Attribution:
    """Score every unit per rule with gradient attribution (``attribution/``)."""
    return Attribution.load(_run_stage("attribute", run, config, model, progress))


def localize(
    run: RunLike, config: ConfigLike = None, *, model: ModelLike = None, progress: bool = False
) -> Localization:
    """Find each rule's agonists with CHA (``localization/``)."""
    return Localization.load(_run_stage("localize", run, config, model, progress))


def validate(
    run: RunLike, config: ConfigLike = None, *, model: ModelLike = None, progress: bool = False
) -> Validation:
    """Ablate units one by one beside CHA: its recall and cost (``validation.json``)."""
    return Validation.load(_run_stage("validate", run, config, model, progress))


def recompose(
    run: RunLike, config: ConfigLike = None, *, model: ModelLike = None, progress: bool = False
) -> Recomposition:
    """Each rule's agonists alone, together, in pairs and in greedy sets (``recomposition.json``)."""
    return Recomposition.load(_run_stage("recompose", run, config, model, progress))


def anchor(
    run: RunLike, config: ConfigLike = None, *, model: ModelLike = None, progress: bool = False
) -> Anchoring:
    """Ablate each agonist on an evaluation sample and extract the rule of its flips."""
    return Anchoring.load(_run_stage("anchor", run, config, model, progress))


def render_report(
    run: RunLike, config: ConfigLike = None, *, model: ModelLike = None, progress: bool = False
) -> Path:
    """Write ``summary.json`` and the self-contained ``report/index.html`` (returned) of what the run
    holds now; the report needs no model, so ``model`` is not used."""
    return _run_stage("report", run, config, None, progress) / "report" / "index.html"


# -- helpers ------------------------------------------------------------------------------------------
def as_config(config: ConfigLike) -> RunConfig:
    """A RunConfig from itself, a mapping (sections nested, or dotted keys), a YAML/JSON path or None
    (the defaults)."""
    from mecharule.config import RunConfig, load_config

    if config is None:
        return RunConfig()
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, str | os.PathLike):
        return load_config(Path(config))
    if isinstance(config, Mapping):
        nested = {str(k): v for k, v in config.items() if "." not in str(k)}
        dotted = {str(k): v for k, v in config.items() if "." in str(k)}
        return load_config(None, base=nested, assignments=dotted)
    raise ConfigError(
        "config must be a RunConfig, a mapping or the path of a YAML/JSON file; "
        f"got a {type(config).__name__}"
    )


def as_handle(model: ModelLike, config: RunConfig) -> tuple[ModelHandle | None, RunConfig]:
    """The handle of a model in memory, and the config naming it.

    A ``(model, tokenizer)`` pair is wrapped (the tokenizer gets left padding and a pad token, the
    model is put in eval mode). When the config does not name a model itself, it takes the model's
    name (``model.name_or_path`` of a pair): that name is recorded and decides the task's prompt
    format (a bundled organism's directory keeps the organism's raw format).
    """
    if model is None:
        return None, config
    from mecharule.models.loading import ModelHandle, handle_from_model

    named = "name" in config.model.model_fields_set
    if isinstance(model, ModelHandle):
        handle = model
    elif isinstance(model, tuple | list) and len(model) == 2:
        weights, tokenizer = model
        name = config.model.name if named else str(getattr(weights, "name_or_path", "") or "in-memory")
        handle = handle_from_model(weights, tokenizer, name=name)
    else:
        raise ConfigError(
            f"model= takes a ModelHandle (mecharule.load_model(...)) or a (model, tokenizer) pair; "
            f"got a {type(model).__name__}"
        )
    if not named and handle.name != config.model.name:
        config = config.model_copy(update={"model": config.model.model_copy(update={"name": handle.name})})
    return handle, config


def _config_and_model(config: ConfigLike, model: ModelLike) -> tuple[RunConfig, ModelHandle | None]:
    handle, cfg = as_handle(model, as_config(config))
    return cfg, handle


def _pipeline(config: RunConfig, out: Path, handle: ModelHandle | None, progress: bool) -> Any:
    """A :class:`~mecharule.pipeline.Pipeline` (imported here: the pipeline imports the package)."""
    from mecharule.pipeline import Pipeline
    from mecharule.progress import bars, silent

    return Pipeline(config, out, progress=bars if progress else silent, model=handle)


def _saved_config(path: Path, stage: str) -> RunConfig:
    """The run's saved config; the defaults for a new run's measure stage."""
    from mecharule.config import RunConfig, load_config
    from mecharule.io.rundir import RunDir

    saved = RunDir(path).manifest().get("config") if (path / "run.json").exists() else None
    if saved is not None:
        return load_config(None, base=saved)
    if stage == "measure":
        return RunConfig()
    raise RunDirError(
        f"{path} has no run.json, so no config to run {VERBS[stage]} with; start the run with "
        f"mecharule.measure({str(path)!r}, config) or mecharule.run(config, {str(path)!r}), or pass config="
    )


def _check_weights(path: Path, handle: ModelHandle | None, stage: str) -> None:
    """A run measured with a model in memory needs it again: every stage's key holds its fingerprint."""
    from mecharule.io.rundir import RunDir

    if handle is not None or stage == "report" or not (path / "run.json").exists():
        return
    weights = (RunDir(path).manifest().get("model") or {}).get("weights") or {}
    if "in_memory" in weights:
        raise ConfigError(
            f"{path} was measured with a model in memory; pass the same model to "
            f"mecharule.{VERBS[stage]}(..., model=...) (every stage's key holds its weights' fingerprint)"
        )


def _run_stage(stage: str, run: RunLike, config: ConfigLike, model: ModelLike, progress: bool) -> Path:
    """Run one stage under the run's lock; returns the run directory."""
    path = run.path if isinstance(run, Run) else Path(run)
    cfg = as_config(config) if config is not None else _saved_config(path, stage)
    handle, cfg = as_handle(model, cfg)
    _check_weights(path, handle, stage)
    pipe = _pipeline(cfg, path, handle, progress)
    if stage != "report":
        pipe.check_options()
    with pipe.rundir.locked(f"mecharule.{VERBS[stage]}() (Python)"):
        if stage == "report":
            pipe.report(force=True)
        else:
            getattr(pipe, stage)()
    if isinstance(run, Run):
        run.refresh()
    return path


__all__ = [
    "anchor",
    "as_config",
    "attribute",
    "extract_rules",
    "load_run",
    "localize",
    "measure",
    "recompose",
    "render_report",
    "run",
    "validate",
]
