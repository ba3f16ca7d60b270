"""The ``mecharule`` command line. Thin: each command builds a config and calls one function.

This is the only place that configures logging and turns progress bars on. User errors
(:class:`MecharuleError`) print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from mecharule import cli_show
from mecharule.cli_models import register as register_model_commands
from mecharule.cli_sweep import register as register_sweep_command
from mecharule.cli_zoo import register as register_zoo_commands
from mecharule.errors import MecharuleError

if TYPE_CHECKING:
    from mecharule.config import RunConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Rules and neurons behind LLM behaviour.")
config_app = typer.Typer(no_args_is_help=True, help="Show the effective config of a run or a file.")
list_app = typer.Typer(no_args_is_help=True, help="List tasks, organisms, architectures, known models.")
zoo_app = typer.Typer(no_args_is_help=True, help="Model organisms: train one into a directory of yours.")
# `mecharule --help` lists the commands in the order they are defined (the pipeline's), then these
app.add_typer(config_app, name="config")
app.add_typer(list_app, name="list")
app.add_typer(zoo_app, name="zoo")

F = TypeVar("F", bound=Callable[..., Any])
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def user_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MecharuleError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished work is saved; re-run the same command to resume", err=True)
            raise typer.Exit(130) from None
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            where = f" at {exc.filename}" if exc.filename else ""
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            fix = (
                "free space or choose another --out"
                if full
                else "fix the permissions or choose a writable --out"
            )
            typer.echo(
                f"error: {exc.strerror or exc}{where}; {fix}, then re-run the same command: "
                "finished work is kept",
                err=True,
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: bool) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _pipeline(
    out: Path,
    config_file: Path | None,
    options: dict[str, Any],
    sets: list[str] | None,
    *,
    existing: bool = False,
) -> Any:
    """A pipeline on ``out`` whose config is ``config_file`` (else the run's saved config, else the
    defaults) with ``options`` (None = not given) and then ``--set`` applied on top. ``existing``:
    the run directory must already hold a config unless a file is given."""
    from mecharule.pipeline import Pipeline
    from mecharule.progress import bars

    config = _effective_config(out, config_file, options, sets, existing=existing)
    if ":" in config.task.name and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))  # --task module:factory finds module.py here (last: no shadowing)
    return Pipeline(
        config,
        out,
        progress=bars,
        notify=lambda line: typer.echo(line, err=True),
        config_source=str(config_file) if config_file is not None else None,
    )


def _effective_config(
    rundir: Path | None,
    config_file: Path | None,
    options: dict[str, Any],
    sets: list[str] | None,
    *,
    existing: bool = False,
) -> RunConfig:
    """See :func:`_pipeline`; ``rundir`` None: no saved config to start from."""
    from mecharule.config import load_config, parse_assignments
    from mecharule.errors import RunDirError
    from mecharule.io.rundir import RunDir

    assignments = parse_assignments(sets or [])
    saved = RunDir(rundir).manifest().get("config") if rundir is not None and config_file is None else None
    if existing and config_file is None and saved is None:
        raise RunDirError(
            f"{rundir} has no run.json; create it with `mecharule measure --out {rundir}` first"
        )
    return load_config(config_file, options, base=saved, assignments=assignments)


DEVICE_HELP = "torch device: cpu, cuda, cuda:1, mps ... (model.device; default: the config's, cpu)"
DTYPE_HELP = "float32 | bfloat16 | float16 | auto (model.dtype; default: the config's, float32)"
SET_HELP = (
    "KEY=VALUE applied on top of the config (the run's saved one, or --config); repeatable; the value "
    "is YAML: --set search.tau=0.3 --set task.options.n_shots=3"
)
MODEL_HELP = "hub id, local path, GGUF file, known model name or zoo:NAME (default: the task's organism)"
TASK_HELP = "task name (mecharule list tasks) or module:factory (default arithmetic)"
SET = typer.Option(None, "--set", help=SET_HELP, metavar="KEY=VALUE")
DEVICE = typer.Option(None, help=DEVICE_HELP)
DTYPE = typer.Option(None, help=DTYPE_HELP)
MAX_PROMPTS = typer.Option(None, help="seeded subsample of the task's prompts (task.max_prompts)")
VERBOSE = typer.Option(False, "--verbose", "-v")
EXECUTOR = typer.Option(None, "--executor", help="local (default) or ray (executor.kind; docs/scaling.md)")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster to join (executor.ray_address)")
WORKERS = typer.Option(None, "--workers", help="Ray model replicas (executor.workers; default: one per GPU)")


def _organism_of(task: str | None, model: str | None, config: Path | None) -> str | None:
    """``--model``, or the task's organism (``zoo:<task>``) when only ``--task`` names the run."""
    if model is None and task is not None and config is None and ":" not in task:
        return f"zoo:{task}"
    return model


@app.command()
@user_errors
def run(
    out: Path = typer.Option(..., "--out", help="run directory (re-run the same command to resume)"),
    task: str | None = typer.Option(None, help=TASK_HELP),
    model: str | None = typer.Option(None, help=MODEL_HELP),
    config: Path | None = typer.Option(None, help="YAML/JSON config file setting any option"),
    sets: list[str] | None = SET,
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    max_prompts: int | None = MAX_PROMPTS,
    validate_: bool = typer.Option(
        False, "--validate", help="also brute-force every candidate (recall, cost)"
    ),
    seed: int | None = typer.Option(None),
    seeds: str | None = typer.Option(
        None, "--seeds", help="e.g. 0,1,2: one run per seed in OUT/seed-N, then the spread across them"
    ),
    executor: str | None = EXECUTOR,
    ray_address: str | None = RAY_ADDRESS,
    workers: int | None = WORKERS,
    as_json: bool = typer.Option(False, "--json", help="end with summary.json's figures, as JSON"),
    verbose: bool = VERBOSE,
) -> None:
    """Run every stage: measure, rules, attribute, localize, (validate), recompose, anchor, report."""
    _setup_logging(verbose)
    options = {
        "task.name": task,
        "model.name": _organism_of(task, model, config),
        "model.device": device,
        "model.dtype": dtype,
        "task.max_prompts": max_prompts,
        "seed": seed,
        "validation.brute_force": True if validate_ else None,
        **_executor_options(executor, ray_address, workers),
    }
    if seeds is None:
        pipe, summary = _run_all_stages(out, config, options, sets)
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        from mecharule.run_summary import run_summary_lines

        typer.echo("\n".join(run_summary_lines(pipe.rundir, summary)))
        return
    from mecharule.seeds import parse_seeds, seed_spread

    dirs = []
    for value in parse_seeds(seeds):
        typer.echo(f"== seed {value} → {out / f'seed-{value}'}", err=True)
        _run_all_stages(out / f"seed-{value}", config, {**options, "seed": value}, sets)
        dirs.append(out / f"seed-{value}")
    spread = seed_spread(dirs, out)
    from mecharule.report.tables import to_markdown

    typer.echo(spread.to_json(orient="records", indent=2) if as_json else to_markdown(spread))
    typer.echo(f"spread → {out / 'seeds.md'}")


def _run_all_stages(
    out: Path, config: Path | None, options: dict[str, Any], sets: list[str] | None
) -> tuple[Any, dict[str, Any]]:
    """Every stage of one run, with a line per stage on stderr; the pipeline and summary.json."""
    import time

    from mecharule.pipeline import default_stages

    pipe = _pipeline(out, config, options, sets)
    pipe.check_options()
    with pipe.rundir.locked("mecharule run"):
        for line in pipe.describe():
            typer.echo(line, err=True)
        for stage in default_stages(pipe.config):
            started = time.perf_counter()
            typer.echo(f"[{stage}] ...", err=True)
            ran = getattr(pipe, stage)()
            typer.echo(
                f"[{stage}] {'done' if ran else 'skipped (already done)'} "
                f"in {time.perf_counter() - started:.1f}s",
                err=True,
            )
        summary = pipe.write_summary()
    return pipe, summary


@app.command()
@user_errors
def measure(
    out: Path = typer.Option(..., "--out", help="run directory to write"),
    task: str | None = typer.Option(None, help=TASK_HELP),
    model: str | None = typer.Option(None, help=MODEL_HELP),
    config: Path | None = typer.Option(None, help="YAML/JSON config file"),
    sets: list[str] | None = SET,
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    batch_size: int | None = typer.Option(None, help="prompts per forward pass (executor.batch_size)"),
    max_prompts: int | None = MAX_PROMPTS,
    seed: int | None = typer.Option(None),
    verbose: bool = VERBOSE,
) -> None:
    """Run the model on the task's prompts, score the answers, write behaviour + features."""
    _setup_logging(verbose)
    pipe = _pipeline(
        out,
        config,
        {
            "task.name": task,
            "model.name": _organism_of(task, model, config),
            "model.device": device,
            "model.dtype": dtype,
            "executor.batch_size": batch_size,
            "task.max_prompts": max_prompts,
            "seed": seed,
        },
        sets,
    )
    with pipe.rundir.locked("mecharule measure"):
        for line in pipe.describe():
            typer.echo(line, err=True)
        ran = pipe.measure()
    summary = pipe.behaviour_summary()
    typer.echo(("measured" if ran else "already measured (skipped)") + f" → {out}")
    typer.echo(
        f"prompts: {summary['n_prompts']}   {pipe.task.positive_label}: {summary['positive_rate']:.3f}"
    )
    for group, rate in summary.get("positive_rate_by_group", {}).items():
        typer.echo(f"  {pipe.task.group_column} {group}: {rate:.3f}")


# -- the stage commands on a run directory: one factory, a printer each ------------------------------
# (stage, what DIR must hold, help, printer), in pipeline order
STAGE_COMMANDS: list[tuple[str, str, str, Callable[[Path, bool], None]]] = [
    (
        "rules",
        "run directory written by `mecharule measure`",
        "Extract behaviour rules (fit on train rows, scored on held-out test rows) → rules.json.",
        cli_show.show_rules,
    ),
    (
        "attribute",
        "run directory with rules.json",
        "Gradient attribution (AtP / EAP-IG) of every MLP unit per rule → attribution/*.safetensors + json.",
        cli_show.show_attribute,
    ),
    (
        "localize",
        "run directory with rules.json",
        "Find each rule's agonist units with Contrastive Hierarchical Ablation → localization/.",
        cli_show.show_localize,
    ),
    (
        "validate",
        "run directory with rules.json",
        "Brute force every candidate alone beside CHA: recall by effect bin and cost → validation.json.",
        cli_show.show_validate,
    ),
    (
        "recompose",
        "run directory with localization/",
        "Each rule's agonists alone, in pairs, together and in greedy sets → recomposition.json.",
        cli_show.show_recompose,
    ),
    (
        "anchor",
        "run directory with localization/",
        "Flip table of every agonist and its neuron-anchored rules → flips.parquet, neuron_rules.json.",
        cli_show.show_anchor,
    ),
]


def _add_stage_command(stage: str, needs: str, doc: str, show: Callable[[Path, bool], None]) -> None:
    """``mecharule STAGE DIR``: the run's config (or --config) plus the options, the lock, the stage."""

    def command(
        rundir: Path = typer.Argument(..., help=needs),
        config: Path | None = typer.Option(None, help="YAML/JSON config file (default: the run's own)"),
        sets: list[str] | None = SET,
        device: str | None = DEVICE,
        dtype: str | None = DTYPE,
        max_prompts: int | None = MAX_PROMPTS,
        executor: str | None = EXECUTOR,
        ray_address: str | None = RAY_ADDRESS,
        workers: int | None = WORKERS,
        verbose: bool = VERBOSE,
    ) -> None:
        _setup_logging(verbose)
        options = {"model.device": device, "model.dtype": dtype, "task.max_prompts": max_prompts}
        options |= _executor_options(executor, ray_address, workers)
        pipe = _pipeline(rundir, config, options, sets, existing=True)
        with pipe.rundir.locked(f"mecharule {stage}"):
            _require_upstream(pipe, stage, _given(options, sets))
            ran = getattr(pipe, stage)()
        show(rundir, ran)

    command.__name__ = stage
    app.command(stage, help=doc)(user_errors(command))


def _executor_options(kind: str | None, address: str | None, workers: int | None) -> dict[str, Any]:
    """``--executor``, ``--ray-address``, ``--workers`` as config keys (None = not given)."""
    return {"executor.kind": kind, "executor.ray_address": address, "executor.workers": workers}


def _given(options: dict[str, Any], sets: list[str] | None) -> str:
    """The config-changing options as typed (``--max-prompts 40 --set search.tau=0.3``)."""
    import shlex

    flags = {
        "model.device": "--device",
        "model.dtype": "--dtype",
        "task.max_prompts": "--max-prompts",
        "executor.kind": "--executor",
        "executor.ray_address": "--ray-address",
        "executor.workers": "--workers",
    }
    words = [w for key, v in options.items() if v is not None for w in (flags[key], str(v))]
    words += [w for item in sets or [] for w in ("--set", item)]
    return shlex.join(words)


def _require_upstream(pipe: Any, stage: str, given: str) -> None:
    """The pipeline's upstream check, whose fix must repeat the options that changed the config."""
    from mecharule.errors import RunDirError

    try:
        pipe.require_upstream(stage)
    except RunDirError as exc:
        if not given:
            raise
        raise RunDirError(f"{exc}; give that command the same {given}") from exc


for _stage_command in STAGE_COMMANDS:
    _add_stage_command(*_stage_command)


@app.command()
@user_errors
def report(
    rundir: Path = typer.Argument(..., help="run directory"),
    verbose: bool = VERBOSE,
) -> None:
    """Write report/index.html (self-contained) and the paper-style tables."""
    _setup_logging(verbose)
    pipe = _pipeline(rundir, None, {}, None, existing=True)
    with pipe.rundir.locked("mecharule report"):
        pipe.report(force=True)
    typer.echo(f"report → {rundir / 'report' / 'index.html'}")


@app.command()
@user_errors
def compare(
    rundirs: list[Path] = typer.Argument(..., help="two or more run directories"),
    out: Path = typer.Option(Path("comparison"), "--out", help="folder for the tables and index.html"),
) -> None:
    """Compare finished runs side by side, with the agonist overlap of runs of one model.

    Accuracy, rules vs control, agonists and sparsity, recall and cost, HQ rules, wall time; the
    Jaccard overlap of agonist sets with the shared units named. Writes --out (tables, index.html).
    """
    from mecharule.compare import compare_runs
    from mecharule.report.tables import to_markdown

    tables = compare_runs(rundirs, out)
    typer.echo(to_markdown(tables["runs"]))
    if len(tables["overlap"]):
        typer.echo(to_markdown(tables["overlap"]))
    typer.echo(f"comparison → {out / 'index.html'}")


# `mecharule sweep` lives in cli_sweep.py.
register_sweep_command(app, user_errors=user_errors, setup_logging=_setup_logging)


@config_app.command("show")
@user_errors
def config_show(
    rundir: Path | None = typer.Argument(None, help="run directory whose saved config to start from"),
    config: Path | None = typer.Option(None, help="YAML/JSON config file (instead of the run's)"),
    sets: list[str] | None = SET,
) -> None:
    """Print the effective config as YAML: every field, defaults included (a valid --config file)."""
    import yaml

    effective = _effective_config(rundir, config, {}, sets, existing=rundir is not None)
    typer.echo(yaml.safe_dump(effective.model_dump(mode="json"), sort_keys=False), nl=False)


@list_app.command("tasks")
def list_tasks() -> None:
    """Built-in tasks and those installed packages declare (entry points, group mecharule.tasks)."""
    from mecharule.tasks.base import TASK_ENTRY_POINTS, TASKS

    sources = TASKS.sources()
    width = max(map(len, sources), default=0)
    for name, source in sources.items():
        typer.echo(f"{name:{width}s}  {source}")
    typer.echo(
        f"(a task of your own: --task module:factory, or an entry point in group {TASK_ENTRY_POINTS}; "
        "see docs/adding-a-task.md)",
        err=True,
    )


@list_app.command("organisms")
def list_organisms() -> None:
    """Bundled model organisms (use as --model zoo:NAME)."""
    from mecharule.zoo.registry import available_organisms

    for name in available_organisms():
        typer.echo(f"zoo:{name}")


@list_app.command("architectures")
def list_architectures() -> None:
    """model_type rows of the architecture table."""
    from mecharule.models.architectures import ARCHITECTURES

    for name, row in sorted(ARCHITECTURES.items()):
        typer.echo(f"{name:14s} layers={row.layers} mlp={row.mlp} down_proj={row.down_proj}")


# `mecharule zoo train` lives in cli_zoo.py.
register_zoo_commands(zoo_app, user_errors=user_errors)

# `mecharule models fetch` and `mecharule list models` live in cli_models.py.
register_model_commands(app, list_app, user_errors=user_errors, setup_logging=_setup_logging)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
