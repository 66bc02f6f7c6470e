"""Reports of a pipeline run: `runs/<name>/report.html` and a table on the console."""

from mfmaccel.report.console import console_summary
from mfmaccel.report.html import load_run, write_report

__all__ = ["console_summary", "load_run", "write_report"]
