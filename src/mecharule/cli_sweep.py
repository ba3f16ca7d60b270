"""``mecharule sweep RUN_DIR --vary KEY=V1,V2``: registered on the app by :mod:`mecharule.cli`
(which passes its error wrapper and logging set-up, so this module imports nothing from it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]

VARY_HELP = (
    "KEY=V1,V2,... one config field and its values (YAML each; lists in brackets: "
    "attribution.methods=\\[atp],\\[eap_ig]); repeatable: one factor at a time, "
    "or every combination with --grid"
)


def register(app: typer.Typer, user_errors: Wrapper, setup_logging: Callable[[bool], None]) -> None:
    """Add ``sweep`` to the app."""

    @app.command("sweep")
    @user_errors
    def sweep(
        rundir: Path = typer.Argument(..., help="a finished run: the base every setting starts from"),
        vary: list[str] = typer.Option(..., "--vary", help=VARY_HELP, metavar="KEY=V1,V2"),
        out: Path | None = typer.Option(
            None, "--out", help="folder for the settings' runs and tables (default: RUN_DIR-sweep)"
        ),
        grid: bool = typer.Option(
            False, "--grid", help="every combination of the factors, not one at a time"
        ),
        max_settings: int = typer.Option(24, "--max-settings", help="refuse a sweep of more settings"),
        executor: str | None = typer.Option(None, "--executor", help="local (default) or ray"),
        workers: int | None = typer.Option(None, "--workers", help="Ray model replicas"),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Re-run a finished run under other settings (reusing every stage whose inputs do not
        change) and test how the results move against it: exact sign tests, Holm, bootstrap CIs.

        Writes OUT/SETTING/ (whole runs), settings.{md,csv}, tests.{md,csv}, sweep.json, index.html.
        """
        from mecharule.pipeline import Pipeline
        from mecharule.progress import bars
        from mecharule.report.tables import to_markdown
        from mecharule.sweep import parse_vary, run_sweep

        setup_logging(verbose)
        factors = [parse_vary(item) for item in vary]
        target = out or rundir.parent / f"{rundir.name}-sweep"
        speed = {"kind": executor, "workers": workers}

        def pipeline_of(config: Any, path: Path) -> Pipeline:
            given = {k: v for k, v in speed.items() if v is not None}
            if given:
                config = config.model_copy(update={"executor": config.executor.model_copy(update=given)})
            notify = lambda line: typer.echo(line, err=True)  # noqa: E731
            return Pipeline(config, path, progress=bars, notify=notify)

        tables = run_sweep(
            rundir,
            target,
            factors,
            pipeline_of,
            grid=grid,
            max_settings=max_settings,
            notify=lambda line: typer.echo(line, err=True),
        )
        typer.echo(to_markdown(tables["settings"]))
        if len(tables["tests"]):
            typer.echo(to_markdown(tables["tests"]))
        typer.echo(f"sweep → {target / 'index.html'}")
