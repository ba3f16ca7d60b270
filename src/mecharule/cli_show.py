"""What each stage command prints when it is done: where its outputs are and their headline."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def show_rules(rundir: Path, ran: bool) -> None:
    from mecharule.io.rundir import read_json
    from mecharule.rules import format_rules_table

    typer.echo(("extracted" if ran else "already extracted (skipped)") + f" → {rundir / 'rules.json'}")
    typer.echo(format_rules_table(read_json(rundir / "rules.json")))


def show_attribute(rundir: Path, ran: bool) -> None:
    typer.echo(("attributed" if ran else "already attributed (skipped)") + f" → {rundir / 'attribution'}")


def show_localize(rundir: Path, ran: bool) -> None:
    from mecharule.io.rundir import read_json

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


def show_validate(rundir: Path, ran: bool) -> None:
    from mecharule.io.rundir import read_json

    v = read_json(rundir / "validation.json")
    typer.echo(("validated" if ran else "already validated (skipped)") + f" → {rundir / 'validation.json'}")
    typer.echo(json.dumps({k: v[k] for k in ("cost", "wall_seconds", "forwards")}, indent=1))
    typer.echo(json.dumps(v["recall"], indent=1)[:3000])


def show_recompose(rundir: Path, ran: bool) -> None:
    from mecharule.io.rundir import read_json
    from mecharule.recomposition.text import problem_line, shared_line

    data = read_json(rundir / "recomposition.json")
    done = "recomposed" if ran else "already recomposed (skipped)"
    typer.echo(f"{done} → {rundir / 'recomposition.json'} ({data['evaluations']} group evaluations)")
    for key, entry in data["problems"].items():
        typer.echo("  " + problem_line(key, entry))
    typer.echo(shared_line(data))


def show_anchor(rundir: Path, ran: bool) -> None:
    from mecharule.io.rundir import read_json

    data = read_json(rundir / "neuron_rules.json")
    typer.echo(("anchored" if ran else "already anchored (skipped)") + f" → {rundir / 'neuron_rules.json'}")
    typer.echo(f"HQ counts (test MCC): {data['hq_counts']['test']}")
    for a in data["agonists"][:10]:
        typer.echo(
            f"  {a['site']:>12}  flips {a['flip_rates']['any']:.3f}  best {a['best']['target']} "
            f"test MCC {a['best']['test_mcc']:.2f}: {a['best']['readable'][:90]}"
        )


__all__ = ["show_anchor", "show_attribute", "show_localize", "show_recompose", "show_rules", "show_validate"]
