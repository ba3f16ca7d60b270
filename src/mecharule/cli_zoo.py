"""``mecharule zoo train NAME``: train a model organism into a directory of the user's.

Registered on the ``zoo`` sub-app by :mod:`mecharule.cli` (which passes its error wrapper, so this
module imports nothing from it). Heavy imports happen inside the command.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


def register(zoo_app: typer.Typer, user_errors: Wrapper) -> None:
    """Add ``train`` to the ``zoo`` sub-app."""

    @zoo_app.command("train")
    @user_errors
    def zoo_train(
        name: str = typer.Argument(..., help="organism to train (arithmetic, ...)"),
        seed: int = typer.Option(0),
        out: Path | None = typer.Option(None, help="directory to write (default: ./organisms/NAME)"),
        steps: int | None = typer.Option(None, help="override the training steps"),
        sweep: bool = typer.Option(True, help="run the one-by-one agonist sweep for the report"),
    ) -> None:
        """Train an organism from scratch; write its weights, tokenizer and training report to --out.

        The bundled organism (zoo:NAME) is never touched; the command prints the --model to use."""
        from tqdm.auto import tqdm

        from mecharule.zoo.registry import training_target
        from mecharule.zoo.specs import organism_spec
        from mecharule.zoo.train import train_organism

        spec = organism_spec(name)  # an unknown name fails before the bar starts
        target = training_target(name, out)
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
        typer.echo(f"use it with: --task {spec.task} --model {target}")  # its training report marks it


__all__ = ["register"]
