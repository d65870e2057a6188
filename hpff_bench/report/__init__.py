"""Paper-style reports (tables and figures) from results files: `hpff-bench report`."""

from hpff_bench.report.build import Report, build_report

__all__ = ["Report", "build_report"]
