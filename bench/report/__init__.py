"""Reports of a results directory: tables (pandas), plots (matplotlib), report.md + report.html.

    from bench.report import write_report
    paths = write_report("results/20261123-120000-quick")   # -> reports/<run-id>/report.{md,html}

Never imports torch or jittor: it reads only the records the harness wrote. May import
records, stats, data, measure, quality, run and tasks (today: records and stats).
"""
from bench.report.load import ReportInputError, load_run
from bench.report.render import write_report

__all__ = ["write_report", "load_run", "ReportInputError"]
