"""The report's ``tables`` section: the paper-style tables the run's artifacts allow
(``report_tables``), each shown with the names of its Markdown and CSV files, or with the command
that fills it when its stage has not run.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mecharule.report.html import Raw, esc, heading, not_run, paragraph, section, table
from mecharule.report.load import RunArtifacts
from mecharule.report.tables import (
    agonists_table,
    all_units_recall_table,
    behaviour_rules_table,
    cha_vs_bruteforce_table,
    compact_agonists,
    hq_counts_table,
)

TABLE_TITLES = {
    "hq_counts": "High-quality neuron-anchored rules by MCC threshold (paper Table 2)",
    "cha_vs_bruteforce": "CHA versus brute force: budget and recall by effect bin (paper Table 3)",
    "behaviour_rules": "Behaviour rules",
    "agonists": "Agonists of every rule × regime",
}
TABLE_STAGES = {
    "hq_counts": ("anchor", "mecharule anchor"),
    "cha_vs_bruteforce": ("validate (brute force)", "mecharule validate"),
    "behaviour_rules": ("rules", "mecharule rules"),
    "agonists": ("localize", "mecharule localize"),
}


def _shown_above(run: RunArtifacts, name: str) -> tuple[str, str] | None:
    """Where the page already shows this table in full (its anchor and section), if it does."""
    if name == "behaviour_rules" and run.rules is not None:
        return "rules", "Behaviour rules"
    if name == "cha_vs_bruteforce" and run.localization is not None and run.validation is not None:
        return "cost-vs-brute-force", "Localization: search cost and recall versus brute force"
    return None


def report_tables(run: RunArtifacts) -> dict[str, pd.DataFrame]:
    """The paper-style tables the run's artifacts allow (missing stages give no table)."""
    tables: dict[str, pd.DataFrame] = {}
    if run.neuron_rules is not None:
        tables["hq_counts"] = hq_counts_table(run.neuron_rules)
    if run.validation is not None:
        tables["cha_vs_bruteforce"] = cha_vs_bruteforce_table(run.validation)
        tables["recall_all_units"] = all_units_recall_table(run.validation)
    if run.rules is not None:
        tables["behaviour_rules"] = behaviour_rules_table(run.rules)
    if run.localization is not None:
        tables["agonists"] = agonists_table(run.problems, run.neuron_rules)
    return tables


def tables_section(run: RunArtifacts, tables: Mapping[str, pd.DataFrame]) -> Raw:
    parts: list[str] = [
        paragraph("Each table is also written as Markdown and CSV under report/tables/.", "note")
    ]
    for name, title in TABLE_TITLES.items():
        parts.append(heading(title, 3, f"table-{name}"))
        if name not in tables:
            stage, command = TABLE_STAGES[name]
            parts.append(not_run(stage, f"{command} {run.path}"))
            continue
        above = _shown_above(run, name)
        if above is not None:  # one copy of a table per page
            anchor, where = above
            parts.append(
                Raw(
                    f'<p class="note">Shown above in <a href="#{anchor}">{esc(where)}</a>. Files: '
                    f"report/tables/{name}.md, report/tables/{name}.csv</p>"
                )
            )
            continue
        parts.append(paragraph(f"Files: report/tables/{name}.md, report/tables/{name}.csv", "note"))
        shown = compact_agonists(tables[name]) if name == "agonists" else tables[name]
        parts.append(
            table(
                shown,
                max_rows=40 if name == "agonists" else None,
                more_note="The CSV holds every row.",
            )
        )
    return section("tables", "Tables", parts)
