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
from typing import Any, TypeVar

import typer

from mecharule.cli_models import register as register_model_commands
from mecharule.errors import MecharuleError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Rules and neurons behind LLM behaviour.")
list_app = typer.Typer(no_args_is_help=True, help="List tasks, organisms, architectures, known models.")
zoo_app = typer.Typer(no_args_is_help=True, help="Bundled model organisms.")
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
            where = f" writing {exc.filename}" if exc.filename else ""
            typer.echo(
                f"error: {exc.strerror or exc}{where}; free space or choose a writable --out, then "
                "re-run the same command: finished work is kept",
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


def _pipeline(out: Path, config_file: Path | None, overrides: dict[str, Any]) -> Any:
    from mecharule.config import RunConfig, load_config
    from mecharule.io.rundir import RunDir
    from mecharule.pipeline import Pipeline
    from mecharule.progress import bars

    manifest = RunDir(out).manifest()
    if config_file is None and "config" in manifest and not any(v is not None for v in overrides.values()):
        config = RunConfig.model_validate(manifest["config"])
    else:
        config = load_config(config_file, overrides)
    return Pipeline(
        config,
        out,
        progress=bars,
        notify=lambda line: typer.echo(line, err=True),
        config_source=str(config_file) if config_file is not None else None,
    )


DEVICE_HELP = "torch device: cpu, cuda, cuda:1, mps ... (default: the config's, cpu)"
DTYPE_HELP = "float32 | bfloat16 | float16 | auto (default: the config's, float32)"


@app.command()
@user_errors
def run(
    out: Path = typer.Option(..., "--out", help="run directory (re-run the same command to resume)"),
    task: str | None = typer.Option(None, help="task name (default arithmetic; mecharule list tasks)"),
    model: str | None = typer.Option(
        None,
        help="hub id, local path, GGUF file, known model name or zoo:NAME (default: the task's organism)",
    ),
    config: Path | None = typer.Option(None, help="YAML/JSON config file setting any option"),
    device: str | None = typer.Option(None, help=DEVICE_HELP),
    dtype: str | None = typer.Option(None, help=DTYPE_HELP),
    max_prompts: int | None = typer.Option(None, help="seeded subsample of the task's prompts"),
    validate_: bool = typer.Option(
        False, "--validate", help="also brute-force every candidate (recall, cost)"
    ),
    seed: int | None = typer.Option(None),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run every stage: measure, rules, attribute, localize, (validate), anchor, report."""
    import time

    from mecharule.pipeline import default_stages

    _setup_logging(verbose)
    if model is None and task is not None and config is None:
        model = f"zoo:{task}"
    pipe = _pipeline(
        out,
        config,
        {
            "measure.task": task,
            "model.name": model,
            "model.device": device,
            "model.dtype": dtype,
            "measure.max_prompts": max_prompts,
            "seed": seed,
            "validate_brute_force": True if validate_ else None,
        },
    )
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
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"report → {out / 'report' / 'index.html'}")


@app.command()
@user_errors
def anchor(
    rundir: Path = typer.Argument(..., help="run directory with localization/"),
    config: Path | None = typer.Option(None, help="YAML/JSON config file (default: the run's own)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Flip table of every agonist and its neuron-anchored rules → flips.parquet, neuron_rules.json."""
    from mecharule.io.rundir import read_json

    _setup_logging(verbose)
    pipe = _existing_pipeline(rundir, config)
    with pipe.rundir.locked("mecharule anchor"):
        ran = pipe.anchor()
    data = read_json(rundir / "neuron_rules.json")
    typer.echo(("anchored" if ran else "already anchored (skipped)") + f" → {rundir / 'neuron_rules.json'}")
    typer.echo(f"HQ counts (test MCC): {data['hq_counts']['test']}")
    for a in data["agonists"][:10]:
        typer.echo(
            f"  {a['site']:>12}  flips {a['flip_rates']['any']:.3f}  best {a['best']['target']} "
            f"test MCC {a['best']['test_mcc']:.2f}: {a['best']['readable'][:90]}"
        )


@app.command()
@user_errors
def report(
    rundir: Path = typer.Argument(..., help="run directory"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Write report/index.html (self-contained) and the paper-style tables."""
    _setup_logging(verbose)
    pipe = _existing_pipeline(rundir, None)
    with pipe.rundir.locked("mecharule report"):
        pipe.report(force=True)
    typer.echo(f"report → {rundir / 'report' / 'index.html'}")


@app.command()
@user_errors
def measure(
    out: Path = typer.Option(..., "--out", help="run directory to write"),
    task: str | None = typer.Option(None, help="task name (default arithmetic; mecharule list tasks)"),
    model: str | None = typer.Option(
        None, help="hub id, local path, GGUF file, known model name or zoo:NAME (default: zoo:<task>)"
    ),
    config: Path | None = typer.Option(None, help="YAML/JSON config file"),
    device: str | None = typer.Option(None, help=DEVICE_HELP),
    dtype: str | None = typer.Option(None, help=DTYPE_HELP),
    batch_size: int | None = typer.Option(None, help="prompts per forward pass"),
    max_prompts: int | None = typer.Option(None, help="random subsample of the task's prompts"),
    seed: int | None = typer.Option(None),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the model on the task's prompts, score the answers, write behaviour + features."""
    _setup_logging(verbose)
    if model is None and task is not None and config is None:
        model = f"zoo:{task}"
    pipe = _pipeline(
        out,
        config,
        {
            "measure.task": task,
            "model.name": model,
            "model.device": device,
            "model.dtype": dtype,
            "measure.batch_size": batch_size,
            "measure.max_prompts": max_prompts,
            "seed": seed,
        },
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


def _existing_pipeline(rundir: Path, config: Path | None) -> Any:
    from mecharule.errors import RunDirError
    from mecharule.io.rundir import RunDir

    if config is None and "config" not in RunDir(rundir).manifest():
        raise RunDirError(
            f"{rundir} has no run.json; create it with `mecharule measure --out {rundir}` first"
        )
    return _pipeline(rundir, config, {})


@app.command()
@user_errors
def rules(
    rundir: Path = typer.Argument(..., help="run directory written by `mecharule measure`"),
    config: Path | None = typer.Option(None, help="YAML/JSON config file (default: the run's own)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Extract behaviour rules (fit on train rows, scored on held-out test rows) → rules.json."""
    from mecharule.io.rundir import read_json
    from mecharule.rules import format_rules_table

    _setup_logging(verbose)
    pipe = _existing_pipeline(rundir, config)
    with pipe.rundir.locked("mecharule rules"):
        ran = pipe.rules()
    typer.echo(("extracted" if ran else "already extracted (skipped)") + f" → {rundir / 'rules.json'}")
    typer.echo(format_rules_table(read_json(rundir / "rules.json")))


@app.command()
@user_errors
def attribute(
    rundir: Path = typer.Argument(..., help="run directory with rules.json"),
    config: Path | None = typer.Option(None, help="YAML/JSON config file (default: the run's own)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Gradient attribution (AtP / EAP-IG) of every MLP unit per rule → attribution/*.safetensors + json."""
    _setup_logging(verbose)
    pipe = _existing_pipeline(rundir, config)
    with pipe.rundir.locked("mecharule attribute"):
        ran = pipe.attribute()
    typer.echo(("attributed" if ran else "already attributed (skipped)") + f" → {rundir / 'attribution'}")


@app.command()
@user_errors
def localize(
    rundir: Path = typer.Argument(..., help="run directory with rules.json"),
    config: Path | None = typer.Option(None, help="YAML/JSON config file (default: the run's own)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Find each rule's agonist units with Contrastive Hierarchical Ablation → localization/."""
    from mecharule.io.rundir import read_json

    _setup_logging(verbose)
    pipe = _existing_pipeline(rundir, config)
    with pipe.rundir.locked("mecharule localize"):
        ran = pipe.localize()
    summary = read_json(rundir / "localization" / "summary.json")
    typer.echo(("localized" if ran else "already localized (skipped)") + f" → {rundir / 'localization'}")
    typer.echo(
        f"group evaluations: {summary['group_evaluations']} in {summary['oracle_calls']} oracle calls, "
        f"{summary['wall_seconds']:.1f}s; distinct agonists: {summary['n_agonists']}"
    )
    for p in summary["problems"]:
        if p["skipped"]:
            typer.echo(f"  {p['key']}: skipped ({p['skipped']})")
            continue
        sites = ", ".join(a["unit"] for a in p["agonists"][:8]) + (" ..." if len(p["agonists"]) > 8 else "")
        typer.echo(
            f"  {p['key']}: {len(p['agonists'])} agonists / {p['n_candidates']} candidates, "
            f"{p['group_evaluations']} evaluations  [{sites}]"
        )


@app.command()
@user_errors
def validate(
    rundir: Path = typer.Argument(..., help="run directory with rules.json"),
    config: Path | None = typer.Option(None, help="YAML/JSON config file (default: the run's own)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Brute force every candidate alone beside CHA: recall by effect bin and cost → validation.json."""
    from mecharule.io.rundir import read_json

    _setup_logging(verbose)
    pipe = _existing_pipeline(rundir, config)
    with pipe.rundir.locked("mecharule validate"):
        ran = pipe.validate()
    v = read_json(rundir / "validation.json")
    typer.echo(("validated" if ran else "already validated (skipped)") + f" → {rundir / 'validation.json'}")
    typer.echo(json.dumps({k: v[k] for k in ("cost", "wall_seconds", "forwards")}, indent=1))
    typer.echo(json.dumps(v["recall"], indent=1)[:3000])


@list_app.command("tasks")
def list_tasks() -> None:
    """Registered tasks."""
    import mecharule.tasks.builtin  # noqa: F401
    from mecharule.tasks.base import TASKS

    for name in TASKS.names():
        typer.echo(name)


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


@zoo_app.command("train")
@user_errors
def zoo_train(
    name: str = typer.Argument(..., help="organism to train (arithmetic, ...)"),
    seed: int = typer.Option(0),
    out: Path | None = typer.Option(None, help="directory (default: the bundled organism's own)"),
    steps: int | None = typer.Option(None, help="override the training steps"),
    sweep: bool = typer.Option(True, help="run the one-by-one agonist sweep for the report"),
) -> None:
    """Train an organism from scratch and write its weights, tokenizer and training report."""
    from tqdm.auto import tqdm

    from mecharule.zoo.registry import ORGANISMS_DIR
    from mecharule.zoo.specs import organism_spec
    from mecharule.zoo.train import train_organism

    organism_spec(name)  # an unknown name fails before the bar starts
    target = out or ORGANISMS_DIR / name
    bar = tqdm(desc=f"train {name}", unit="step", dynamic_ncols=True)

    def tick(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.refresh()

    report = train_organism(name, seed, target, steps=steps, progress=tick, sweep=sweep)
    bar.close()
    slim = {k: v for k, v in report.items() if k != "agonist_sweep"}
    typer.echo(json.dumps(slim, indent=2))
    for kind, info in report.get("agonist_sweep", {}).get("by_kind", {}).items():
        typer.echo(
            f"sweep {kind}: {info['unit_slices_ge_0.2']} unit-slices >= 0.2, "
            f"{info['unit_slices_ge_0.5']} >= 0.5"
        )
    typer.echo(f"saved → {target}")


# `mecharule models fetch` and `mecharule list models` live in cli_models.py.
register_model_commands(app, list_app, user_errors=user_errors, setup_logging=_setup_logging)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
