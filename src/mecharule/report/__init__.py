"""The run report: ``render_report(run_dir)`` writes a self-contained ``report/index.html`` (inline
CSS, images embedded as base64 PNG) and the paper-style tables as Markdown and CSV under
``report/tables/``. Plots (``report.plots``) return matplotlib Figures; tables (``report.tables``)
are pure functions of the run's artifacts."""

from __future__ import annotations

from mecharule.report.load import RunArtifacts, load_run
from mecharule.report.render import render_report

__all__ = ["RunArtifacts", "load_run", "render_report"]
